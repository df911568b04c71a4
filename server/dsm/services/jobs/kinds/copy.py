"""`copy` and `move`: entries to another scope, data store or universe, with their attributes
and user ids.

A copy to a key that does not exist is create-only, so it never overwrites anything; with
`on_exists: overwrite` an existing target is replaced conditionally on what was just read.
A move copies first (step `c`), then deletes the source (step `d`) only if the source still
holds what was copied: a game server that wrote the source in between keeps its write, the
copy stays, and the item fails with CONFLICT. Held sessions: a moved source, or an overwritten
target, that a game server holds is skipped.
"""

from __future__ import annotations

from typing import Any, ClassVar

from shared_schema.common import Role
from shared_schema.entries import StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.jobs import (
    CopyParams,
    JobKind,
    JobSample,
    OnExists,
    SampleAction,
    SkipCode,
)

from ...entries import EntryRef, holds
from ...errors import ServiceError
from ...ordered import RACE_NOTE, OrderedRef
from ..kind import (
    MAX_ATTEMPTS,
    ItemContext,
    ItemResult,
    JobEnv,
    JobKindHandler,
    JobSpec,
    JobStop,
    PlanNotes,
    describe_selection,
    register,
)
from ..store import ItemRecord
from ..writes import (
    conflict,
    create_entry,
    delete_entry,
    delete_ordered,
    held,
    image_of,
    kept_writing,
    missing,
    overwrite_entry,
    read_entry,
    read_ordered,
    sample,
    sample_image,
    session_of,
    set_ordered,
    standard_target,
)
from .delete import held_note


def target_of(spec: JobSpec, item: ItemRecord) -> tuple[int, str, str, str]:
    """(universe, store, scope, key) an item is copied to."""
    target = spec.params.target
    return (
        target.universe_id or item.universe,
        target.datastore or item.datastore,
        target.scope or item.scope,
        item.key,
    )


def _place(universe: int, store: str, scope: str) -> str:
    return f"{store}/{scope} (universe {universe})"


class CopyKind(JobKindHandler):
    kind: ClassVar[JobKind] = JobKind.COPY
    params_model = CopyParams
    role: ClassVar[Role] = Role.EDITOR
    store_kinds = frozenset({StoreKind.STANDARD, StoreKind.ORDERED})
    moves: ClassVar[bool] = False

    def check(self, spec: JobSpec, env: JobEnv) -> None:
        target = spec.params.target
        selection = spec.selection
        assert selection is not None
        if target.universe_id is None and target.datastore is None and target.scope is None:
            raise ServiceError(
                ErrorCode.BAD_REQUEST,
                "Say where to copy to: another universe, data store or scope (params.target).",
            )
        same_universe = target.universe_id in (None, spec.universe)
        same_store = target.datastore is None or (selection.datastores == [target.datastore])
        if same_universe and same_store and target.scope is None:
            raise ServiceError(
                ErrorCode.BAD_REQUEST,
                "The target is the source itself; name another universe, data store or scope.",
            )
        if target.universe_id is not None:
            env.plane.upstream.client_for(target.universe_id)  # NO_API_KEY if unreachable

    def written_universes(self, spec: JobSpec, env: JobEnv) -> set[int]:
        target = spec.params.target.universe_id or spec.universe
        return {target, spec.universe} if self.moves else {target}

    def describe(self, spec: JobSpec) -> str:
        target = spec.params.target
        parts = []
        if target.universe_id is not None:
            parts.append(f"universe {target.universe_id}")
        if target.datastore is not None:
            parts.append(f"data store {target.datastore}")
        if target.scope is not None:
            parts.append(f"scope {target.scope}")
        verb = "Move" if self.moves else "Copy"
        return f"{verb} {describe_selection(spec)} to {', '.join(parts)}"

    def requests(self, spec: JobSpec, items: int) -> dict[int, dict[str, int]]:
        source = spec.universe
        target = spec.params.target.universe_id or source
        overwrite = spec.params.on_exists is OnExists.OVERWRITE
        counts: dict[int, dict[str, int]] = {source: {}, target: {}}
        if spec.store_kind is StoreKind.ORDERED:
            counts[source]["ordered.read"] = items
            counts[target]["ordered.read"] = counts[target].get("ordered.read", 0) + items
            counts[target]["ordered.write"] = items
            if self.moves:
                counts[source]["ordered.read"] += items
                counts[source]["ordered.remove"] = items
            return counts
        counts[source]["read"] = items
        if overwrite:
            counts[target]["read"] = counts[target].get("read", 0) + items
        counts[target]["write"] = items
        if self.moves:
            # Read the source again, then the checked delete: its read, delete and read-back.
            counts[source]["read"] += 2 * items
            counts[source]["remove"] = items
            counts[source]["list"] = items
        return counts

    def plan_notes(
        self, spec: JobSpec, env: JobEnv, final_cursor: dict[str, Any] | None
    ) -> PlanNotes:
        notes = PlanNotes()
        params = spec.params
        selection = spec.selection
        assert selection is not None
        if spec.store_kind is StoreKind.ORDERED:
            notes.warnings.append(RACE_NOTE)
        else:
            notes.notes.append("Attributes and user ids are copied with each value.")
        notes.notes.append(
            {
                OnExists.SKIP: "Keys that already exist in the target are left as they are.",
                OnExists.OVERWRITE: "Keys that already exist in the target are replaced "
                "(conditionally on what was just read, so a game server's newer write fails "
                "the item instead of being lost).",
                OnExists.FAIL: "The job stops at the first key that already exists in the "
                "target (copies made before it stay, and can be rolled back).",
            }[params.on_exists]
        )
        if params.target.datastore is not None and len(selection.datastores) > 1:
            notes.warnings.append(
                f"{len(selection.datastores)} data stores are copied into one: equal keys in "
                "the same scope collide (on_exists decides)."
            )
        if self.moves:
            notes.notes.append(
                "Each source is deleted only after its copy landed, and only if it still holds "
                "what was copied; otherwise both are kept and the item fails with CONFLICT."
            )
        if spec.store_kind is StoreKind.STANDARD and (
            self.moves or params.on_exists is OnExists.OVERWRITE
        ):
            notes.notes.append(held_note(params.held_sessions.value))
        return notes

    async def sample(self, spec: JobSpec, item: ItemRecord, env: JobEnv) -> JobSample:
        universe, store, scope, key = target_of(spec, item)
        where = (store, scope, key)
        on_exists = spec.params.on_exists
        if spec.store_kind is StoreKind.ORDERED:
            src = await read_ordered(env.plane, item.universe, item.datastore, item.scope, key)
            dst = await read_ordered(env.plane, universe, store, scope, key)
            source_image = None if src is None else image_of(str(src.value))
            target_image = None if dst is None else image_of(str(dst.value))
            lock = None
        else:
            src_entry = await read_entry(env.plane, item.universe, item.datastore, item.scope, key)
            dst_entry = await read_entry(env.plane, universe, store, scope, key)
            source_image, target_image = sample_image(src_entry), sample_image(dst_entry)
            lock = session_of(dst_entry) if on_exists is OnExists.OVERWRITE else None
            if self.moves and session_of(src_entry) is not None:
                lock = session_of(src_entry)
        place = _place(universe, store, scope)
        if source_image is None:
            return sample(item, SampleAction.SKIP, "would skip: the source does not exist")
        if target_image is not None and on_exists is not OnExists.OVERWRITE:
            verb = "stop the job" if on_exists is OnExists.FAIL else "skip"
            return sample(
                item,
                SampleAction.FAIL if on_exists is OnExists.FAIL else SampleAction.SKIP,
                f"would {verb}: {key!r} exists in {place}",
                before=target_image,
                after=source_image,
                where=where,
            )
        if lock is not None and lock.held:
            return sample(
                item,
                SampleAction.SKIP,
                "would skip: a game server holds its session",
                before=target_image,
                after=source_image,
                lock=lock,
                where=where,
            )
        verb = "replace" if target_image is not None else "create"
        suffix = " and delete the source" if self.moves else ""
        return sample(
            item,
            SampleAction.WRITE,
            f"would {verb} {key!r} in {place}{suffix}",
            before=target_image,
            after=source_image,
            lock=lock,
            where=where,
        )

    async def execute(self, ctx: ItemContext) -> ItemResult:
        if ctx.spec.store_kind is StoreKind.ORDERED:
            return await self._ordered(ctx)
        return await self._standard(ctx)

    # ---------------------------------------------------------------------- standard

    async def _standard(self, ctx: ItemContext) -> ItemResult:
        item, params = ctx.item, ctx.spec.params
        universe, store, scope, key = target_of(ctx.spec, item)
        target = standard_target(universe, store, scope, key)
        copied = await ctx.applied("c")
        if copied is None:
            for _ in range(MAX_ATTEMPTS):
                source = await read_entry(ctx, item.universe, item.datastore, item.scope, key)
                if source is None or source.value_json is None:
                    return missing("The source")
                if self.moves and (r := held(ctx, session_of(source), params.held_sessions)):
                    return r
                try:
                    if params.on_exists is OnExists.OVERWRITE:
                        current = await read_entry(ctx, universe, store, scope, key)
                        if current is not None:
                            lock = session_of(current)
                            if (r := held(ctx, lock, params.held_sessions)) is not None:
                                return r
                            copied = await overwrite_entry(
                                ctx, target, current, source.value_json,
                                source.attributes, list(source.user_ids), "c",
                            )  # fmt: skip
                            break
                    copied = await create_entry(
                        ctx, target, source.value_json, source.attributes,
                        list(source.user_ids), "c",
                    )  # fmt: skip
                    break
                except ServiceError as error:
                    if error.code is ErrorCode.ALREADY_EXISTS:
                        if params.on_exists is OnExists.OVERWRITE:
                            continue  # created meanwhile: read it and replace it
                        return self._exists(ctx, key, _place(universe, store, scope))
                    if conflict(error):
                        continue
                    raise
            else:
                return kept_writing("the target")
        if not self.moves:
            return ItemResult.applied()
        return await self._delete_source(ctx, copied)

    async def _delete_source(self, ctx: ItemContext, copied: Any) -> ItemResult:
        if await ctx.applied("d") is not None:
            return ItemResult.applied()
        item = ctx.item
        copy_image = ctx.plane.writes.journal.get(copied.id).after
        source = await read_entry(ctx, item.universe, item.datastore, item.scope, item.key)
        if source is None:
            return ItemResult.applied("The source was already gone after the copy.")
        if copy_image is None or not holds(source, copy_image):
            return ItemResult.failed(
                ErrorCode.CONFLICT,
                "The source changed after it was copied (a game server wrote it): the copy "
                "was kept and the source left as it is.",
            )
        ref = EntryRef(item.universe, item.datastore, item.scope, item.key)
        try:
            await delete_entry(ctx, ref, source.revision_id, "d")
        except ServiceError as error:
            if error.code in (ErrorCode.CONFLICT, ErrorCode.NOT_FOUND):
                return ItemResult.failed(
                    ErrorCode.CONFLICT,
                    "The source changed while it was being deleted (a game server wrote it): "
                    f"the copy was kept and the source left as it is. {error.message}",
                )
            raise
        return ItemResult.applied()

    @staticmethod
    def _exists(ctx: ItemContext, key: str, place: str) -> ItemResult:
        """A target that exists: skipped, or with `on_exists: fail` the end of the job."""
        what = f"{key!r} already exists in {place}."
        if ctx.spec.params.on_exists is OnExists.FAIL:
            raise JobStop(
                ErrorCode.ALREADY_EXISTS,
                f"Stopped: {what} (on_exists: fail).",
                ItemResult.failed(ErrorCode.ALREADY_EXISTS, what),
            )
        return ItemResult.skipped(SkipCode.EXISTS, what)

    # ----------------------------------------------------------------------- ordered

    async def _ordered(self, ctx: ItemContext) -> ItemResult:
        item, params = ctx.item, ctx.spec.params
        universe, store, scope, key = target_of(ctx.spec, item)
        copied_value: int | None = None
        if await ctx.applied("c") is None:
            source = await read_ordered(ctx, item.universe, item.datastore, item.scope, key)
            if source is None:
                return missing("The source")
            ref = OrderedRef(universe, store, scope, key)
            overwrite = params.on_exists is OnExists.OVERWRITE
            try:
                await set_ordered(ctx, ref, source.value, "c", create_only=not overwrite)
            except ServiceError as error:
                if error.code is ErrorCode.ALREADY_EXISTS:
                    return self._exists(ctx, key, _place(universe, store, scope))
                raise
            copied_value = source.value
        if not self.moves or await ctx.applied("d") is not None:
            return ItemResult.applied()
        source = await read_ordered(ctx, item.universe, item.datastore, item.scope, key)
        if source is None:
            return ItemResult.applied("The source was already gone after the copy.")
        if copied_value is None:
            target = await read_ordered(ctx, universe, store, scope, key)
            copied_value = None if target is None else target.value
        if source.value != copied_value:
            return ItemResult.failed(
                ErrorCode.CONFLICT,
                "The source changed after it was copied: the copy was kept and the source left "
                "as it is.",
            )
        await delete_ordered(ctx, OrderedRef(item.universe, item.datastore, item.scope, key), "d")
        return ItemResult.applied()


class MoveKind(CopyKind):
    kind: ClassVar[JobKind] = JobKind.MOVE
    # A move deletes its sources.
    role: ClassVar[Role] = Role.ADMIN
    moves: ClassVar[bool] = True


register(CopyKind())
register(MoveKind())
