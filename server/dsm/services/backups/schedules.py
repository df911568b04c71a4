"""Scheduled backups while `dsm serve` runs, with retention.

Schedules live in `<data dir>/backup-schedules.json` (what to back up, how often, how many to
keep, and the last run). A loop looks every `TICK_SECONDS`: a schedule whose time has come, and
whose last backup job is no longer running, gets a new backup job (started at once); a
schedule whose last job succeeded has its retention applied (the `keep` newest archives of
that schedule stay, older ones of it are deleted; archives made by hand are never touched).
A run missed while the server was stopped happens at the next start. The first run of a new
schedule starts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from shared_schema.backups import (
    BackupCreateRequest,
    BackupScheduleList,
    BackupScheduleRequest,
    BackupScheduleView,
)
from shared_schema.common import Role
from shared_schema.errors import ErrorCode
from shared_schema.jobs import TERMINAL_STATES, JobState, JobView

from ...storage.atomic import write_atomic
from ..errors import ServiceError
from ..tokens import Principal
from .folder import apply_retention, retention_plan
from .service import ArchiveFolder

log = logging.getLogger("dsm.backups.schedules")

SCHEDULES_FILENAME = "backup-schedules.json"
TICK_SECONDS = 30.0

StartBackup = Callable[[Principal, BackupCreateRequest, str], Awaitable[JobView]]
JobState_ = Callable[[str], JobState | None]


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Stored(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request: BackupScheduleRequest
    created_at: AwareDatetime
    last_run_at: AwareDatetime | None = None
    last_job_id: str | None = None
    retention_done_for: str | None = None  # the job whose archive retention was applied after
    message: str | None = None


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = 1
    schedules: dict[str, _Stored] = {}


def principal(name: str) -> Principal:
    """Whom a scheduled backup job names as its creator."""
    return Principal(token_id=f"schedule:{name}", name=f"schedule {name}", role=Role.EDITOR)


class BackupSchedules:
    def __init__(
        self,
        data_dir: Path,
        archives: ArchiveFolder,
        start_backup: StartBackup,
        job_state: JobState_,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.path = Path(data_dir) / SCHEDULES_FILENAME
        self.archives = archives
        self._start = start_backup
        self._job_state = job_state
        self._clock = clock
        self._lock = asyncio.Lock()

    # ----------------------------------------------------------------------------- file

    def _load(self) -> _File:
        try:
            return _File.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return _File()
        except ValidationError as exc:
            raise ServiceError(
                ErrorCode.INTERNAL,
                f"{self.path} is not valid ({exc.errors()[0]['msg']}); fix or remove it.",
            ) from None

    def _save(self, data: _File) -> None:
        write_atomic(self.path, data.model_dump_json(indent=2).encode(), mode=0o600)

    # ------------------------------------------------------------------------------ API

    def _view(self, name: str, stored: _Stored) -> BackupScheduleView:
        request = stored.request
        job_state = self._job_state(stored.last_job_id) if stored.last_job_id else None
        mine = [
            a
            for a in self.archives.listings()
            if a.manifest is not None and a.manifest.schedule == name
        ]
        last = max(
            mine, key=lambda a: a.manifest.started_at if a.manifest else utc_now(), default=None
        )
        return BackupScheduleView(
            name=name,
            universe_id=request.universe_id,
            datastores=request.datastores,
            ordered_datastores=request.ordered_datastores,
            scopes=request.scopes,
            prefix=request.prefix,
            every_seconds=request.every_seconds,
            keep=request.keep,
            enabled=request.enabled,
            next_run_at=self._next(stored) if request.enabled else None,
            last_run_at=stored.last_run_at,
            last_job_id=stored.last_job_id,
            last_state=None if job_state is None else job_state.value,
            last_archive_id=last.archive_id if last else None,
            archives=len(mine),
            message=stored.message,
        )

    def _next(self, stored: _Stored) -> datetime:
        if stored.last_run_at is None:
            return stored.created_at
        return stored.last_run_at + timedelta(seconds=stored.request.every_seconds)

    def list(self) -> BackupScheduleList:
        data = self._load()
        return BackupScheduleList(
            schedules=[self._view(n, s) for n, s in sorted(data.schedules.items())]
        )

    def put(self, name: str, request: BackupScheduleRequest) -> BackupScheduleView:
        self.archives.keys.for_new(None)  # a schedule needs the vault: refuse now, not later
        data = self._load()
        earlier = data.schedules.get(name)
        stored = (
            _Stored(request=request, created_at=self._clock())
            if earlier is None
            else earlier.model_copy(update={"request": request})
        )
        data.schedules[name] = stored
        self._save(data)
        return self._view(name, stored)

    def delete(self, name: str) -> None:
        data = self._load()
        if data.schedules.pop(name, None) is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"There is no backup schedule {name!r}.")
        self._save(data)

    async def run_now(self, caller: Principal, name: str) -> JobView:
        async with self._lock:
            data = self._load()
            stored = data.schedules.get(name)
            if stored is None:
                raise ServiceError(ErrorCode.NOT_FOUND, f"There is no backup schedule {name!r}.")
            return await self._run(data, name, stored, caller)

    # ----------------------------------------------------------------------------- loop

    async def _run(self, data: _File, name: str, stored: _Stored, caller: Principal) -> JobView:
        request = stored.request
        at = self._clock()
        backup = BackupCreateRequest(
            universe_id=request.universe_id,
            datastores=request.datastores,
            ordered_datastores=request.ordered_datastores,
            scopes=request.scopes,
            prefix=request.prefix,
            dry_run=False,
            idempotency_key=f"schedule-{name}-{int(at.timestamp())}",
        )
        try:
            job = await self._start(caller, backup, name)
        except ServiceError as exc:
            stored.message = f"{at:%Y-%m-%d %H:%M}Z: the backup could not start: {exc.message}"
            stored.last_run_at = at
            self._save(data)
            raise
        stored.last_run_at = at
        stored.last_job_id = job.id
        stored.message = None
        self._save(data)
        return job

    async def tick(self) -> None:
        """Start what is due; apply retention after what succeeded."""
        async with self._lock:
            data = self._load()
            for name, stored in sorted(data.schedules.items()):
                state = self._job_state(stored.last_job_id) if stored.last_job_id else None
                if state is JobState.SUCCEEDED and stored.retention_done_for != stored.last_job_id:
                    self._retention(name, stored)
                    stored.retention_done_for = stored.last_job_id
                    self._save(data)
                running = state is not None and state not in TERMINAL_STATES
                if not stored.request.enabled or running or self._next(stored) > self._clock():
                    continue
                with contextlib.suppress(ServiceError):  # said in `message`
                    await self._run(data, name, stored, principal(name))

    def _retention(self, name: str, stored: _Stored) -> None:
        plan = retention_plan(self.archives.listings(), schedule=name, keep=stored.request.keep)
        removed = apply_retention(plan)
        if removed:
            log.info("backup schedule %s: retention deleted %d old archives", name, len(removed))

    async def run_forever(self, every: float = TICK_SECONDS) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("backup schedules: a tick failed")
            await asyncio.sleep(every)
