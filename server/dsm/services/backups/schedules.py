"""Scheduled backups while `dsm serve` runs, with retention.

Schedules live in `<data dir>/backup-schedules.json` (what to back up, how often, how many to
keep, and the last run). A loop looks every `TICK_SECONDS`: a schedule whose time has come, and
whose last backup job is no longer running, gets a new backup job (started at once); a
schedule whose last job succeeded has its retention applied (the `keep` newest archives of
that schedule stay, older ones of it are deleted; archives made by hand are never touched).
A run missed while the server was stopped happens at the next start. The first run of a new
schedule starts at once.

A schedule runs one backup at a time: "run now" while its run is starting or its job is still
running answers with that job rather than starting a second. Starting a job takes a while (its
planning lists through Open Cloud), so it happens outside the schedules' bookkeeping: a tick
that is starting one schedule's backup never holds up "run now", a change or a listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
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
JobViewOf = Callable[[str], JobView | None]


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
        job_view: JobViewOf,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.path = Path(data_dir) / SCHEDULES_FILENAME
        self.archives = archives
        self._start = start_backup
        self._job_state = job_state
        self._job_view = job_view
        self._clock = clock
        self._starting: dict[str, asyncio.Task[JobView]] = {}  # runs being started, by schedule

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

    def last_job_ids(self) -> set[str]:
        """Each schedule's last run (a prune of old jobs keeps them)."""
        return {s.last_job_id for s in self._load().schedules.values() if s.last_job_id}

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
        """Start a run of `name` now, or join the one already starting or running: a schedule
        runs one backup at a time, so a "run now" that races a tick makes exactly one."""
        stored = self._load().schedules.get(name)
        if stored is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"There is no backup schedule {name!r}.")
        start = self._starting.get(name)
        if start is None:
            running = self._running_job(stored)
            if running is not None:
                return running
            # Unique per run: a "run now" right after a finished run is a run of its own.
            start = self._claim(
                name, stored, caller, f"{int(self._clock().timestamp())}-{secrets.token_hex(4)}"
            )
        return await asyncio.shield(start)

    # ----------------------------------------------------------------------------- loop
    # Bookkeeping (which schedule is due, claiming a run, recording its job) is synchronous:
    # nothing awaits between reading the file and writing it, so a tick, "run now", put and
    # delete never interleave inside it. Starting a backup job (its checks and the first part
    # of its planning, reads through Open Cloud) runs outside it, in a task of its own per
    # schedule that a racing "run now" joins instead of starting a second backup.

    def _running_job(self, stored: _Stored) -> JobView | None:
        if stored.last_job_id is None:
            return None
        job = self._job_view(stored.last_job_id)
        return job if job is not None and job.state not in TERMINAL_STATES else None

    def _claim(
        self, name: str, stored: _Stored, caller: Principal, run: str
    ) -> asyncio.Task[JobView]:
        start = asyncio.create_task(self._start_and_record(name, stored.request, caller, run))
        self._starting[name] = start
        start.add_done_callback(lambda task: self._forget(name, task))
        return start

    def _forget(self, name: str, start: asyncio.Task[JobView]) -> None:
        if self._starting.get(name) is start:
            del self._starting[name]
        if not start.cancelled():
            start.exception()  # a failure is kept in the schedule's `message`

    async def _start_and_record(
        self, name: str, request: BackupScheduleRequest, caller: Principal, run: str
    ) -> JobView:
        at = self._clock()
        backup = BackupCreateRequest(
            universe_id=request.universe_id,
            datastores=request.datastores,
            ordered_datastores=request.ordered_datastores,
            scopes=request.scopes,
            prefix=request.prefix,
            dry_run=False,
            idempotency_key=f"schedule-{name}-{run}",
        )
        try:
            job = await self._start(caller, backup, name)
        except ServiceError as exc:
            self._record(
                name, at, None, f"{at:%Y-%m-%d %H:%M}Z: the backup could not start: {exc.message}"
            )
            raise
        self._record(name, at, job.id, None)
        return job

    def _record(self, name: str, at: datetime, job_id: str | None, message: str | None) -> None:
        data = self._load()  # afresh: the schedule may have changed while the job started
        stored = data.schedules.get(name)
        if stored is None:
            log.info("backup schedule %s was removed while its run started (job %s)", name, job_id)
            return
        stored.last_run_at = at
        if job_id is not None:
            stored.last_job_id = job_id
        stored.message = message
        self._save(data)

    def _claim_due(self, name: str) -> asyncio.Task[JobView] | None:
        """Apply retention after a succeeded run; claim the schedule's run if it is due."""
        data = self._load()
        stored = data.schedules.get(name)
        if stored is None or name in self._starting:
            return None
        state = self._job_state(stored.last_job_id) if stored.last_job_id else None
        if state is JobState.SUCCEEDED and stored.retention_done_for != stored.last_job_id:
            self._retention(name, stored)
            stored.retention_done_for = stored.last_job_id
            self._save(data)
        running = state is not None and state not in TERMINAL_STATES
        due = self._next(stored)
        if not stored.request.enabled or running or due > self._clock():
            return None
        # One key per due time (and request): a tick after a crash that lost the record of a
        # started job finds that job again instead of starting a second.
        digest = hashlib.sha256(stored.request.model_dump_json().encode()).hexdigest()[:8]
        return self._claim(name, stored, principal(name), f"{int(due.timestamp())}-{digest}")

    async def tick(self) -> None:
        """Start what is due; apply retention after what succeeded."""
        for name in sorted(self._load().schedules):
            start = self._claim_due(name)
            if start is not None:
                with contextlib.suppress(ServiceError):  # said in `message`
                    await asyncio.shield(start)

    async def close(self) -> None:
        """Cancel the runs still starting (the server is stopping)."""
        starting = list(self._starting.values())
        for start in starting:
            start.cancel()
        await asyncio.gather(*starting, return_exceptions=True)

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
