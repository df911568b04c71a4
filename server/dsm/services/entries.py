"""Standard data store entries: read with provenance, write safely, undo through the journal.

Every write here follows the same path:
1. re-read the entry from Open Cloud (never from the cache) for the before-image;
2. refuse with CONFLICT if it is no longer at the revision the user saw;
3. journal the intent (before-image, sealed) before sending anything;
4. send a write conditional on that revision's etag, carrying attributes and user ids over
   unless the request changes them;
5. journal the outcome, refresh the cache and publish `entry.changed`.
A retried request with the same idempotency key reports the first outcome instead of writing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import jsonpatch

from shared_schema.common import Backend, Source
from shared_schema.entries import (
    DeleteResult,
    EntryDiff,
    EntryState,
    EntryView,
    JsonPatchOperation,
    PatchOp,
    RevisionInfo,
    RevisionPage,
)
from shared_schema.errors import ErrorCode

from ..opencloud import errors as oc
from ..opencloud.client import CARRY_OVER, OpenCloudClient
from ..opencloud.models import DataStoreEntry
from ..storage.cache import EntryCache
from ..storage.journal import (
    EntryImage,
    IdempotencyConflict,
    JournalRecord,
    Status,
    UndoNotPossible,
    UnknownRecord,
    WriteJournal,
)
from .errors import ServiceError
from .provenance import cached, fresh, is_unreachable, upstream_error
from .replay import previous_attempt
from .tokens import Principal
from .upstream import Upstream

MAX_VALUE_BYTES = 4 * 1024 * 1024
log = logging.getLogger("dsm.entries")
T = TypeVar("T")


class Publisher(Protocol):
    def publish(self, type: str, payload: dict[str, Any]) -> object: ...


class CacheObserver(Protocol):
    def cache_hit(self) -> None: ...
    def cache_miss(self) -> None: ...


@dataclass(frozen=True)
class EntryRef:
    universe_id: int
    datastore: str
    scope: str
    key: str

    @property
    def subject(self) -> str:
        return f"{self.datastore}/{self.scope}/{self.key}"


def _metadata(entry: DataStoreEntry) -> dict[str, Any]:
    return {
        "revision": entry.revision_id,
        "etag": entry.etag,
        "state": entry.state,
        "created_at": entry.create_time.isoformat() if entry.create_time else None,
        "updated_at": entry.revision_create_time.isoformat()
        if entry.revision_create_time
        else None,
        "attributes": entry.attributes,
        "user_ids": list(entry.user_ids),
    }


def _image(entry: DataStoreEntry | None) -> EntryImage | None:
    if entry is None or entry.value_json is None:
        return None
    return EntryImage(entry.value_json, _metadata(entry))


def _epoch(moment: datetime | None) -> datetime:
    return moment or datetime(1970, 1, 1, tzinfo=UTC)


class EntryService:
    def __init__(
        self,
        upstream: Upstream,
        cache: EntryCache,
        journal: WriteJournal,
        events: Publisher,
        observer: CacheObserver | None = None,
    ) -> None:
        self.upstream = upstream
        self.cache = cache
        self.journal = journal
        self.events = events
        self.observer = observer

    # ------------------------------------------------------------------ helpers

    def _client(self, ref: EntryRef) -> tuple[OpenCloudClient, Backend]:
        client = self.upstream.client_for(ref.universe_id)
        return client, self.upstream.binding(ref.universe_id).backend

    def view(self, ref: EntryRef, entry: DataStoreEntry, source: Source) -> EntryView:
        return EntryView(
            universe_id=ref.universe_id,
            datastore=ref.datastore,
            scope=ref.scope,
            key=ref.key,
            value_json=entry.value_json,
            size_bytes=entry.size_bytes,
            size_limit_bytes=MAX_VALUE_BYTES,
            revision=entry.revision_id,
            etag=entry.etag,
            created_at=_epoch(entry.create_time),
            updated_at=_epoch(entry.revision_create_time),
            state=EntryState.DELETED if entry.state == "DELETED" else EntryState.ACTIVE,
            attributes=entry.attributes or None,
            user_ids=list(entry.user_ids),
            source=source,
        )

    def _view_from_cache(self, ref: EntryRef, reason: str) -> EntryView:
        hit = self.cache.get_entry(ref.universe_id, ref.datastore, ref.scope, ref.key)
        backend = self.upstream.binding(ref.universe_id).backend
        if hit is None:
            if self.observer:
                self.observer.cache_miss()
            raise ServiceError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"{reason} No cached copy of {ref.subject} exists, so it cannot be shown.",
                details={"source": {"kind": "UNAVAILABLE", "reason": reason}},
            )
        if self.observer:
            self.observer.cache_hit()
        meta = hit.metadata
        return EntryView(
            universe_id=ref.universe_id,
            datastore=ref.datastore,
            scope=ref.scope,
            key=ref.key,
            value_json=hit.value_json,
            size_bytes=len(hit.value_json.encode("utf-8")),
            size_limit_bytes=MAX_VALUE_BYTES,
            revision=hit.revision,
            etag=str(meta.get("etag") or hit.revision),
            created_at=_epoch(_parse(meta.get("created_at"))),
            updated_at=_epoch(_parse(meta.get("updated_at"))),
            state=EntryState.ACTIVE,
            attributes=meta.get("attributes") or None,
            user_ids=list(meta.get("user_ids") or []),
            source=cached(backend, hit.fetched_at, hit.age_seconds, reason),
        )

    def _remember(self, ref: EntryRef, entry: DataStoreEntry, generation: int | None) -> None:
        if entry.value_json is None:
            self.cache.invalidate_entry(ref.universe_id, ref.datastore, ref.scope, ref.key)
            return
        self.cache.put_entry(
            ref.universe_id,
            ref.datastore,
            ref.scope,
            ref.key,
            value_json=entry.value_json,
            metadata=_metadata(entry),
            revision=entry.revision_id,
            if_generation=generation,
        )

    async def _read_fresh(self, ref: EntryRef) -> DataStoreEntry | None:
        """The current entry straight from Open Cloud, None when the key has no live value."""

        async def read(client: OpenCloudClient) -> DataStoreEntry | None:
            try:
                return await client.get_entry(
                    ref.universe_id, ref.datastore, ref.key, scope=ref.scope
                )
            except oc.NotFound:
                return None

        return await self.upstream.call(ref.universe_id, read)

    # --------------------------------------------------------------------- reads

    async def get(self, ref: EntryRef) -> EntryView:
        """Fresh from Open Cloud; CACHED (with age and why) only when Open Cloud can't answer."""
        client, backend = self._client(ref)
        generation = self.cache.generation
        down = self.upstream.unreachable_reason(ref.universe_id)
        if down is not None and self.cache.get_entry(
            ref.universe_id, ref.datastore, ref.scope, ref.key
        ):
            return self._view_from_cache(ref, down)
        try:
            entry = await client.get_entry(ref.universe_id, ref.datastore, ref.key, scope=ref.scope)
        except oc.OpenCloudError as exc:
            if is_unreachable(exc):
                reason = upstream_error(exc, backend).message
                if isinstance(exc, oc.NetworkError | oc.ServerError):
                    self.upstream.note_unreachable(ref.universe_id, reason)
                return self._view_from_cache(ref, reason)
            if isinstance(exc, oc.NotFound):
                self.cache.invalidate_entry(ref.universe_id, ref.datastore, ref.scope, ref.key)
                await self._settle_open_writes(ref, None)
            raise upstream_error(exc, backend) from exc
        self.upstream.note_reachable(ref.universe_id)
        self._remember(ref, entry, generation)
        await self._settle_open_writes(ref, entry)
        return self.view(ref, entry, fresh(backend))

    async def get_revision(self, ref: EntryRef, revision: str) -> EntryView:
        entry = await self.upstream.call(
            ref.universe_id,
            lambda c: c.get_entry(
                ref.universe_id, ref.datastore, ref.key, scope=ref.scope, revision_id=revision
            ),
        )
        return self.view(ref, entry, fresh(self._client(ref)[1]))

    async def get_at(self, ref: EntryRef, when: datetime) -> EntryView:
        entry = await self.upstream.call(
            ref.universe_id,
            lambda c: c.get_entry(
                ref.universe_id, ref.datastore, ref.key, scope=ref.scope, at=when
            ),
        )
        return self.view(ref, entry, fresh(self._client(ref)[1]))

    async def revisions(
        self,
        ref: EntryRef,
        *,
        cursor: str | None,
        limit: int,
        start: datetime | None,
        end: datetime | None,
    ) -> RevisionPage:
        page = await self.upstream.call(
            ref.universe_id,
            lambda c: c.list_revisions_page(
                ref.universe_id,
                ref.datastore,
                ref.key,
                scope=ref.scope,
                page_size=limit,
                page_token=cursor,
                start_time=start,
                end_time=end,
            ),
        )
        return RevisionPage(
            items=[
                RevisionInfo(
                    revision=r.revision_id,
                    created_at=_epoch(r.revision_create_time),
                    state=EntryState.DELETED if r.state == "DELETED" else EntryState.ACTIVE,
                )
                for r in page.items
            ],
            next_cursor=page.next_page_token,
            source=fresh(self._client(ref)[1]),
        )

    async def diff(self, ref: EntryRef, from_revision: str, to_revision: str) -> EntryDiff:
        older = await self.get_revision(ref, from_revision)
        newer = await self.get_revision(ref, to_revision)
        try:
            before = json.loads(older.value_json) if older.value_json is not None else None
            after = json.loads(newer.value_json) if newer.value_json is not None else None
            patch = jsonpatch.make_patch(before, after).patch
        except RecursionError:
            # Only a value written outside this server can be this deep (writes stop at
            # MAX_JSON_DEPTH); comparing it would overflow the stack, so say so instead.
            raise ServiceError(
                ErrorCode.BAD_REQUEST,
                f"These revisions of {ref.subject} are nested too deeply to compare.",
            ) from None
        operations = [
            JsonPatchOperation(
                op=PatchOp(op["op"]),
                path=op["path"],
                from_path=op.get("from"),
                value_json=json.dumps(op["value"], ensure_ascii=False) if "value" in op else None,
            )
            for op in patch
        ]
        return EntryDiff(
            from_revision=from_revision,
            to_revision=to_revision,
            operations=operations,
            attributes_changed=(older.attributes or None) != (newer.attributes or None),
            user_ids_changed=older.user_ids != newer.user_ids,
            source=newer.source,
        )

    # -------------------------------------------------------------------- writes

    def _replay(self, ref: EntryRef, operation: str, idempotency_key: str) -> JournalRecord | None:
        """A previous attempt with this idempotency key, if there was one."""
        return previous_attempt(
            self.journal,
            idempotency_key,
            universe=ref.universe_id,
            datastore=ref.datastore,
            scope=ref.scope,
            key=ref.key,
            operation=operation,
        )

    def _conflict(
        self, ref: EntryRef, current: DataStoreEntry | None, expected: str
    ) -> ServiceError:
        backend = self._client(ref)[1]
        details: dict[str, Any] = {"expected_revision": expected}
        if current is not None:
            details["current"] = self.view(ref, current, fresh(backend)).model_dump(mode="json")
        state = f"is now at revision {current.revision_id}" if current else "no longer exists"
        return ServiceError(
            ErrorCode.CONFLICT,
            f"{ref.subject} changed since you opened it: you edited revision {expected} but it "
            f"{state}. Compare both versions and choose which to keep.",
            details=details,
        )

    def _begin(
        self,
        actor: Principal,
        ref: EntryRef,
        operation: str,
        before: DataStoreEntry | None,
        idempotency_key: str,
        intended: EntryImage | None = None,
        undoes: int | None = None,
    ) -> JournalRecord:
        try:
            return self.journal.record_intent(
                actor_id=actor.token_id,
                actor_name=actor.name,
                universe=ref.universe_id,
                datastore=ref.datastore,
                scope=ref.scope,
                key=ref.key,
                operation=operation,
                before=_image(before),
                intended=intended,
                base_revision=before.revision_id if before else None,
                idempotency_key=idempotency_key,
                undoes=undoes,
            )
        except IdempotencyConflict as conflict:
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"The idempotency key {idempotency_key} was already used for another write.",
                details={"journal_id": conflict.args[0].id if conflict.args else None},
            ) from None

    async def _send(
        self,
        ref: EntryRef,
        record: JournalRecord,
        write: Callable[[OpenCloudClient], Awaitable[T]],
    ) -> T:
        client, backend = self._client(ref)
        try:
            result = await write(client)
        except (oc.WriteOutcomeUnknown, oc.NetworkError, oc.ServerError) as exc:
            # The client settles lost answers by re-reading; reaching here means it could not,
            # so the outcome is unknown rather than failed, and the cached copy may be stale.
            self.journal.mark_unknown(record.id, str(exc))
            self.cache.invalidate_entry(ref.universe_id, ref.datastore, ref.scope, ref.key)
            raise upstream_error(exc, backend) from exc
        except oc.OpenCloudError as exc:
            self.journal.mark_failed(record.id, str(exc))
            raise upstream_error(exc, backend) from exc
        return result

    def _finish(
        self, actor: Principal, ref: EntryRef, record: JournalRecord, entry: DataStoreEntry, op: str
    ) -> EntryView:
        self.journal.mark_applied(record.id, _image(entry), entry.revision_id)
        self.cache.invalidate_entry(ref.universe_id, ref.datastore, ref.scope, ref.key)
        self._remember(ref, entry, None)
        self._publish(actor, ref, op, entry.revision_id, record.id, deleted=False)
        return self.view(ref, entry, fresh(self._client(ref)[1]))

    def _publish(
        self,
        actor: Principal,
        ref: EntryRef,
        operation: str,
        revision: str | None,
        journal_id: int,
        *,
        deleted: bool,
    ) -> None:
        # The write has landed by now: a failed notification must not make it look failed.
        try:
            self._notify(actor, ref, operation, revision, journal_id, deleted=deleted)
        except Exception:
            log.exception("could not publish entry.changed for %s", ref.subject)

    def _notify(
        self,
        actor: Principal,
        ref: EntryRef,
        operation: str,
        revision: str | None,
        journal_id: int,
        *,
        deleted: bool,
    ) -> None:
        self.events.publish(
            "entry.changed",
            {
                "universe_id": ref.universe_id,
                "store_kind": "standard",
                "datastore": ref.datastore,
                "scope": ref.scope,
                "key": ref.key,
                "operation": operation,
                "state": "DELETED" if deleted else "ACTIVE",
                "revision": revision,
                "actor": actor.name,
                "journal_id": journal_id,
            },
        )

    async def _replayed_view(self, ref: EntryRef, record: JournalRecord) -> EntryView:
        """What a repeated request gets: the entry as it is now, read fresh."""
        current = await self._read_fresh(ref)
        if current is None:
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                f"{ref.subject} was written by journal item {record.id} but no longer exists.",
            )
        return self.view(ref, current, fresh(self._client(ref)[1]))

    async def create(
        self,
        actor: Principal,
        ref: EntryRef,
        value_json: str,
        attributes: dict[str, Any] | None,
        user_ids: list[int],
        idempotency_key: str,
        *,
        operation: str = "create",
        undoes: int | None = None,
    ) -> EntryView:
        if (done := self._replay(ref, operation, idempotency_key)) is not None:
            return await self._replayed_view(ref, done)
        current = await self._read_fresh(ref)
        if current is not None:
            raise ServiceError(
                ErrorCode.ALREADY_EXISTS,
                f"{ref.subject} already exists (revision {current.revision_id}); open it to edit.",
            )
        intended = EntryImage(value_json, {"attributes": attributes, "user_ids": user_ids})
        record = self._begin(actor, ref, operation, None, idempotency_key, intended, undoes=undoes)
        entry = await self._send(
            ref,
            record,
            lambda c: c.create_entry(
                ref.universe_id,
                ref.datastore,
                ref.key,
                value_json,
                scope=ref.scope,
                attributes=attributes,
                user_ids=user_ids,
            ),
        )
        return self._finish(actor, ref, record, entry, operation)

    async def update(
        self,
        actor: Principal,
        ref: EntryRef,
        value_json: str,
        expected_revision: str,
        attributes_for: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        user_ids_for: Callable[[list[int]], list[int]],
        idempotency_key: str,
        *,
        operation: str = "update",
        undoes: int | None = None,
    ) -> EntryView:
        if (done := self._replay(ref, operation, idempotency_key)) is not None:
            return await self._replayed_view(ref, done)
        current = await self._read_fresh(ref)
        if current is None or current.revision_id != expected_revision:
            raise self._conflict(ref, current, expected_revision)
        attributes = attributes_for(current.attributes)
        user_ids = user_ids_for(list(current.user_ids))
        intended = EntryImage(value_json, {"attributes": attributes, "user_ids": user_ids})
        record = self._begin(
            actor, ref, operation, current, idempotency_key, intended, undoes=undoes
        )
        try:
            entry = await self._send(
                ref,
                record,
                lambda c: c.update_entry(
                    ref.universe_id,
                    ref.datastore,
                    ref.key,
                    value_json,
                    attributes=attributes,
                    user_ids=user_ids,
                    etag=current.etag,
                    scope=ref.scope,
                ),
            )
        except ServiceError as error:
            if error.code is ErrorCode.CONFLICT:
                raise self._conflict(ref, await self._read_fresh(ref), expected_revision) from None
            raise
        return self._finish(actor, ref, record, entry, operation)

    async def delete(
        self,
        actor: Principal,
        ref: EntryRef,
        expected_revision: str | None,
        idempotency_key: str,
        *,
        operation: str = "delete",
        undoes: int | None = None,
    ) -> DeleteResult:
        if (done := self._replay(ref, operation, idempotency_key)) is not None:
            return DeleteResult(journal_id=done.id, source=fresh(self._client(ref)[1]))
        current = await self._read_fresh(ref)
        if current is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"{ref.subject} does not exist.")
        if expected_revision is not None and current.revision_id != expected_revision:
            raise self._conflict(ref, current, expected_revision)
        record = self._begin(actor, ref, operation, current, idempotency_key, undoes=undoes)
        await self._send(
            ref,
            record,
            lambda c: c.delete_entry(
                ref.universe_id,
                ref.datastore,
                ref.key,
                scope=ref.scope,
                expected_revision=current.revision_id,
            ),
        )
        self.journal.mark_applied(record.id, None, None)
        self.cache.invalidate_entry(ref.universe_id, ref.datastore, ref.scope, ref.key)
        self._publish(actor, ref, operation, None, record.id, deleted=True)
        return DeleteResult(journal_id=record.id, source=fresh(self._client(ref)[1]))

    async def increment(
        self, actor: Principal, ref: EntryRef, amount: int, idempotency_key: str
    ) -> EntryView:
        if (done := self._replay(ref, "increment", idempotency_key)) is not None:
            return await self._replayed_view(ref, done)
        current = await self._read_fresh(ref)
        record = self._begin(actor, ref, "increment", current, idempotency_key)
        # CARRY_OVER makes the client read-modify-write conditionally on the etag it read, so
        # attributes and user ids survive and a concurrent writer is never overwritten.
        entry = await self._send(
            ref,
            record,
            lambda c: c.increment_entry(
                ref.universe_id,
                ref.datastore,
                ref.key,
                amount,
                scope=ref.scope,
                attributes=CARRY_OVER,
                user_ids=CARRY_OVER,
            ),
        )
        return self._finish(actor, ref, record, entry, "increment")

    async def revert(
        self,
        actor: Principal,
        ref: EntryRef,
        revision: str,
        expected_revision: str,
        idempotency_key: str,
    ) -> EntryView:
        old = await self.upstream.call(
            ref.universe_id,
            lambda c: c.get_entry(
                ref.universe_id, ref.datastore, ref.key, scope=ref.scope, revision_id=revision
            ),
        )
        if old.value_json is None:
            raise ServiceError(
                ErrorCode.BAD_REQUEST,
                f"Revision {revision} of {ref.subject} is a deletion; delete the entry instead.",
            )
        return await self.update(
            actor,
            ref,
            old.value_json,
            expected_revision,
            lambda _current: old.attributes or None,
            lambda _current: list(old.user_ids),
            idempotency_key,
            operation="revert",
        )

    async def reconcile_pending(self) -> dict[str, int]:
        """Settle standard-entry writes left INTENT/UNKNOWN by a crash or a lost answer.

        Each is settled by re-reading the key, never by sending it again: the value we meant
        to write is there -> APPLIED; the key is still at the revision the write was based on
        -> FAILED (it never landed); anything else stays UNKNOWN for the user to judge.
        """
        counts = {"applied": 0, "failed": 0, "unknown": 0}
        for record in self.journal.pending():
            if record.operation.startswith("ordered-"):
                continue
            ref = EntryRef(int(record.universe), record.datastore, record.scope, record.key)
            try:
                current = await self._read_fresh(ref)
            except ServiceError as error:
                log.warning("journal item %d not reconciled yet: %s", record.id, error.message)
                counts["unknown"] += 1
                continue
            counts[self._settle(record, current)] += 1
        return counts

    async def _settle_open_writes(self, ref: EntryRef, current: DataStoreEntry | None) -> None:
        """A fresh read of a key also settles our writes to it whose outcome was unknown."""
        for record in self.journal.list(
            universe=ref.universe_id, datastore=ref.datastore, key=ref.key, status=Status.UNKNOWN
        ):
            if record.scope == ref.scope and not record.operation.startswith("ordered-"):
                self._settle(record, current)

    def _settle(self, record: JournalRecord, current: DataStoreEntry | None) -> str:
        image = _image(current)
        if record.operation == "delete" or (
            record.operation == "undo" and not record.intended_sha256
        ):
            landed = current is None
        else:
            landed = image is not None and image.sha256 == record.intended_sha256
        if landed:
            self.journal.mark_applied(record.id, image, current.revision_id if current else None)
            return "applied"
        if (current.revision_id if current else None) == record.base_revision:
            self.journal.mark_failed(record.id, "not applied: re-reading found the entry unchanged")
            return "failed"
        if record.status is Status.INTENT:
            self.journal.mark_unknown(
                record.id, "the entry changed after this write was sent; review it"
            )
        return "unknown"

    def journal_record(self, journal_id: int) -> JournalRecord:
        try:
            return self.journal.get(journal_id).record
        except UnknownRecord:
            raise ServiceError(
                ErrorCode.NOT_FOUND, f"Journal item {journal_id} does not exist."
            ) from None

    async def undo(
        self, actor: Principal, journal_id: int, idempotency_key: str
    ) -> EntryView | DeleteResult:
        """Put an entry back as it was before one of our journaled writes."""
        try:
            plan = self.journal.undo_plan(journal_id)
        except UnknownRecord as exc:
            raise ServiceError(ErrorCode.NOT_FOUND, str(exc)) from None
        except UndoNotPossible as exc:
            raise ServiceError(ErrorCode.BAD_REQUEST, str(exc)) from None
        if plan.operation.startswith("ordered-"):
            raise ServiceError(
                ErrorCode.BAD_REQUEST, f"Journal item {journal_id} is an ordered data store write."
            )
        ref = EntryRef(int(plan.universe), plan.datastore, plan.scope, plan.key)
        if plan.action == "delete":
            return await self.delete(
                actor,
                ref,
                plan.expected_revision,
                idempotency_key,
                operation="undo",
                undoes=journal_id,
            )
        assert plan.value_json is not None
        meta = plan.metadata or {}
        if plan.must_be_absent:
            current = await self._read_fresh(ref)
            if current is not None:
                raise self._conflict(ref, current, "(absent)")
            return await self.create(
                actor,
                ref,
                plan.value_json,
                meta.get("attributes"),
                list(meta.get("user_ids") or []),
                idempotency_key,
                operation="undo",
                undoes=journal_id,
            )
        assert plan.expected_revision is not None
        return await self.update(
            actor,
            ref,
            plan.value_json,
            plan.expected_revision,
            lambda _current: meta.get("attributes") or None,
            lambda _current: list(meta.get("user_ids") or []),
            idempotency_key,
            operation="undo",
            undoes=journal_id,
        )


def _parse(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None
