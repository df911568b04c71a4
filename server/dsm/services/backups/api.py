"""What the backup, restore and erasure routes call: one service over the archives folder, the
jobs engine (backups, restores and erasures are jobs) and the backup schedules.

Each `create_*` turns its protocol request into the kind's stored params (never a passphrase:
a new archive's key is wrapped at once and only the wrapped key is kept) and hands it to the
jobs service, which plans, runs and resumes it like every other job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shared_schema.backups import (
    MAX_ERASURE_FOUND,
    BackupCreateRequest,
    BackupDiff,
    BackupDiffRequest,
    BackupList,
    BackupSummary,
    BackupVerifyReport,
    BackupView,
    ErasureAction,
    ErasureCreateRequest,
    ErasureFound,
    ErasureOrderedView,
    ErasurePatternsRequest,
    ErasurePatternsView,
    ErasureReason,
    ErasureReportView,
    ErasureRobloxAction,
    ErasureScrub,
    ErasureView,
    RestoreCreateRequest,
    RestorePlanPage,
    RestorePlanQuery,
    RestoreTarget,
)
from shared_schema.entries import StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.jobs import ItemState, JobKind, JobState, JobView, PruneKeepReason, SkipCode

from ..erasure import PATTERNS_FILENAME, ErasurePatterns, ErasureReport
from ..errors import ServiceError
from ..jobs.kinds.backup import BackupParams, new_key_state
from ..jobs.kinds.erase_user import ErasureParams, load_report, report_path
from ..jobs.kinds.restore import RestoreParams, archive_key_state
from ..jobs.service import JobService
from ..jobs.store import ItemRecord, JobRecord
from ..tokens import Principal
from .keyslots import ArchiveKeysSource
from .restore_plan import restore_plan_page
from .schedules import BackupSchedules
from .service import ArchiveFolder


class BackupsService:
    def __init__(self, data_dir: Path, archives: ArchiveFolder, jobs: JobService) -> None:
        self.data_dir = data_dir
        self.archives = archives
        self.jobs = jobs
        self.schedules = BackupSchedules(
            data_dir, archives, self.start_scheduled, self._job_state, self._job_view
        )
        jobs.referrers.append(self._schedule_runs)

    def _schedule_runs(self) -> dict[str, PruneKeepReason]:
        return dict.fromkeys(self.schedules.last_job_ids(), PruneKeepReason.SCHEDULE)

    def _job_state(self, job_id: str) -> JobState | None:
        record = self.jobs.store.find(job_id)
        return None if record is None else JobState(record.state)

    def _job_view(self, job_id: str) -> JobView | None:
        record = self.jobs.store.find(job_id)
        return None if record is None else self.jobs.view(record)

    # ------------------------------------------------------------------------ archives

    async def list(self) -> BackupList:
        return await self.archives.list()

    async def get(self, archive_id: str, passphrase: str | None = None) -> BackupView:
        return await self.archives.get(archive_id, passphrase)

    async def verify(self, archive_id: str, passphrase: str | None) -> BackupVerifyReport:
        return await self.archives.verify(archive_id, passphrase)

    async def diff(self, archive_id: str, request: BackupDiffRequest) -> BackupDiff:
        return await self.archives.diff(archive_id, request)

    def delete(self, archive_id: str) -> None:
        self.archives.delete(archive_id)

    async def import_upload(self, upload_id: str, passphrase: str | None) -> BackupSummary:
        uploads = self.jobs.env.uploads
        record, path = uploads.complete_file(upload_id)
        try:
            imported = await self.archives.import_file(path, passphrase)
        except ServiceError as exc:
            # Its messages name the file: the user's name for it, not the upload's.
            exc.message = exc.message.replace(path.name, record.file_name)
            raise
        uploads.delete(upload_id)  # the archive is in the folder now
        return imported

    # ---------------------------------------------------------------------------- jobs
    # The job kinds land in the next commits; until then these say so.

    async def create_backup(
        self, caller: Principal, request: BackupCreateRequest, schedule: str | None = None
    ) -> JobView:
        params = BackupParams(
            datastores=request.datastores,
            ordered_datastores=request.ordered_datastores,
            scopes=request.scopes,
            prefix=request.prefix,
            note=request.note,
            schedule=schedule,
            passphrase_slot=request.passphrase is not None,
        )
        keys, passphrase = self.archives.keys, request.passphrase

        async def key_state() -> dict[str, Any]:
            # scrypt for a passphrase slot takes a moment: off the event loop
            return await asyncio.to_thread(new_key_state, keys, passphrase)

        return await self.jobs.create_job(
            caller,
            JobKind.BACKUP,
            universe=request.universe_id,
            params=params,
            dry_run=request.dry_run,
            idempotency_key=request.idempotency_key,
            kind_state=key_state,
        )

    async def start_scheduled(
        self, caller: Principal, request: BackupCreateRequest, schedule: str
    ) -> JobView:
        return await self.create_backup(caller, request, schedule)

    async def create_restore(self, caller: Principal, request: RestoreCreateRequest) -> JobView:
        part, target = request.part, request.target or RestoreTarget()
        params = RestoreParams(
            source_universe=request.universe_id,
            at=request.at,
            datastores=part.datastores,
            ordered_datastores=part.ordered_datastores,
            scopes=part.scopes,
            prefix=part.prefix,
            keys=None
            if part.keys is None
            else [(k.store_kind.value, k.datastore, k.scope, k.key) for k in part.keys],
            target_datastore=target.datastore,
            target_scope=target.scope,
            delete_absent=request.delete_absent,
            held_sessions=request.held_sessions,
        )
        kind_state: Callable[[], Awaitable[dict[str, Any]]] | None = None
        if request.archive_id is not None:
            if request.delete_absent:
                raise ServiceError(
                    ErrorCode.BAD_REQUEST,
                    "delete_absent works with a restore at a point in time (`at`) only for "
                    "now: an archive restore puts back the keys the archive holds and leaves "
                    "other keys alone.",
                )
            path = self.archives.path(request.archive_id)
            manifest = await asyncio.to_thread(self.archives.manifest, path, request.passphrase)
            if manifest.universe_id != request.universe_id:
                raise ServiceError(
                    ErrorCode.BAD_REQUEST,
                    f"Archive {manifest.archive_id} holds universe {manifest.universe_id}, not "
                    f"{request.universe_id}: give its own universe as universe_id (and another "
                    "one as target.universe_id to restore it elsewhere).",
                )
            params.archive_file, params.archive_id = path.name, manifest.archive_id
            keys = self.archives.keys
            opening = keys.keys(request.passphrase)

            async def archive_key() -> dict[str, Any]:
                return await asyncio.to_thread(archive_key_state, path, opening, keys.data_key)

            kind_state = archive_key

        return await self.jobs.create_job(
            caller,
            JobKind.RESTORE,
            universe=target.universe_id or request.universe_id,
            params=params,
            dry_run=request.dry_run,
            confirm=request.confirm,
            idempotency_key=request.idempotency_key,
            skip_backup=request.skip_backup,
            kind_state=kind_state,
        )

    async def restore_plan(self, job_id: str, query: RestorePlanQuery) -> RestorePlanPage:
        record = self.jobs.store.find(job_id)
        if record is None or record.kind != JobKind.RESTORE.value:
            raise ServiceError(ErrorCode.NOT_FOUND, f"There is no restore job {job_id!r}.")
        return await restore_plan_page(self.jobs, record, query)

    async def create_erasure(self, caller: Principal, request: ErasureCreateRequest) -> JobView:
        return await self.jobs.create_job(
            caller,
            JobKind.ERASE_USER,
            universe=request.universe_id,
            params=ErasureParams(user_id=request.user_id, held_sessions=request.held_sessions),
            dry_run=request.dry_run,
            confirm=request.confirm,
            idempotency_key=request.idempotency_key,
            skip_backup=request.skip_backup,
        )

    def _erasure_record(self, job_id: str) -> JobRecord:
        record = self.jobs.store.find(job_id)
        if record is None or record.kind != JobKind.ERASE_USER.value:
            raise ServiceError(ErrorCode.NOT_FOUND, f"There is no erasure job {job_id!r}.")
        return record

    def erasure(self, job_id: str) -> ErasureView:
        record = self._erasure_record(job_id)
        found: list[ErasureFound] = []
        after = 0
        while len(found) < MAX_ERASURE_FOUND and (
            page := self.jobs.store.items(job_id, after=after, limit=500)
        ):
            found += [_found(item) for item in page if item.data]
            after = page[-1].seq
        state = record.kind_state or {}
        cursor = record.plan_cursor or {}
        user_id = record.params.get("user_id")
        return ErasureView(
            job_id=record.id,
            universe_id=record.universe,
            user_id=user_id,
            redacted=user_id is None,
            found=found[:MAX_ERASURE_FOUND],
            found_total=record.item_count,
            searched=cursor.get("searched", []),
            not_searched=cursor.get("not_searched", []),
            scrubs=state.get("scrubs", ["cache", "journal", "backups", "index", "jobs"]),
            report_ready=report_path(self.data_dir, job_id).exists(),
        )

    def erasure_report(self, job_id: str) -> ErasureReportView:
        record = self._erasure_record(job_id)
        if record.state != JobState.SUCCEEDED.value:
            # The report is written before the jobs file is rewritten (it lists the items):
            # until the job succeeds, that last scrub has not finished.
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                f"Erasure {job_id} has no report yet (job state: {record.state}): a report is "
                "given once the job has succeeded, every copy of the player scrubbed.",
            )
        report = load_report(self.data_dir, self.archives.keys.data_key, job_id)
        if report is None:
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                f"Erasure {job_id} has no report: it has not finished, or its report was "
                "taken and forgotten.",
            )
        return _report_view(report)

    def forget_erasure_report(self, job_id: str) -> None:
        self._erasure_record(job_id)
        path = report_path(self.data_dir, job_id)
        if not path.exists():
            raise ServiceError(ErrorCode.NOT_FOUND, f"Erasure {job_id} has no report to forget.")
        path.unlink()

    # ------------------------------------------------------------------- erasure patterns

    def erasure_patterns(self) -> ErasurePatternsView:
        return _patterns_view(self.data_dir, ErasurePatterns.load(self.data_dir))

    def set_erasure_patterns(self, request: ErasurePatternsRequest) -> ErasurePatternsView:
        try:
            patterns = ErasurePatterns.model_validate(request.model_dump(mode="json"))
        except ValidationError as exc:
            message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            raise ServiceError(ErrorCode.BAD_REQUEST, message) from None
        patterns.save(self.data_dir)
        return _patterns_view(self.data_dir, patterns)


def _found(item: ItemRecord) -> ErasureFound:
    data = item.data or {}
    return ErasureFound(
        seq=item.seq,
        store_kind=StoreKind(item.store_kind),
        datastore=item.datastore,
        scope=item.scope,
        key=item.key,
        action=ErasureAction(data["action"]),
        reason=ErasureReason(data["reason"]),
        detail=str(data.get("detail", "")),
        state=ItemState(item.state),
        skip_code=SkipCode(item.skip_code) if item.skip_code else None,
        error_code=ErrorCode(item.error_code) if item.error_code else None,
        message=item.message,
    )


def _report_view(report: ErasureReport) -> ErasureReportView:
    return ErasureReportView(
        request_id=report.request_id,
        user_id=report.user_id,
        universe_id=report.universe_id,
        backend=report.backend,
        requested_at=report.requested_at,
        completed_at=report.completed_at,
        searched=report.searched,
        not_searched=report.not_searched,
        roblox=[
            ErasureRobloxAction(
                store_kind=a.kind,
                datastore=a.datastore,
                scope=a.scope,
                key=a.key,
                action=ErasureAction(a.action.value),
                at=a.at,
                outcome=a.outcome,
                message=a.message,
                retained_until=a.retained_until,
            )
            for a in report.roblox
        ],
        local=[ErasureScrub(**s.model_dump()) for s in report.local],
        retained_by_roblox=report.retained,
        text=report.text(),
    )


def _patterns_view(data_dir: Path, patterns: ErasurePatterns) -> ErasurePatternsView:
    return ErasurePatternsView(
        standard=patterns.standard,
        ordered={
            store: ErasureOrderedView(scopes=target.scopes, ids=target.ids)
            for store, target in patterns.ordered.items()
        },
        file=str(Path(data_dir) / PATTERNS_FILENAME),
    )


@asynccontextmanager
async def open_backups(
    data_dir: Path, keys: ArchiveKeysSource, jobs: JobService, *, schedule: bool = True
) -> AsyncIterator[BackupsService]:
    """The backups service; while it is open, scheduled backups run (unless `schedule` is off)."""
    service = BackupsService(data_dir, ArchiveFolder(data_dir, keys), jobs)
    loop = asyncio.create_task(service.schedules.run_forever()) if schedule else None
    try:
        yield service
    finally:
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        await service.schedules.close()
