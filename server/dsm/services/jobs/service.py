"""The jobs service: create (plan), start, pause, resume, cancel and roll back jobs; list them and
their items; carry them across restarts.

States: `planned` (the plan is being counted, or ready) -> `queued` -> `running` -> `succeeded`
or `failed`; `paused` and `cancelled` on request; `rolled_back` once a rollback undid every
write of it (a rollback with failed items fails; one that left entries alone leaves the job as
it was, saying so in its `rollback_note`; see `_rollback_finished`). At start-up every
`running` or `queued` job is queued again and resumes from its durable items (the write
journal, settled just before, tells which writes already landed), a `planned` job still
counting goes on counting, and a `paused` job stays paused.

Roles: creating or starting a job needs the kind's role (editor; admin for delete, move, import
and transform; a rollback needs the role of the job it undoes). A job that writes to a universe
configured as `production` needs `confirm` = that universe's label.

Proposals: an AI assistant's token (role `assistant`, `dsm mcp`) may create any kind but import,
as a dry run only. The job records who proposed it; only a person whose role allows the kind
can start it, and the journal then names that person, the job and the assistant for each write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared_schema.common import Backend, Role
from shared_schema.entries import StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.events import EventType
from shared_schema.identity import Person, make_person
from shared_schema.jobs import (
    MAX_PRUNE_LISTED,
    MAX_SAMPLES,
    TERMINAL_STATES,
    ItemState,
    JobAction,
    JobCreateRequest,
    JobEstimate,
    JobFailure,
    JobItemPage,
    JobItemQuery,
    JobItemView,
    JobKind,
    JobListQuery,
    JobPage,
    JobPhase,
    JobPlan,
    JobProgress,
    JobProgressPayload,
    JobPruneEntry,
    JobPruneKept,
    JobPruneReport,
    JobPruneRequest,
    JobRollbackRequest,
    JobSample,
    JobState,
    JobStatePayload,
    JobSummary,
    JobView,
    PreJobBackup,
    PruneKeepReason,
    SkipCode,
    parse_age,
)

from ...opencloud.ratelimit import background_calls
from ..assistant_caps import not_charged
from ..backups.keyslots import ArchiveKeysSource
from ..dataplane import DataPlane
from ..errors import ServiceError
from ..events import EventBus
from ..index.service import IndexService
from ..metrics import Metrics
from ..team.service import TeamService
from ..tokens import Principal
from .kind import (
    ItemPage,
    JobActor,
    JobEnv,
    JobKindHandler,
    JobSpec,
    JobStop,
    PlanNotes,
    category,
    handler_for,
    spec_of,
)
from .retention import KEEP_NOTES, Referrer, select
from .runner import HELD_RETRY_SECONDS, HELD_WAIT_SECONDS, TRANSIENT, JobRun, RunResult
from .selection import check_selection, selection_notes
from .store import JobRecord, JobStore, measure_bytes, new_job_id, now_ms, reclaim_space
from .uploads import UploadStore
from .writes import selected_samples

log = logging.getLogger("dsm.jobs")

EXPORTS_DIRNAME = "exports"
# POST /jobs waits this long for the plan before answering (a large selection keeps counting).
PLAN_WAIT_SECONDS = 10.0
MAX_RUNNING_JOBS = 4
PROGRESS_EVERY_SECONDS = 0.5
SHUTDOWN_GRACE_SECONDS = 3.0
MAX_PLANNING_RETRIES = 20
# Automatic retention (`dsm serve --job-retention-days`): a first pass a while after the start,
# then one a day.
RETENTION_FIRST_SECONDS = 600.0
RETENTION_EVERY_SECONDS = 86_400.0
# An import reads a file someone else uploaded: an assistant does not plan one.
ASSISTANT_REFUSED_KINDS = frozenset({JobKind.IMPORT})


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else _at(ms)


def _stored(record: JobRecord, key: str, model: Any) -> Any:
    value = getattr(record, key)
    return None if value is None else model.model_validate_json(json.dumps(value))


class JobService:
    def __init__(
        self,
        env: JobEnv,
        events: EventBus,
        metrics: Metrics | None = None,
        *,
        plan_wait: float = PLAN_WAIT_SECONDS,
        held_wait: float = HELD_WAIT_SECONDS,
        held_retry: float = HELD_RETRY_SECONDS,
        assistant_proposals: bool = True,
    ) -> None:
        self.env = env
        self._assistant_proposals = assistant_proposals
        self.store = env.store
        self.events = events
        self.metrics = metrics
        self._plan_wait = plan_wait
        self._held_wait = held_wait
        self._held_retry = held_retry
        self._planning: dict[str, asyncio.Task[None]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._runs: dict[str, JobRun] = {}
        self._slots = asyncio.Semaphore(MAX_RUNNING_JOBS)
        self._progress_at: dict[str, float] = {}
        self._closing = False
        # Other services' references to jobs a prune must keep (backup schedules, ...).
        self.referrers: list[Referrer] = []
        self._pruning = asyncio.Lock()
        self._prune_task: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None

    @property
    def plane(self) -> DataPlane:
        return self.env.plane

    # ------------------------------------------------------------------------- lifecycle

    def resume_all(self) -> None:
        """After a start: running and queued jobs run again; unfinished plans go on counting."""
        for record in self.store.in_states([JobState.RUNNING.value, JobState.QUEUED.value]):
            if record.state == JobState.RUNNING.value:
                record = self._set_state(record, JobState.QUEUED, message="resumed after restart")
            self._launch(record.id)
        for record in self.store.in_states([JobState.PLANNED.value]):
            if not record.plan_complete:
                self._plan_later(record.id)
            elif record.start_when_planned and ((record.plan or {}).get("backup") or {}).get(
                "job_ids"
            ):
                last = self.store.find(record.plan["backup"]["job_ids"][-1])  # type: ignore[index]
                if last is not None and last.state in TERMINAL_STATES:
                    self._after_pre_backup(record.id, last)
        if self.store.pruning_pending():  # a prune stopped half-way: its items go now
            self._prune_task = asyncio.create_task(self._drop_pruned())

    async def close(self) -> None:
        """Stop at shutdown: running jobs stay `running` and resume at the next start."""
        self._closing = True
        for task in (self._prune_task, self._retention):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for run in self._runs.values():
            run.stop("shutdown")
        for task in self._planning.values():
            task.cancel()
        tasks = [*self._tasks.values(), *self._planning.values()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_SECONDS)
            for task in late:  # waiting for a budget slot, or a slow answer: cut it
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def is_running(self, job_id: str) -> bool:
        """Whether a run of the job is in progress (a paused job's last items may still be)."""
        return job_id in self._tasks

    # ---------------------------------------------------------------------------- views

    def _get(self, job_id: str) -> JobRecord:
        record = self.store.find(job_id)
        if record is None:
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                f"Job {job_id} does not exist (finished jobs are removed after a while: "
                "`dsm jobs prune`, and the server's retention).",
            )
        return record

    def _progress(self, record: JobRecord) -> JobProgress:
        total = record.item_count if record.plan_complete else None
        run = self._runs.get(record.id)
        if run is not None:
            return run.progress(total, record.applied, record.skipped, record.failed)
        return JobProgress(
            total=total,
            done=record.done,
            applied=record.applied,
            skipped=record.skipped,
            failed=record.failed,
        )

    def _wrote(self, record: JobRecord) -> bool:
        return bool(self.plane.writes.journal.list(job_id=record.id, limit=1))

    def _actions(self, record: JobRecord, handler: JobKindHandler) -> list[JobAction]:
        state = JobState(record.state)
        if state is JobState.PLANNED:
            plan = record.plan or {}
            ready = record.plan_complete and not plan.get("blocking")
            return [JobAction.START, JobAction.CANCEL] if ready else [JobAction.CANCEL]
        if state in (JobState.QUEUED, JobState.RUNNING):
            return [JobAction.PAUSE, JobAction.CANCEL]
        if state is JobState.PAUSED:
            return [JobAction.RESUME, JobAction.CANCEL]
        if state is JobState.ROLLED_BACK or handler.rollback == "none" or not self._wrote(record):
            return []
        # Until every write is undone it can be rolled back again (once its rollback ended):
        # what an earlier rollback put back is skipped as already undone, never written twice.
        if record.rolled_back_by is not None:
            rollback = self.store.find(record.rolled_back_by)
            if rollback is not None and JobState(rollback.state) not in TERMINAL_STATES:
                return []
        return [JobAction.ROLLBACK]

    def _failure(self, record: JobRecord) -> JobFailure | None:
        if record.failure_code is None:
            return None
        return JobFailure(code=ErrorCode(record.failure_code), message=record.failure_message or "")

    def _plan(self, record: JobRecord) -> JobPlan:
        stored: JobPlan | None = _stored(record, "plan", JobPlan)
        if stored is not None:
            return stored
        return JobPlan(complete=False, items=record.item_count, planned_at=_at(record.created_ms))

    def _shown(self, record: JobRecord) -> dict[str, Any]:
        """What a job's summary shows (its view adds the rest)."""
        spec = spec_of(record)
        handler = handler_for(record.kind)
        return {
            "id": record.id,
            "kind": record.kind,
            "state": JobState(record.state),
            "universe_id": record.universe,
            "description": handler.describe(spec),
            "created_by": record.actor_name,
            "creator": creator_of(record),
            "proposed_by": record.proposed_by,
            "approved_by": record.approved_by_name,
            "approver": approver_of(record),
            "created_at": _at(record.created_ms),
            "updated_at": _at(record.updated_ms),
            "progress": self._progress(record),
            "actions": self._actions(record, handler),
            "failure": self._failure(record),
            "output_path": record.output_path,
            "rollback_incomplete": self._rollback_incomplete(record),
        }

    def _rollback_incomplete(self, record: JobRecord) -> bool:
        """A rollback of it ran and ended, and some of its writes are not undone."""
        if record.rolled_back_by is None or record.state == JobState.ROLLED_BACK.value:
            return False
        rollback = self.store.find(record.rolled_back_by)
        return (
            rollback is not None
            and rollback.started_ms is not None
            and JobState(rollback.state) in TERMINAL_STATES
        )

    def view(self, record: JobRecord) -> JobView:
        return JobView(
            **self._shown(record),
            store_kind=StoreKind(record.store_kind),
            selection=record.selection,
            params=record.params,
            started_at=_time(record.started_ms),
            finished_at=_time(record.finished_ms),
            plan=self._plan(record),
            writes=handler_for(record.kind).writes,
            rollback_of=record.rollback_of,
            rolled_back_by=record.rolled_back_by,
            rollback_note=self._rollback_note(record),
            backend=self._backend(record.universe),
        )

    def _rollback_note(self, record: JobRecord) -> str | None:
        """Where the job's rollback stands (or, for a rollback job, what it left undone)."""
        if record.rollback_of is not None:
            if record.state != JobState.SUCCEEDED.value:
                return None  # running, or `failure` says why it is not done
            original = self.store.find(record.rollback_of)
            if original is not None and original.state == JobState.ROLLED_BACK.value:
                return f"Every write of job {record.rollback_of} is undone."
            return _left_alone(self.store, record, record.rollback_of)
        if record.rolled_back_by is None:
            return None
        rollback = self.store.find(record.rolled_back_by)
        if rollback is None:
            return None
        by = rollback.id
        if record.state == JobState.ROLLED_BACK.value:
            return f"Rolled back by {by}: every write it made is undone."
        if JobState(rollback.state) not in TERMINAL_STATES:
            return f"Being rolled back by {by} ({rollback.state})."
        if rollback.state == JobState.SUCCEEDED.value:
            return _left_alone(self.store, rollback, record.id)
        if rollback.state == JobState.FAILED.value and rollback.failure_message:
            return f"Rollback {by} failed: {rollback.failure_message}"
        return (
            f"Not rolled back: rollback {by} ended {rollback.state} after undoing "
            f"{rollback.applied:,} writes. Roll it back again to undo the rest."
        )

    def _backend(self, universe: int) -> Backend:
        try:
            return self.plane.upstream.binding(universe).backend
        except ServiceError:  # its key was removed since: still show the job
            return self.plane.upstream.backend

    def summary(self, record: JobRecord) -> JobSummary:
        return JobSummary(**self._shown(record))

    def get(self, job_id: str) -> JobView:
        return self.view(self._get(job_id))

    def list(self, query: JobListQuery) -> JobPage:
        before = None
        if query.cursor is not None:
            if not query.cursor.isdigit():
                raise ServiceError(ErrorCode.BAD_REQUEST, "cursor is not one this server issued.")
            before = int(query.cursor)
        state = None if query.state is None else query.state.value
        records = self.store.list_jobs(
            state=state, kind=query.kind, universe=query.universe, before_seq=before,
            limit=query.limit + 1,
        )  # fmt: skip
        page = records[: query.limit]
        more = len(records) > query.limit and page
        return JobPage(
            jobs=[self.summary(r) for r in page],
            next_cursor=str(page[-1].seq) if more else None,
        )

    def items(self, job_id: str, query: JobItemQuery) -> JobItemPage:
        self._get(job_id)
        state = None if query.state is None else query.state.value
        rows = self.store.items(job_id, state=state, after=query.after or 0, limit=query.limit + 1)
        page = rows[: query.limit]
        return JobItemPage(
            items=[
                JobItemView(
                    seq=row.seq,
                    datastore=row.datastore,
                    scope=row.scope,
                    key=row.key,
                    state=ItemState(row.state),
                    skip_code=None if row.skip_code is None else SkipCode(row.skip_code),
                    error_code=None if row.error_code is None else ErrorCode(row.error_code),
                    message=row.message,
                    line=row.line,
                    journal_ids=list(row.journal_ids),
                    attempts=row.attempts,
                )
                for row in page
            ],
            next_after=page[-1].seq if len(rows) > query.limit and page else None,
        )

    # ------------------------------------------------------------------------- checks

    def confirmation(self, spec: JobSpec, handler: JobKindHandler) -> str | None:
        """The text `confirm` must be to write to the production universes this job writes."""
        return handler.confirmation(spec, self.env, self.production_labels(spec, handler))

    def production_universes(self, spec: JobSpec, handler: JobKindHandler) -> tuple[int, ...]:
        """The universes configured as production this job writes to."""
        return tuple(
            universe
            for universe in sorted(handler.written_universes(spec, self.env))
            if self.plane.upstream.binding(universe).environment == "production"
        )

    def production_labels(self, spec: JobSpec, handler: JobKindHandler) -> tuple[str, ...]:
        return tuple(
            self.plane.upstream.binding(u).label for u in self.production_universes(spec, handler)
        )

    def _require_role(self, caller: Principal, spec: JobSpec, handler: JobKindHandler) -> None:
        needed = handler.role_for(spec, self.env)
        if not caller.role.allows(needed):
            raise ServiceError(
                ErrorCode.FORBIDDEN,
                f"A {spec.kind.value.replace('_', '-')} job needs the {needed.value} role; this "
                f"token is {caller.role.value}. An admin can change it with "
                "`dsm tokens role ID ROLE`.",
            )

    def _require_confirmation(
        self, spec: JobSpec, handler: JobKindHandler, confirm: str | None
    ) -> None:
        expected = self.confirmation(spec, handler)
        if expected is not None and (confirm or "").strip() != expected:
            raise ServiceError(
                ErrorCode.FORBIDDEN,
                f"{self._confirmation_reason(spec, handler)}: type {expected!r} to confirm "
                "(send it as `confirm`).",
                details={"confirmation": expected},
            )

    def _confirmation_reason(self, spec: JobSpec, handler: JobKindHandler) -> str:
        # Only an erasure asks for typed confirmation outside production: it cannot be undone.
        if self.production_universes(spec, handler):
            return "This job writes to a production universe"
        return "This job erases data for good"

    def _check_proposal(self, caller: Principal, spec: JobSpec, dry_run: bool) -> None:
        """What an assistant may create: a dry run, which a person then starts (or not)."""
        if not self._assistant_proposals:
            raise ServiceError(
                ErrorCode.FORBIDDEN,
                "Proposals from AI assistants are turned off on this server (`dsm serve "
                "--no-assistant-proposals`); the assistant can still read and search.",
            )
        if spec.kind in ASSISTANT_REFUSED_KINDS:
            raise ServiceError(
                ErrorCode.FORBIDDEN,
                f"An assistant cannot propose {spec.kind.value} jobs; a person plans those.",
            )
        if not dry_run:
            raise ServiceError(
                ErrorCode.FORBIDDEN,
                "An assistant may only propose a job (dry_run: true); a person starts it in the "
                "plugin's Jobs view or with `dsm jobs start ID`.",
            )

    def _check_new(
        self, caller: Principal, spec: JobSpec, handler: JobKindHandler, dry_run: bool
    ) -> None:
        """Everything that makes a job unusable, before it is stored."""
        if caller.role is Role.ASSISTANT:
            self._check_proposal(caller, spec, dry_run)
        else:
            self._require_role(caller, spec, handler)
        if spec.store_kind not in handler.store_kinds:
            kinds = " and ".join(sorted(k.value for k in handler.store_kinds))
            raise ServiceError(
                ErrorCode.BAD_REQUEST,
                f"{spec.kind.value.replace('_', '-').capitalize()} jobs work on {kinds} data "
                "stores only.",
            )
        self.plane.upstream.client_for(spec.universe)  # NO_API_KEY when no key serves it
        if spec.selection is not None:
            check_selection(spec.selection)
        handler.check(spec, self.env)

    # ------------------------------------------------------------------------- create

    async def create(self, caller: Principal, request: JobCreateRequest) -> JobView:
        assert request.params is not None  # filled in by the model for every kind it accepts
        return await self.create_job(
            caller,
            request.kind,
            universe=request.selection.universe_id,
            store_kind=request.selection.store_kind,
            selection=request.selection.model_dump(mode="json", exclude_unset=True),
            params=request.params,
            dry_run=request.dry_run,
            confirm=request.confirm,
            idempotency_key=request.idempotency_key,
            skip_backup=request.skip_backup,
        )

    async def create_job(
        self,
        caller: Principal,
        kind: JobKind,
        *,
        universe: int,
        params: BaseModel,
        dry_run: bool,
        idempotency_key: str,
        confirm: str | None = None,
        store_kind: StoreKind = StoreKind.STANDARD,
        selection: dict[str, Any] | None = None,
        skip_backup: bool = False,
        kind_state: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> JobView:
        """Plan a job of any kind (and start it unless `dry_run`); the routes of kinds with a
        request of their own (backups, restores, erasures) come here too.

        `kind_state` makes what the kind keeps beside its params (a new archive's wrapped
        key), once the request is known to be new.
        """
        body: dict[str, Any] = {"selection": selection, "params": params.model_dump(mode="json")}
        if skip_backup:
            body["skip_backup"] = True
        earlier = self.store.find_by_idempotency_key(idempotency_key)
        if earlier is not None:
            if earlier.kind == kind.value and earlier.request == body:
                return self.view(earlier)
            raise _key_reused(idempotency_key, earlier.id)
        handler = handler_for(kind)
        record = self._new_record(
            caller,
            kind,
            universe=universe,
            store_kind=store_kind.value,
            body=body,
            idempotency_key=idempotency_key,
            start=not dry_run,
        )
        spec = spec_of(record)
        self._check_new(caller, spec, handler, dry_run)
        if not dry_run:
            self._require_confirmation(spec, handler, confirm)
        if kind_state is not None:
            record = replace(record, kind_state=await kind_state())
        record = self.store.create(record)
        self._state_event(record, None, by=caller.person)
        return await self._plan_and_wait(record.id)

    def _new_record(
        self,
        caller: Principal,
        kind: JobKind,
        *,
        universe: int,
        store_kind: str,
        body: dict[str, Any],
        idempotency_key: str,
        start: bool,
        rollback_of: str | None = None,
    ) -> JobRecord:
        created = now_ms()
        return JobRecord(
            id=new_job_id(), kind=kind.value, state=JobState.PLANNED.value, universe=universe,
            store_kind=store_kind, request=body, idempotency_key=idempotency_key,
            actor_id=caller.token_id, actor_name=caller.name, created_ms=created,
            updated_ms=created, started_ms=None, finished_ms=None, plan=None,
            plan_complete=False, plan_cursor=None, start_when_planned=start, item_count=0,
            applied=0, skipped=0, failed=0, failure_code=None, failure_message=None,
            output_path=None, rollback_of=rollback_of, rolled_back_by=None, kind_state=None,
            proposed_by=caller.name if caller.role is Role.ASSISTANT else None,
            actor_user_id=caller.studio_user_id, actor_user_name=caller.studio_user_name,
        )  # fmt: skip

    # ------------------------------------------------------------------------ planning

    def _plan_later(self, job_id: str) -> asyncio.Task[None]:
        task = self._planning.get(job_id)
        if task is None:
            with background_calls():
                task = asyncio.create_task(self._make_plan(job_id))
            self._planning[job_id] = task
            task.add_done_callback(lambda _: self._planning.pop(job_id, None))
        return task

    async def _plan_and_wait(self, job_id: str) -> JobView:
        task = self._plan_later(job_id)
        # Still counting after the wait: the answer says so; job.progress and job.state follow.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), self._plan_wait)
        return self.get(job_id)

    async def _make_plan(self, job_id: str) -> None:
        try:
            record = self.store.get(job_id)
            spec, handler = spec_of(record), handler_for(record.kind)
            cursor = record.plan_cursor or {}
            if not cursor.get("counted"):
                cursor = await self._count(spec, handler)
            record = self.store.get(job_id)
            if record.state != JobState.PLANNED.value:
                return  # cancelled while counting
            plan = await self._finish_plan(spec_of(record), handler, cursor)
            record = self.store.update(
                job_id, plan=plan.model_dump(mode="json"), plan_complete=True
            )
            if record.state != JobState.PLANNED.value:
                return  # cancelled while its samples were read
            if record.start_when_planned and not plan.blocking:
                self._begin(record, None, message="plan ready; starting")
            else:
                message = "plan ready" if not plan.blocking else "plan ready; cannot start"
                self._state_event(record, JobState.PLANNED, message=message)
        except asyncio.CancelledError:
            raise
        except ServiceError as error:
            self._fail(job_id, error.code, f"Planning failed: {error.message}")
        except Exception:
            log.exception("planning job %s failed", job_id)
            self._fail(job_id, ErrorCode.INTERNAL, "Planning failed; see the server's log.")

    async def _count(self, spec: JobSpec, handler: JobKindHandler) -> dict[str, Any]:
        """List the selection into items, page by page; transient failures wait and go on."""
        retries = 0
        while True:
            record = self.store.get(spec.id)
            cursor = record.plan_cursor
            try:
                page: ItemPage
                async for page in handler.enumerate(spec, self.env, cursor):
                    stored = dict(page.cursor or {})
                    if page.complete:
                        stored["counted"] = True
                    count = self.store.add_items(spec.id, page.items, cursor=stored)
                    self._planning_progress(spec, count)
                    if page.complete:
                        return stored
                    if self.store.get(spec.id).state != JobState.PLANNED.value:
                        return stored
                    retries = 0
                return {"counted": True}
            except ServiceError as error:
                if error.code not in TRANSIENT or retries >= MAX_PLANNING_RETRIES:
                    raise
                retries += 1
                await asyncio.sleep(error.retry_after or min(30.0, 2.0**retries))

    async def _finish_plan(
        self, spec: JobSpec, handler: JobKindHandler, cursor: dict[str, Any]
    ) -> JobPlan:
        count = self.store.get(spec.id).item_count
        notes: PlanNotes = handler.plan_notes(spec, self.env, cursor)
        chosen = selection_notes(spec.selection, cursor)
        notes.notes[:0] = chosen.notes
        notes.warnings[:0] = chosen.warnings
        samples: list[JobSample] = []
        try:
            items = self.store.items(spec.id, limit=MAX_SAMPLES)
            samples = await selected_samples(handler, spec, items, self.env)
        except ServiceError as error:
            notes.warnings.append(f"The sample entries could not be read: {error.message}")
        requests = handler.requests(spec, count)
        limiter = self.plane.upstream.limiter
        budgets = {u: self.plane.budget.in_use(u, limiter) for u in requests or {spec.universe: {}}}
        seconds = {u: budgets[u].estimate_seconds(cats) for u, cats in requests.items()}
        slowest = max(seconds, key=lambda u: seconds[u], default=spec.universe)
        flat: dict[str, int] = {}
        for cats in requests.values():
            for name, n in cats.items():
                flat[name] = flat.get(name, 0) + n
        budget = budgets.get(slowest) or self.plane.budget.in_use(spec.universe, limiter)
        confirmation = self.confirmation(spec, handler)
        if confirmation is not None:
            notes.warnings.insert(
                0,
                f"{self._confirmation_reason(spec, handler)}: starting it needs {confirmation!r}.",
            )
        if count == 0:
            notes.notes.insert(0, "Nothing matches the selection: the job has nothing to do.")
        backend = self.plane.upstream.binding(slowest).backend
        backup = self._pre_backup(spec, handler, count)
        if backup is not None and backup.required and not backup.skipped:
            notes.notes.append(backup.note)
        return JobPlan(
            complete=True,
            items=count,
            estimate=JobEstimate(
                requests=flat,
                seconds=round(seconds.get(slowest, 0.0), 1),
                note=f"At this server's share of the Open Cloud budget at CCU {budget.ccu:,} "
                f"({budget.reserve_share:.0%} kept for game servers), latency aside; "
                "429 answers and the plugin's own calls make it longer.",
            ),
            budget=budget.view(backend),
            samples=samples,
            warnings=notes.warnings,
            notes=notes.notes,
            blocking=notes.blocking,
            bad_lines=notes.bad_lines,
            bad_line_count=notes.bad_line_count,
            confirmation=confirmation,
            planned_at=datetime.now(UTC),
            backup=backup,
        )

    def _pre_backup(
        self, spec: JobSpec, handler: JobKindHandler, count: int
    ) -> PreJobBackup | None:
        """The backup taken before a job writes to a production universe (and its cost)."""
        if not handler.writes or spec.kind in (JobKind.BACKUP, JobKind.ERASE_USER):
            return None  # an erasure's backup would keep the very data it erases
        if not self.production_universes(spec, handler):
            return None
        skipped = bool(spec.record.request.get("skip_backup"))
        if not handler.backs_up_items:
            return PreJobBackup(
                required=True, skipped=True, entries=0, requests={}, seconds=0.0,
                note="No backup is taken before a copy or move (its items are the source "
                "entries, not the ones it writes); the journal keeps every overwritten entry "
                "for its rollback.",
            )  # fmt: skip
        requests = {category(spec.store_kind, "read"): count}
        budget = self.plane.budget.in_use(spec.universe, self.plane.upstream.limiter)
        seconds = round(budget.estimate_seconds(requests), 1)
        return PreJobBackup(
            required=True,
            skipped=skipped,
            entries=count,
            requests=requests,
            seconds=seconds,
            note=f"Before it writes, the {count:,} entries it will write are read into an "
            f"encrypted archive (a backup job): {count:,} read requests, about {seconds:,.0f} s "
            "at this server's share of the budget. Start it with skip_backup to go without.",
        )

    # -------------------------------------------------------------------------- running

    def _queue(self, record: JobRecord, by: Person | None, message: str | None = None) -> None:
        self._set_state(record, JobState.QUEUED, by=by, message=message)
        self._launch(record.id)

    def _launch(self, job_id: str) -> None:
        if job_id in self._tasks or self._closing:
            return
        # Every Open Cloud call of the job yields to the plugin's, and none is charged to an
        # assistant whose proposal it was.
        with background_calls(), not_charged():
            task = asyncio.create_task(self._run(job_id))
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def _run(self, job_id: str) -> None:
        async with self._slots:
            record = self.store.get(job_id)
            if record.state != JobState.QUEUED.value or self._closing:
                return
            record = self.store.update(job_id, started_ms=record.started_ms or now_ms())
            record = self._set_state(record, JobState.RUNNING)
            spec, handler = spec_of(record), handler_for(record.kind)
            actor = job_actor(record)
            run = JobRun(
                spec, handler, self.env, actor,
                on_flush=self._flushed, on_outcome=self._outcome,
                held_wait_seconds=self._held_wait, held_retry_seconds=self._held_retry,
            )  # fmt: skip
            self._runs[job_id] = run
            try:
                result = await run.run()
            except Exception:
                log.exception("job %s stopped on an unexpected error", job_id)
                result = RunResult(
                    False, failure=JobStop(ErrorCode.INTERNAL, "The job failed; see the log.")
                )
            finally:
                self._runs.pop(job_id, None)
            self._after_run(job_id, spec, result)

    def _after_run(self, job_id: str, spec: JobSpec, result: RunResult) -> None:
        record = self.store.get(job_id)
        if result.finished and record.state in (JobState.RUNNING.value, JobState.PAUSED.value):
            record = self.store.update(job_id, finished_ms=now_ms(), **(result.changes or {}))
            if spec.kind is JobKind.ROLLBACK and record.rollback_of is not None:
                self._rollback_finished(record, record.rollback_of)
            else:
                self._set_state(record, JobState.SUCCEEDED)
        elif result.failure is not None and record.state == JobState.RUNNING.value:
            self._fail(job_id, result.failure.code, result.failure.message)
        if spec.kind is JobKind.BACKUP and spec.params.from_job:
            self._after_pre_backup(spec.params.from_job, self.store.get(job_id))
        self._publish_progress(self.store.get(job_id), force=True)

    def _rollback_finished(self, record: JobRecord, original_id: str) -> None:
        """A rollback claims no more than it did: the job it undoes becomes `rolled_back` only
        when every write is undone. Failed items fail the rollback (rolling back again retries
        them); entries left alone by design (changed since, impossible to undo) let it succeed
        but leave the job as it was, with its rollback note saying what is not undone."""
        original = self.store.get(original_id)
        failed = self.store.outcome_codes(record.id, ItemState.FAILED.value)
        if failed:
            code = next((ErrorCode(c) for c in failed if c), ErrorCode.INTERNAL)
            message = _rollback_failure(self.store, record, original_id, failed)
            record = self.store.update(record.id, failure_code=code.value, failure_message=message)
            self._set_state(record, JobState.FAILED, message=message)
            self._state_event(original, JobState(original.state), message=message)
            return
        left = _left_alone(self.store, record, original_id)
        if left is not None:
            self._set_state(record, JobState.SUCCEEDED, message=left)
            self._state_event(original, JobState(original.state), message=left)
            return
        self._set_state(record, JobState.SUCCEEDED)
        self._set_state(original, JobState.ROLLED_BACK, message=f"rolled back by {record.id}")

    def _flushed(self, run: JobRun) -> None:
        record = self.store.find(run.spec.id)
        if record is not None:
            self._publish_progress(record)

    def _outcome(self, kind: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.job_item(kind, outcome)

    # --------------------------------------------------------------------- user actions

    async def start(
        self, caller: Principal, job_id: str, confirm: str | None, skip_backup: bool = False
    ) -> JobView:
        record = self._get(job_id)
        spec, handler = spec_of(record), handler_for(record.kind)
        self._require_role(caller, spec, handler)
        state = JobState(record.state)
        if state in (JobState.QUEUED, JobState.RUNNING):
            return self.view(record)
        if state is not JobState.PLANNED:
            raise ServiceError(
                ErrorCode.CONFLICT, f"Job {job_id} is {state.value}; only a planned job starts."
            )
        self._require_confirmation(spec, handler, confirm)
        if skip_backup:
            record = self._skip_backup(record)
        if record.proposed_by is not None:
            record = self.store.update(
                job_id, approved_by_id=caller.token_id, approved_by_name=caller.name,
                approved_by_user_id=caller.studio_user_id,
                approved_by_user_name=caller.studio_user_name,
            )  # fmt: skip
        if not record.plan_complete:
            # Still counting: it starts by itself when the plan is ready.
            record = self.store.update(job_id, start_when_planned=True)
            return self.view(record)
        blocking = (record.plan or {}).get("blocking") or []
        if blocking:
            raise ServiceError(ErrorCode.BAD_REQUEST, " ".join(blocking))
        self._begin(record, caller.person)
        return self.get(job_id)

    # ---------------------------------------------------------- the backup before a job

    def _skip_backup(self, record: JobRecord) -> JobRecord:
        request = {**record.request, "skip_backup": True}
        plan = record.plan
        if plan is not None and plan.get("backup"):
            plan = {**plan, "backup": {**plan["backup"], "skipped": True}}
        return self.store.update(record.id, request=request, plan=plan)

    def _begin(self, record: JobRecord, by: Person | None, message: str | None = None) -> None:
        """Queue a planned job, after the backup its plan asks for (started here if needed)."""
        backup = (record.plan or {}).get("backup") or {}
        if not backup.get("required") or backup.get("skipped") or self.env.keys is None:
            self._queue(record, by, message)
            return
        job_ids: list[str] = list(backup.get("job_ids") or [])
        last = self.store.find(job_ids[-1]) if job_ids else None
        if last is not None and last.state == JobState.SUCCEEDED.value:
            self._queue(record, by, message)
            return
        record = self.store.update(record.id, start_when_planned=True)
        if last is not None and last.state not in TERMINAL_STATES:
            return  # it starts when its backup ends
        taken = self._start_pre_backup(record, len(job_ids))
        plan = {**(record.plan or {}), "backup": {**backup, "job_ids": [*job_ids, taken]}}
        record = self.store.update(record.id, plan=plan)
        self._state_event(
            record, JobState.PLANNED, by=by,
            message=f"backing up the entries it writes first (job {taken})",
        )  # fmt: skip

    def _start_pre_backup(self, record: JobRecord, attempt: int) -> str:
        from .kinds.backup import BackupParams, new_key_state

        assert self.env.keys is not None
        params = BackupParams(from_job=record.id, note=f"before job {record.id}")
        creator = Principal(
            token_id=record.actor_id, name=record.actor_name, role=Role.EDITOR,
            studio_user_id=record.actor_user_id, studio_user_name=record.actor_user_name,
        )  # fmt: skip
        backup = self._new_record(
            creator,
            JobKind.BACKUP,
            universe=record.universe,
            store_kind=record.store_kind,
            body={"selection": None, "params": params.model_dump(mode="json")},
            idempotency_key=f"{record.id}-backup-{attempt}",
            start=True,
        )
        backup = replace(backup, kind_state=new_key_state(self.env.keys, None))
        backup = self.store.create(backup)
        self._state_event(backup, None, by=creator_of(record))
        self._plan_later(backup.id)
        return backup.id

    def _after_pre_backup(self, main_id: str, backup: JobRecord) -> None:
        """A backup before a job ended: start the job, or say why it waits."""
        main = self.store.find(main_id)
        if main is None or main.state != JobState.PLANNED.value or not main.start_when_planned:
            return
        if backup.state == JobState.SUCCEEDED.value:
            self._queue(main, None, message=f"backup {backup.id} taken; starting")
            return
        main = self.store.update(main_id, start_when_planned=False)
        self._state_event(
            main, JobState.PLANNED,
            message=f"the backup before it ended {backup.state}: start it again to retry, or "
            "start it with skip_backup",
        )  # fmt: skip

    async def pause(self, caller: Principal, job_id: str) -> JobView:
        record = self._get(job_id)
        state = JobState(record.state)
        if state is JobState.PAUSED:
            return self.view(record)
        if state not in (JobState.QUEUED, JobState.RUNNING):
            raise ServiceError(
                ErrorCode.CONFLICT, f"Job {job_id} is {state.value}; only a running job pauses."
            )
        record = self._set_state(record, JobState.PAUSED, by=caller.person)
        if (run := self._runs.get(job_id)) is not None:
            run.stop("paused")
        return self.view(record)

    async def resume(self, caller: Principal, job_id: str) -> JobView:
        record = self._get(job_id)
        state = JobState(record.state)
        if state in (JobState.QUEUED, JobState.RUNNING):
            return self.view(record)
        if state is not JobState.PAUSED:
            raise ServiceError(
                ErrorCode.CONFLICT, f"Job {job_id} is {state.value}; only a paused job resumes."
            )
        self._queue(record, caller.person)
        return self.get(job_id)

    async def cancel(self, caller: Principal, job_id: str) -> JobView:
        record = self._get(job_id)
        state = JobState(record.state)
        if state is JobState.CANCELLED:
            return self.view(record)
        if state in TERMINAL_STATES:
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"Job {job_id} already ended ({state.value}); roll it back to undo its writes.",
            )
        record = self.store.update(job_id, finished_ms=now_ms())
        record = self._set_state(record, JobState.CANCELLED, by=caller.person)
        if (run := self._runs.get(job_id)) is not None:
            run.stop("cancelled")
        if (task := self._planning.get(job_id)) is not None:
            task.cancel()
        return self.view(record)

    async def rollback(
        self, caller: Principal, job_id: str, request: JobRollbackRequest
    ) -> JobView:
        earlier = self.store.find_by_idempotency_key(request.idempotency_key)
        if earlier is not None:
            if earlier.rollback_of == job_id:
                return self.view(earlier)
            raise _key_reused(request.idempotency_key, earlier.id)
        original = self._get(job_id)
        if JobAction.ROLLBACK not in self._actions(original, handler_for(original.kind)):
            raise ServiceError(
                ErrorCode.CONFLICT, _why_no_rollback(original, self._wrote(original))
            )
        record = self._new_record(
            caller,
            JobKind.ROLLBACK,
            universe=original.universe,
            store_kind=original.store_kind,
            body={
                "selection": None,
                "params": {"of_job": job_id},
                **({"skip_backup": True} if request.skip_backup else {}),
            },
            idempotency_key=request.idempotency_key,
            start=not request.dry_run,
            rollback_of=job_id,
        )
        spec, handler = spec_of(record), handler_for(JobKind.ROLLBACK)
        self._check_new(caller, spec, handler, request.dry_run)
        if not request.dry_run:
            self._require_confirmation(spec, handler, request.confirm)
        record = self.store.create(record)
        self.store.update(job_id, rolled_back_by=record.id)
        self._state_event(record, None, by=caller.person)
        return await self._plan_and_wait(record.id)

    # ------------------------------------------------------------------------ retention

    async def prune(self, request: JobPruneRequest) -> JobPruneReport:
        """Remove finished jobs older than `older_than` that nothing needs (see retention.py);
        a dry run only says what would go. One prune at a time."""
        cutoff_ms = now_ms() - parse_age(request.older_than) * 1000
        async with self._pruning:
            # Chosen and removed with no await between, so no job changes in the meantime.
            chosen = select(
                self.store,
                cutoff_ms,
                data_dir=self.env.data_dir,
                referrers=self.referrers,
                can_roll_back=lambda r: JobAction.ROLLBACK in self._actions(r, handler_for(r.kind)),
                include_rollbackable=request.include_rollbackable,
            )
            ids = [r.id for r in chosen.prune]
            report = JobPruneReport(
                dry_run=request.dry_run,
                cutoff=_at(cutoff_ms),
                jobs=len(ids),
                items=sum(r.item_count for r in chosen.prune),
                oldest_finished_at=_time(_finished(chosen.prune[0])) if ids else None,
                newest_finished_at=_time(_finished(chosen.prune[-1])) if ids else None,
                by_kind=_count_kinds(chosen.prune),
                rollbackable=len(chosen.rollbackable),
                listed=[
                    _pruned_entry(r, r.id in chosen.rollbackable)
                    for r in chosen.prune[:MAX_PRUNE_LISTED]
                ],
                kept=[
                    JobPruneKept(reason=reason, jobs=n, note=KEEP_NOTES[reason])
                    for reason, n in sorted(chosen.kept.items())
                ],
                notes=_prune_notes(chosen.rollbackable, chosen.kept, request),
            )
            if request.dry_run:
                measured = await asyncio.to_thread(measure_bytes, self.store.path, ids)
                return report.model_copy(update={"data_bytes": measured})
            before = self.store.file_bytes()
            self.store.remove_jobs(ids)
            if ids:
                log.info("pruned %d finished jobs (older than %s)", len(ids), request.older_than)
            await self._drop_pruned()
            return report.model_copy(
                update={"file_bytes_before": before, "file_bytes_after": self.store.file_bytes()}
            )

    def keep_pruning(self, days: int, first: float = RETENTION_FIRST_SECONDS) -> asyncio.Task[None]:
        """Automatic retention: prune jobs older than `days` now and then, never one that
        could still be rolled back (a person decides those with `dsm jobs prune`)."""

        async def loop() -> None:
            await asyncio.sleep(first)
            while True:
                request = JobPruneRequest(older_than=f"{days}d", dry_run=False)
                try:
                    report = await self.prune(request)
                    if report.jobs:
                        log.info(
                            "retention: removed %d jobs that finished over %d days ago "
                            "(the jobs file: %s -> %s bytes)", report.jobs, days,
                            report.file_bytes_before, report.file_bytes_after,
                        )  # fmt: skip
                except Exception:  # a bad disk, say: the next pass tries again
                    log.exception("retention: pruning old jobs failed")
                await asyncio.sleep(RETENTION_EVERY_SECONDS)

        self._retention = asyncio.create_task(loop(), name="dsm-job-retention")
        return self._retention

    async def _drop_pruned(self) -> None:
        """Delete the items of pruned jobs in short transactions, then give the space back,
        off the event loop (see `reclaim_space`)."""
        while self.store.drop_pruned_items():
            await asyncio.sleep(0)  # the server's own work goes between batches
        await asyncio.to_thread(reclaim_space, self.store.path)

    # ----------------------------------------------------------------------- bookkeeping

    def _set_state(
        self,
        record: JobRecord,
        state: JobState,
        *,
        by: Person | None = None,
        message: str | None = None,
    ) -> JobRecord:
        previous = JobState(record.state)
        updated = self.store.update(record.id, state=state.value)
        self._state_event(updated, previous, by=by, message=message)
        return updated

    def _fail(self, job_id: str, code: ErrorCode, message: str) -> None:
        record = self.store.get(job_id)
        if JobState(record.state) in TERMINAL_STATES:
            return
        record = self.store.update(
            job_id, finished_ms=now_ms(), failure_code=code.value, failure_message=message
        )
        self._set_state(record, JobState.FAILED, message=message)

    def _state_event(
        self,
        record: JobRecord,
        previous: JobState | None,
        *,
        by: Person | None = None,
        message: str | None = None,
    ) -> None:
        if self.metrics is not None:
            self.metrics.job_state(record.kind, record.state)
        self.events.publish(
            EventType.JOB_STATE,
            JobStatePayload(
                job_id=record.id,
                kind=record.kind,
                universe_id=record.universe,
                state=JobState(record.state),
                previous=previous,
                actions=self._actions(record, handler_for(record.kind)),
                actor=None if by is None else by.token_name,
                person=by,
                message=message,
            ),
        )

    def _planning_progress(self, spec: JobSpec, counted: int) -> None:
        now = time.monotonic()
        if now - self._progress_at.get(spec.id, 0.0) < PROGRESS_EVERY_SECONDS:
            return
        self._progress_at[spec.id] = now
        self.events.publish(
            EventType.JOB_PROGRESS,
            JobProgressPayload(
                job_id=spec.id,
                kind=spec.kind.value,
                universe_id=spec.universe,
                state=JobState.PLANNED,
                phase=JobPhase.PLANNING,
                progress=JobProgress(done=0, applied=0, skipped=0, failed=0),
                counted=counted,
            ),
        )

    def _publish_progress(self, record: JobRecord, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._progress_at.get(record.id, 0.0) < PROGRESS_EVERY_SECONDS:
            return
        self._progress_at[record.id] = now
        self.events.publish(
            EventType.JOB_PROGRESS,
            JobProgressPayload(
                job_id=record.id,
                kind=record.kind,
                universe_id=record.universe,
                state=JobState(record.state),
                phase=JobPhase.RUNNING,
                progress=self._progress(record),
            ),
        )


def _finished(record: JobRecord) -> int:
    return record.finished_ms if record.finished_ms is not None else record.updated_ms


def _pruned_entry(record: JobRecord, rollbackable: bool) -> JobPruneEntry:
    return JobPruneEntry(
        id=record.id,
        kind=record.kind,
        state=JobState(record.state),
        finished_at=_at(_finished(record)),
        items=record.item_count,
        rollbackable=rollbackable,
    )


def _count_kinds(records: list[JobRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        counts[record.kind] = counts.get(record.kind, 0) + 1
    return counts


def _prune_notes(
    rollbackable: set[str], kept: dict[PruneKeepReason, int], request: JobPruneRequest
) -> list[str]:
    notes = []
    if rollbackable:
        notes.append(
            f"{len(rollbackable):,} of these jobs could still be rolled back; pruning them "
            "removes that. Their writes stay in the write journal with their before-images, so "
            "each entry can still be undone on its own (the entry's History in the plugin, or "
            "POST /journal/{id}/undo), but not the whole job in one step."
        )
    held = kept.get(PruneKeepReason.ROLLBACKABLE, 0)
    if held and not request.include_rollbackable:
        notes.append(
            f"{held:,} more finished {'job' if held == 1 else 'jobs'} could still be rolled "
            "back and stay; prune them too with include_rollbackable (CLI: "
            "--include-rollbackable), which removes their one-step rollback."
        )
    notes.append(
        "Planned, queued, running and paused jobs never go. The write journal and the team "
        "audit log keep their own records of every job (they name its id); nothing in them "
        "is removed."
    )
    return notes


def job_actor(record: JobRecord) -> JobActor:
    """Whom the journal names for the job's writes: its creator, or for an assistant's
    proposal the person who started it, with the assistant named beside them."""
    if record.proposed_by is not None and record.approved_by_id is not None:
        return JobActor(
            record.approved_by_id,
            f"{record.approved_by_name} (job {record.id}, proposed by the assistant "
            f"{record.proposed_by})",
            record.approved_by_user_id,
            record.approved_by_user_name,
        )
    return JobActor(
        record.actor_id,
        f"{record.actor_name} (job {record.id})",
        record.actor_user_id,
        record.actor_user_name,
    )


def creator_of(record: JobRecord) -> Person:
    """Who created the job (an assistant, for a proposal), with the Studio user behind them."""
    token = f"{record.actor_name} (assistant)" if record.proposed_by else record.actor_name
    return make_person(record.actor_user_id, record.actor_user_name, token)


def approver_of(record: JobRecord) -> Person | None:
    if record.approved_by_name is None:
        return None
    return make_person(
        record.approved_by_user_id, record.approved_by_user_name, record.approved_by_name
    )


def _key_reused(key: str, job_id: str) -> ServiceError:
    return ServiceError(
        ErrorCode.CONFLICT,
        f"The idempotency key {key} was already used for job {job_id}; send this request with a "
        "new key.",
        details={"job_id": job_id},
    )


# Skipped rollback items whose write is nonetheless not in effect any more.
UNDONE_SKIPS = frozenset({SkipCode.ALREADY_UNDONE.value, SkipCode.NOTHING_TO_UNDO.value})


def _left_counts(store: JobStore, rollback: JobRecord) -> tuple[int, str]:
    """How many of the job's writes a rollback left alone by design, and why in words."""
    skipped = store.outcome_codes(rollback.id, ItemState.SKIPPED.value)
    left = {code: n for code, n in skipped.items() if code not in UNDONE_SKIPS}
    why = ", ".join(f"{n:,} {code.replace('_', ' ')}" for code, n in left.items())
    return sum(left.values()), why


def _left_alone(store: JobStore, rollback: JobRecord, original_id: str) -> str | None:
    """What a finished rollback left as it is, in words; None when it left nothing."""
    total, why = _left_counts(store, rollback)
    if not total:
        return None
    return (
        f"Job {original_id} is not fully rolled back: {total:,} of its writes "
        f"{'was' if total == 1 else 'were'} left alone ({why}); see the skipped items of "
        f"{rollback.id}."
    )


def _rollback_failure(
    store: JobStore, record: JobRecord, original_id: str, failed: dict[str, int]
) -> str:
    total = sum(failed.values())
    why = ", ".join(f"{n:,} {code}" for code, n in failed.items())
    left, left_why = _left_counts(store, record)
    besides = (
        f" {left:,} more {'was' if left == 1 else 'were'} left alone ({left_why})." if left else ""
    )
    return (
        f"{total:,} of the {record.item_count:,} writes of job {original_id} could not be "
        f"rolled back ({why}); see the failed items.{besides} Job {original_id} is not rolled "
        "back: roll it back again to retry them (what is already back is not written twice)."
    )


def _why_no_rollback(record: JobRecord, wrote: bool) -> str:
    state = JobState(record.state)
    if state is JobState.ROLLED_BACK:
        return f"Job {record.id} is already rolled back (by {record.rolled_back_by})."
    if state not in TERMINAL_STATES:
        return (
            f"Job {record.id} is {state.value}; cancel it (or let it finish) before rolling back."
        )
    if not wrote:
        return f"Job {record.id} wrote nothing to Open Cloud, so there is nothing to roll back."
    return f"Job {record.id} is being rolled back by {record.rolled_back_by}."


@asynccontextmanager
async def open_jobs(
    data_dir: Path,
    plane: DataPlane,
    events: EventBus,
    metrics: Metrics | None = None,
    *,
    keys: ArchiveKeysSource | None = None,
    index: IndexService | None = None,
    team: TeamService | None = None,
    assistant_proposals: bool = True,
    **settings: float,
) -> AsyncIterator[JobService]:
    """The jobs service's lifecycle: open the store, resume jobs, stop them at shutdown.

    `keys` open and protect backup archives; `index` is the search index (crawl jobs write it,
    search selections read it, erasure scrubs it); `team` is team sync (an erasure reports what
    its audit log keeps). `settings` are JobService's keyword settings
    (plan_wait, held_wait, held_retry).
    """
    with JobStore(data_dir) as store:
        # Nothing else uses the store yet: a file from before retention gets incremental
        # vacuum now (one full VACUUM, off the loop), so prunes can give space back.
        try:
            if await asyncio.to_thread(store.make_reclaimable):
                log.info("the jobs file can now give the space of pruned jobs back")
        except sqlite3.Error as exc:  # a full disk, say: prunes then only reuse the space
            log.warning("the jobs file keeps its free pages (%s)", exc)
        uploads = UploadStore(store, data_dir)
        uploads.sweep()
        env = JobEnv(
            plane,
            store,
            uploads,
            data_dir / EXPORTS_DIRNAME,
            data_dir,
            keys=keys,
            index=index,
            team=team,
        )
        service = JobService(
            env, events, metrics, assistant_proposals=assistant_proposals, **settings
        )
        if metrics is not None:
            metrics.traffic.attach_jobs(
                "the jobs engine: items finished (applied, skipped, failed)"
            )
        service.resume_all()
        try:
            yield service
        finally:
            await service.close()


__all__ = ["EXPORTS_DIRNAME", "JobService", "open_jobs"]
