"""`backup`: entries of a universe (stores, scopes, a prefix; standard and ordered) into one
encrypted archive in the server's backups folder.

The archive key is made and wrapped in its slots (vault, passphrase) when the job is created,
so the passphrase is never kept: the job stores only the wrapped key, plus a copy wrapped by the
server's own data key to go on after a restart. Each entry is read fresh (its revision and the
moment the answer arrived are recorded) and appended, encrypted with the archive key, to a spool
beside the archives (`.<job>.spool`). Its length is committed with item outcomes, so after a
crash it is cut back and the items after it are read again (the export's scheme). When every
item is done the spool is sealed into the archive (manifest, checksums, atomic rename).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import struct
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar

from pydantic import BaseModel

from shared_schema.common import Role
from shared_schema.entries import StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.jobs import JobKind, JobSample, SampleAction, Selection

from ....opencloud.client import OpenCloudClient
from ....storage.crypto import IntegrityError, RecordCipher
from ...backups.archive import (
    ArchiveEntry,
    ArchiveSelection,
    ArchiveWriter,
    SealedKey,
    decode_record,
    encode_record,
)
from ...backups.folder import archive_file_name, backups_dir
from ...backups.keyslots import (
    ArchiveKeyError,
    ArchiveKeys,
    ArchiveKeysSource,
    SlotModel,
    make_slots,
    new_archive_key,
    unwrap,
)
from ...errors import ServiceError
from ..kind import (
    ItemContext,
    ItemPage,
    ItemResult,
    JobEnv,
    JobKindHandler,
    JobSpec,
    JobStop,
    PlanNotes,
    RunResources,
    register,
)
from ..selection import enumerate_selection
from ..store import ItemRecord, NewItem
from ..writes import missing, read_entry, read_image, read_ordered, sample

_LEN = struct.Struct(">I")
PAGE = 500


class BackupParams(BaseModel):
    """What a backup job keeps of its request (never the passphrase)."""

    datastores: list[str] | None = None  # None: every standard data store
    ordered_datastores: list[str] = []
    scopes: list[str] | None = None  # None: every scope
    prefix: str | None = None
    note: str | None = None
    schedule: str | None = None
    passphrase_slot: bool = False
    from_job: str | None = None  # the keys another job is about to write (before it starts)


def new_key_state(keys: ArchiveKeysSource, passphrase: str | None) -> dict[str, Any]:
    """The archive key, wrapped for the archive's slots and (to resume) for this server."""
    archive_key = new_archive_key()
    key_id = secrets.token_hex(8)
    try:
        slots = make_slots(archive_key, key_id, keys.for_new(passphrase))
        resume = make_slots(archive_key, key_id, ArchiveKeys(data_key=keys.data_key))[0]
    except ArchiveKeyError as exc:
        raise ServiceError(ErrorCode.BAD_REQUEST, f"The backup cannot start: {exc}.") from None
    return {
        "key_id": key_id,
        "slots": [s.model_dump(mode="json") for s in slots],
        "resume": resume.model_dump(mode="json"),
        "offset": 0,
    }


def sealed_key(spec: JobSpec, env: JobEnv) -> SealedKey:
    state = spec.record.kind_state or {}
    assert env.keys is not None
    try:
        key_id = str(state["key_id"])
        resume = SlotModel.model_validate(state["resume"])
        archive_key = unwrap([resume], key_id, ArchiveKeys(data_key=env.keys.data_key))
        slots = [SlotModel.model_validate(s) for s in state["slots"]]
    except (KeyError, ValueError, ArchiveKeyError) as exc:
        raise JobStop(
            ErrorCode.CONFLICT,
            "This backup's archive key cannot be opened by this server any more (it was "
            "started by a server whose vault lived only in memory, or its state is damaged: "
            f"{exc}). Start a new backup.",
        ) from None
    return SealedKey(archive_key, key_id, slots)


def spool_path(spec: JobSpec, env: JobEnv) -> Path:
    assert env.data_dir is not None
    return backups_dir(env.data_dir) / f".{spec.id}.spool"


def _spool_aad(job_id: str) -> bytes:
    return f"dsm-backup-spool:{job_id}".encode()


class BackupRun(RunResources):
    """The spool being appended to, and what each checkpoint commits."""

    def __init__(self, spec: JobSpec, env: JobEnv) -> None:
        self.state = dict(spec.record.kind_state or {})
        self.sealed = sealed_key(spec, env)
        self.cipher = RecordCipher(self.sealed.archive_key)
        self.aad = _spool_aad(spec.id)
        self.spool = spool_path(spec, env)
        with open(self.spool, "ab") as out:  # cut back to what the last commit covered
            out.truncate(int(self.state.get("offset", 0)))
        self._file: IO[bytes] = open(self.spool, "ab")  # noqa: SIM115 - closed by close()

    def write(self, entry: ArchiveEntry) -> None:
        sealed = self.cipher.seal(encode_record(entry), self.aad)
        self._file.write(_LEN.pack(len(sealed)) + sealed)

    def checkpoint(self) -> dict[str, Any] | None:
        if self._file.closed:
            return None
        self._file.flush()
        os.fsync(self._file.fileno())
        self.state["offset"] = self._file.tell()
        return dict(self.state)

    async def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def spooled(path: Path, cipher: RecordCipher, aad: bytes) -> Iterator[ArchiveEntry]:
    with open(path, "rb") as spool:
        while head := spool.read(_LEN.size):
            (length,) = _LEN.unpack(head)
            try:
                yield decode_record(cipher.open(spool.read(length), aad))
            except IntegrityError as exc:
                raise JobStop(
                    ErrorCode.CONFLICT, f"The backup's spool is damaged ({exc})."
                ) from None


def build_archive(run: BackupRun, spec: JobSpec, env: JobEnv, universe_backend: Any) -> Path:
    """Seal the spool into the archive; the finished file appears atomically."""
    params: BackupParams = spec.params
    assert env.data_dir is not None
    started = datetime.fromtimestamp(spec.record.created_ms / 1000, UTC)
    path = backups_dir(env.data_dir) / archive_file_name(started, f"job-{spec.id}")
    selection = ArchiveSelection(
        datastores=params.datastores,
        ordered_datastores=params.ordered_datastores,
        scopes=params.scopes,
        prefix=params.prefix,
    )
    with ArchiveWriter(
        path,
        universe_id=spec.universe,
        backend=universe_backend,
        keys=ArchiveKeys(),
        selection=selection,
        schedule=params.schedule,
        note=params.note,
        job_id=spec.id,
        sealed=run.sealed,
    ) as writer:
        for entry in spooled(run.spool, run.cipher, run.aad):
            writer.add(entry)
        writer.finish()
    return path


def parts(spec: JobSpec, stores: list[str]) -> list[Selection]:
    """One selection per data store listed: standard ones first, then ordered ones."""
    params: BackupParams = spec.params
    scopes: dict[str, Any] = (
        {"all_scopes": True} if params.scopes is None else {"scopes": params.scopes}
    )
    found = [
        Selection(universe_id=spec.universe, datastores=[store], prefix=params.prefix, **scopes)
        for store in stores
    ]
    found += [
        Selection(
            universe_id=spec.universe,
            store_kind=StoreKind.ORDERED,
            datastores=[store],
            prefix=params.prefix,
            scopes=params.scopes or ["global"],
        )
        for store in params.ordered_datastores
    ]
    return found


class BackupKind(JobKindHandler):
    kind: ClassVar[JobKind] = JobKind.BACKUP
    params_model = BackupParams
    role: ClassVar[Role] = Role.EDITOR
    store_kinds = frozenset({StoreKind.STANDARD, StoreKind.ORDERED})
    rollback = "none"
    pace = "read"

    def check(self, spec: JobSpec, env: JobEnv) -> None:
        if env.keys is None or env.data_dir is None:
            raise ServiceError(ErrorCode.BAD_REQUEST, "This server has no backups folder.")

    def describe(self, spec: JobSpec) -> str:
        params: BackupParams = spec.params
        if params.from_job is not None:
            return f"Back up the entries job {params.from_job} writes, before it starts"
        stores = (
            "every data store" if params.datastores is None else ", ".join(params.datastores[:3])
        )
        if params.ordered_datastores:
            stores += " and ordered " + ", ".join(params.ordered_datastores[:3])
        where = "every scope" if params.scopes is None else ", ".join(params.scopes)
        prefix = f", keys starting with {params.prefix!r}" if params.prefix else ""
        return f"Back up {stores} ({where}{prefix}) of universe {spec.universe}"

    async def enumerate(
        self, spec: JobSpec, env: JobEnv, cursor: dict[str, Any] | None
    ) -> AsyncIterator[ItemPage]:
        if spec.params.from_job is not None:
            after = int((cursor or {}).get("after", 0))
            while chunk := env.store.items(spec.params.from_job, after=after, limit=PAGE):
                after = chunk[-1].seq
                found = [NewItem(i.universe, i.store_kind, i.datastore, i.scope, i.key)
                         for i in chunk]  # fmt: skip
                yield ItemPage(found, {"after": after}, False)
            yield ItemPage([], None, True)
            return
        state = dict(cursor or {})
        if "stores" not in state:
            state["stores"] = await self._stores(spec, env)
            state["part"] = 0
        selections = parts(spec, state["stores"])
        while state["part"] < len(selections):
            inner = state.get("inner")
            async for page in enumerate_selection(selections[state["part"]], env, inner):
                if page.complete:
                    state["part"] += 1
                    state["inner"] = None
                else:
                    state["inner"] = page.cursor
                done = state["part"] >= len(selections)
                yield ItemPage(page.items, None if done else dict(state), done)
        if not selections:
            yield ItemPage([], None, True)

    async def _stores(self, spec: JobSpec, env: JobEnv) -> list[str]:
        chosen: list[str] | None = spec.params.datastores
        if chosen is not None:
            return list(dict.fromkeys(chosen))

        async def listed(client: OpenCloudClient) -> list[str]:
            return [s.name async for s in client.iter_data_stores(spec.universe)]

        stores: list[str] = await env.plane.upstream.call(spec.universe, listed)
        return stores

    def requests(self, spec: JobSpec, items: int) -> dict[int, dict[str, int]]:
        return {spec.universe: {"read": items}}

    def plan_notes(
        self, spec: JobSpec, env: JobEnv, final_cursor: dict[str, Any] | None
    ) -> PlanNotes:
        notes = PlanNotes()
        protection = "the server's vault key"
        if spec.params.passphrase_slot:
            protection += " and the passphrase (portable to another machine)"
        notes.notes.append(
            f"One archive in {backups_dir(env.data_dir) if env.data_dir else 'the backups folder'}"
            f", encrypted with a new key wrapped by {protection}. Nothing is written to Open "
            "Cloud. Each entry is read once; its revision and read time are recorded."
        )
        return notes

    async def sample(self, spec: JobSpec, item: ItemRecord, env: JobEnv) -> JobSample:
        image = await read_image(env.plane, item)
        if image is None:
            return sample(item, SampleAction.SKIP, "would skip: it does not exist")
        return sample(item, SampleAction.READ, "would be kept in the archive", before=image)

    async def open_run(self, spec: JobSpec, env: JobEnv) -> RunResources:
        return BackupRun(spec, env)

    async def execute(self, ctx: ItemContext) -> ItemResult:
        item = ctx.item
        run: BackupRun = ctx.resources
        if item.store_kind == StoreKind.ORDERED.value:
            found = await read_ordered(ctx, item.universe, item.datastore, item.scope, item.key)
            if found is None:
                return missing()
            read_at = datetime.now(UTC)
            run.write(ArchiveEntry.from_ordered(found, item.datastore, item.scope, read_at))
            return ItemResult.applied()
        entry = await read_entry(ctx, item.universe, item.datastore, item.scope, item.key)
        if entry is None or entry.value_json is None:
            return missing()
        run.write(ArchiveEntry.from_standard(entry, item.datastore, datetime.now(UTC)))
        return ItemResult.applied()

    async def finish(self, spec: JobSpec, env: JobEnv, resources: RunResources) -> dict[str, Any]:
        assert isinstance(resources, BackupRun)
        resources.checkpoint()
        await resources.close()
        if spec.record.output_path is not None and Path(spec.record.output_path).exists():
            path = Path(spec.record.output_path)  # sealed just before a crash
        else:
            backend = env.plane.upstream.binding(spec.universe).backend
            path = await asyncio.to_thread(build_archive, resources, spec, env, backend)
            env.store.update(spec.id, output_path=str(path))
        with contextlib.suppress(FileNotFoundError):
            resources.spool.unlink()
        return {"output_path": str(path)}


register(BackupKind())
