"""The audit chain on its own: every kind of tampering is named, erasure is not tampering.
(Against Open Cloud, through two servers: tests/test_team.py.)"""

from __future__ import annotations

import json

import pytest

from dsm.services.team.chain import GENESIS, AuditEvent, build_record, verify
from dsm.services.team.names import audit_key
from shared_schema.identity import make_person

ALEX = make_person(1001, "Alex", "Studio")


def chain(length: int) -> list[tuple[str, str | None]]:
    stored: list[tuple[str, str | None]] = []
    prev = GENESIS
    for seq in range(1, length + 1):
        event = AuditEvent(
            kind="write",
            operation="update",
            person=ALEX,
            store_kind="standard",
            datastore="PlayerData",
            scope="global",
            key=f"Player_{seq}",
            user_ids=(seq,),
            status="APPLIED",
            journal_id=seq,
        )
        text, prev = build_record(seq, prev, 1_700_000_000_000 + seq, "srvA", [event])
        stored.append((audit_key(seq), text))
    return stored


def edit(stored: list[tuple[str, str | None]], seq: int, change: object) -> None:
    key, text = stored[seq - 1]
    record = json.loads(text or "{}")
    change(record)  # type: ignore[operator]
    stored[seq - 1] = (key, json.dumps(record))


def problems(
    stored: list[tuple[str, str | None]], head: tuple[int, str] | None = None
) -> list[str]:
    verdict = verify(stored, head)
    return [f"#{seq}: {text}" for seq, text in verdict.problems]


def test_an_intact_chain_verifies_and_records_hold_no_values() -> None:
    stored = chain(5)
    verdict = verify(stored, None)
    assert verdict.ok and verdict.records == 5 and verdict.head is not None
    assert verdict.head[0] == 5
    assert all('"value' not in (text or "") for _, text in stored)


def test_a_changed_record_is_caught() -> None:
    stored = chain(5)
    edit(stored, 3, lambda r: r["chained"]["events"][0].update(op="delete"))
    assert problems(stored) == ["#3: its content does not match its hash (the record was changed)"]


def test_a_changed_record_with_a_recomputed_hash_breaks_the_next_link() -> None:
    from dsm.services.team.chain import record_hash

    stored = chain(5)

    def forge(record: dict) -> None:  # type: ignore[type-arg]
        record["chained"]["events"][0]["op"] = "delete"
        record["hash"] = record_hash(record["prev"], record["chained"])

    edit(stored, 3, forge)
    assert problems(stored) == ["#4: does not follow the record before it (reordered or rewritten)"]


def test_a_removed_record_is_caught() -> None:
    stored = chain(5)
    del stored[2]
    assert problems(stored) == ["#3: missing (the record was removed)"]


def test_reordered_records_are_caught() -> None:
    stored = chain(5)
    (k2, t2), (k3, t3) = stored[1], stored[2]
    stored[1], stored[2] = (k2, t3), (k3, t2)  # swap the contents of records 2 and 3
    found = problems(stored)
    assert "#2: holds record #3 (records were moved)" in found
    assert "#3: holds record #2 (records were moved)" in found


def test_a_cut_off_tail_is_caught_by_the_head_this_server_saw() -> None:
    stored = chain(5)
    head = verify(stored, None).head
    assert problems(stored[:3]) == []  # on its own the shorter chain looks fine
    assert problems(stored[:3], head) == [
        "#5: the chain ends at #3, but this server had seen it reach #5 (records were cut off "
        "the end)"
    ]


def test_a_rewritten_chain_is_caught_by_the_head_this_server_saw() -> None:
    original = chain(4)
    head = verify(original, None).head
    rewritten = chain(4)  # same events, fresh salts: every hash differs, every link holds
    assert problems(rewritten) == []
    assert problems(rewritten, head) == [
        "#4: differs from the record this server saw at that position (the chain was rewritten)"
    ]


def test_erasing_a_player_keeps_the_chain_valid() -> None:
    stored = chain(3)
    edit(stored, 2, lambda r: r.update(redactable=[None]))
    verdict = verify(stored, None)
    assert verdict.ok and verdict.redacted == 1


def test_a_key_swapped_in_the_redactable_part_is_caught() -> None:
    stored = chain(3)
    edit(stored, 2, lambda r: r["redactable"][0].update(key="Player_999"))
    assert problems(stored) == ["#2: event 0: the key or user ids do not match the chain"]


@pytest.mark.parametrize("text", [None, "not json", '{"v": 2}'])
def test_unreadable_records_are_named(text: str | None) -> None:
    stored = chain(2)
    stored[1] = (stored[1][0], text)
    assert len(problems(stored)) == 1
