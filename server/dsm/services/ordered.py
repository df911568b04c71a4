"""Ordered data stores (leaderboards): read through the cache, write through the journaled path.

Ordered entries have no revisions, etags or metadata, and Open Cloud has no conditional ordered
writes, so a write is compare-then-write: it re-reads the entry first (the journal's
before-image, and "does it exist?" for a clear message), then writes. That can race: a game
server writing in the short gap between the read and the write is overwritten, and its value
is not in the before-image. The docs and the conflict answers say so. What is safe:
- a lost answer is settled by the client by value (``expected_value``), never by repeating an
  increment;
- an increment journals its delta and is undone by adding -delta, keeping later writes;
- any other undo is conditional on the value our write left: if the entry holds anything else,
  someone wrote after us and the user decides.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from shared_schema.common import Backend
from shared_schema.entries import DeleteResult, EntryOperation, StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.ordered import OrderedEntry, OrderedEntryView, OrderedPage

from ..opencloud import errors as oc
from ..opencloud.client import OpenCloudClient
from ..opencloud.models import OrderedDataStoreEntry
from ..storage.cache import EntryCache
from ..storage.journal import EntryImage, JournalRecord, Status, UndoPlan, content_sha256
from .errors import ServiceError
from .journaled import Actor, Intent, JournaledWrites, Outcome, WriteTarget, require_kind
from .provenance import fresh
from .readthrough import ListCopy, ReadThrough
from .upstream import Upstream

log = logging.getLogger("dsm.ordered")

RACE_NOTE = (
    "Ordered data stores have no revisions or conditional writes, so a game server writing "
    "between our read and our write is overwritten."
)


@dataclass(frozen=True)
class OrderedRef:
    universe_id: int
    store: str
    scope: str
    entry_id: str

    @property
    def target(self) -> WriteTarget:
        return WriteTarget(
            StoreKind.ORDERED, self.universe_id, self.store, self.scope, self.entry_id
        )

    @property
    def subject(self) -> str:
        return self.target.subject

    @classmethod
    def of(cls, record: JournalRecord | UndoPlan) -> OrderedRef:
        return cls(int(record.universe), record.datastore, record.scope, record.key)


def _image(entry: OrderedDataStoreEntry | None) -> EntryImage | None:
    # The value as JSON text, so journal hashes and undo treat ordered values like entry values.
    return None if entry is None else EntryImage(str(entry.value))


def _outcome(entry: OrderedDataStoreEntry | None) -> Outcome:
    return Outcome(_image(entry))


async def _get_or_none(client: OpenCloudClient, ref: OrderedRef) -> OrderedDataStoreEntry | None:
    try:
        return await client.ordered_get(ref.universe_id, ref.store, ref.entry_id, scope=ref.scope)
    except oc.NotFound:
        return None


@dataclass
class OrderedService:
    upstream: Upstream
    cache: EntryCache
    reads: ReadThrough
    writes: JournaledWrites

    # ------------------------------------------------------------------ helpers

    def _backend(self, universe_id: int) -> Backend:
        return self.upstream.binding(universe_id).backend

    def _view(
        self, ref: OrderedRef, entry: OrderedDataStoreEntry, journal_id: int
    ) -> OrderedEntryView:
        return OrderedEntryView(
            universe_id=ref.universe_id,
            ordered_store=ref.store,
            scope=ref.scope,
            id=entry.id,
            value=entry.value,
            journal_id=journal_id,
            source=fresh(self._backend(ref.universe_id)),
        )

    async def _read_fresh(self, ref: OrderedRef) -> OrderedDataStoreEntry | None:
        """The entry straight from Open Cloud, None when it does not exist."""
        return await self.upstream.call(ref.universe_id, lambda c: _get_or_none(c, ref))

    # --------------------------------------------------------------------- reads

    async def list(
        self,
        universe_id: int,
        store: str,
        scope: str,
        *,
        descending: bool,
        min_value: int | None,
        max_value: int | None,
        cursor: str | None,
        limit: int,
    ) -> OrderedPage:
        if min_value is not None and max_value is not None and min_value > max_value:
            raise ServiceError(
                ErrorCode.BAD_REQUEST,
                f"min ({min_value}) is greater than max ({max_value}), so no entry can match; "
                "swap them or leave one out.",
            )

        async def fetch(client: OpenCloudClient) -> dict[str, Any]:
            page = await client.ordered_list_page(
                universe_id,
                store,
                scope=scope,
                descending=descending,
                min_value=min_value,
                max_value=max_value,
                page_size=limit,
                page_token=cursor,
            )
            return {
                "items": [
                    OrderedEntry(id=e.id, value=e.value).model_dump(mode="json") for e in page.items
                ],
                "next_cursor": page.next_page_token,
            }

        parts = (scope, str(descending), str(min_value), str(max_value), cursor or "", str(limit))
        answer = await self.reads.read(
            universe_id,
            fetch,
            ListCopy(self.cache, "ordered", universe_id, store, parts),
            what="this leaderboard page",
            category="list",
        )
        return OrderedPage.model_validate({**answer.value, "source": answer.source}, strict=False)

    # -------------------------------------------------------------------- writes

    async def _replayed_view(self, ref: OrderedRef, record: JournalRecord) -> OrderedEntryView:
        """What a repeated request gets: the entry as it is now, read fresh."""
        current = await self._read_fresh(ref)
        if current is None:
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                f"{ref.subject} was written by journal item {record.id} but no longer exists.",
            )
        return self._view(ref, current, record.id)

    async def _written(
        self,
        actor: Actor,
        ref: OrderedRef,
        intent: Intent,
        idempotency_key: str,
        send: Any,
    ) -> OrderedEntryView:
        record, after = await self.writes.run(
            actor, ref.target, intent, idempotency_key, send, _outcome
        )
        assert after is not None  # only deletes leave no entry
        return self._view(ref, after, record.id)

    async def create(
        self,
        actor: Actor,
        ref: OrderedRef,
        value: int,
        idempotency_key: str,
        *,
        undoes: int | None = None,
    ) -> OrderedEntryView:
        operation = EntryOperation.UNDO if undoes is not None else EntryOperation.CREATE
        if (done := self.writes.previous(ref.target, operation, idempotency_key)) is not None:
            return await self._replayed_view(ref, done)
        current = await self._read_fresh(ref)
        if current is not None:
            if undoes is not None:
                raise self._changed_since(ref, undoes, current)
            raise ServiceError(
                ErrorCode.ALREADY_EXISTS,
                f"{ref.subject} already exists (value {current.value}); set its value instead.",
                details={"current": {"id": current.id, "value": current.value}},
            )
        return await self._written(
            actor,
            ref,
            Intent(operation, None, intended=EntryImage(str(value)), undoes=undoes),
            idempotency_key,
            lambda c: c.ordered_create(
                ref.universe_id, ref.store, ref.entry_id, value, scope=ref.scope
            ),
        )

    async def update(
        self,
        actor: Actor,
        ref: OrderedRef,
        value: int,
        allow_missing: bool,
        idempotency_key: str,
        *,
        undoes: int | None = None,
        must_hold: EntryImage | None = None,
    ) -> OrderedEntryView:
        operation = EntryOperation.UNDO if undoes is not None else EntryOperation.UPDATE
        if (done := self.writes.previous(ref.target, operation, idempotency_key)) is not None:
            return await self._replayed_view(ref, done)
        current = await self._read_fresh(ref)
        if must_hold is not None and not _holds(current, must_hold):
            raise self._changed_since(ref, undoes or 0, current)
        if current is None and not allow_missing:
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                f"{ref.subject} does not exist; create it, or set allow_missing to create it "
                "with this value.",
            )
        return await self._written(
            actor,
            ref,
            Intent(operation, _image(current), intended=EntryImage(str(value)), undoes=undoes),
            idempotency_key,
            lambda c: c.ordered_update(
                ref.universe_id,
                ref.store,
                ref.entry_id,
                value,
                allow_missing=allow_missing,
                # Lets the client re-send safely if the answer is lost and the value is unchanged.
                expected_value=current.value if current is not None else None,
                scope=ref.scope,
            ),
        )

    async def increment(
        self,
        actor: Actor,
        ref: OrderedRef,
        amount: int,
        idempotency_key: str,
        *,
        undoes: int | None = None,
    ) -> OrderedEntryView:
        """Add `amount`; a missing entry is created with it, as Open Cloud does."""
        operation = EntryOperation.UNDO if undoes is not None else EntryOperation.INCREMENT
        if (done := self.writes.previous(ref.target, operation, idempotency_key)) is not None:
            return await self._replayed_view(ref, done)
        current = await self._read_fresh(ref)
        expected = (current.value if current is not None else 0) + amount
        return await self._written(
            actor,
            ref,
            Intent(
                operation,
                _image(current),
                intended=EntryImage(str(expected)),
                delta=amount,
                undoes=undoes,
            ),
            idempotency_key,
            lambda c: c.ordered_increment(
                ref.universe_id, ref.store, ref.entry_id, amount, scope=ref.scope
            ),
        )

    async def delete(
        self,
        actor: Actor,
        ref: OrderedRef,
        idempotency_key: str,
        *,
        undoes: int | None = None,
        must_hold: EntryImage | None = None,
    ) -> DeleteResult:
        """Ordered deletes are immediate and final on Open Cloud (no tombstone, no history):
        the journal's before-image is the only record of the value."""
        operation = EntryOperation.UNDO if undoes is not None else EntryOperation.DELETE
        if (done := self.writes.previous(ref.target, operation, idempotency_key)) is not None:
            return DeleteResult(journal_id=done.id, source=fresh(self._backend(ref.universe_id)))
        current = await self._read_fresh(ref)
        if must_hold is not None and not _holds(current, must_hold):
            raise self._changed_since(ref, undoes or 0, current)
        if current is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"{ref.subject} does not exist.")

        async def send(client: OpenCloudClient) -> None:
            await client.ordered_delete(
                ref.universe_id,
                ref.store,
                ref.entry_id,
                expected_value=current.value,
                scope=ref.scope,
            )

        record, _ = await self.writes.run(
            actor,
            ref.target,
            Intent(operation, _image(current), undoes=undoes),
            idempotency_key,
            send,
            lambda _: Outcome(None),
        )
        return DeleteResult(journal_id=record.id, source=fresh(self._backend(ref.universe_id)))

    # ---------------------------------------------------------------------- undo

    async def undo(
        self, actor: Actor, plan: UndoPlan, idempotency_key: str
    ) -> OrderedEntryView | DeleteResult:
        """Put an ordered entry back as it was before one of our journaled writes.

        Without revisions, "nobody wrote since" is judged by value: the entry must still hold
        exactly what our write left (or still be absent after our delete). An increment is
        undone by adding -delta instead.
        """
        require_kind(plan, StoreKind.ORDERED)
        ref = OrderedRef.of(plan)
        undoes = plan.record_id
        if plan.action == "compensate":
            assert plan.amount is not None
            return await self.increment(actor, ref, plan.amount, idempotency_key, undoes=undoes)
        if plan.action == "delete":
            return await self.delete(
                actor, ref, idempotency_key, undoes=undoes, must_hold=plan.left
            )
        assert plan.value_json is not None
        value = int(plan.value_json)
        if plan.must_be_absent:
            return await self.create(actor, ref, value, idempotency_key, undoes=undoes)
        assert plan.left is not None
        return await self.update(
            actor, ref, value, False, idempotency_key, undoes=undoes, must_hold=plan.left
        )

    async def replay_undo(self, record: JournalRecord) -> OrderedEntryView | DeleteResult:
        """What a retried undo gets: the outcome of the first one."""
        ref = OrderedRef.of(record)
        if record.after_exists is False:
            return DeleteResult(journal_id=record.id, source=fresh(self._backend(ref.universe_id)))
        return await self._replayed_view(ref, record)

    def _changed_since(
        self, ref: OrderedRef, journal_id: int, current: OrderedDataStoreEntry | None
    ) -> ServiceError:
        now = "no longer exists" if current is None else f"now holds {current.value}"
        details: dict[str, Any] = {"journal_id": journal_id, "current": None}
        if current is not None:
            details["current"] = {"id": current.id, "value": current.value}
        return ServiceError(
            ErrorCode.CONFLICT,
            f"{ref.subject} was written again after journal item {journal_id}: it {now}, not "
            "what that write left. Ordered entries have no history, so check the current value "
            "and set it by hand if you still want the old one.",
            details=details,
        )

    # ------------------------------------------------------------------- settling

    async def settle(self, record: JournalRecord) -> Status:
        """Settle a write cut by a crash or a lost answer by re-reading its value.

        Holding the value we meant to write -> APPLIED; still holding the value the write was
        based on (or still absent) -> FAILED; anything else stays UNKNOWN.
        """
        ref = OrderedRef.of(record)
        try:
            current = await _get_or_none(self.upstream.client_for(ref.universe_id), ref)
        except (oc.OpenCloudError, ServiceError) as exc:
            log.warning("journal item %d not settled yet: %s", record.id, exc)
            return Status.UNKNOWN
        now = _image(current)
        if record.intended_sha256 is None:  # a delete
            if current is None:
                self.writes.settle(record, Outcome(None))
                return Status.APPLIED
        elif now is not None and now.content_sha256 == record.intended_sha256:
            self.writes.settle(record, Outcome(now))
            return Status.APPLIED
        if (now.sha256 if now else None) == record.before_sha256:
            return self.writes.not_applied(record)
        return self.writes.still_unknown(
            record, f"the entry changed after this write was sent ({RACE_NOTE})"
        )


def _holds(current: OrderedDataStoreEntry | None, image: EntryImage) -> bool:
    return current is not None and content_sha256(str(current.value)) == image.content_sha256
