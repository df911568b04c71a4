"""jq transforms: unchanged, changed, failures, limits, and numbers jq cannot hold exactly."""

from __future__ import annotations

import json
import time

import jq  # type: ignore[import-not-found]
import pytest

from dsm.services.jobs.transform import (
    JqTransform,
    TransformError,
    TransformOutcome,
    check_program,
    evaluate,
)
from shared_schema.constraints import MAX_JSON_DEPTH


def run(program: str, value_json: str) -> TransformOutcome:
    return evaluate(jq.compile(program), value_json)


def test_a_change_is_written_compactly_and_keeps_unicode() -> None:
    out = run(".coins *= 2 | del(.legacyField)", '{"coins": 5, "legacyField": 1, "name": "Zoë 😀"}')
    assert out.kind == "changed"
    assert out.value_json == '{"coins":10,"name":"Zoë 😀"}'


@pytest.mark.parametrize(
    ("program", "value"),
    [
        (".", '{"a": 1}'),
        (".a = 1", '{"a": 1.0}'),  # 1 and 1.0 are the same JSON number
        (".a = 0", '{"a": -0}'),
        ("del(.missing)", '{"a": [1, 2, {"b": null}]}'),
        (".name |= .", '{"name": "caf\\u00e9"}'),  # an escape and the character are the same text
        ("if .coins > 100 then .coins = 100 else . end", '{"coins": 5}'),
    ],
)
def test_output_equal_to_the_input_is_unchanged(program: str, value: str) -> None:
    assert run(program, value).kind == "unchanged"


def test_bool_and_number_are_not_confused() -> None:
    out = run(".a = true", '{"a": 1}')
    assert out.kind == "changed" and out.value_json == '{"a":true}'


@pytest.mark.parametrize(
    ("value", "pointer", "before", "after"),
    [
        ('{"coins": 1, "id": 9007199254740993}', "/id", "9007199254740993", "9007199254740992"),
        (
            '{"coins": 1, "big": 12345678901234567890123}',
            "/big",
            "12345678901234567890123",
            "12345678901234567741440",
        ),
        ('{"coins": 1, "huge": 1e400}', "/huge", "1E+400", "1.7976931348623157e+308"),
        (
            '{"coins": 1, "pi": 3.14159265358979323846264338327950288}',
            "/pi",
            "3.14159265358979323846264338327950288",
            "3.141592653589793",
        ),
        (
            '{"coins": 1, "deep": [{"id": -9007199254740995}]}',
            "/deep/0/id",
            "-9007199254740995",
            "-9007199254740996",
        ),
    ],
)
def test_untouched_numbers_jq_would_round_leave_the_entry_untouched(
    value: str, pointer: str, before: str, after: str
) -> None:
    out = run(".coins += 1", value)
    assert out.kind == "precision"
    assert out.value_json is None
    assert [(x.pointer, x.before, x.after) for x in out.losses] == [(pointer, before, after)]
    assert pointer in out.message and "did not compute" in out.message


def test_a_rounded_number_moved_elsewhere_is_still_caught() -> None:
    out = run("{player: ., version: 2}", '{"id": 9007199254740993}')
    assert out.kind == "precision"
    assert [x.pointer for x in out.losses] == ["/player/id"]


def test_deleting_or_recomputing_a_big_number_is_the_programs_choice() -> None:
    assert run("del(.id)", '{"id": 9007199254740993, "a": 1}').value_json == '{"a":1}'
    out = run(".id = 5", '{"id": 9007199254740993}')
    assert (out.kind, out.value_json) == ("changed", '{"id":5}')


def test_decimals_that_survive_doubles_are_fine() -> None:
    # 0.1 and 0.30000000000000004 are exactly what their doubles print as.
    out = run(".sum = .a + .b", '{"a": 0.1, "b": 0.2, "c": 0.30000000000000004, "d": -0}')
    assert out.kind == "changed"
    assert json.loads(out.value_json or "") == {
        "a": 0.1,
        "b": 0.2,
        "c": 0.30000000000000004,
        "d": 0,
        "sum": 0.30000000000000004,
    }


def test_a_no_op_on_a_value_with_big_numbers_is_unchanged_not_a_loss() -> None:
    out = run(".coins |= . + 0", '{"coins": 3, "id": 9007199254740993}')
    assert out.kind == "unchanged" and "only round numbers" in out.message


def test_program_errors_are_reported_with_jqs_message() -> None:
    out = run(".a.b", '{"a": 5}')
    assert out.kind == "failed" and "Cannot index number" in out.message
    out = run('error("no coins")', "{}")
    assert out.kind == "failed" and "no coins" in out.message


@pytest.mark.parametrize(("program", "count"), [(".[]", 2), ("empty", 0)])
def test_exactly_one_output_is_required(program: str, count: int) -> None:
    out = run(program, "[1, 2]")
    assert out.kind == "failed" and f"produced {count} values" in out.message


def test_outputs_that_cannot_be_stored_are_invalid() -> None:
    out = run('.blob = ("x" * 4194304)', "{}")
    assert out.kind == "invalid" and "4194304 bytes" in out.message
    # jq itself writes NaN as null, so nothing non-JSON can come out of it.
    assert run(".a = nan", "{}").value_json == '{"a":null}'
    nested = "[" * 3000 + "]" * 3000
    deep = run(f"{{a: {nested}}}", "{}")
    assert (deep.kind, deep.message) == (
        "invalid",
        "The output is nested too deeply to be compared.",
    )
    # Within the server's nesting limit (the object is one of its levels) the output is
    # written; one level more and the write path would refuse it, so it is invalid here.
    fine = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    assert run(f"{{a: {fine}}}", "{}").kind == "changed"
    over = run(f"{{a: [{fine}]}}", "{}")
    assert over.kind == "invalid" and f"deeper than {MAX_JSON_DEPTH} levels" in over.message


def test_a_stored_value_the_server_cannot_read_is_reported() -> None:
    out = run(".", "[" * 3000 + "]" * 3000)
    assert out.kind == "failed" and "not JSON the server can read" in out.message


def test_compile_errors_are_refused_up_front() -> None:
    with pytest.raises(TransformError, match="syntax error"):
        check_program(".coins *=")
    with pytest.raises(TransformError):
        JqTransform(".a +")


def test_the_worker_applies_programs_and_survives_a_runaway_one() -> None:
    with JqTransform(".coins *= 2") as program:
        assert program.apply('{"coins": 21}').value_json == '{"coins":42}'
        assert program.apply('{"coins": 1, "id": 9007199254740993}').kind == "precision"
    with JqTransform(
        "if .loop then [range(1e15)] | length else .n += 1 end", timeout=1.0
    ) as program:
        started = time.monotonic()
        out = program.apply('{"loop": true}')
        assert out.kind == "failed" and "longer than 1 s" in out.message
        assert time.monotonic() - started < 10
        # The worker was replaced: the next value works.
        assert program.apply('{"loop": false, "n": 1}').value_json == '{"loop":false,"n":2}'


def test_a_program_that_eats_memory_fails_without_taking_the_server_down() -> None:
    with JqTransform(
        "if .grow then [range(1e8)] | length else . end", timeout=20.0, memory_bytes=300 * 1024**2
    ) as program:
        out = program.apply('{"grow": true}')
        assert out.kind == "failed"
        assert program.apply('{"grow": false}').kind == "unchanged"
