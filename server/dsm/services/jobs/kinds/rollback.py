"""`rollback`: undo every journaled write of another job, newest first, conditionally.

Each item is one journal item of the job being rolled back. It is undone through the journal's
undo (the same as undoing one write by hand): the entry must still hold what the job's write
left, compared by content; then its before-image is written back conditionally (a created key
is deleted, a deleted key re-created create-only). An entry anyone changed since is skipped and
listed, never overwritten. Ordered entries are compared by value, then written (this can race).
Writes to one key are undone one at a time, newest first.

A write an earlier rollback of the same job already undid is skipped `already_undone`, so rolling
back again finishes what a failed or cancelled rollback left without writing anything twice. A
write that cannot be undone at all (its entry erased for a right-to-erasure request, say) is
skipped `cannot_undo`; an item whose undo Open Cloud refused or that kept failing is failed, and
the service then fails the rollback (see `JobService._rollback_finished`).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from pydantic import BaseModel

from shared_schema.common import Role
from shared_schema.entries import StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.jobs import JobKind, JobSample, SampleAction, SkipCode

from ....storage.journal import (
    AlreadyUndone,
    NothingToUndo,
    Status,
    UndoNotPossible,
    UndoUnsettled,
    UnknownRecord,
    WriteJournal,
    content_sha256,
)
from ...entries import holds
from ...errors import ServiceError
from ...ordered import RACE_NOTE
from ..kind import (
    ItemContext,
    ItemPage,
    ItemResult,
    JobEnv,
    JobKindHandler,
    JobSpec,
    PlanNotes,
    RunResources,
    handler_for,
    register,
    spec_of,
)
from ..store import ItemRecord, NewItem
from ..writes import image_of, read_entry, read_ordered, sample, sample_image

PAGE = 500


class RollbackParams(BaseModel):
    """Not a protocol model: rollback jobs are made by POST /jobs/{id}/rollback."""

    of_job: str


class KeyLocks(RunResources):
    """One undo at a time per key, so a key the job wrote twice is undone newest first."""

    def __init__(self) -> None:
        self._locks: defaultdict[tuple[Any, ...], asyncio.Lock] = defaultdict(asyncio.Lock)

    @asynccontextmanager
    async def holding(self, item: ItemRecord) -> AsyncIterator[None]:
        key = (item.store_kind, item.universe, item.datastore, item.scope, item.key)
        async with self._locks[key]:
            yield


class RollbackKind(JobKindHandler):
    kind: ClassVar[JobKind] = JobKind.ROLLBACK
    params_model = RollbackParams
    store_kinds = frozenset({StoreKind.STANDARD, StoreKind.ORDERED})

    def original(self, spec: JobSpec, env: JobEnv) -> JobSpec:
        return spec_of(env.store.get(spec.params.of_job))

    def role_for(self, spec: JobSpec, env: JobEnv) -> Role:
        original = self.original(spec, env)
        return handler_for(original.kind).role_for(original, env)

    def written_universes(self, spec: JobSpec, env: JobEnv) -> set[int]:
        original = self.original(spec, env)
        return handler_for(original.kind).written_universes(original, env)

    def describe(self, spec: JobSpec) -> str:
        return f"Roll back job {spec.params.of_job}"

    def enumerate(
        self, spec: JobSpec, env: JobEnv, cursor: dict[str, Any] | None
    ) -> AsyncIterator[ItemPage]:
        journal = env.plane.writes.journal

        async def pages() -> AsyncIterator[ItemPage]:
            before = (cursor or {}).get("before")
            while True:
                records = journal.list(job_id=spec.params.of_job, limit=PAGE, before_id=before)
                if not records:
                    yield ItemPage([], None, True)
                    return
                items = [
                    NewItem(
                        int(r.universe),
                        r.store_kind,
                        r.datastore,
                        r.scope,
                        r.key,
                        data={"journal_id": r.id},
                    )
                    for r in records
                    if r.status is not Status.FAILED
                ]
                before = records[-1].id
                yield ItemPage(items, {"before": before}, False)

        return pages()

    def requests(self, spec: JobSpec, items: int) -> dict[int, dict[str, int]]:
        if spec.store_kind is StoreKind.ORDERED:
            return {spec.universe: {"ordered.read": 2 * items, "ordered.write": items}}
        return {spec.universe: {"read": 2 * items, "write": items}}

    def plan_notes(
        self, spec: JobSpec, env: JobEnv, final_cursor: dict[str, Any] | None
    ) -> PlanNotes:
        notes = PlanNotes()
        notes.notes.append(
            "Each entry the job wrote goes back to its value before the job (a key it created "
            "is deleted, a key it deleted is created again), only if it still holds what the "
            "job left: entries changed since by anyone are skipped and listed."
        )
        if spec.store_kind is StoreKind.ORDERED:
            notes.warnings.append(RACE_NOTE)
        return notes

    async def sample(self, spec: JobSpec, item: ItemRecord, env: JobEnv) -> JobSample:
        journal_id = int((item.data or {})["journal_id"])
        detail = env.plane.writes.journal.get(journal_id)
        restores = detail.before
        restored = None
        if restores is not None:
            meta = restores.metadata
            restored = image_of(restores.value_json, meta.get("attributes"), meta.get("user_ids"))
        if item.store_kind == StoreKind.ORDERED.value:
            found = await read_ordered(
                env.plane, item.universe, item.datastore, item.scope, item.key
            )
            current = None if found is None else image_of(str(found.value))
            now = None if found is None else content_sha256(str(found.value))
            same = now == (detail.after.content_sha256 if detail.after is not None else None)
        else:
            entry = await read_entry(env.plane, item.universe, item.datastore, item.scope, item.key)
            current = sample_image(entry)
            same = holds(entry, detail.after) if detail.after is not None else entry is None
        if detail.record.status is not Status.APPLIED:
            return sample(item, SampleAction.FAIL, f"journal item {journal_id}: outcome unknown",
                          before=current)  # fmt: skip
        if not same:
            return sample(item, SampleAction.SKIP, "would skip: changed since the job wrote it",
                          before=current, after=restored)  # fmt: skip
        if restored is None:
            return sample(item, SampleAction.DELETE, "would delete what the job created",
                          before=current)  # fmt: skip
        return sample(item, SampleAction.WRITE, "would restore the value from before the job",
                      before=current, after=restored)  # fmt: skip

    async def open_run(self, spec: JobSpec, env: JobEnv) -> RunResources:
        return KeyLocks()

    async def execute(self, ctx: ItemContext) -> ItemResult:
        journal_id = int((ctx.item.data or {})["journal_id"])
        if await ctx.applied("u") is not None:
            return ItemResult.applied()
        locks: KeyLocks = ctx.resources
        async with locks.holding(ctx.item):
            journal = ctx.plane.writes.journal
            try:
                record = journal.get(journal_id).record
            except UnknownRecord:
                return ItemResult.failed(ErrorCode.NOT_FOUND, f"Journal item {journal_id} is gone.")
            if record.status is Status.FAILED:
                return ItemResult.skipped(SkipCode.NOTHING_TO_UNDO, "That write did not land.")
            if record.status is not Status.APPLIED:
                return ItemResult.failed(
                    ErrorCode.WRITE_OUTCOME_UNKNOWN,
                    f"The outcome of journal item {journal_id} is not known; open the entry to "
                    "settle it, then roll back again.",
                )
            if (refused := _refused(journal, journal_id)) is not None:
                return refused
            key = ctx.key("u")
            try:
                await ctx.plane.journal.undo(ctx.actor, journal_id, key)
            except ServiceError as error:
                if error.code in (
                    ErrorCode.CONFLICT,
                    ErrorCode.NOT_FOUND,
                    ErrorCode.ALREADY_EXISTS,
                ):
                    return ItemResult.skipped(SkipCode.CHANGED_SINCE, error.message)
                # The journal refused it just now (say, an undo by hand landed meanwhile); any
                # other error (an Open Cloud refusal too) fails the item, never passes as done.
                refused = (
                    _refused(journal, journal_id) if error.code is ErrorCode.BAD_REQUEST else None
                )
                if refused is not None:
                    return refused
                raise
            finally:
                if (done := journal.find_by_idempotency_key(key)) is not None:
                    ctx.note(done)
        return ItemResult.applied()


def _refused(journal: WriteJournal, journal_id: int) -> ItemResult | None:
    """Why the write cannot be undone now, as the item's outcome; None when it can.

    Already undone (by an earlier rollback of the same job, or by hand) is a skip that counts
    as rolled back, so a second rollback finishes what a first one left without writing twice.
    """
    try:
        journal.undo_plan(journal_id)
    except AlreadyUndone as why:
        return ItemResult.skipped(SkipCode.ALREADY_UNDONE, f"{str(why).capitalize()}.")
    except NothingToUndo as why:
        return ItemResult.skipped(SkipCode.NOTHING_TO_UNDO, f"{str(why).capitalize()}.")
    except UndoUnsettled as why:
        return ItemResult.failed(
            ErrorCode.WRITE_OUTCOME_UNKNOWN,
            f"{str(why).capitalize()} (open the entry to settle it), then roll back again.",
        )
    except UndoNotPossible as why:
        return ItemResult.skipped(SkipCode.CANNOT_UNDO, f"{str(why).capitalize()}.")
    return None


register(RollbackKind())
