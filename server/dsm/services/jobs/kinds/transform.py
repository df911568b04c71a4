"""`transform`: apply a jq program to each selected value (`.coins *= 2 | del(.legacy)`).

The program runs in worker processes with a time and memory limit (`JqTransform`). Output equal
to the input is skipped; a program that fails, output that breaks a limit, and output where jq
would round numbers the program did not compute are reported and the entry left untouched. For
session-locked saves (ProfileStore, ProfileService, Lapis) the program sees only the data part
by default and the wrapper is kept byte for byte; held sessions are skipped. The write is
conditional on the revision read, so a game server's write in between is never overwritten:
the item reads again and runs the program on the newer value.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from shared_schema.common import Role
from shared_schema.errors import ErrorCode
from shared_schema.jobs import (
    JobKind,
    JobSample,
    SampleAction,
    SkipCode,
    TransformParams,
    WrappedEdit,
)

from ....opencloud.models import DataStoreEntry
from ...errors import ServiceError
from ..kind import (
    MAX_ATTEMPTS,
    ItemContext,
    ItemResult,
    JobEnv,
    JobKindHandler,
    JobSpec,
    PlanNotes,
    RunResources,
    register,
)
from ..session_locks import SessionLockError, replace_data
from ..store import ItemRecord
from ..transform import JqTransform, TransformError, check_program
from ..writes import (
    conflict,
    held,
    image_of,
    kept_writing,
    missing,
    overwrite_entry,
    read_entry,
    sample,
    sample_image,
    session_of,
    standard_target,
)
from .delete import held_note

POOL_SIZE = 2


class JqPool(RunResources):
    """A few jq worker processes shared by a job's items."""

    def __init__(self, program: str, size: int = POOL_SIZE) -> None:
        self._all = [JqTransform(program) for _ in range(size)]
        self._free: asyncio.Queue[JqTransform] = asyncio.Queue()
        for worker in self._all:
            self._free.put_nowait(worker)

    async def apply(self, value_json: str) -> tuple[str, str, str | None]:
        jq = await self._free.get()
        running = asyncio.ensure_future(asyncio.to_thread(jq.apply, value_json))
        try:
            outcome = await asyncio.shield(running)
        except asyncio.CancelledError:
            # The item was cut (a pause): its thread still talks to this worker, so the worker
            # goes back to the pool only when that answer is in, never in the middle of it.
            running.add_done_callback(lambda _: self._free.put_nowait(jq))
            raise
        self._free.put_nowait(jq)
        return outcome.kind, outcome.message, outcome.value_json

    async def close(self) -> None:
        for worker in self._all:
            await asyncio.to_thread(worker.close)


class Computed:
    """What the program makes of one entry: a new value to write, or why not."""

    def __init__(self, kind: str, message: str, value_json: str | None = None) -> None:
        self.kind = kind  # changed | unchanged | precision | invalid | failed
        self.message = message
        self.value_json = value_json


async def compute(pool: JqPool, entry: DataStoreEntry, wrapped: WrappedEdit) -> Computed:
    assert entry.value_json is not None
    lock = session_of(entry)
    if lock is None or wrapped is WrappedEdit.WHOLE:
        kind, message, value = await pool.apply(entry.value_json)
        return Computed(kind, message, value)
    kind, message, data = await pool.apply(lock.data_json)
    if kind != "changed" or data is None:
        return Computed(kind, message)
    try:
        return Computed("changed", message, replace_data(entry.value_json, data))
    except SessionLockError as exc:
        return Computed("invalid", f"The new {lock.kind} data cannot be stored: {exc}.")


class TransformKind(JobKindHandler):
    kind: ClassVar[JobKind] = JobKind.TRANSFORM
    params_model = TransformParams
    role: ClassVar[Role] = Role.ADMIN

    def check(self, spec: JobSpec, env: JobEnv) -> None:
        try:
            check_program(spec.params.program)
        except TransformError as exc:
            raise ServiceError(
                ErrorCode.BAD_REQUEST, f"The jq program does not compile: {exc}"
            ) from None

    def describe(self, spec: JobSpec) -> str:
        program = spec.params.program
        shown = program if len(program) <= 60 else program[:57] + "..."
        return f"{super().describe(spec)} with `{shown}`"

    def requests(self, spec: JobSpec, items: int) -> dict[int, dict[str, int]]:
        return {spec.universe: {"read": items, "write": items}}

    def plan_notes(self, spec: JobSpec, env: JobEnv, final_cursor: object) -> PlanNotes:
        notes = PlanNotes()
        notes.notes.append(
            "Entries the program leaves as they are are skipped; entries it fails on, or whose "
            "output breaks a limit, are listed and left untouched."
        )
        notes.notes.append(
            "jq holds numbers as doubles: an entry whose untouched numbers it would round "
            "(integers beyond 2^53, long decimals) is listed and left untouched."
        )
        if spec.params.wrapped is WrappedEdit.DATA:
            notes.notes.append(
                "ProfileStore, ProfileService and Lapis saves: the program sees only the data "
                "part; the wrapper and its session lock are kept byte for byte."
            )
        notes.notes.append(held_note(spec.params.held_sessions.value))
        return notes

    async def samples(self, spec: JobSpec, items: list[ItemRecord], env: JobEnv) -> list[JobSample]:
        pool = JqPool(spec.params.program, size=1)  # one worker process for every sample
        try:
            return [await self._sample(spec, item, env, pool) for item in items]
        finally:
            await pool.close()

    async def _sample(
        self, spec: JobSpec, item: ItemRecord, env: JobEnv, pool: JqPool
    ) -> JobSample:
        entry = await read_entry(env.plane, item.universe, item.datastore, item.scope, item.key)
        if entry is None or entry.value_json is None:
            return sample(item, SampleAction.SKIP, "would skip: it does not exist")
        lock = session_of(entry)
        result = await compute(pool, entry, spec.params.wrapped)
        before = sample_image(entry)
        if result.kind != "changed" or result.value_json is None:
            action = SampleAction.SKIP if result.kind == "unchanged" else SampleAction.FAIL
            return sample(item, action, f"would {action.value}: {result.message}",
                          before=before, lock=lock)  # fmt: skip
        after = image_of(result.value_json, entry.attributes, list(entry.user_ids))
        if lock is not None and lock.held:
            return sample(item, SampleAction.SKIP, "would skip: a game server holds its session",
                          before=before, after=after, lock=lock)  # fmt: skip
        return sample(item, SampleAction.WRITE, "would change it", before=before, after=after,
                      lock=lock)  # fmt: skip

    async def open_run(self, spec: JobSpec, env: JobEnv) -> RunResources:
        return JqPool(spec.params.program)

    async def execute(self, ctx: ItemContext) -> ItemResult:
        if await ctx.applied("w") is not None:
            return ItemResult.applied()
        item, params = ctx.item, ctx.spec.params
        pool: JqPool = ctx.resources
        target = standard_target(item.universe, item.datastore, item.scope, item.key)
        for _ in range(MAX_ATTEMPTS):
            entry = await read_entry(ctx, item.universe, item.datastore, item.scope, item.key)
            if entry is None or entry.value_json is None:
                return missing()
            if (result := held(ctx, session_of(entry), params.held_sessions)) is not None:
                return result
            computed = await compute(pool, entry, params.wrapped)
            if computed.kind == "unchanged":
                return ItemResult.skipped(SkipCode.UNCHANGED, computed.message)
            if computed.kind == "precision":
                return ItemResult.skipped(SkipCode.PRECISION, computed.message)
            if computed.kind != "changed" or computed.value_json is None:
                return ItemResult.failed(ErrorCode.BAD_REQUEST, computed.message)
            try:
                await overwrite_entry(ctx, target, entry, computed.value_json, entry.attributes,
                                      list(entry.user_ids), "w")  # fmt: skip
            except ServiceError as error:
                if conflict(error):
                    continue  # a game server wrote it: run the program on the newer value
                raise
            return ItemResult.applied()
        return kept_writing()


register(TransformKind())
