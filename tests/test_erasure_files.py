"""Erasure in the files jobs leave (exports, uploads) and in the team audit log.

Export files are made by the export writers themselves; the audit records by the chain's own
`build_record`. (End to end through the HTTP API: tests/test_backup_jobs.py.)
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from dsm.services.erasure import ErasurePatterns, ErasureRules
from dsm.services.jobs.erasure_files import (
    ExportOrigin,
    mentions,
    scrub_exports,
    uploads_mentioning,
)
from dsm.services.jobs.formats import CsvWriter, ExportEntry, JsonLinesWriter, SqliteWriter
from dsm.services.team.audit import Redaction, redact_copy
from dsm.services.team.chain import GENESIS, AuditEvent, build_record, redact_record, verify
from dsm.services.team.erasure import (
    audit_log_outcome,
    item_picker,
    kept_summaries,
    pending_scrubber,
)
from dsm.services.team.names import audit_key
from dsm.services.team.store import TeamStore
from dsm.storage.crypto import RecordCipher
from shared_schema.entries import StoreKind
from shared_schema.identity import make_person

USER = 4321987
OTHER = 77
RULES = ErasureRules(
    USER,
    ErasurePatterns(standard={"*": ["Player_{userId}"], "Inventory": ["{userId}_inventory"]}),
)
ENTRIES = [
    ExportEntry(f"Player_{USER}", '{"gold":12345678901234567890,"secret":"mine"}', user_ids=[USER]),
    ExportEntry(f"Player_{OTHER}", '{"gold":1}', "eu", {"v": 1}, [OTHER]),
    ExportEntry("guild_1", '{"name":"shared"}', user_ids=[OTHER, USER]),
    ExportEntry(f"{USER}_inventory", '["sword"]'),
]


def write_exports(folder: Path) -> None:
    folder.mkdir()
    with open(folder / "a.jsonl", "w", encoding="utf-8") as out, JsonLinesWriter(out) as jsonl:
        for entry in ENTRIES:
            jsonl.write(entry)
    with open(folder / "a.csv", "w", encoding="utf-8", newline="") as out, CsvWriter(out) as csv:
        for entry in ENTRIES:
            csv.write(entry)
    with SqliteWriter(folder / "a.sqlite") as db:
        for entry in ENTRIES:
            db.write(entry)


def test_every_export_format_is_rewritten_without_the_player(tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    write_exports(folder)
    (folder / "a.jsonl").chmod(0o640)
    # a.jsonl came from a job that read only "Players": "{userId}_inventory" is Inventory's.
    origins = {"a.jsonl": ExportOrigin(datastores=("Players",), store_kind=StoreKind.STANDARD)}
    outcome = scrub_exports(folder, RULES, origins)

    assert outcome.where == "exports" and outcome.problems == []
    assert outcome.details == [
        "exports/a.csv: rewritten, 2 entries removed, 1 with the user id taken out (the patterns "
        "of every store applied)",
        "exports/a.jsonl: rewritten, 1 entries removed, 1 with the user id taken out",
        "exports/a.sqlite: rewritten, 2 entries removed, 1 with the user id taken out (the "
        "patterns of every store applied)",
    ]
    assert (outcome.removed, outcome.changed) == (5, 3)
    lines = [json.loads(line) for line in (folder / "a.jsonl").open(encoding="utf-8")]
    assert [(row["key"], row["user_ids"]) for row in lines] == [
        (f"Player_{OTHER}", [OTHER]),
        ("guild_1", [OTHER]),
        (f"{USER}_inventory", []),  # not a pattern of the store this export read
    ]
    # Lines kept are byte for byte what the writer wrote (big numbers included).
    assert '"value":{"gold":1},"attributes":{"v":1}' in (folder / "a.jsonl").read_text()
    assert (folder / "a.jsonl").stat().st_mode & 0o777 == 0o640
    csv_text = (folder / "a.csv").read_text(encoding="utf-8")
    assert "mine" not in csv_text and f"Player_{OTHER}" in csv_text and "guild_1" in csv_text
    with sqlite3.connect(folder / "a.sqlite") as db:
        rows = db.execute("SELECT key, user_ids FROM entries ORDER BY key").fetchall()
    assert rows == [(f"Player_{OTHER}", f"[{OTHER}]"), ("guild_1", f"[{OTHER}]")]
    for path in (folder / "a.csv", folder / "a.sqlite"):
        assert str(USER).encode() not in path.read_bytes(), path
    assert sorted(p.name for p in folder.iterdir()) == ["a.csv", "a.jsonl", "a.sqlite"]

    again = scrub_exports(folder, RULES, origins)
    assert (again.removed, again.changed) == (0, 0)
    assert "exports/a.csv: holds none of the player's entries" in again.details[0]


def test_files_it_cannot_rewrite_are_listed_not_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "notes.txt").write_text(f"call player {USER} back\n")
    (folder / "other.txt").write_text(f"player {USER}0 is someone else\n")
    (folder / "broken.jsonl").write_text(f'{{"key":"Player_{USER}", "value":\n')
    (folder / "nokey.csv").write_text(f"name,user_ids\nx,[{USER}]\n")
    (folder / "empty.sqlite").write_bytes(b"")
    (folder / ".job_1.partial.jsonl").write_text(f'{{"key":"Player_{USER}","value":1}}\n')
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    outcome = scrub_exports(folder, RULES, {})

    assert outcome.problems == [
        "exports/.job_1.partial.jsonl was not scrubbed: it is an export being written (or one "
        "that was interrupted); run the erasure again once it has finished, or delete it",
        "exports/broken.jsonl was not scrubbed: line 1 is not an export line (Expecting value "
        "at character 34); it mentions the user id",
        'exports/nokey.csv was not scrubbed: it has no "key" column; it mentions the user id',
        "exports/notes.txt was not scrubbed: it is not a JSON Lines, CSV or SQLite export; it "
        "mentions the user id",
    ]
    assert outcome.details == [
        "exports/empty.sqlite: not readable as an export (it has no export table (no such "
        "table: entries)); it does not mention the user id",
        "exports/other.txt: not readable as an export (it is not a JSON Lines, CSV or SQLite "
        "export); it does not mention the user id",
    ]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_uploads_mentioning_the_user_id_are_found_across_blocks(tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    folder.mkdir()
    # The id straddles the 1 MiB read boundary.
    straddling = b"x" * (1024 * 1024 - 3) + str(USER).encode() + b"\n"
    (folder / "a.bin").write_bytes(straddling)
    (folder / "b.bin").write_bytes(f"{USER}1 and 9{USER}\n".encode())
    (folder / "c.bin").write_bytes(f'{{"user_ids":[{USER}]}}'.encode())
    assert mentions(folder / "a.bin", USER) and not mentions(folder / "b.bin", USER)
    assert [p.name for p in uploads_mentioning(folder, USER)] == ["a.bin", "c.bin"]
    assert uploads_mentioning(tmp_path / "missing", USER) == []


def audit_chain(events: list[list[AuditEvent]]) -> list[tuple[int, str]]:
    prev, out = GENESIS, []
    for seq, batch in enumerate(events, 1):
        text, prev = build_record(seq, prev, 1_700_000_000_000 + seq, "srvA", batch)
        out.append((seq, text))
    return out


def write(datastore: str, key: str, user_ids: tuple[int, ...] = ()) -> AuditEvent:
    return AuditEvent(
        kind="write",
        operation="update",
        person=make_person(1, "Alex", "Studio"),
        store_kind="standard",
        datastore=datastore,
        scope="global",
        key=key,
        user_ids=user_ids,
        status="APPLIED",
    )


def test_redaction_takes_the_player_out_and_the_chain_still_verifies(tmp_path: Path) -> None:
    person = make_person(1, "Alex", "Studio")
    records = audit_chain(
        [
            [write("Players", f"Player_{USER}", (USER,)), write("Players", f"Player_{OTHER}")],
            [write("Guilds", "guild_1", (OTHER, USER)), write("Players", f"Player_{USER}0")],
            [AuditEvent("job", "failed", person, summary=f"erase job for {USER} failed")],
            [write("Inventory", f"{USER}_inventory"), write("Players", f"{USER}_inventory")],
        ]
    )
    picks = item_picker(RULES)
    redacted: list[tuple[int, str]] = []
    removed = 0
    for seq, text in records:
        found = redact_record(text, picks)
        if found is not None:
            removed += found[1]
            text = found[0]
        redacted.append((seq, text))
        # Only the redactable part changes: the chained part and the hash stay as they were.
        assert json.loads(text)["chained"] == json.loads(records[seq - 1][1])["chained"]

    assert removed == 3  # Player_USER, guild_1 (shared: the whole item goes), Inventory's
    verdict = verify([(audit_key(seq), text) for seq, text in redacted], None)
    assert verdict.ok and verdict.redacted == 3, verdict.problems
    left = [item for _, text in redacted for item in json.loads(text)["redactable"] if item]
    assert [(i["key"], i["user_ids"]) for i in left] == [
        (f"Player_{OTHER}", []),
        (f"Player_{USER}0", []),  # another key: the pattern names Player_{userId} exactly
        (f"{USER}_inventory", []),  # in Players, where only Player_{userId} is the player's
    ]
    assert redact_record(redacted[0][1], picks) is None  # nothing left to take out
    assert kept_summaries(RULES, redacted) == 1  # hashed into the chain: kept

    # Events still waiting: the item is dropped at append, a summary has the id masked.
    scrub = pending_scrubber(RULES)
    other = write("Players", "Player_1")
    assert scrub(other) is other
    mine = scrub(write("Players", f"Player_{USER}", (USER,)))
    job = scrub(AuditEvent("job", "failed", person, summary=f"job for {USER} failed"))
    assert mine.redacted and job.summary == "job for (erased player) failed"
    text, _ = build_record(5, verdict.head[1] if verdict.head else "", 1, "srvA", [mine, job])
    assert json.loads(text)["redactable"] == [None, None]
    chain = [*((audit_key(seq), t) for seq, t in redacted), (audit_key(5), text)]
    assert verify(chain, None).redacted == 4
    assert str(USER) not in text

    # This server's own copy, as kept on disk (sealed).
    store = TeamStore(tmp_path, RecordCipher(bytes(32)))
    try:
        for seq, text in records:
            store.keep_record(5, seq, json.loads(text)["hash"], text)
        seqs, rewritten, items = redact_copy(store, 5, picks)
        assert (seqs, rewritten, items) == ([1, 2, 4], 3, 3)
        assert sorted(store.records(5)) == redacted
        # Run again (say the shared store was unreachable the first time): the records that
        # hold redacted items are still named, so the shared ones are checked again.
        assert redact_copy(store, 5, picks) == ([1, 2, 4], 0, 0)
    finally:
        store.close()


def test_the_report_says_what_was_redacted_and_what_was_not() -> None:
    done = audit_log_outcome(
        5,
        Redaction(shared_records=2, shared_items=3, local_records=2, local_items=3,
                  pending_items=1),
        1,
    )  # fmt: skip
    assert done.where == "audit_log" and done.method.startswith("redacted: ")
    assert "no values or value hashes" in done.method
    assert (done.removed, done.changed) == (3, 2)
    assert done.details[:3] == [
        "dsm-team-audit (shared by the team): 2 record(s) rewritten, 3 item(s) redacted (each "
        "write conditional on the record's etag)",
        "this server's copy: 2 record(s) rewritten, 3 item(s) redacted",
        "1 event(s) waiting to be appended had the player taken out before appending (item "
        "dropped, user id masked in job summaries)",
    ]
    assert any("`dsm audit verify`" in d and "teammates'" in d for d in done.details)
    assert done.problems == [
        "1 job summary(ies) in the audit log mention the user id: kept, they are hashed into "
        "the chain (removing them would fail `dsm audit verify`)"
    ]

    offline = audit_log_outcome(
        5, Redaction(local_records=1, local_items=1, shared_left=1, problem="It is offline."), 0
    )
    assert offline.problems == [
        "1 record(s) of dsm-team-audit were not checked or rewritten: It is offline. Run the "
        "erasure again once team sync works."
    ]
    assert (offline.removed, offline.changed) == (0, 0)

    off = audit_log_outcome(5, None, 0)
    assert off.problems == [] and off.details == [
        "team sync is off for universe 5 and this server keeps no copy of its audit log"
    ]
