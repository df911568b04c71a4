"""`delete`: delete the selected entries (standard or ordered).

Standard entries go through the entry service's checked delete: it deletes only if the entry is
still at the revision just read, then reads back the version its tombstone replaced, and puts a
game server's newer write back (the item then reads again and retries under a new key). Held
sessions are skipped (a game server would write the entry back at its next save anyway).
Ordered entries are compare-then-delete, which can race (the plan says so).
"""

from __future__ import annotations

from typing import Any, ClassVar

from shared_schema.common import Role
from shared_schema.entries import StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.jobs import DeleteParams, JobKind, JobSample, SampleAction

from ...entries import EntryRef
from ...errors import ServiceError
from ...ordered import RACE_NOTE, OrderedRef
from ..kind import (
    MAX_ATTEMPTS,
    ItemContext,
    ItemResult,
    JobEnv,
    JobKindHandler,
    JobSpec,
    PlanNotes,
    register,
)
from ..store import ItemRecord
from ..writes import (
    conflict,
    delete_entry,
    delete_ordered,
    held,
    image_of,
    kept_writing,
    missing,
    read_entry,
    read_ordered,
    sample,
    sample_image,
    session_of,
)


class DeleteKind(JobKindHandler):
    kind: ClassVar[JobKind] = JobKind.DELETE
    params_model = DeleteParams
    role: ClassVar[Role] = Role.ADMIN
    store_kinds = frozenset({StoreKind.STANDARD, StoreKind.ORDERED})
    pace = "remove"

    def requests(self, spec: JobSpec, items: int) -> dict[int, dict[str, int]]:
        if spec.store_kind is StoreKind.ORDERED:
            return {spec.universe: {"ordered.read": items, "ordered.remove": items}}
        # A read to check the session lock, the service's own fresh read, the delete, and
        # the revision list read back to find what the tombstone replaced.
        return {spec.universe: {"read": 2 * items, "remove": items, "list": items}}

    def plan_notes(
        self, spec: JobSpec, env: JobEnv, final_cursor: dict[str, Any] | None
    ) -> PlanNotes:
        notes = PlanNotes()
        if spec.store_kind is StoreKind.ORDERED:
            notes.warnings.append(
                f"{RACE_NOTE} Ordered deletes are final in Open Cloud; this job's journal keeps "
                "each value so a rollback can restore it."
            )
        else:
            notes.notes.append(
                "Each delete is checked afterwards: if a game server wrote the entry between "
                "this job's read and its delete, that value is put back and the item is retried."
            )
            notes.notes.append(held_note(spec.params.held_sessions.value))
        return notes

    async def sample(self, spec: JobSpec, item: ItemRecord, env: JobEnv) -> JobSample:
        if spec.store_kind is StoreKind.ORDERED:
            found = await read_ordered(
                env.plane, item.universe, item.datastore, item.scope, item.key
            )
            before = None if found is None else image_of(str(found.value))
            lock = None
        else:
            entry = await read_entry(env.plane, item.universe, item.datastore, item.scope, item.key)
            before, lock = sample_image(entry), session_of(entry)
        if before is None:
            return sample(item, SampleAction.SKIP, "would skip: it does not exist")
        if lock is not None and lock.held:
            return sample(
                item,
                SampleAction.SKIP,
                "would skip: a game server holds its session",
                before=before,
                lock=lock,
            )
        return sample(item, SampleAction.DELETE, "would delete", before=before, lock=lock)

    async def execute(self, ctx: ItemContext) -> ItemResult:
        if await ctx.applied("d") is not None:
            return ItemResult.applied()
        item = ctx.item
        if ctx.spec.store_kind is StoreKind.ORDERED:
            ref = OrderedRef(item.universe, item.datastore, item.scope, item.key)
            try:
                await delete_ordered(ctx, ref, "d")
            except ServiceError as error:
                if error.code is ErrorCode.NOT_FOUND:
                    return missing()
                raise
            return ItemResult.applied()
        entry_ref = EntryRef(item.universe, item.datastore, item.scope, item.key)
        for _ in range(MAX_ATTEMPTS):
            current = await read_entry(ctx, item.universe, item.datastore, item.scope, item.key)
            if current is None:
                return missing()
            if (
                result := held(ctx, session_of(current), ctx.spec.params.held_sessions)
            ) is not None:
                return result
            try:
                await delete_entry(ctx, entry_ref, current.revision_id, "d")
            except ServiceError as error:
                if error.code is ErrorCode.NOT_FOUND:
                    return missing()
                if conflict(error):
                    continue  # a game server wrote it meanwhile: read it again
                raise
            return ItemResult.applied()
        return kept_writing()


def held_note(policy: str) -> str:
    if policy == "retry":
        return (
            "Entries whose session a game server holds (ProfileStore, ProfileService, Lapis) "
            "are retried after the other items until released, for up to 15 minutes, then "
            "skipped."
        )
    return (
        "Entries whose session a game server holds (ProfileStore, ProfileService, Lapis) are "
        "skipped and listed: that server would overwrite a change at its next save."
    )


register(DeleteKind())
