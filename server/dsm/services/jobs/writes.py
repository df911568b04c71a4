"""Reads and writes of one job item, on the one read path's fresh reads and the one write path.

Standard entries: a create is create-only (a key that exists is never overwritten), an
overwrite is conditional on the etag just read (a game server that wrote in between makes it
fail, and the item reads again under a new idempotency key), a delete goes through the entry
service's checked delete (it reads back the version its tombstone replaced and puts back a game
server's newer write). Ordered entries have no conditions in Open Cloud: the ordered service
compares, then writes, and the plan says that this can race.

Every write carries `ctx.key(step)` and is journaled with the job's id (`for_job`), so a resumed
job never applies a step twice and a rollback finds every entry it touched.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jsonpatch

from shared_schema.constraints import compact_json, utf8_size
from shared_schema.entries import EntryOperation, JsonPatchOperation, PatchOp, StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.jobs import (
    HeldSessions,
    ItemState,
    JobSample,
    SampleAction,
    SampleImage,
    SkipCode,
)

from ...opencloud import errors as oc
from ...opencloud.client import OpenCloudClient
from ...opencloud.models import DataStoreEntry, OrderedDataStoreEntry
from ...storage.journal import EntryImage, JournalRecord
from ..entries import EntryRef, entry_image, entry_outcome, get_or_none
from ..errors import ServiceError
from ..journaled import Intent, WriteTarget
from ..ordered import OrderedRef
from .kind import MAX_ATTEMPTS, ItemContext, ItemResult
from .session_locks import SessionLock, detect
from .store import ItemRecord

SAMPLE_VALUE_LIMIT = 64 * 1024
MAX_PATCH_OPS = 50


# ------------------------------------------------------------------------------------ reads


async def read_entry(
    ctx_or_plane: Any, universe: int, store: str, scope: str, key: str
) -> DataStoreEntry | None:
    """The entry fresh from Open Cloud (never the cache), None when it has no live value."""
    plane = getattr(ctx_or_plane, "plane", ctx_or_plane)
    ref = EntryRef(universe, store, scope, key)
    found: DataStoreEntry | None = await plane.upstream.call(
        universe, lambda c: get_or_none(c, ref)
    )
    return found


async def read_ordered(
    ctx_or_plane: Any, universe: int, store: str, scope: str, entry_id: str
) -> OrderedDataStoreEntry | None:
    plane = getattr(ctx_or_plane, "plane", ctx_or_plane)

    async def fetch(client: OpenCloudClient) -> OrderedDataStoreEntry | None:
        try:
            return await client.ordered_get(universe, store, entry_id, scope=scope)
        except oc.NotFound:
            return None

    found: OrderedDataStoreEntry | None = await plane.upstream.call(universe, fetch)
    return found


def session_of(entry: DataStoreEntry | None) -> SessionLock | None:
    if entry is None or entry.value_json is None:
        return None
    return detect(entry.value_json, now=datetime.now(UTC), updated=entry.revision_create_time)


def session_text(lock: SessionLock | None) -> str | None:
    return None if lock is None else lock.describe(datetime.now(UTC))


def held(ctx: ItemContext, lock: SessionLock | None, policy: HeldSessions) -> ItemResult | None:
    """The item's result when a game server holds its session; None when it is free.

    Skipped, or with `held_sessions: retry` left pending for a later pass (until the last).
    """
    if lock is None or not lock.held:
        return None
    text = lock.describe(datetime.now(UTC))
    if policy is HeldSessions.RETRY and not ctx.final_pass:
        return ItemResult(
            ItemState.PENDING,
            skip_code=SkipCode.SESSION_HELD,
            message=f"{text} Retried after the other items.",
            deferred=True,
        )
    return ItemResult.skipped(SkipCode.SESSION_HELD, text)


# ----------------------------------------------------------------------------------- writes


def standard_target(universe: int, store: str, scope: str, key: str) -> WriteTarget:
    return WriteTarget(StoreKind.STANDARD, universe, store, scope, key)


def _metadata_image(value_json: str, attributes: Any, user_ids: list[int]) -> EntryImage:
    return EntryImage(value_json, {"attributes": attributes or None, "user_ids": list(user_ids)})


async def create_entry(
    ctx: ItemContext,
    target: WriteTarget,
    value_json: str,
    attributes: dict[str, Any] | None,
    user_ids: list[int],
    step: str,
) -> JournalRecord:
    """Create-only: ALREADY_EXISTS (journaled FAILED) when the key exists."""
    plane = ctx.plane
    intent = Intent(
        EntryOperation.CREATE, None, intended=_metadata_image(value_json, attributes, user_ids)
    )
    record, _ = await plane.writes.run(
        ctx.actor,
        target,
        intent,
        ctx.key(step),
        lambda c: c.create_entry(
            target.universe_id,
            target.store,
            target.key,
            value_json,
            scope=target.scope,
            attributes=attributes or None,
            user_ids=list(user_ids),
        ),
        entry_outcome,
    )
    ctx.note(record)
    return record


async def overwrite_entry(
    ctx: ItemContext,
    target: WriteTarget,
    current: DataStoreEntry,
    value_json: str,
    attributes: dict[str, Any] | None,
    user_ids: list[int],
    step: str,
    operation: EntryOperation = EntryOperation.UPDATE,
) -> JournalRecord:
    """Replace `current` (just read), conditional on its etag: CONFLICT if it moved on."""
    plane = ctx.plane
    intent = Intent(
        operation,
        entry_image(current),
        base_revision=current.revision_id,
        intended=_metadata_image(value_json, attributes, user_ids),
    )
    record, _ = await plane.writes.run(
        ctx.actor,
        target,
        intent,
        ctx.key(step),
        lambda c: c.update_entry(
            target.universe_id,
            target.store,
            target.key,
            value_json,
            attributes=attributes or None,
            user_ids=list(user_ids),
            etag=current.etag,
            scope=target.scope,
        ),
        entry_outcome,
    )
    ctx.note(record)
    return record


async def delete_entry(ctx: ItemContext, ref: EntryRef, revision: str, step: str) -> int:
    """The entry service's checked delete, only if the entry is still at `revision`."""
    result = await ctx.plane.entries.delete(ctx.actor, ref, revision, ctx.key(step))
    ctx.journal_ids.append(result.journal_id)
    return result.journal_id


async def set_ordered(
    ctx: ItemContext, ref: OrderedRef, value: int, step: str, *, create_only: bool
) -> int:
    ordered = ctx.plane.ordered
    if create_only:
        view = await ordered.create(ctx.actor, ref, value, ctx.key(step))
    else:
        view = await ordered.update(ctx.actor, ref, value, True, ctx.key(step))
    ctx.journal_ids.append(view.journal_id)
    return view.journal_id


async def delete_ordered(ctx: ItemContext, ref: OrderedRef, step: str) -> int:
    result = await ctx.plane.ordered.delete(ctx.actor, ref, ctx.key(step))
    ctx.journal_ids.append(result.journal_id)
    return result.journal_id


def missing(what: str = "It") -> ItemResult:
    return ItemResult.skipped(SkipCode.NOT_FOUND, f"{what} does not exist.")


def kept_writing(what: str = "it") -> ItemResult:
    """The item's result after every attempt found the entry changed since it was read."""
    return ItemResult.failed(
        ErrorCode.CONFLICT,
        f"A game server kept writing {what} while the job tried {MAX_ATTEMPTS} times.",
    )


def conflict(error: ServiceError) -> bool:
    """A write refused because the entry changed since it was read: read again and retry."""
    return error.code is ErrorCode.CONFLICT and not str(error.message).startswith("Gave up")


# ---------------------------------------------------------------------------------- samples


def sample(
    item: ItemRecord,
    action: SampleAction,
    summary: str,
    *,
    before: SampleImage | None = None,
    after: SampleImage | None = None,
    lock: SessionLock | None = None,
    where: tuple[str, str, str] | None = None,
) -> JobSample:
    """A plan sample for `item` (or for the target `where` = (store, scope, key) of a copy)."""
    store, scope, key = where or (item.datastore, item.scope, item.key)
    return JobSample(
        datastore=store,
        scope=scope,
        key=key,
        action=action,
        summary=summary,
        before=before,
        after=after,
        patch=patch(before.value_json if before else None, after.value_json if after else None),
        session=session_text(lock),
    )


def sample_image(entry: DataStoreEntry | None) -> SampleImage | None:
    if entry is None or entry.value_json is None:
        return None
    return image_of(entry.value_json, entry.attributes, list(entry.user_ids))


def image_of(
    value_json: str, attributes: dict[str, Any] | None = None, user_ids: list[int] | None = None
) -> SampleImage:
    size = utf8_size(value_json)
    return SampleImage(
        value_json=value_json if size <= SAMPLE_VALUE_LIMIT else None,
        size_bytes=size,
        attributes=attributes or None,
        user_ids=list(user_ids or []),
    )


def patch(before_json: str | None, after_json: str | None) -> list[JsonPatchOperation]:
    """RFC 6902 from one value to another (values travel as JSON text), at most 50 operations."""
    if before_json is None or after_json is None:
        return []
    try:
        before, after = json.loads(before_json), json.loads(after_json)
    except ValueError:
        return []
    operations = []
    for op in jsonpatch.make_patch(before, after).patch[:MAX_PATCH_OPS]:
        operations.append(
            JsonPatchOperation(
                op=PatchOp(op["op"]),
                path=op["path"],
                from_path=op.get("from"),
                value_json=compact_json(op["value"]) if "value" in op else None,
            )
        )
    return operations
