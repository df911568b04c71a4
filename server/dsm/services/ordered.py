"""Ordered data stores (leaderboards): list with provenance, write through the journal.

Ordered entries have no revisions, etags or metadata, and Open Cloud has no conditional ordered
writes, so conflicts cannot be refused the way standard entries refuse them: the last writer
wins on Open Cloud's side. What this service does instead:
- every write re-reads the entry from Open Cloud first, so the journal's before-image is the
  value just before our write (a game server writing in the short gap between that read and
  our write is overwritten, and its value is not in the before-image);
- the re-read also answers "does it exist?" for create/update/delete with a clear message;
- a lost answer is settled by the client by value (``expected_value``), never by repeating an
  increment;
- undo is conditional on the value our write left: if the entry holds anything else, someone
  wrote after us and the user decides.
A retried request with the same idempotency key reports the first outcome instead of writing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from shared_schema.common import Backend
from shared_schema.entries import DeleteResult, EntryOperation, EntryState, StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.events import EntryChangedPayload, EventType
from shared_schema.ordered import OrderedEntry as OrderedEntryModel
from shared_schema.ordered import OrderedEntryView, OrderedPage

from ..opencloud import errors as oc
from ..opencloud.client import OpenCloudClient
from ..opencloud.models import OrderedEntry
from ..storage.journal import (
    EntryImage,
    IdempotencyConflict,
    JournalRecord,
    UndoNotPossible,
    UnknownRecord,
    WriteJournal,
    value_sha256,
)
from .entries import Publisher
from .errors import ServiceError
from .provenance import fresh, upstream_error
from .replay import previous_attempt
from .tokens import Principal
from .upstream import Upstream

log = logging.getLogger("dsm.ordered")
OrderedOperation = Literal[
    "ordered-create", "ordered-update", "ordered-delete", "ordered-increment"
]


@dataclass(frozen=True)
class OrderedRef:
    universe_id: int
    store: str
    scope: str
    entry_id: str

    @property
    def subject(self) -> str:
        return (
            f"Entry {self.entry_id!r} of ordered data store {self.store!r} (scope {self.scope!r})"
        )


def _image(entry: OrderedEntry | None) -> EntryImage | None:
    # The value as JSON text, so journal hashes and undo treat ordered values like entry values.
    return None if entry is None else EntryImage(str(entry.value))


def is_ordered_operation(operation: str) -> bool:
    """Whether a journal record was written by this service (undo must come here)."""
    return operation.startswith("ordered-")


class OrderedService:
    def __init__(self, upstream: Upstream, journal: WriteJournal, events: Publisher) -> None:
        self.upstream = upstream
        self.journal = journal
        self.events = events

    # ------------------------------------------------------------------ helpers

    def _backend(self, universe_id: int) -> Backend:
        return self.upstream.binding(universe_id).backend

    def _view(self, ref: OrderedRef, entry: OrderedEntry, journal_id: int) -> OrderedEntryView:
        return OrderedEntryView(
            universe_id=ref.universe_id,
            ordered_store=ref.store,
            scope=ref.scope,
            id=entry.id,
            value=entry.value,
            journal_id=journal_id,
            source=fresh(self._backend(ref.universe_id)),
        )

    async def _read_fresh(self, ref: OrderedRef) -> OrderedEntry | None:
        """The entry straight from Open Cloud, None when it does not exist."""

        async def read(client: OpenCloudClient) -> OrderedEntry | None:
            try:
                return await client.ordered_get(
                    ref.universe_id, ref.store, ref.entry_id, scope=ref.scope
                )
            except oc.NotFound:
                return None

        return await self.upstream.call(ref.universe_id, read)

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
        page = await self.upstream.call(
            universe_id,
            lambda c: c.ordered_list_page(
                universe_id,
                store,
                scope=scope,
                descending=descending,
                min_value=min_value,
                max_value=max_value,
                page_size=limit,
                page_token=cursor,
            ),
        )
        return OrderedPage(
            items=[OrderedEntryModel(id=e.id, value=e.value) for e in page.items],
            next_cursor=page.next_page_token,
            source=fresh(self._backend(universe_id)),
        )

    # -------------------------------------------------------------------- writes

    def _replay(
        self, ref: OrderedRef, operation: OrderedOperation, idempotency_key: str
    ) -> JournalRecord | None:
        """A previous attempt with this idempotency key, if there was one."""
        return previous_attempt(
            self.journal,
            idempotency_key,
            universe=ref.universe_id,
            datastore=ref.store,
            scope=ref.scope,
            key=ref.entry_id,
            operation=operation,
        )

    async def _replayed_view(self, ref: OrderedRef, record: JournalRecord) -> OrderedEntryView:
        """What a repeated request gets: the entry as it is now, read fresh."""
        current = await self._read_fresh(ref)
        if current is None:
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                f"{ref.subject} was written by journal item {record.id} but no longer exists.",
            )
        return self._view(ref, current, record.id)

    async def _write(
        self,
        actor: Principal,
        ref: OrderedRef,
        operation: OrderedOperation,
        before: OrderedEntry | None,
        intended: int | None,
        idempotency_key: str,
        undoes: int | None,
        send: Callable[[OpenCloudClient], Awaitable[OrderedEntry | None]],
    ) -> tuple[JournalRecord, OrderedEntry | None]:
        """Journal the intent, send, journal the outcome and publish `entry.changed`."""
        try:
            record = self.journal.record_intent(
                actor_id=actor.token_id,
                actor_name=actor.name,
                universe=ref.universe_id,
                datastore=ref.store,
                scope=ref.scope,
                key=ref.entry_id,
                operation=operation,
                before=_image(before),
                intended=None if intended is None else EntryImage(str(intended)),
                idempotency_key=idempotency_key,
                undoes=undoes,
            )
        except IdempotencyConflict as conflict:
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"The idempotency key {idempotency_key} was already used for another write.",
                details={"journal_id": conflict.existing.id},
            ) from None
        client = self.upstream.client_for(ref.universe_id)
        backend = self._backend(ref.universe_id)
        try:
            after = await send(client)
        except (oc.WriteOutcomeUnknown, oc.NetworkError, oc.ServerError) as exc:
            # The client settles lost answers by re-reading; reaching here means it could not,
            # so the outcome is unknown rather than failed.
            self.journal.mark_unknown(record.id, str(exc))
            raise upstream_error(exc, backend) from exc
        except oc.OpenCloudError as exc:
            self.journal.mark_failed(record.id, str(exc))
            raise upstream_error(exc, backend) from exc
        self.journal.mark_applied(record.id, _image(after), None)
        event_op = (
            EntryOperation.UNDO
            if undoes is not None
            else EntryOperation(operation.removeprefix("ordered-"))
        )
        payload = EntryChangedPayload(
            universe_id=ref.universe_id,
            store_kind=StoreKind.ORDERED,
            datastore=ref.store,
            scope=ref.scope,
            key=ref.entry_id,
            operation=event_op,
            state=EntryState.DELETED if after is None else EntryState.ACTIVE,
            actor=actor.name,
            journal_id=record.id,
        )
        try:
            self.events.publish(
                EventType.ENTRY_CHANGED, payload.model_dump(mode="json", exclude_none=True)
            )
        except Exception:
            # The write landed and is journaled; a failed notification must not report it as
            # failed (the user would retry a write that already happened).
            log.exception("could not publish entry.changed for journal item %d", record.id)
        return record, after

    async def _written_view(
        self,
        actor: Principal,
        ref: OrderedRef,
        operation: OrderedOperation,
        before: OrderedEntry | None,
        intended: int | None,
        idempotency_key: str,
        undoes: int | None,
        send: Callable[[OpenCloudClient], Awaitable[OrderedEntry]],
    ) -> OrderedEntryView:
        record, after = await self._write(
            actor, ref, operation, before, intended, idempotency_key, undoes, send
        )
        assert after is not None  # only deletes leave no entry
        return self._view(ref, after, record.id)

    async def create(
        self,
        actor: Principal,
        ref: OrderedRef,
        value: int,
        idempotency_key: str,
        *,
        undoes: int | None = None,
    ) -> OrderedEntryView:
        if (done := self._replay(ref, "ordered-create", idempotency_key)) is not None:
            return await self._replayed_view(ref, done)
        current = await self._read_fresh(ref)
        if current is not None:
            raise ServiceError(
                ErrorCode.ALREADY_EXISTS,
                f"{ref.subject} already exists (value {current.value}); set its value instead.",
                details={"current": {"id": current.id, "value": current.value}},
            )
        return await self._written_view(
            actor,
            ref,
            "ordered-create",
            None,
            value,
            idempotency_key,
            undoes,
            lambda c: c.ordered_create(
                ref.universe_id, ref.store, ref.entry_id, value, scope=ref.scope
            ),
        )

    async def update(
        self,
        actor: Principal,
        ref: OrderedRef,
        value: int,
        allow_missing: bool,
        idempotency_key: str,
        *,
        undoes: int | None = None,
    ) -> OrderedEntryView:
        if (done := self._replay(ref, "ordered-update", idempotency_key)) is not None:
            return await self._replayed_view(ref, done)
        current = await self._read_fresh(ref)
        if current is None and not allow_missing:
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                f"{ref.subject} does not exist; create it, or set allow_missing to create it "
                "with this value.",
            )
        return await self._written_view(
            actor,
            ref,
            "ordered-update",
            current,
            value,
            idempotency_key,
            undoes,
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
        self, actor: Principal, ref: OrderedRef, amount: int, idempotency_key: str
    ) -> OrderedEntryView:
        """Add `amount`; a missing entry is created with it, as Open Cloud does."""
        if (done := self._replay(ref, "ordered-increment", idempotency_key)) is not None:
            return await self._replayed_view(ref, done)
        current = await self._read_fresh(ref)
        return await self._written_view(
            actor,
            ref,
            "ordered-increment",
            current,
            None,  # the result depends on Open Cloud's value at the time of the write
            idempotency_key,
            None,
            lambda c: c.ordered_increment(
                ref.universe_id, ref.store, ref.entry_id, amount, scope=ref.scope
            ),
        )

    async def delete(
        self,
        actor: Principal,
        ref: OrderedRef,
        idempotency_key: str,
        *,
        undoes: int | None = None,
    ) -> DeleteResult:
        """Ordered deletes are immediate and final on Open Cloud (no tombstone, no history):
        the journal's before-image is the only record of the value."""
        if (done := self._replay(ref, "ordered-delete", idempotency_key)) is not None:
            return DeleteResult(journal_id=done.id, source=fresh(self._backend(ref.universe_id)))
        current = await self._read_fresh(ref)
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

        record, _ = await self._write(
            actor, ref, "ordered-delete", current, None, idempotency_key, undoes, send
        )
        return DeleteResult(journal_id=record.id, source=fresh(self._backend(ref.universe_id)))

    # ---------------------------------------------------------------------- undo

    async def undo(
        self, actor: Principal, journal_id: int, idempotency_key: str
    ) -> OrderedEntryView | DeleteResult:
        """Put an ordered entry back as it was before one of our journaled writes.

        Without revisions, "nobody wrote since" is judged by value: the entry must still hold
        exactly what our write left (or still be absent after our delete).
        """
        done = self.journal.find_by_idempotency_key(idempotency_key)
        if done is not None and done.undoes == journal_id and is_ordered_operation(done.operation):
            # A retried undo reports the first outcome (undo_plan would say "already undone").
            ref = OrderedRef(int(done.universe), done.datastore, done.scope, done.key)
            self._replay(ref, cast(OrderedOperation, done.operation), idempotency_key)
            if done.operation == "ordered-delete":
                return DeleteResult(
                    journal_id=done.id, source=fresh(self._backend(ref.universe_id))
                )
            return await self._replayed_view(ref, done)
        try:
            plan = self.journal.undo_plan(journal_id)
        except (UndoNotPossible, UnknownRecord) as exc:
            raise ServiceError(ErrorCode.BAD_REQUEST, str(exc)) from None
        if not is_ordered_operation(plan.operation):
            raise ServiceError(
                ErrorCode.BAD_REQUEST,
                f"Journal item {journal_id} is a standard data store write, not an ordered one.",
            )
        ref = OrderedRef(int(plan.universe), plan.datastore, plan.scope, plan.key)
        current = await self._read_fresh(ref)
        if plan.must_be_absent:
            if current is not None:
                raise self._changed_since(ref, journal_id, current)
        elif current is None or value_sha256(str(current.value)) != plan.expected_sha256:
            raise self._changed_since(ref, journal_id, current)
        if plan.action == "delete":
            return await self.delete(actor, ref, idempotency_key, undoes=journal_id)
        assert plan.value_json is not None
        value = int(plan.value_json)
        if plan.must_be_absent:
            return await self.create(actor, ref, value, idempotency_key, undoes=journal_id)
        return await self.update(actor, ref, value, False, idempotency_key, undoes=journal_id)

    def _changed_since(
        self, ref: OrderedRef, journal_id: int, current: OrderedEntry | None
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
