"""The write journal as the protocol shows it (metadata only; images stay sealed)."""

from __future__ import annotations

from datetime import UTC, datetime

from shared_schema.entries import EntryOperation, StoreKind
from shared_schema.journal import JournalItem, JournalStatus

from ..storage.journal import JournalRecord, Status

_STATUS = {
    Status.INTENT: JournalStatus.PENDING,
    Status.APPLIED: JournalStatus.APPLIED,
    Status.FAILED: JournalStatus.FAILED,
    Status.UNKNOWN: JournalStatus.UNKNOWN,
}


def journal_item(record: JournalRecord) -> JournalItem:
    ordered = record.operation.startswith("ordered-")
    return JournalItem(
        id=record.id,
        at=datetime.fromtimestamp(record.at, UTC),
        actor=record.actor_name,
        universe_id=int(record.universe),
        store_kind=StoreKind.ORDERED if ordered else StoreKind.STANDARD,
        datastore=record.datastore,
        scope=record.scope,
        key=record.key,
        operation=EntryOperation(record.operation.removeprefix("ordered-")),
        status=_STATUS[record.status],
        before_sha256=record.before_sha256,
        after_sha256=record.after_sha256,
        revision_after=record.after_revision,
    )
