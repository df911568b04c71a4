"""The audit chain's records: how one is built, hashed and checked. Pure; no I/O.

A record is one JSON entry `r<seq:012d>` in the audit data store:

    {"v": 1, "prev": <hash of record seq-1>, "hash": <this record's hash>,
     "chained": {"seq", "at", "server", "events": [...]},
     "redactable": [{"key", "user_ids", "salt"} | null, ...]}

`hash = sha256(prev + "\\n" + canonical JSON of chained)`, so changing, removing or reordering a
record breaks every later link. Records hold no values. What identifies a player (the entry key
and its user ids) is kept out of the chain: the chained event carries only a salted commitment
`subject = sha256(salt || canonical [key, user_ids])`, and the key, user ids and salt sit in
`redactable`. Erasing a player removes their `redactable` item: the chain still verifies, and the
commitment alone (without its salt) cannot be matched to a key by guessing.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared_schema.identity import Person, make_person

from .names import audit_seq

GENESIS = "0" * 64
FORMAT = 1
# One record stays small (well under a data store value's 4 MB) and quick to read.
MAX_EVENTS_PER_RECORD = 100


class ChainFormatError(ValueError):
    """A record that is not an audit record of this format."""


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(prev: str, chained: dict[str, Any]) -> str:
    return hashlib.sha256(f"{prev}\n{canonical(chained)}".encode()).hexdigest()


def commitment(salt: str, key: str, user_ids: list[int]) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + canonical([key, user_ids]).encode()).hexdigest()


@dataclass(frozen=True)
class AuditEvent:
    """One thing to record: a write (kind `write`), a job (`job`) or a team action (`team`)."""

    kind: str
    operation: str
    person: Person
    store_kind: str | None = None
    datastore: str | None = None
    scope: str | None = None
    key: str | None = None
    user_ids: tuple[int, ...] = ()
    status: str | None = None
    revision: str | None = None
    journal_id: int | None = None
    job_id: str | None = None
    summary: str | None = None
    # Appended with its commitment but without its redactable item (an erased player's event
    # that had not been appended yet).
    redacted: bool = False


def _person_fields(person: Person) -> dict[str, Any]:
    return {
        "id": person.studio_user_id,
        "name": person.studio_user_name,
        "token": person.token_name,
    }


def person_from(fields: Any) -> Person:
    if not isinstance(fields, dict):
        return make_person(None, None, None)
    user_id = fields.get("id")
    name = fields.get("name")
    token = fields.get("token")
    return make_person(
        user_id if isinstance(user_id, int) and user_id > 0 else None,
        name if isinstance(name, str) else None,
        token if isinstance(token, str) else None,
    )


def build_record(
    seq: int, prev: str, at_ms: int, server_id: str, events: list[AuditEvent]
) -> tuple[str, str]:
    """(record JSON, its hash) for `events` appended after the record whose hash is `prev`."""
    chained_events: list[dict[str, Any]] = []
    redactable: list[dict[str, Any] | None] = []
    for event in events:
        item: dict[str, Any] = {
            "kind": event.kind,
            "op": event.operation,
            "by": _person_fields(event.person),
        }
        optional = {
            "store_kind": event.store_kind,
            "datastore": event.datastore,
            "scope": event.scope,
            "status": event.status,
            "revision": event.revision,
            "journal_id": event.journal_id,
            "job_id": event.job_id,
            "summary": event.summary,
        }
        item.update({k: v for k, v in optional.items() if v is not None})
        if event.key is not None:
            salt = secrets.token_hex(16)
            ids = list(event.user_ids)
            item["subject"] = commitment(salt, event.key, ids)
            redactable.append(
                None if event.redacted else {"key": event.key, "user_ids": ids, "salt": salt}
            )
        else:
            redactable.append(None)
        chained_events.append(item)
    chained = {"seq": seq, "at": at_ms, "server": server_id, "events": chained_events}
    digest = record_hash(prev, chained)
    text = canonical(
        {"v": FORMAT, "prev": prev, "hash": digest, "chained": chained, "redactable": redactable}
    )
    return text, digest


@dataclass(frozen=True)
class Record:
    seq: int
    prev: str
    hash: str
    chained: dict[str, Any]
    redactable: list[Any]
    problems: tuple[str, ...] = field(default=())

    @property
    def events(self) -> list[dict[str, Any]]:
        events = self.chained.get("events")
        return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []


def parse_record(text: str) -> Record:
    """Parse one record and check it on its own: its hash, its commitments."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ChainFormatError(f"not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("v") != FORMAT:
        raise ChainFormatError("not an audit record of format 1")
    chained, prev, stored = data.get("chained"), data.get("prev"), data.get("hash")
    if not isinstance(chained, dict) or not isinstance(prev, str) or not isinstance(stored, str):
        raise ChainFormatError("missing chained, prev or hash")
    seq = chained.get("seq")
    if not isinstance(seq, int) or seq < 1:
        raise ChainFormatError("missing seq")
    redactable = data.get("redactable")
    redactable = redactable if isinstance(redactable, list) else []
    problems: list[str] = []
    if record_hash(prev, chained) != stored:
        problems.append("its content does not match its hash (the record was changed)")
    record = Record(seq, prev, stored, chained, redactable)
    for index, event in enumerate(record.events):
        subject = event.get("subject")
        item = redactable[index] if index < len(redactable) else None
        if isinstance(subject, str) and isinstance(item, dict):
            key, ids, salt = item.get("key"), item.get("user_ids"), item.get("salt")
            ok = (
                isinstance(key, str)
                and isinstance(ids, list)
                and isinstance(salt, str)
                and _hex(salt)
                and commitment(salt, key, [i for i in ids if isinstance(i, int)]) == subject
            )
            if not ok:
                problems.append(f"event {index}: the key or user ids do not match the chain")
    return Record(seq, prev, stored, chained, redactable, tuple(problems))


def _hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


# Whether a redactable item goes: (the chained event, its redactable item).
ItemPicker = Callable[[dict[str, Any], dict[str, Any]], bool]


def redact_record(text: str, picks: ItemPicker) -> tuple[str, int] | None:
    """The record with every redactable item `picks` chooses nulled, and how many were; None
    when it has none to remove (or is not a record). The chained part and hash are untouched,
    so the chain still verifies. A whole item goes or stays: the commitment covers the key and
    user ids together, so taking one id out of an item would no longer match the chain."""
    try:
        record = parse_record(text)
    except ChainFormatError:
        return None
    redactable = list(record.redactable)
    removed = 0
    for index, event in enumerate(record.events):
        item = redactable[index] if index < len(redactable) else None
        if isinstance(item, dict) and picks(event, item):
            redactable[index] = None
            removed += 1
    if not removed:
        return None
    data = json.loads(text)
    data["redactable"] = redactable
    return canonical(data), removed


def redacted_events(record: Record) -> int:
    count = 0
    for index, event in enumerate(record.events):
        item = record.redactable[index] if index < len(record.redactable) else None
        if "subject" in event and not isinstance(item, dict):
            count += 1
    return count


@dataclass(frozen=True)
class Verdict:
    ok: bool
    records: int
    redacted: int
    head: tuple[int, str] | None
    problems: list[tuple[int | None, str]]


def verify(stored: list[tuple[str, str | None]], known_head: tuple[int, str] | None) -> Verdict:
    """Check a whole chain as read: `stored` is (entry key, record JSON or None when the key is
    listed but could not be read), in any order. `known_head` is the newest head this server
    had seen; the chain must still contain it."""
    problems: list[tuple[int | None, str]] = []
    by_seq: dict[int, Record] = {}
    for key, text in stored:
        seq = audit_seq(key)
        if seq is None:
            problems.append((None, f"entry {key!r} is not an audit record key"))
            continue
        if text is None:
            problems.append((seq, "the record is listed but cannot be read (deleted?)"))
            continue
        try:
            record = parse_record(text)
        except ChainFormatError as exc:
            problems.append((seq, f"unreadable: {exc}"))
            continue
        if record.seq != seq:
            problems.append((seq, f"holds record #{record.seq} (records were moved)"))
        problems.extend((seq, p) for p in record.problems)
        by_seq[seq] = record
    last = max(by_seq, default=0)
    prev_hash = GENESIS
    redacted = 0
    for seq in range(1, last + 1):
        found = by_seq.get(seq)
        if found is None:
            problems.append((seq, "missing (the record was removed)"))
            prev_hash = ""  # the next link cannot be checked against a removed record
            continue
        if prev_hash and found.prev != prev_hash:
            problems.append((seq, "does not follow the record before it (reordered or rewritten)"))
        prev_hash = found.hash
        redacted += redacted_events(found)
    head = (last, by_seq[last].hash) if last else None
    if known_head is not None and known_head[0] > 0:
        seen_seq, seen_hash = known_head
        seen = by_seq.get(seen_seq)
        if last < seen_seq:
            problems.append(
                (
                    seen_seq,
                    f"the chain ends at #{last}, but this server had seen it reach #{seen_seq} "
                    "(records were cut off the end)",
                )
            )
        elif seen is not None and seen.hash != seen_hash:
            problems.append(
                (
                    seen_seq,
                    "differs from the record this server saw at that position (the chain was "
                    "rewritten)",
                )
            )
    problems.sort(key=lambda p: p[0] if p[0] is not None else -1)
    return Verdict(not problems, len(by_seq), redacted, head, problems)
