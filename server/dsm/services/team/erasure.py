"""Taking an erased player out of the team audit log, and saying so in the erasure report.

Each audit event of a write keeps, in the record's `redactable` part, the entry's key and user
ids in clear; its hashed part keeps the data store, scope, operation, status, revision, journal
id, job id, time and teammate, and a salted commitment to the key and user ids. No values and
no value hashes. An erasure nulls the redactable items of the player's events (a key matching
the erasure rules, or user ids listing the player) in the shared `dsm-team-audit` records, in
this server's copy and in the events waiting to be appended; the chain still verifies. A job
summary is hashed into the chain, so one that mentions the user id after it was appended is
kept (and said so); one still waiting has the id masked.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from shared_schema.entries import StoreKind

from ..backups.archive import EntryName
from ..erasure import ErasureRules, ScrubOutcome, utc_now
from .audit import Redaction
from .chain import AuditEvent, ChainFormatError, ItemPicker, parse_record
from .names import AUDIT_STORE

METHOD = (
    "redacted: the redactable item (key, user ids, salt) of every event naming the player's "
    "keys or listing the user id is nulled, outside the hash chain, so `dsm audit verify` still "
    "passes; an event of a shared entry loses its whole item (the commitment covers the key and "
    "user ids together); the chained part keeps the data store, scope, operation, status, "
    "revision, journal id, job id, time and teammate; no values or value hashes"
)
MASK = "(erased player)"


def _mention(rules: ErasureRules) -> re.Pattern[str]:
    return re.compile(rf"(?<![0-9]){rules.user_id}(?![0-9])")


def _names(rules: ErasureRules, kind: Any, datastore: Any, scope: Any, key: str, ids: Any) -> bool:
    name = EntryName(
        StoreKind.ORDERED if kind == "ordered" else StoreKind.STANDARD,
        str(datastore or ""),
        str(scope or ""),
        key,
    )
    user_ids = [i for i in ids or [] if isinstance(i, int)]
    return rules.match(name, user_ids) is not None


def item_picker(rules: ErasureRules) -> ItemPicker:
    """Picks the redactable items of a record that name the player."""

    def picks(event: dict[str, Any], item: dict[str, Any]) -> bool:
        key = item.get("key")
        return isinstance(key, str) and _names(
            rules, event.get("store_kind"), event.get("datastore"), event.get("scope"), key,
            item.get("user_ids"),
        )  # fmt: skip

    return picks


def pending_scrubber(rules: ErasureRules) -> Callable[[AuditEvent], AuditEvent]:
    """An event not appended yet, without the player: its item dropped, the id masked."""
    mention = _mention(rules)

    def scrub(event: AuditEvent) -> AuditEvent:
        summary = None if event.summary is None else mention.sub(MASK, event.summary)
        redacted = event.redacted or (
            event.key is not None
            and _names(rules, event.store_kind, event.datastore, event.scope, event.key,
                       event.user_ids)
        )  # fmt: skip
        if summary == event.summary and redacted == event.redacted:
            return event
        return dataclasses.replace(event, summary=summary, redacted=redacted)

    return scrub


def kept_summaries(rules: ErasureRules, records: Iterable[tuple[int, str]]) -> int:
    """Job summaries of the copy (hashed into the chain) that mention the user id."""
    mention = _mention(rules)
    found = 0
    for _, text in records:
        try:
            record = parse_record(text)
        except ChainFormatError:
            continue
        found += sum(
            1
            for event in record.events
            if isinstance(event.get("summary"), str) and mention.search(event["summary"])
        )
    return found


def audit_log_outcome(
    universe_id: int,
    redaction: Redaction | None,
    summaries: int,
    *,
    clock: Callable[[], datetime] = utc_now,
) -> ScrubOutcome:
    """The report's line for the audit log; `redaction` None: team sync off and no copy here."""
    outcome = ScrubOutcome(where="audit_log", method=METHOD, at=clock())
    if redaction is None:
        outcome.details.append(
            f"team sync is off for universe {universe_id} and this server keeps no copy of its "
            "audit log"
        )
        return outcome
    done = redaction
    outcome.removed, outcome.changed = done.shared_items, done.shared_records
    outcome.details += [
        f"{AUDIT_STORE} (shared by the team): {done.shared_records} record(s) rewritten, "
        f"{done.shared_items} item(s) redacted (each write conditional on the record's etag)",
        f"this server's copy: {done.local_records} record(s) rewritten, {done.local_items} "
        "item(s) redacted",
        f"{done.pending_items} event(s) waiting to be appended had the player taken out before "
        "appending (item dropped, user id masked in job summaries)",
        "teammates' servers keep their own sealed copies: each drops these items when it runs "
        "`dsm audit verify` (which re-reads every record); until then its copy and Activity "
        "view still hold them",
        "records appended after this erasure are not rewritten",
    ]
    if done.shared_records:
        outcome.details.append(
            "Roblox keeps each rewritten record's earlier version, with the items, in the "
            "entry's version history for up to 30 days"
        )
    if done.problem is not None:
        outcome.problems.append(
            f"{done.shared_left} record(s) of {AUDIT_STORE} were not checked or rewritten: "
            f"{done.problem} Run the erasure again once team sync works."
        )
    if summaries:
        outcome.problems.append(
            f"{summaries} job summary(ies) in the audit log mention the user id: kept, they "
            "are hashed into the chain (removing them would fail `dsm audit verify`)"
        )
    return outcome
