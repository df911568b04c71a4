"""Export writers, validating import readers and import modes (services/jobs/formats.py)."""

from __future__ import annotations

import io
import json
import sqlite3
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dsm.services.jobs.formats import (
    MAX_LINE_BYTES,
    BadLine,
    CsvWriter,
    CurrentEntry,
    ExportEntry,
    ImportRecord,
    JsonLinesWriter,
    SqliteWriter,
    merge_patch,
    plan_import,
    read_csv,
    read_jsonl,
    validate,
)
from dsm.services.jobs.jsontext import JsonTextError, dumps_exact, loads_exact, object_members

WHEN = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
BIG = '{"id":12345678901234567890,"ratio":0.1000000000000000000001,"name":"Zoë 😀","n":null}'


def entries(n: int = 3) -> Iterator[ExportEntry]:
    yield ExportEntry(
        key="player_1",
        scope="global",
        value_json=BIG,
        attributes={"team": "red"},
        user_ids=[1],
        revision="r1",
        created=WHEN,
        updated=WHEN,
    )
    yield ExportEntry(key='weird,"key"\nline', value_json='["a", 1]')
    yield ExportEntry(key="strings", value_json='{"s":"5","t":"true","e":"","plain":"hi, there"}')
    for i in range(3, n):
        yield ExportEntry(key=f"k{i}", value_json=f'{{"coins":{i},"extra{i % 3}":[{i}]}}')


def test_json_lines_keep_values_byte_for_byte_and_read_back() -> None:
    out = io.StringIO()
    with JsonLinesWriter(out) as writer:
        for entry in entries():
            writer.write(entry)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 == writer.count
    assert f'"value":{BIG}' in lines[0]
    first = json.loads(lines[0])
    assert first["attributes"] == {"team": "red"} and first["user_ids"] == [1]
    assert (first["revision"], first["created"]) == ("r1", "2026-03-10T12:00:00Z")
    records = list(read_jsonl(io.BytesIO(out.getvalue().encode())))
    assert all(isinstance(r, ImportRecord) for r in records)
    assert next(r.value_json for r in records if isinstance(r, ImportRecord)) == BIG
    assert records[1].key == 'weird,"key"\nline'  # type: ignore[union-attr]


def test_a_pretty_printed_value_still_takes_one_line() -> None:
    out = io.StringIO()
    with JsonLinesWriter(out) as writer:
        writer.write(ExportEntry(key="k", value_json='{\n  "a": "x\\ny",\r\n  "b": 1\n}'))
    assert out.getvalue().count("\n") == 1
    assert json.loads(out.getvalue())["value"] == {"a": "x\ny", "b": 1}


def test_csv_flattens_top_level_fields_and_reads_back_the_same_values() -> None:
    out = io.StringIO()
    with CsvWriter(out) as writer:
        for entry in entries(6):
            writer.write(entry)
    text = out.getvalue()
    header = text.splitlines()[0].split(",")
    assert header[:7] == [
        "key",
        "scope",
        "revision",
        "created",
        "updated",
        "user_ids",
        "attributes",
    ]
    assert "value" in header  # the array value has no fields
    assert {"value.id", "value.coins", "value.extra0", "value.extra1", "value.s"} <= set(header)
    # Values mixing objects and a non-object need both shapes; read back per shape.
    objects = io.StringIO()
    with CsvWriter(objects) as writer:
        for entry in entries(6):
            if entry.value_json.startswith("{"):
                writer.write(entry)
    back = {
        r.key: r for r in read_csv(io.StringIO(objects.getvalue())) if isinstance(r, ImportRecord)
    }
    assert loads_exact(back["player_1"].value_json) == loads_exact(BIG)
    assert back["player_1"].attributes == {"team": "red"} and back["player_1"].user_ids == [1]
    assert json.loads(back["strings"].value_json) == {
        "s": "5",
        "t": "true",
        "e": "",
        "plain": "hi, there",
    }
    assert json.loads(back["k4"].value_json) == {"coins": 4, "extra1": [4]}  # absent stays absent


def test_sqlite_export(tmp_path: Path) -> None:
    path = tmp_path / "export.sqlite"
    with SqliteWriter(path) as writer:
        for entry in entries(2500):
            writer.write(entry)
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM entries").fetchone() == (2500,)
    row = db.execute(
        "SELECT value_json, attributes, user_ids, created FROM entries WHERE key='player_1'"
    ).fetchone()
    assert row == (BIG, '{"team":"red"}', "[1]", "2026-03-10T12:00:00Z")
    db.close()


@pytest.mark.parametrize("make", ["jsonl", "csv", "sqlite"])
def test_exports_stream_without_holding_entries(make: str, tmp_path: Path) -> None:
    def peak(n: int) -> int:
        value = json.dumps({"blob": "x" * 2000})
        tracemalloc.start()
        sink: object
        if make == "jsonl":
            sink = JsonLinesWriter(open(tmp_path / f"{n}.jsonl", "w", encoding="utf-8"))  # noqa: SIM115
        elif make == "csv":
            sink = CsvWriter(open(tmp_path / f"{n}.csv", "w", encoding="utf-8", newline=""))  # noqa: SIM115
        else:
            sink = SqliteWriter(tmp_path / f"{n}.sqlite")
        for i in range(n):
            sink.write(ExportEntry(key=f"k{i}", value_json=value))  # type: ignore[attr-defined]
        sink.close()  # type: ignore[attr-defined]
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(500), peak(5000)
    # Ten times the entries (10 MB of values) must not mean ten times the memory.
    assert large < small * 2 + 512 * 1024, (small, large)


def jsonl(*lines: str | bytes) -> list[ImportRecord | BadLine]:
    data = b"\n".join(x.encode() if isinstance(x, str) else x for x in lines) + b"\n"
    return list(read_jsonl(io.BytesIO(data)))


def test_import_reports_every_bad_line_by_number() -> None:
    results = jsonl(
        '{"key": "ok", "value": {"a": 1}}',
        '{"key": "' + "k" * 51 + '", "value": 1}',
        '{"key": "big", "value": "' + "x" * (4 * 1024 * 1024) + '"}',
        '{"key": "notjson", "value": }',
        '{"key": "attrs", "value": 1, "attributes": {"a": "' + "x" * 300 + '"}}',
        '{"key": "users", "value": 1, "user_ids": [1, 2, 3, 4, 5]}',
        '{"key": "negative", "value": 1, "user_ids": [-1]}',
        '{"key": "ok", "value": 2}',
        b'{"key": "bad\xff", "value": 1}',
        '{"key": "nan", "value": NaN}',
        '{"value": 1}',
        '{"key": "x", "value": 1, "valeu": 2}',
        "",
        '{"key": "ok", "scope": "other", "value": 3}',
        '{"key": "twice", "key": "again", "value": 3}',
        "[1, 2]",
        '{"key": 5, "value": 1}',
        '{"key": "hugeattrs", "value": 1, "attributes": [1]}',
    )
    report = validate(results)
    bad = {b.line: b.message for b in report.bad}
    assert report.valid == 2 and report.lines == 17 and report.bad_count == 15
    assert "at most 50 bytes" in bad[2]
    assert "4194304 bytes" in bad[3]
    assert "not a JSON object" in bad[4]
    assert "under 300 bytes" in bad[5]
    assert "user_ids" in bad[6] and "at most 4" in bad[6]
    assert "user_ids" in bad[7]
    assert "already on line 1" in bad[8]
    assert "not UTF-8" in bad[9]
    assert "NaN is not JSON" in bad[10]
    assert 'needs "key" and "value"' in bad[11]
    assert "unknown field(s) valeu" in bad[12]
    assert 14 not in bad  # the same key in another scope is fine; blank line 13 is skipped
    assert "repeated field(s) key" in bad[15]
    assert "not a JSON object" in bad[16]
    assert "key must be a string" in bad[17]
    assert "attributes" in bad[18]
    assert not report.ok
    assert "line 2:" in report.describe() and "2 of 17 lines are valid" in report.describe()


def test_an_overlong_line_is_reported_without_reading_it_into_memory() -> None:
    long_line = b'{"key": "k", "value": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}'
    results = jsonl(long_line, '{"key": "after", "value": 1}')
    assert isinstance(results[0], BadLine) and "longer than" in results[0].message
    assert isinstance(results[1], ImportRecord) and results[1].line == 2


def test_csv_import_checks_header_rows_and_cells() -> None:
    text = (
        "key,scope,user_ids,attributes,value.coins,value.name\n"
        'a,,"[1]","{""t"": 1}",5,Zoë\n'
        "b,s2,,,not json text,\n"
        'c,,"[1,2,3,4,5]",,1,x\n'
        "d,,,,1\n"
        ",,,,1,x\n"
        'e,,"[1",,1,x\n'
    )
    results = list(read_csv(io.StringIO(text)))
    good = {r.key: r for r in results if isinstance(r, ImportRecord)}
    bad = {r.line: r.message for r in results if isinstance(r, BadLine)}
    assert json.loads(good["a"].value_json) == {"coins": 5, "name": "Zoë"}
    assert good["a"].scope == "global" and good["a"].attributes == {"t": 1}
    assert json.loads(good["b"].value_json) == {"coins": "not json text"}
    assert good["b"].scope == "s2" and good["b"].user_ids is None
    assert "at most 4" in bad[4]
    assert "has 5 cells" in bad[5]
    assert "key must be at least 1 byte" in bad[6]
    assert "must be JSON" in bad[7]
    header_problems = [
        ("scope,value\n", '"key" column'),
        ("key,value,value.a\n", "not both"),
        ("key,scope\n", '"value" column'),
    ]
    for header, message in header_problems:
        (only,) = list(read_csv(io.StringIO(header + "x,1\n")))
        assert isinstance(only, BadLine) and message in only.message
    assert list(read_csv(io.StringIO(""))) == []


def record(
    value: str, attributes: dict[str, object] | None = None, user_ids: list[int] | None = None
) -> ImportRecord:
    return ImportRecord(1, "k", "global", value, attributes, user_ids)


CURRENT = CurrentEntry(
    '{"coins":5,"inv":{"sword":1,"bow":2},"id":12345678901234567890}', {"t": "a"}, [7]
)


def test_create_only_creates_missing_and_skips_existing() -> None:
    action = plan_import("create_only", record('{"a":1}'), None)
    assert (action.action, action.value_json, action.user_ids) == ("create", '{"a":1}', [])
    assert plan_import("create_only", record('{"a":1}'), CURRENT).action == "skip"


def test_overwrite_replaces_and_carries_metadata_over_when_not_given() -> None:
    action = plan_import("overwrite", record('{"a":1}'), CURRENT)
    assert (action.action, action.value_json) == ("update", '{"a":1}')
    assert (action.attributes, action.user_ids) == ({"t": "a"}, [7])
    action = plan_import("overwrite", record('{"a":1}', {"new": 1}, []), CURRENT)
    assert (action.attributes, action.user_ids) == ({"new": 1}, [])
    same = plan_import("overwrite", record(CURRENT.value_json), CURRENT)
    assert (same.action, same.reason) == ("skip", "already as in the file")


def test_merge_is_rfc_7396_and_keeps_numbers_exact() -> None:
    action = plan_import(
        "merge", record('{"coins":6,"inv":{"bow":null,"axe":1},"new":[1]}', {"u": 2}), CURRENT
    )
    assert action.action == "update"
    assert action.value_json == (
        '{"coins":6,"inv":{"sword":1,"axe":1},"id":12345678901234567890,"new":[1]}'
    )
    assert action.attributes == {"t": "a", "u": 2} and action.user_ids == [7]
    created = plan_import("merge", record('{"a":{"b":null,"c":1.50}}'), None)
    assert created.value_json == '{"a":{"c":1.50}}'
    replaced = plan_import("merge", record("[1,2]"), CURRENT)
    assert replaced.value_json == "[1,2]"
    too_big = plan_import("merge", record("{}", {"x": "y" * 290}), CURRENT)
    assert too_big.action == "skip" and "under 300 bytes" in too_big.reason
    with pytest.raises(ValueError, match="unknown import mode"):
        plan_import("upsert", record("1"), None)  # type: ignore[arg-type]


def test_merge_patch_examples_from_rfc_7396() -> None:
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch(["a", "b"], ["c", "d"]) == ["c", "d"]
    assert merge_patch({"a": "foo"}, None) is None
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}


def test_json_text_helpers() -> None:
    text = ' { "a" : [1, 2] , "b":{"c":"}"} , "a": 12345678901234567890 } '
    assert [(n, text[s:e]) for n, s, e in object_members(text)] == [
        ("a", "[1, 2]"),
        ("b", '{"c":"}"}'),
        ("a", "12345678901234567890"),
    ]
    for bad in ("[]", "{", '{"a" 1}', '{"a":1,}', '{"a":1} x', '{"a":tru}'):
        with pytest.raises(JsonTextError):
            object_members(bad)
    assert object_members("{}") == []
    value = '{"x":[1.0,-0,1E+400,"é",true,null,{}]}'
    assert dumps_exact(loads_exact(value)) == value
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(JsonTextError, match="nested too deeply"):
        loads_exact(deep)
