"""The write journal as the user sees it: pages of journal items, undo, and settling after a
crash. Each journal item names its store kind, and this is the one place that picks the
standard or the ordered service for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from shared_schema.entries import DeleteResult, EntryOperation, EntryView, StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.identity import make_person
from shared_schema.journal import JournalItem, JournalPage, JournalStatus
from shared_schema.ordered import OrderedEntryView

from ..storage.journal import JournalRecord, Status, UndoNotPossible, UnknownRecord, WriteJournal
from .entries import EntryService
from .errors import ServiceError
from .journaled import Actor, settled
from .ordered import OrderedService

log = logging.getLogger("dsm.journal")

_STATUS = {
    Status.INTENT: JournalStatus.PENDING,
    Status.APPLIED: JournalStatus.APPLIED,
    Status.FAILED: JournalStatus.FAILED,
    Status.UNKNOWN: JournalStatus.UNKNOWN,
}

UndoResult = EntryView | DeleteResult | OrderedEntryView


def journal_item(record: JournalRecord) -> JournalItem:
    return JournalItem(
        id=record.id,
        at=datetime.fromtimestamp(record.at, UTC),
        actor=record.actor_name,
        person=make_person(record.actor_user_id, record.actor_user_name, record.actor_name),
        universe_id=int(record.universe),
        store_kind=StoreKind(record.store_kind),
        datastore=record.datastore,
        scope=record.scope,
        key=record.key,
        operation=EntryOperation(record.operation),
        status=_STATUS[record.status],
        before_sha256=record.before_sha256,
        after_sha256=record.after_sha256,
        revision_after=record.after_revision,
    )


@dataclass
class JournalService:
    journal: WriteJournal
    entries: EntryService
    ordered: OrderedService

    def page(
        self,
        *,
        universe: int | None,
        datastore: str | None,
        key: str | None,
        limit: int,
        before: int | None,
    ) -> JournalPage:
        """Newest first; `next_before` continues with older items."""
        records = self.journal.list(
            universe=universe, datastore=datastore, key=key, limit=limit + 1, before_id=before
        )
        page = records[:limit]
        return JournalPage(
            items=[journal_item(r) for r in page],
            next_before=page[-1].id if len(records) > limit and page else None,
        )

    async def undo(self, actor: Actor, journal_id: int, idempotency_key: str) -> UndoResult:
        """Undo one journaled write (any of them, newest first); see the services' `undo`."""
        done = self.journal.find_by_idempotency_key(idempotency_key)
        if done is not None:
            if done.undoes != journal_id:
                raise ServiceError(
                    ErrorCode.CONFLICT,
                    f"The idempotency key {idempotency_key} was already used for another write "
                    f"(journal item {done.id}); send this undo with a new key.",
                    details={"journal_id": done.id},
                )
            # A retried undo reports the first outcome (the plan would say "already undone").
            settled(done, idempotency_key)
            if done.store_kind == StoreKind.ORDERED.value:
                return await self.ordered.replay_undo(done)
            return await self.entries.replay_undo(done)
        try:
            plan = self.journal.undo_plan(journal_id)
        except UnknownRecord as exc:
            raise ServiceError(ErrorCode.NOT_FOUND, str(exc)) from None
        except UndoNotPossible as exc:
            raise ServiceError(ErrorCode.BAD_REQUEST, str(exc)) from None
        if plan.store_kind == StoreKind.ORDERED.value:
            return await self.ordered.undo(actor, plan, idempotency_key)
        return await self.entries.undo(actor, plan, idempotency_key)

    async def settle(self, record: JournalRecord) -> Status:
        """Settle one write left INTENT/UNKNOWN, by re-reading its key (never by re-sending)."""
        if record.store_kind == StoreKind.ORDERED.value:
            return await self.ordered.settle(record)
        return await self.entries.settle(record)

    async def reconcile_pending(self) -> dict[str, int]:
        """Settle every write left INTENT/UNKNOWN by a crash or a lost answer, by re-reading."""
        counts = {"applied": 0, "failed": 0, "unknown": 0}
        for record in self.journal.pending():
            status = await self.settle(record)
            counts[status.value.lower()] += 1
        return counts
