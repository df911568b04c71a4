"""What the team audit log keeps about a player, for the erasure report. Reads only the local
copy; rewrites nothing.

Each audit event of a write keeps, in the record's `redactable` part, the entry's key and user
ids in clear; its hashed part keeps the data store, scope, operation, status, revision, journal
id, job id, time and teammate, and a salted commitment to the key and user ids. No values and
no value hashes. The records live in the universe's `dsm-team-audit` data store, shared by the
team, and every teammate's server keeps a sealed copy: an erasure here does not rewrite them,
so the report counts the events naming the player and says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime

from shared_schema.entries import StoreKind

from ..backups.archive import EntryName
from ..erasure import ErasureRules, ScrubOutcome, utc_now
from .chain import AuditEvent, ChainFormatError, parse_record
from .names import AUDIT_STORE

WHAT_IT_HOLDS = (
    "each write event keeps the entry's key and user ids in clear (its redactable part) and, "
    "hashed into the chain, the data store, scope, operation, status, revision, journal id, "
    "job id, time and teammate with a salted commitment to the key and user ids; no values or "
    "value hashes"
)


def audit_log_outcome(
    rules: ErasureRules,
    universe_id: int,
    records: Iterable[tuple[int, str]],
    pending: Iterable[AuditEvent] = (),
    *,
    team_on: bool,
    clock: Callable[[], datetime] = utc_now,
) -> ScrubOutcome:
    """Count the events of the local copy (`records`: (seq, record JSON)) that name the
    player's keys, list the user id, or mention it in a job summary; and those `pending`
    (not appended yet: the erasure's own writes are audited too)."""
    outcome = ScrubOutcome(
        where="audit_log",
        method=f"not rewritten: {WHAT_IT_HOLDS}",
        at=clock(),
    )
    mention = re.compile(rf"(?<![0-9]){rules.user_id}(?![0-9])")
    kept = keys = listed = summaries = 0
    named_records: set[int] = set()
    for seq, text in records:
        kept += 1
        try:
            record = parse_record(text)
        except ChainFormatError:
            continue
        for index, event in enumerate(record.events):
            item = record.redactable[index] if index < len(record.redactable) else None
            summary = event.get("summary")
            if isinstance(summary, str) and mention.search(summary):
                summaries += 1
                named_records.add(seq)
            if not isinstance(item, dict) or not isinstance(item.get("key"), str):
                continue
            ids = [i for i in item.get("user_ids") or [] if isinstance(i, int)]
            kind = event.get("store_kind")
            name = EntryName(
                StoreKind(kind) if kind in ("standard", "ordered") else StoreKind.STANDARD,
                str(event.get("datastore", "")),
                str(event.get("scope", "")),
                item["key"],
            )
            if rules.match(name) is not None:
                keys += 1
            elif rules.user_id in ids:
                listed += 1
            else:
                continue
            named_records.add(seq)
    if not team_on and kept == 0:
        outcome.details.append(
            f"team sync is off for universe {universe_id} and this server keeps no copy of its "
            "audit log"
        )
        return outcome
    waiting = sum(1 for event in pending if _names_player(rules, event))
    found = keys + listed + summaries + waiting
    outcome.details.append(
        f"this server's copy holds {kept} record(s) of universe {universe_id}'s audit log "
        f"(data store {AUDIT_STORE}): {keys} event(s) name the player's keys, {listed} list "
        f"the user id, {summaries} job summaries mention it, in {len(named_records)} record(s)"
    )
    if waiting:
        outcome.details.append(
            f"{waiting} event(s) about the player wait to be appended (this erasure's own "
            "writes are audited like any other)"
        )
    outcome.details.append(
        "records teammates appended that this server has not copied yet are not counted"
    )
    if found:
        outcome.problems.append(
            f"the team audit log keeps {found} event(s) about the player in {AUDIT_STORE} and "
            "in every teammate's copy: this erasure does not rewrite shared audit records"
        )
    return outcome


def _names_player(rules: ErasureRules, event: AuditEvent) -> bool:
    if event.summary is not None and re.search(
        rf"(?<![0-9]){rules.user_id}(?![0-9])", event.summary
    ):
        return True
    if event.key is None:
        return False
    kind = StoreKind(event.store_kind) if event.store_kind == "ordered" else StoreKind.STANDARD
    name = EntryName(kind, event.datastore or "", event.scope or "", event.key)
    return rules.match(name, event.user_ids) is not None
