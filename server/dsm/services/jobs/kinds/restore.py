"""`restore`: put keys back as an archive holds them, or as they were at a moment `at`.

Each item is a key of the target (the source's own place, or another universe, data store or
scope). Its *wanted state* comes from the archive (exact at the archive's read), or for `at`
from the point-in-time decision (journal, archives, Roblox's revision history; see
`backups.pointintime`): keys whose state then is unknown, or disputed between sources, are
skipped and listed, never guessed. Wanted states are worked out in batches as items run, so no
value is kept in the job's own tables.

Every write goes through the journaled write path like any job's (create-only when the key is
absent, conditional on the revision just read otherwise), so a restore can be paused, resumed
after a crash (a write already journaled is never sent twice) and rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from shared_schema.backups import RestoreAction
from shared_schema.common import Role
from shared_schema.entries import StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.jobs import HeldSessions, JobKind, JobSample, SampleAction, Selection, SkipCode

from ....opencloud.models import DataStoreEntry
from ...backups.archive import ArchiveReader, DirectoryItem, EntryName
from ...backups.folder import backups_dir, find_archive, list_archives
from ...backups.keyslots import ArchiveKeyError, ArchiveKeys, SlotModel, make_slots, unwrap
from ...backups.pointintime import (
    ABSENT,
    ArchiveObservations,
    JournalObservations,
    PitSource,
    PitState,
    Precision,
    RobloxObservations,
    UpstreamRevisions,
    plan_point_in_time,
)
from ...entries import EntryRef
from ...errors import ServiceError
from ...ordered import OrderedRef
from ..kind import (
    MAX_ATTEMPTS,
    ItemContext,
    ItemPage,
    ItemResult,
    JobEnv,
    JobKindHandler,
    JobSpec,
    JobStop,
    PlanNotes,
    register,
)
from ..selection import enumerate_selection
from ..store import ItemRecord, NewItem
from ..writes import (
    conflict,
    create_entry,
    delete_entry,
    delete_ordered,
    held,
    image_of,
    kept_writing,
    overwrite_entry,
    read_entry,
    read_ordered,
    sample,
    session_of,
    set_ordered,
    standard_target,
)
from .delete import held_note

PAGE = 500
# Items whose wanted states are worked out together (one pass over the sources).
BATCH = 100
READ_CONCURRENCY = 16


class RestoreParams(BaseModel):
    """What a restore job keeps of its request (never a passphrase)."""

    source_universe: int
    archive_file: str | None = None  # the archive's file name in the backups folder
    archive_id: str | None = None
    at: datetime | None = None
    datastores: list[str] | None = None
    ordered_datastores: list[str] | None = None
    scopes: list[str] | None = None
    prefix: str | None = None
    keys: list[tuple[str, str, str, str]] | None = None  # (store kind, store, scope, key)
    target_datastore: str | None = None
    target_scope: str | None = None
    delete_absent: bool = False
    held_sessions: HeldSessions = HeldSessions.SKIP

    def wants(self, name: EntryName) -> bool:
        """Whether the part asked for includes this key."""
        if self.keys is not None:
            return (name.kind.value, name.datastore, name.scope, name.key) in {
                tuple(k) for k in self.keys
            }
        if self.datastores is None and self.ordered_datastores is None:
            store_ok = True
        elif name.kind is StoreKind.STANDARD:
            store_ok = name.datastore in (self.datastores or [])
        else:
            store_ok = name.datastore in (self.ordered_datastores or [])
        return (
            store_ok
            and (self.scopes is None or name.scope in self.scopes)
            and (self.prefix is None or name.key.startswith(self.prefix))
        )


def archive_key_state(path: Path, keys: ArchiveKeys, data_key: bytes) -> dict[str, Any]:
    """The archive's key, wrapped by this server's data key so the job runs without the
    passphrase (it is asked for once, when the restore is made)."""
    with ArchiveReader(path, keys) as reader:
        archive_key = reader.archive_key
        key_id = reader.header.key_id
    resume = make_slots(archive_key, key_id, ArchiveKeys(data_key=data_key))[0]
    return {"key_id": key_id, "resume": resume.model_dump(mode="json")}


@dataclass(frozen=True)
class Wanted:
    """A key's state to restore, and where that knowledge comes from."""

    state: PitState | None  # None: unknown or disputed
    precision: Precision
    source: PitSource | None
    known_at: datetime | None
    revision: str | None
    reason: str


def _as_record(item: NewItem) -> ItemRecord:
    """A found item as the kind's helpers take it (before it has a seq or outcome)."""
    return ItemRecord(0, item.universe, item.store_kind, item.datastore, item.scope, item.key,
                      item.line, item.data, "pending", False, None, None, None, (), 0)  # fmt: skip


def source_name(item: ItemRecord | NewItem) -> EntryName:
    data = item.data or {}
    store, scope = data.get("from", (item.datastore, item.scope))
    return EntryName(StoreKind(item.store_kind), store, scope, item.key)


def current_state(entry: DataStoreEntry | None) -> PitState:
    if entry is None or entry.value_json is None:
        return ABSENT
    return PitState(True, entry.value_json, entry.attributes, tuple(entry.user_ids))


def action_for(wanted: Wanted, now: PitState, delete_absent: bool) -> RestoreAction:
    if wanted.state is None:
        return (
            RestoreAction.CONFLICT
            if wanted.precision is Precision.CONFLICT
            else (RestoreAction.UNKNOWN)
        )
    if wanted.state.same_as(now):
        return RestoreAction.UNCHANGED
    if not wanted.state.exists:
        return RestoreAction.DELETE if delete_absent else RestoreAction.LEFT_ALONE
    return RestoreAction.CREATE if not now.exists else RestoreAction.UPDATE


@dataclass(frozen=True)
class ArchiveIndex:
    """An open archive and where each of its entries is (a directory item is ~100 bytes)."""

    reader: ArchiveReader
    places: dict[int, DirectoryItem]

    @classmethod
    def of(cls, reader: ArchiveReader) -> ArchiveIndex:
        return cls(reader, {d.ordinal: d for d in reader.directory()})

    def wanted(self, spec: JobSpec, items: Sequence[ItemRecord]) -> list[Wanted]:
        found = []
        for item in items:
            # an item's line is the entry's number in the archive, from 1
            place = self.places.get(item.line - 1 if item.line is not None else -1)
            if place is None:
                found.append(
                    Wanted(None, Precision.UNKNOWN, None, None, None, "not in the archive")
                )
                continue
            entry = self.reader.read(place)
            found.append(
                Wanted(
                    PitState(True, entry.value_json, entry.attributes, entry.user_ids),
                    Precision.EXACT,
                    PitSource.ARCHIVE,
                    entry.read_at,
                    entry.revision_id,
                    f"archive {spec.params.archive_id}, read at {entry.read_at.isoformat()}",
                )
            )
        return found


class RestoreKind(JobKindHandler):
    kind: ClassVar[JobKind] = JobKind.RESTORE
    params_model = RestoreParams
    role: ClassVar[Role] = Role.EDITOR
    store_kinds = frozenset({StoreKind.STANDARD, StoreKind.ORDERED})

    def check(self, spec: JobSpec, env: JobEnv) -> None:
        if env.data_dir is None or env.keys is None:
            raise ServiceError(ErrorCode.BAD_REQUEST, "This server has no backups folder.")

    def describe(self, spec: JobSpec) -> str:
        params: RestoreParams = spec.params
        source = (
            f"archive {params.archive_id}"
            if params.archive_id
            else f"the state at {params.at:%Y-%m-%d %H:%M:%S}Z"
        )
        where = f"universe {spec.universe}"
        if params.target_datastore:
            where = f"data store {params.target_datastore} of {where}"
        if params.target_scope:
            where += f", scope {params.target_scope}"
        return f"Restore {source} of universe {params.source_universe} into {where}"

    def requests(self, spec: JobSpec, items: int) -> dict[int, dict[str, int]]:
        found = {spec.universe: {"read": items, "write": items}}
        if spec.params.at is not None:  # Roblox's history: the version then and later ones
            source = found.setdefault(spec.params.source_universe, {})
            source["read"] = source.get("read", 0) + items
            source["list"] = source.get("list", 0) + items
        return found

    def plan_notes(
        self, spec: JobSpec, env: JobEnv, final_cursor: dict[str, Any] | None
    ) -> PlanNotes:
        notes = PlanNotes()
        params: RestoreParams = spec.params
        if params.at is not None:
            notes.notes.append(
                "Each key's state at that moment comes from this server's journal (exact), its "
                "archives (exact at their read) or Roblox's history (one version an hour, 30 "
                "days); keys no source knows, or whose sources disagree, are skipped and listed "
                "(GET /restores/{id}/plan shows source and precision per key). Keys deleted "
                "before the moment that no archive or journal record names cannot be found."
            )
        if not params.delete_absent:
            notes.notes.append(
                "Keys that exist now but did not then are left alone (delete_absent is off)."
            )
        notes.notes.append(
            "Writes are conditional on the revision read just before: a key a game server "
            "writes meanwhile is read and decided again. The restore can be rolled back."
        )
        notes.notes.append(held_note(params.held_sessions.value))
        return notes

    # ------------------------------------------------------------------------ planning

    async def enumerate(
        self, spec: JobSpec, env: JobEnv, cursor: dict[str, Any] | None
    ) -> AsyncIterator[ItemPage]:
        """The keys with what the plan found for each (no value: action, source, revision)."""
        params: RestoreParams = spec.params
        if params.archive_file is None:
            names = await self._names_then(spec, env)
            for start in range(int((cursor or {}).get("next", 0)), len(names), BATCH):
                batch = [self._item(spec, n) for n in names[start : start + BATCH]]
                done = start + BATCH >= len(names)
                assessed = await self._assessed(spec, env, batch)
                yield ItemPage(assessed, None if done else {"next": start + BATCH}, done)
            if not names:
                yield ItemPage([], None, True)
            return
        done_ordinal = int((cursor or {}).get("ordinal", -1))
        with self._reader(spec, env) as reader:
            archive = await asyncio.to_thread(ArchiveIndex.of, reader)
            places = sorted(o for o in archive.places if o > done_ordinal)
            for start in range(0, len(places), BATCH):
                chosen = [archive.places[o] for o in places[start : start + BATCH]]
                batch = [
                    self._item(spec, d.name, d.ordinal + 1) for d in chosen if params.wants(d.name)
                ]
                assessed = await self._assessed(spec, env, batch, archive)
                last = start + BATCH >= len(places)
                yield ItemPage(assessed, None if last else {"ordinal": chosen[-1].ordinal}, last)
        if not places:
            yield ItemPage([], None, True)

    async def _assessed(
        self, spec: JobSpec, env: JobEnv, items: list[NewItem], archive: ArchiveIndex | None = None
    ) -> list[NewItem]:
        """Items with the plan's finding for each: the action, where the state comes from, and
        the revision it saw now (a key written after the plan is skipped, not overwritten)."""
        records = [_as_record(i) for i in items]
        wanted = await self.wanted(spec, env, records, archive)
        gate = asyncio.Semaphore(READ_CONCURRENCY)

        async def now(record: ItemRecord) -> tuple[PitState, str | None]:
            async with gate:
                return await self.current_revision(env, record)

        currents = await asyncio.gather(*(now(r) for r in records))
        out = []
        for item, want, (state, revision) in zip(items, wanted, currents, strict=True):
            action = action_for(want, state, spec.params.delete_absent)
            data = dict(item.data or {})
            data.update(
                action=action.value,
                source=want.source.value if want.source else None,
                precision=want.precision.value,
                known_at=want.known_at.isoformat() if want.known_at else None,
                revision=want.revision,
                reason=want.reason,
                then_exists=None if want.state is None else want.state.exists,
                now_exists=state.exists,
                now_revision=revision,
            )
            out.append(replace(item, data=data))
        return out

    def _item(self, spec: JobSpec, name: EntryName, number: int | None = None) -> NewItem:
        params: RestoreParams = spec.params
        store = params.target_datastore or name.datastore
        scope = params.target_scope or name.scope
        moved = (store, scope) != (name.datastore, name.scope)
        data = {"from": [name.datastore, name.scope]} if moved else None
        return NewItem(spec.universe, name.kind.value, store, scope, name.key, number, data)

    async def _names_then(self, spec: JobSpec, env: JobEnv) -> list[EntryName]:
        """The keys a restore at a moment considers: those named, else those that exist now
        in the source and those the archives hold, of the part asked for."""
        params: RestoreParams = spec.params
        if params.keys is not None:
            return sorted({EntryName(StoreKind(k), d, s, key) for k, d, s, key in params.keys})
        found: set[EntryName] = set()
        scopes: dict[str, Any] = (
            {"all_scopes": True} if params.scopes is None else {"scopes": params.scopes}
        )
        selections = [
            Selection(universe_id=params.source_universe, datastores=[store],
                      prefix=params.prefix, **scopes)
            for store in params.datastores or []
        ] + [
            Selection(universe_id=params.source_universe, store_kind=StoreKind.ORDERED,
                      datastores=[store], prefix=params.prefix, scopes=params.scopes or ["global"])
            for store in params.ordered_datastores or []
        ]  # fmt: skip
        for selection in selections:
            async for page in enumerate_selection(selection, env, None):
                found.update(
                    EntryName(StoreKind(i.store_kind), i.datastore, i.scope, i.key)
                    for i in page.items
                )
        with self._archives(spec, env) as readers:
            for reader in readers:
                found.update(d.name for d in reader.directory() if params.wants(d.name))
        return sorted(found)

    @contextlib.contextmanager
    def _reader(self, spec: JobSpec, env: JobEnv) -> Iterator[ArchiveReader]:
        params: RestoreParams = spec.params
        assert env.data_dir is not None and env.keys is not None
        state = spec.record.kind_state or {}
        try:
            path = find_archive(backups_dir(env.data_dir), params.archive_file or "")
            key_id = str(state["key_id"])
            resume = SlotModel.model_validate(state["resume"])
            archive_key = unwrap([resume], key_id, ArchiveKeys(data_key=env.keys.data_key))
            reader = ArchiveReader(path, ArchiveKeys(archive_key=archive_key))
        except (KeyError, ValueError, ArchiveKeyError, OSError) as exc:
            raise JobStop(
                ErrorCode.NOT_FOUND, f"The archive {params.archive_id} cannot be opened: {exc}."
            ) from None
        with reader:
            yield reader

    @contextlib.contextmanager
    def _archives(self, spec: JobSpec, env: JobEnv) -> Iterator[list[ArchiveReader]]:
        """Every archive of the source universe this server's vault opens."""
        assert env.data_dir is not None and env.keys is not None
        keys = env.keys.keys()
        with contextlib.ExitStack() as stack:
            readers = []
            for listing in list_archives(backups_dir(env.data_dir), keys):
                manifest = listing.manifest
                if manifest is not None and manifest.universe_id == spec.params.source_universe:
                    readers.append(stack.enter_context(ArchiveReader(listing.path, keys)))
            yield readers

    # --------------------------------------------------------------- wanted states

    async def wanted(
        self,
        spec: JobSpec,
        env: JobEnv,
        items: Sequence[ItemRecord],
        archive: ArchiveIndex | None = None,
    ) -> list[Wanted]:
        """Each item's wanted state; `archive` is the open archive of an archive restore (it
        is opened here when not given)."""
        params: RestoreParams = spec.params
        if params.archive_file is not None:
            if archive is None:
                with self._reader(spec, env) as reader:
                    index = await asyncio.to_thread(ArchiveIndex.of, reader)
                    return await asyncio.to_thread(index.wanted, spec, items)
            return await asyncio.to_thread(archive.wanted, spec, items)
        assert params.at is not None
        names = [source_name(i) for i in items]
        with self._archives(spec, env) as readers:
            plan = await plan_point_in_time(
                params.source_universe,
                names,
                params.at,
                journal=JournalObservations(env.plane.writes.journal),
                archives=ArchiveObservations(readers),
                roblox=RobloxObservations(UpstreamRevisions(env.plane.upstream.call)),
            )
        return [
            Wanted(d.state, d.precision, d.source, d.known_at, d.revision_id, d.reason)
            for d in plan.decisions
        ]

    async def sample(self, spec: JobSpec, item: ItemRecord, env: JobEnv) -> JobSample:
        (wanted,) = await self.wanted(spec, env, [item])
        now, lock = await self.current(env, item)
        action = action_for(wanted, now, spec.params.delete_absent)
        before = image_of(now.value_json or "", now.attributes, list(now.user_ids))
        after = (
            image_of(wanted.state.value_json or "", wanted.state.attributes,
                     list(wanted.state.user_ids))
            if wanted.state is not None and wanted.state.exists else None
        )  # fmt: skip
        before_image = before if now.exists else None
        kind = {
            RestoreAction.CREATE: SampleAction.WRITE,
            RestoreAction.UPDATE: SampleAction.WRITE,
            RestoreAction.DELETE: SampleAction.DELETE,
        }.get(action, SampleAction.SKIP)
        summary = f"would {action.value.replace('_', ' ')}: {wanted.reason}"
        return sample(item, kind, summary, before=before_image, after=after, lock=lock)

    async def current(self, ctx_or_env: Any, item: ItemRecord) -> tuple[PitState, Any]:
        """The key's state now and the session lock in it (standard entries)."""
        plane = getattr(ctx_or_env, "plane", ctx_or_env)
        if item.store_kind == StoreKind.ORDERED.value:
            found = await read_ordered(plane, item.universe, item.datastore, item.scope, item.key)
            return (ABSENT if found is None else PitState(True, str(found.value))), None
        entry = await read_entry(plane, item.universe, item.datastore, item.scope, item.key)
        return current_state(entry), session_of(entry)

    async def current_revision(self, env: JobEnv, item: ItemRecord) -> tuple[PitState, str | None]:
        """The key's state now and its revision (ordered entries have none: their value)."""
        if item.store_kind == StoreKind.ORDERED.value:
            state, _ = await self.current(env, item)
            return state, state.value_json
        entry = await read_entry(env.plane, item.universe, item.datastore, item.scope, item.key)
        state = current_state(entry)
        return state, entry.revision_id if entry is not None and state.exists else None

    # ------------------------------------------------------------------------- running

    def with_payloads(
        self, spec: JobSpec, env: JobEnv, items: AsyncIterator[ItemRecord]
    ) -> AsyncIterator[tuple[ItemRecord, Any]]:
        async def batched() -> AsyncIterator[tuple[ItemRecord, Any]]:
            with contextlib.ExitStack() as stack:
                archive = None
                if spec.params.archive_file is not None:
                    reader = stack.enter_context(self._reader(spec, env))
                    archive = await asyncio.to_thread(ArchiveIndex.of, reader)
                batch: list[ItemRecord] = []
                async for item in items:
                    batch.append(item)
                    if len(batch) >= BATCH:
                        for pair in zip(batch, await self.wanted(spec, env, batch, archive),
                                        strict=True):  # fmt: skip
                            yield pair
                        batch = []
                if batch:
                    for pair in zip(batch, await self.wanted(spec, env, batch, archive),
                                    strict=True):  # fmt: skip
                        yield pair

        return batched()

    async def execute(self, ctx: ItemContext) -> ItemResult:
        wanted: Wanted = ctx.payload
        if wanted.state is None:
            code = (
                SkipCode.SOURCES_DISAGREE
                if wanted.precision is Precision.CONFLICT
                else SkipCode.UNKNOWN_STATE
            )
            return ItemResult.skipped(code, wanted.reason)
        if await ctx.applied("w") is not None:
            return ItemResult.applied()
        if ctx.item.store_kind == StoreKind.ORDERED.value:
            return await self._ordered(ctx, wanted.state)
        return await self._standard(ctx, wanted.state)

    async def _ordered(self, ctx: ItemContext, state: PitState) -> ItemResult:
        item = ctx.item
        ref = OrderedRef(item.universe, item.datastore, item.scope, item.key)
        now, _ = await self.current(ctx, item)
        if state.same_as(now):
            return ItemResult.skipped(SkipCode.UNCHANGED, "It is already as it was.")
        if (moved := _moved_on(item, now.value_json)) is not None:
            return moved
        if not state.exists:
            if not ctx.spec.params.delete_absent:
                return ItemResult.skipped(SkipCode.LEFT_ALONE, "It did not exist then.")
            await delete_ordered(ctx, ref, "w")
            return ItemResult.applied()
        await set_ordered(ctx, ref, int(state.value_json or "0"), "w", create_only=not now.exists)
        return ItemResult.applied()

    async def _standard(self, ctx: ItemContext, state: PitState) -> ItemResult:
        item, params = ctx.item, ctx.spec.params
        target = standard_target(item.universe, item.datastore, item.scope, item.key)
        for _ in range(MAX_ATTEMPTS):
            current = await read_entry(ctx, item.universe, item.datastore, item.scope, item.key)
            now = current_state(current)
            if state.same_as(now):
                return ItemResult.skipped(SkipCode.UNCHANGED, "It is already as it was.")
            revision = current.revision_id if current is not None and now.exists else None
            if (moved := _moved_on(item, revision)) is not None:
                return moved
            try:
                if current is None or not now.exists:
                    if not state.exists:
                        return ItemResult.skipped(SkipCode.UNCHANGED, "It is already absent.")
                    await create_entry(ctx, target, state.value_json or "null",
                                       state.attributes, list(state.user_ids), "w")  # fmt: skip
                    return ItemResult.applied()
                if (result := held(ctx, session_of(current), params.held_sessions)) is not None:
                    return result
                if not state.exists:
                    if not params.delete_absent:
                        return ItemResult.skipped(SkipCode.LEFT_ALONE, "It did not exist then.")
                    ref = EntryRef(item.universe, item.datastore, item.scope, item.key)
                    await delete_entry(ctx, ref, current.revision_id, "w")
                    return ItemResult.applied()
                await overwrite_entry(ctx, target, current, state.value_json or "null",
                                      state.attributes, list(state.user_ids), "w")  # fmt: skip
                return ItemResult.applied()
            except ServiceError as error:
                if error.code is ErrorCode.ALREADY_EXISTS or conflict(error):
                    continue  # a game server wrote it meanwhile: read it and decide again
                raise
        return kept_writing()


def _moved_on(item: ItemRecord, revision: str | None) -> ItemResult | None:
    """Skipped when the key was written after the plan saw it (a game server's write is
    never overwritten by a restore planned before it)."""
    planned = item.data or {}
    if "now_revision" not in planned or planned["now_revision"] == revision:
        return None
    return ItemResult.skipped(
        SkipCode.CHANGED_SINCE,
        "It was written after the restore was planned; it is left as it is now (plan the "
        "restore again to include it).",
    )


register(RestoreKind())
