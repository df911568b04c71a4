"""Standard data store entries: read through the cache, write through the journaled pipeline.

Reads use ReadThrough (fresh, else the labelled cached copy). Writes use JournaledWrites and
are conditional on what the user saw:
- create is create-only; update, revert and undo are conditional on the etag just read, which
  must be the revision the user saw (else 409 CONFLICT with the current value); a revert of a
  deleted key is conditional on the deletion the user saw and create-only;
- increment reads and writes `value + amount` conditionally on the etag it read (the client's
  CARRY_OVER mode, which also keeps attributes and user ids); its delta is journaled, and it is
  undone by adding -delta, never by writing a before-image over someone else's write;
- delete cannot be conditional (Open Cloud's delete takes no precondition), so it checks
  itself: it reads back the version its tombstone replaced (Roblox keeps it readable). If that
  is not the revision the user saw, a game server wrote in between: its value is put back with
  a create-only write (a key the game re-created meanwhile is never overwritten) and the answer
  is 409 CONFLICT with both values.
Writes whose answer was lost, or that a crash cut, are settled by re-reading (see `settle`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jsonpatch

from shared_schema.common import Source
from shared_schema.entries import (
    DeleteResult,
    EntryDiff,
    EntryOperation,
    EntryState,
    EntryView,
    JsonPatchOperation,
    PatchOp,
    RevisionInfo,
    RevisionPage,
    StoreKind,
)
from shared_schema.errors import ErrorCode

from ..opencloud import errors as oc
from ..opencloud.client import CARRY_OVER, OpenCloudClient
from ..opencloud.models import DataStoreEntry, EntryRevision
from ..opencloud.wire import attributes_equal
from ..storage.cache import EntryCache
from ..storage.journal import EntryImage, JournalRecord, Status, UndoPlan, content_sha256
from .errors import ServiceError
from .journaled import Actor, Intent, JournaledWrites, Outcome, WriteTarget, require_kind
from .provenance import fresh
from .readthrough import Answer, ReadThrough, Recalled
from .upstream import Upstream

MAX_VALUE_BYTES = 4 * 1024 * 1024
# Revisions read back after a delete to find the version its tombstone replaced.
_READ_BACK_REVISIONS = 25
log = logging.getLogger("dsm.entries")


@dataclass(frozen=True)
class EntryRef:
    """Where a standard entry lives: universe, data store, scope and key."""

    universe_id: int
    datastore: str
    scope: str
    key: str

    @property
    def subject(self) -> str:
        return f"{self.datastore}/{self.scope}/{self.key}"

    @property
    def target(self) -> WriteTarget:
        return WriteTarget(
            StoreKind.STANDARD, self.universe_id, self.datastore, self.scope, self.key
        )

    @classmethod
    def of(cls, record: JournalRecord | UndoPlan) -> EntryRef:
        return cls(int(record.universe), record.datastore, record.scope, record.key)


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


def _outcome(entry: DataStoreEntry) -> Outcome:
    return Outcome(_image(entry), entry.revision_id)


def _epoch(moment: datetime | None) -> datetime:
    return moment or datetime(1970, 1, 1, tzinfo=UTC)


def _parse(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def holds(entry: DataStoreEntry | None, image: EntryImage | None) -> bool:
    """Whether `entry` holds `image`'s content: value (by content, not spelling) and metadata."""
    if entry is None or entry.value_json is None or image is None:
        return False
    meta = image.metadata
    return (
        content_sha256(entry.value_json) == image.content_sha256
        and attributes_equal(entry.attributes, meta.get("attributes"))
        and list(entry.user_ids) == list(meta.get("user_ids") or [])
    )


@dataclass(frozen=True)
class EntryCopy:
    """The cached copy of one entry, for ReadThrough."""

    cache: EntryCache
    ref: EntryRef
    kind: str = "entry"

    def recall(self) -> Recalled[DataStoreEntry | None] | None:
        ref = self.ref
        hit = self.cache.get_entry(ref.universe_id, ref.datastore, ref.scope, ref.key)
        if hit is None:
            return None
        meta = hit.metadata
        entry = DataStoreEntry(
            path="",
            id=ref.key,
            key=ref.key,
            scope=ref.scope,
            value_json=hit.value_json,
            revision_id=hit.revision,
            etag=str(meta.get("etag") or hit.revision),
            state="ACTIVE",
            create_time=_parse(meta.get("created_at")),
            revision_create_time=_parse(meta.get("updated_at")),
            attributes=meta.get("attributes") or None,
            user_ids=list(meta.get("user_ids") or []),
            size_bytes=len(hit.value_json.encode("utf-8")),
        )
        return Recalled(entry, hit.fetched_at, hit.age_seconds)

    def remember(self, value: DataStoreEntry | None, generation: int | None) -> None:
        ref = self.ref
        if value is None or value.value_json is None:
            self.cache.invalidate_entry(ref.universe_id, ref.datastore, ref.scope, ref.key)
            return
        self.cache.put_entry(
            ref.universe_id,
            ref.datastore,
            ref.scope,
            ref.key,
            value_json=value.value_json,
            metadata=_metadata(value),
            revision=value.revision_id,
            if_generation=generation,
        )


@dataclass
class EntryService:
    upstream: Upstream
    cache: EntryCache
    reads: ReadThrough
    writes: JournaledWrites

    # --------------------------------------------------------------------- views

    def _source(self, ref: EntryRef) -> Source:
        return fresh(self.upstream.binding(ref.universe_id).backend)

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

    def _fresh_view(self, ref: EntryRef, entry: DataStoreEntry) -> EntryView:
        return self.view(ref, entry, self._source(ref))

    # --------------------------------------------------------------------- reads

    async def _read_fresh(self, ref: EntryRef) -> DataStoreEntry | None:
        """The current entry straight from Open Cloud, None when the key has no live value."""
        return await self.upstream.call(ref.universe_id, lambda c: _get_or_none(c, ref))

    async def get(self, ref: EntryRef) -> EntryView:
        """Fresh from Open Cloud; CACHED (with age and why) only when Open Cloud can't answer."""
        answer: Answer[DataStoreEntry | None] = await self.reads.read(
            ref.universe_id,
            lambda c: _get_or_none(c, ref),
            EntryCopy(self.cache, ref),
            what=ref.subject,
        )
        if answer.is_fresh:
            await self._settle_open_writes(ref, answer.value)
        if answer.value is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"{ref.subject} does not exist.")
        return self.view(ref, answer.value, answer.source)

    async def get_revision(self, ref: EntryRef, revision: str) -> EntryView:
        entry = await self.upstream.call(
            ref.universe_id,
            lambda c: c.get_entry(
                ref.universe_id, ref.datastore, ref.key, scope=ref.scope, revision_id=revision
            ),
        )
        return self._fresh_view(ref, entry)

    async def get_at(self, ref: EntryRef, when: datetime) -> EntryView:
        entry = await self.upstream.call(
            ref.universe_id,
            lambda c: c.get_entry(
                ref.universe_id, ref.datastore, ref.key, scope=ref.scope, at=when
            ),
        )
        return self._fresh_view(ref, entry)

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
            source=self._source(ref),
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

    def _conflict(
        self,
        ref: EntryRef,
        current: DataStoreEntry | None,
        expected: str,
        *,
        message: str | None = None,
        yours: DataStoreEntry | None = None,
    ) -> ServiceError:
        details: dict[str, Any] = {"expected_revision": expected}
        if current is not None:
            details["current"] = self._fresh_view(ref, current).model_dump(mode="json")
        if yours is not None:
            details["yours"] = self._fresh_view(ref, yours).model_dump(mode="json")
        state = f"is now at revision {current.revision_id}" if current else "no longer exists"
        return ServiceError(
            ErrorCode.CONFLICT,
            message
            or f"{ref.subject} changed since you opened it: you edited revision {expected} but "
            f"it {state}. Compare both versions and choose which to keep.",
            details=details,
        )

    async def _replayed_view(self, ref: EntryRef, record: JournalRecord) -> EntryView:
        """What a repeated request gets: the entry as it is now, read fresh."""
        current = await self._read_fresh(ref)
        if current is None:
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                f"{ref.subject} was written by journal item {record.id} but no longer exists.",
            )
        return self._fresh_view(ref, current)

    async def _written(
        self,
        actor: Actor,
        ref: EntryRef,
        intent: Intent,
        idempotency_key: str,
        send: Callable[[OpenCloudClient], Awaitable[DataStoreEntry]],
    ) -> EntryView:
        """Run one write through the journaled path; cache and show what it left."""
        _, entry = await self.writes.run(actor, ref.target, intent, idempotency_key, send, _outcome)
        EntryCopy(self.cache, ref).remember(entry, None)
        return self._fresh_view(ref, entry)

    async def create(
        self,
        actor: Actor,
        ref: EntryRef,
        value_json: str,
        attributes: dict[str, Any] | None,
        user_ids: list[int],
        idempotency_key: str,
        *,
        operation: EntryOperation = EntryOperation.CREATE,
        undoes: int | None = None,
    ) -> EntryView:
        if (done := self.writes.previous(ref.target, operation, idempotency_key)) is not None:
            return await self._replayed_view(ref, done)
        current = await self._read_fresh(ref)
        if current is not None:
            if undoes is not None:
                raise self._conflict(ref, current, "(absent)")
            raise ServiceError(
                ErrorCode.ALREADY_EXISTS,
                f"{ref.subject} already exists (revision {current.revision_id}); open it to edit.",
            )
        intended = EntryImage(value_json, {"attributes": attributes, "user_ids": user_ids})
        return await self._written(
            actor,
            ref,
            Intent(operation, None, intended=intended, undoes=undoes),
            idempotency_key,
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

    async def update(
        self,
        actor: Actor,
        ref: EntryRef,
        value_json: str,
        expected_revision: str,
        attributes_for: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        user_ids_for: Callable[[list[int]], list[int]],
        idempotency_key: str,
        *,
        operation: EntryOperation = EntryOperation.UPDATE,
    ) -> EntryView:
        if (done := self.writes.previous(ref.target, operation, idempotency_key)) is not None:
            return await self._replayed_view(ref, done)
        current = await self._read_fresh(ref)
        if current is None or current.revision_id != expected_revision:
            raise self._conflict(ref, current, expected_revision)
        return await self._write_over(
            actor,
            ref,
            current,
            value_json,
            attributes_for(current.attributes),
            user_ids_for(list(current.user_ids)),
            idempotency_key,
            operation=operation,
            expected=expected_revision,
        )

    async def _write_over(
        self,
        actor: Actor,
        ref: EntryRef,
        current: DataStoreEntry,
        value_json: str,
        attributes: dict[str, Any] | None,
        user_ids: list[int],
        idempotency_key: str,
        *,
        operation: EntryOperation,
        expected: str,
        undoes: int | None = None,
    ) -> EntryView:
        """Replace `current` (just read) with a new value, conditional on its etag."""
        intended = EntryImage(value_json, {"attributes": attributes, "user_ids": user_ids})
        intent = Intent(
            operation,
            _image(current),
            base_revision=current.revision_id,
            intended=intended,
            undoes=undoes,
        )
        try:
            return await self._written(
                actor,
                ref,
                intent,
                idempotency_key,
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
            if error.code is ErrorCode.CONFLICT and "journal_id" not in (error.details or {}):
                raise self._conflict(ref, await self._read_fresh(ref), expected) from None
            raise

    async def increment(
        self,
        actor: Actor,
        ref: EntryRef,
        amount: int,
        idempotency_key: str,
        *,
        undoes: int | None = None,
    ) -> EntryView:
        operation = EntryOperation.UNDO if undoes is not None else EntryOperation.INCREMENT
        if (done := self.writes.previous(ref.target, operation, idempotency_key)) is not None:
            return await self._replayed_view(ref, done)
        current = await self._read_fresh(ref)
        intent = Intent(
            operation,
            _image(current),
            base_revision=current.revision_id if current else None,
            intended=_incremented(current, amount),
            delta=amount,
            undoes=undoes,
        )
        # CARRY_OVER makes the client read-modify-write conditionally on the etag it read, so
        # attributes and user ids survive and a concurrent writer is never overwritten; the
        # journal keeps the revision the increment answered and its delta.
        return await self._written(
            actor,
            ref,
            intent,
            idempotency_key,
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

    async def revert(
        self,
        actor: Actor,
        ref: EntryRef,
        revision: str,
        expected_revision: str,
        idempotency_key: str,
    ) -> EntryView:
        """Write `revision` back as the newest revision, if the entry is still as the user saw it.

        On a live key that is the revision the user saw. On a deleted key it is the deletion
        (the newest revision, a tombstone) the user saw: the old value is then put back with a
        create-only write, so a game server that wrote the key meanwhile always wins.
        """
        operation = EntryOperation.REVERT
        if (done := self.writes.previous(ref.target, operation, idempotency_key)) is not None:
            return await self._replayed_view(ref, done)
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
        current = await self._read_fresh(ref)
        if current is None:
            return await self._restore(actor, ref, old, expected_revision, idempotency_key)
        if current.revision_id != expected_revision:
            raise self._conflict(
                ref,
                current,
                expected_revision,
                message=f"{ref.subject} changed since you looked: you saw revision "
                f"{expected_revision} but it is now at revision {current.revision_id}. Nothing "
                "was written; open the entry to see what it holds now.",
            )
        return await self._write_over(
            actor,
            ref,
            current,
            old.value_json,
            old.attributes or None,
            list(old.user_ids),
            idempotency_key,
            operation=operation,
            expected=expected_revision,
        )

    async def _restore(
        self,
        actor: Actor,
        ref: EntryRef,
        old: DataStoreEntry,
        deletion_seen: str,
        idempotency_key: str,
    ) -> EntryView:
        """Put a deleted key's old revision back (journaled as a revert; undone by deleting)."""
        assert old.value_json is not None
        page = await self.upstream.call(
            ref.universe_id,
            lambda c: c.list_revisions_page(
                ref.universe_id, ref.datastore, ref.key, scope=ref.scope, page_size=1
            ),
        )
        newest = page.items[0] if page.items else None
        if newest is None or newest.revision_id != deletion_seen:
            now = f"its newest revision is {newest.revision_id}" if newest else "it has no history"
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"{ref.subject} changed since you looked: you saw revision {deletion_seen} but "
                f"{now}. Nothing was restored; read its history again.",
                details={"expected_revision": deletion_seen},
            )
        try:
            return await self.create(
                actor,
                ref,
                old.value_json,
                old.attributes or None,
                list(old.user_ids),
                idempotency_key,
                operation=EntryOperation.REVERT,
            )
        except ServiceError as error:
            if error.code is not ErrorCode.ALREADY_EXISTS:
                raise
            # A game server (or a teammate) wrote the key after you looked: theirs stays.
            theirs = await self._read_fresh(ref)
            raise self._conflict(
                ref,
                theirs,
                deletion_seen,
                message=f"{ref.subject} was written again after you looked"
                + (f" (now revision {theirs.revision_id})" if theirs else "")
                + ", so nothing was restored and that write was kept. Open the entry to see it.",
            ) from None

    async def delete(
        self,
        actor: Actor,
        ref: EntryRef,
        expected_revision: str | None,
        idempotency_key: str,
        *,
        undoes: int | None = None,
        must_hold: EntryImage | None = None,
    ) -> DeleteResult:
        operation = EntryOperation.UNDO if undoes is not None else EntryOperation.DELETE
        if (done := self.writes.previous(ref.target, operation, idempotency_key)) is not None:
            return DeleteResult(journal_id=done.id, source=self._source(ref))
        current = await self._read_fresh(ref)
        if current is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"{ref.subject} does not exist.")
        if expected_revision is not None and current.revision_id != expected_revision:
            raise self._conflict(ref, current, expected_revision)
        if must_hold is not None and not holds(current, must_hold):
            raise self._conflict(ref, current, "(what the undone write left)")
        intent = Intent(
            operation, _image(current), base_revision=current.revision_id, undoes=undoes
        )

        async def send(client: OpenCloudClient) -> DeleteCheck:
            await client.delete_entry(
                ref.universe_id,
                ref.datastore,
                ref.key,
                scope=ref.scope,
                expected_revision=current.revision_id,
            )
            check = await self._check_delete(client, ref, current)
            if check.landed is not True:
                raise oc.WriteOutcomeUnknown(
                    f"The delete of {ref.subject} was answered, but its tombstone is not in the "
                    "revision history, so what it removed is not known."
                )
            return check

        record, check = await self.writes.run(
            actor, ref.target, intent, idempotency_key, send, DeleteCheck.outcome
        )
        if check.put_back is not None or check.recreated is not None:
            theirs = check.put_back or check.recreated
            raise self._conflict(
                ref,
                theirs,
                current.revision_id,
                yours=current,
                message=check.message(ref, current),
            )
        return DeleteResult(journal_id=record.id, source=self._source(ref))

    async def _check_delete(
        self, client: OpenCloudClient, ref: EntryRef, seen: DataStoreEntry
    ) -> DeleteCheck:
        """Did a delete's tombstone replace `seen`? If it replaced a newer write, put it back.

        Open Cloud keeps the version a delete replaced readable (RemoveAsync "creates a
        tombstone version while retaining the previous version"). Walking the history newest
        first, the first tombstone not older than `seen` is taken to be ours; meeting `seen`
        first means no delete landed since. (A game server that re-created and deleted the key
        again within this check is the one case this cannot tell apart.)
        """
        page = await client.list_revisions_page(
            ref.universe_id,
            ref.datastore,
            ref.key,
            scope=ref.scope,
            page_size=_READ_BACK_REVISIONS,
        )
        revisions = page.items  # newest first
        for index, revision in enumerate(revisions):
            if revision.revision_id == seen.revision_id:
                return DeleteCheck(landed=False)
            if revision.state != "DELETED" or _older(revision, seen):
                continue
            if index + 1 >= len(revisions):
                break
            replaced = revisions[index + 1]
            if replaced.revision_id == seen.revision_id:
                return DeleteCheck()
            return await self._put_back(client, ref, replaced.revision_id)
        return DeleteCheck(landed=None)

    async def _put_back(self, client: OpenCloudClient, ref: EntryRef, revision: str) -> DeleteCheck:
        """Write a version a delete removed back, create-only (a newer write always wins)."""
        value = await client.get_entry(
            ref.universe_id, ref.datastore, ref.key, scope=ref.scope, revision_id=revision
        )
        if value.value_json is None:
            return DeleteCheck()
        try:
            restored = await client.create_entry(
                ref.universe_id,
                ref.datastore,
                ref.key,
                value.value_json,
                scope=ref.scope,
                attributes=value.attributes,
                user_ids=value.user_ids,
            )
        except oc.AlreadyExists:
            # The key was written again after the delete: that newer write stays as it is.
            return DeleteCheck(replaced=value, recreated=await _get_or_none(client, ref))
        return DeleteCheck(replaced=value, put_back=restored)

    # ---------------------------------------------------------------------- undo

    async def undo(
        self, actor: Actor, plan: UndoPlan, idempotency_key: str
    ) -> EntryView | DeleteResult:
        """Put an entry back as it was before journaled write `plan.record_id`.

        Works for any edit, newest first: the key must hold what that write left, compared by
        content (a later undo leaves the same content at a new revision).
        """
        require_kind(plan, StoreKind.STANDARD)
        ref = EntryRef.of(plan)
        undoes = plan.record_id
        if plan.action == "compensate":
            assert plan.amount is not None
            return await self.increment(actor, ref, plan.amount, idempotency_key, undoes=undoes)
        if plan.action == "delete":
            return await self.delete(actor, ref, None, idempotency_key, undoes=undoes,
                                     must_hold=plan.left)  # fmt: skip
        assert plan.value_json is not None
        meta = plan.metadata or {}
        attributes = meta.get("attributes") or None
        user_ids = list(meta.get("user_ids") or [])
        if plan.must_be_absent:
            return await self.create(
                actor,
                ref,
                plan.value_json,
                attributes,
                user_ids,
                idempotency_key,
                operation=EntryOperation.UNDO,
                undoes=undoes,
            )
        if done := self.writes.previous(ref.target, EntryOperation.UNDO, idempotency_key):
            return await self._replayed_view(ref, done)
        current = await self._read_fresh(ref)
        if current is None or not holds(current, plan.left):
            raise self._conflict(
                ref,
                current,
                plan.expected_revision or "(what the undone write left)",
                message=f"{ref.subject} was written again after journal item {undoes}: it "
                "no longer holds what that write left, so undoing it would overwrite the newer "
                "write. Compare both versions and choose which to keep.",
            )
        return await self._write_over(
            actor,
            ref,
            current,
            plan.value_json,
            attributes,
            user_ids,
            idempotency_key,
            operation=EntryOperation.UNDO,
            expected=current.revision_id,
            undoes=undoes,
        )

    async def replay_undo(self, record: JournalRecord) -> EntryView | DeleteResult:
        """What a retried undo gets: the outcome of the first one."""
        ref = EntryRef.of(record)
        if record.after_exists is False:
            return DeleteResult(journal_id=record.id, source=self._source(ref))
        return await self._replayed_view(ref, record)

    # ------------------------------------------------------------------- settling

    async def settle(self, record: JournalRecord) -> Status:
        """Settle a write left INTENT/UNKNOWN by a crash or a lost answer, by re-reading.

        Never by sending it again: the content we meant to write is there -> APPLIED; the key
        is still at the revision the write was based on -> FAILED (it never landed); a delete
        is judged by the version its tombstone replaced, as right after a delete; anything
        else stays UNKNOWN for the user to judge.
        """
        ref = EntryRef.of(record)
        try:
            client = self.upstream.client_for(ref.universe_id)
            current = await _get_or_none(client, ref)
            return await self._settle(client, record, current)
        except (oc.OpenCloudError, ServiceError) as exc:
            log.warning("journal item %d not settled yet: %s", record.id, exc)
            return Status.UNKNOWN

    async def _settle_open_writes(self, ref: EntryRef, current: DataStoreEntry | None) -> None:
        """A fresh read of a key also settles our writes to it whose outcome was unknown."""
        for record in self.writes.journal.unknown_for(ref.universe_id, ref.datastore, ref.key):
            if record.scope == ref.scope and record.store_kind == StoreKind.STANDARD.value:
                client = self.upstream.client_for(ref.universe_id)
                try:
                    await self._settle(client, record, current)
                except oc.OpenCloudError as exc:
                    log.warning("journal item %d not settled yet: %s", record.id, exc)

    async def _settle(
        self, client: OpenCloudClient, record: JournalRecord, current: DataStoreEntry | None
    ) -> Status:
        ref = EntryRef.of(record)
        at = current.revision_id if current else None
        if record.intended_sha256 is None and record.delta is None:  # a delete
            if current is not None and at == record.base_revision:
                return self.writes.not_applied(record)
            seen = self.writes.journal.get(record.id).before
            if seen is None:
                return self.writes.still_unknown(record, "its before-image cannot be read")
            check = await self._check_delete(client, ref, _as_entry(ref, record, seen))
            if check.landed is False:
                return self.writes.not_applied(record)
            if check.landed is None:
                return self.writes.still_unknown(record, "its tombstone is not in the history")
            outcome = check.outcome()
            self.writes.settle(record, outcome)
            return Status.FAILED if outcome.refused else Status.APPLIED
        if current is not None and current.value_json is not None:
            content = content_sha256(current.value_json)
            # Journals written before content hashes hashed the exact request text.
            if record.intended_sha256 in (content, EntryImage(current.value_json).sha256):
                self.writes.settle(record, _outcome(current))
                return Status.APPLIED
        if at == record.base_revision:
            return self.writes.not_applied(record)
        return self.writes.still_unknown(record, "the entry changed after this write was sent")


@dataclass(frozen=True)
class DeleteCheck:
    """What a delete found when it read back the version it replaced."""

    landed: bool | None = True  # False: no tombstone since the version seen; None: not known
    replaced: DataStoreEntry | None = None  # set when it was not the version the user saw
    put_back: DataStoreEntry | None = None  # the replaced value, written back create-only
    recreated: DataStoreEntry | None = None  # a newer write found instead (nothing put back)

    def outcome(self) -> Outcome:
        if self.replaced is None:
            return Outcome(None)
        restored = self.put_back or self.recreated
        return Outcome(
            _image(restored),
            restored.revision_id if restored else None,
            refused=(
                f"taken back: a game server wrote revision {self.replaced.revision_id} after the "
                "entry was read, so the delete removed a value nobody had seen; "
                + ("that value was put back" if self.put_back else "the key was written again")
            ),
        )

    def message(self, ref: EntryRef, seen: DataStoreEntry) -> str:
        replaced = self.replaced.revision_id if self.replaced else "?"
        what = (
            "Its value was put back, so nothing was lost"
            if self.put_back
            else "It has been written again since, and that newer value was kept"
        )
        return (
            f"{ref.subject} changed after you opened it: a game server wrote revision {replaced} "
            f"after you read revision {seen.revision_id}, and your delete removed that newer "
            f"value. {what}. Compare both versions and delete again if you still want to."
        )


async def _get_or_none(client: OpenCloudClient, ref: EntryRef) -> DataStoreEntry | None:
    try:
        return await client.get_entry(ref.universe_id, ref.datastore, ref.key, scope=ref.scope)
    except oc.NotFound:
        return None


def _older(revision: EntryRevision, seen: DataStoreEntry) -> bool:
    made, base = revision.revision_create_time, seen.revision_create_time
    return made is not None and base is not None and made < base


def _incremented(current: DataStoreEntry | None, amount: int) -> EntryImage | None:
    """What an increment should leave if nobody else writes first (for settling it)."""
    if current is None or current.value_json is None:
        return EntryImage(str(amount))
    try:
        value = json.loads(current.value_json)
    except ValueError:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return EntryImage(str(value + amount))


def _as_entry(ref: EntryRef, record: JournalRecord, image: EntryImage) -> DataStoreEntry:
    """The entry a write was based on, rebuilt from its journaled before-image."""
    meta = image.metadata
    return DataStoreEntry(
        path="",
        id=ref.key,
        key=ref.key,
        scope=ref.scope,
        value_json=image.value_json,
        revision_id=record.base_revision or "",
        etag=str(meta.get("etag") or record.base_revision or ""),
        state="ACTIVE",
        revision_create_time=_parse(meta.get("updated_at")),
        attributes=meta.get("attributes") or None,
        user_ids=list(meta.get("user_ids") or []),
    )


# The images and outcomes a bulk job journals for its own writes, exactly as this service does.
entry_image = _image
entry_outcome = _outcome
get_or_none = _get_or_none
