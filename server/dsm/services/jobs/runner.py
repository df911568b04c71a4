"""One run of a job: a producer feeding pending items to enough workers to fill the budget.

Pacing is the limiter's (per universe and budget category, background priority, so the plugin's
own calls go first); the runner only keeps enough items in flight that the limiter, not latency,
decides the rate. Outcomes are committed in small batches. Pause, cancel and shutdown stop the
producer; items already in flight finish (a write is never cut on purpose), the rest stay
pending for the next run.

Held sessions with `held_sessions: retry` are left pending and retried in later passes until
their session is released or `HELD_WAIT_SECONDS` have gone by; then they are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from shared_schema.errors import ErrorCode
from shared_schema.jobs import ItemState, JobProgress

from ..errors import ServiceError
from ..journaled import for_job
from .kind import (
    ItemContext,
    ItemResult,
    JobActor,
    JobEnv,
    JobKindHandler,
    JobSpec,
    JobStop,
    RunResources,
    StepUnknown,
    category,
)
from .store import ItemRecord, Outcome

log = logging.getLogger("dsm.jobs.runner")

FLUSH_SECONDS = 0.25
FLUSH_ITEMS = 200
PAGE = 500
MIN_WORKERS, MAX_WORKERS = 2, 32
# Requests a worker is assumed to spend waiting for an answer, to size the pool.
LATENCY_ALLOWANCE_SECONDS = 1.0
TRANSIENT = frozenset({ErrorCode.UPSTREAM_THROTTLED, ErrorCode.UPSTREAM_UNAVAILABLE})
# The job cannot do anything useful without these: it stops (failed) instead of failing every item.
FATAL = frozenset({ErrorCode.UPSTREAM_PERMISSION, ErrorCode.NO_API_KEY})
MAX_TRANSIENT_RETRIES = 8
HELD_RETRY_SECONDS = 30.0
HELD_WAIT_SECONDS = 15 * 60.0
RATE_WINDOW_SECONDS = 20.0

StopReason = Literal["paused", "cancelled", "shutdown"]


@dataclass(frozen=True)
class RunResult:
    """How a run ended: finished (every item has an outcome), stopped, or failed."""

    finished: bool
    stopped: StopReason | None = None
    failure: JobStop | None = None
    changes: dict[str, Any] | None = None


def workers_for(spec: JobSpec, handler: JobKindHandler, env: JobEnv) -> int:
    """Enough concurrent items to keep the paced budget busy while answers are on their way."""
    limiter = env.plane.upstream.limiter
    budget_category = category(spec.store_kind, handler.pace)
    if limiter is None:
        return MIN_WORKERS
    per_second = limiter.allowed(str(spec.universe), budget_category) / 60.0
    wanted = math.ceil(per_second * LATENCY_ALLOWANCE_SECONDS) + 2
    return max(MIN_WORKERS, min(MAX_WORKERS, wanted))


class JobRun:
    def __init__(
        self,
        spec: JobSpec,
        handler: JobKindHandler,
        env: JobEnv,
        actor: JobActor,
        *,
        on_flush: Callable[[JobRun], None],
        on_outcome: Callable[[str, str], None],
        held_wait_seconds: float = HELD_WAIT_SECONDS,
        held_retry_seconds: float = HELD_RETRY_SECONDS,
    ) -> None:
        self.spec = spec
        self.handler = handler
        self.env = env
        self.actor = actor
        self.workers = workers_for(spec, handler, env)
        self._on_flush = on_flush
        self._on_outcome = on_outcome
        self._held_wait = held_wait_seconds
        self._held_retry = held_retry_seconds
        self._pending: list[Outcome] = []
        self._resources: RunResources = RunResources()
        self._stop: StopReason | None = None
        self._stopped = asyncio.Event()
        self._failure: JobStop | None = None
        self._finished_at: deque[float] = deque()
        self._inflight: dict[asyncio.Task[None], ItemContext] = {}
        self.deferred = 0

    # ------------------------------------------------------------------------ control

    def stop(self, reason: StopReason) -> None:
        """Stop feeding items; items that have not begun a write are cut and stay pending."""
        if self._stop is None:
            self._stop = reason
        self._stopped.set()
        for task, ctx in list(self._inflight.items()):
            if not ctx.writing:
                task.cancel()

    def stopping(self) -> bool:
        return self._stop is not None or self._failure is not None

    def rate(self) -> float | None:
        now = time.monotonic()
        while self._finished_at and self._finished_at[0] < now - RATE_WINDOW_SECONDS:
            self._finished_at.popleft()
        if len(self._finished_at) < 2:
            return None
        span = max(now - self._finished_at[0], 1.0)
        return len(self._finished_at) / span

    def progress(self, total: int | None, applied: int, skipped: int, failed: int) -> JobProgress:
        done = applied + skipped + failed
        rate = self.rate()
        eta = None
        if rate and total is not None:
            eta = round(max(0, total - done) / rate, 1)
        return JobProgress(
            total=total,
            done=done,
            applied=applied,
            skipped=skipped,
            failed=failed,
            deferred=self.deferred,
            rate_per_second=None if rate is None else round(rate, 2),
            eta_seconds=eta,
        )

    # ---------------------------------------------------------------------------- run

    async def run(self) -> RunResult:
        self._resources = await self.handler.open_run(self.spec, self.env)
        flusher = asyncio.create_task(self._flush_periodically())
        try:
            await self._pass(retry=False)
            started_waiting = time.monotonic()
            while not self.stopping() and self._deferred_left():
                final = time.monotonic() - started_waiting >= self._held_wait
                if not final:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopped.wait(), self._held_retry)
                    if self.stopping():
                        break
                await self._pass(retry=True, final=final)
            if self._failure is not None:
                return RunResult(False, failure=self._failure)
            if self._stop is not None:
                return RunResult(False, stopped=self._stop)
            changes = await self.handler.finish(self.spec, self.env, self._resources)
            return RunResult(True, changes=changes)
        except JobStop as stop:
            return RunResult(False, failure=stop)
        finally:
            flusher.cancel()
            try:
                self.flush()
            finally:
                await self._resources.close()

    def _deferred_left(self) -> bool:
        self.deferred = self.env.store.count_items(self.spec.id, state="pending", deferred=True)
        return self.deferred > 0

    async def _pass(self, *, retry: bool, final: bool = False) -> None:
        queue: asyncio.Queue[tuple[ItemRecord, Any] | None] = asyncio.Queue(self.workers * 2)

        async def pending() -> AsyncIterator[ItemRecord]:
            after = 0
            while not self.stopping():
                page = self.env.store.items(
                    self.spec.id, state="pending", deferred=retry, after=after, limit=PAGE
                )
                if not page:
                    return
                for item in page:
                    yield item
                after = page[-1].seq

        async def produce() -> None:
            try:
                stream = self.handler.with_payloads(self.spec, self.env, pending())
                async for item, payload in stream:
                    if self.stopping():
                        break
                    await queue.put((item, payload))
            finally:
                for _ in range(self.workers):
                    await queue.put(None)

        async def work() -> None:
            while (entry := await queue.get()) is not None:
                if self.stopping():
                    continue
                item, payload = entry
                ctx = ItemContext(
                    self.spec, item, self.env, self.actor, self._resources, payload,
                    final_pass=final,
                )  # fmt: skip
                task = asyncio.create_task(self._item(ctx))
                self._inflight[task] = ctx
                try:
                    await asyncio.wait([task])
                except asyncio.CancelledError:
                    task.cancel()  # the run itself is cut (shutdown): so is its item
                    raise
                finally:
                    self._inflight.pop(task, None)
                if not task.cancelled():
                    task.result()

        await asyncio.gather(produce(), *(work() for _ in range(self.workers)))
        self.flush()

    async def _item(self, ctx: ItemContext) -> None:
        item = ctx.item
        transient = 0
        while True:
            try:
                with for_job(self.spec.id):
                    result = await self.handler.execute(ctx)
            except StepUnknown as exc:
                result = ItemResult.failed(ErrorCode.WRITE_OUTCOME_UNKNOWN, str(exc))
            except JobStop as stop:
                self._failure = self._failure or stop
                if stop.item is not None:
                    self._record(item, stop.item, ctx)
                return
            except ServiceError as exc:
                if exc.code in TRANSIENT and transient < MAX_TRANSIENT_RETRIES:
                    transient += 1
                    wait = exc.retry_after if exc.retry_after else min(30.0, 2.0**transient)
                    if await self._wait_or_stop(wait):
                        return  # stopping: the item stays pending
                    continue
                if exc.code in FATAL:
                    self._failure = self._failure or JobStop(exc.code, exc.message)
                    return
                result = ItemResult.failed(exc.code, exc.message)
            except Exception:
                log.exception("job %s item %d failed unexpectedly", self.spec.id, item.seq)
                result = ItemResult.failed(
                    ErrorCode.INTERNAL, "The server failed on this item; see its log."
                )
            break
        self._record(item, result, ctx)

    async def _wait_or_stop(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._stopped.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _record(self, item: ItemRecord, result: ItemResult, ctx: ItemContext) -> None:
        self._pending.append(
            Outcome(
                seq=item.seq,
                state=result.state.value,
                skip_code=None if result.skip_code is None else result.skip_code.value,
                error_code=None if result.error_code is None else result.error_code.value,
                message=result.message,
                journal_ids=tuple(ctx.journal_ids),
                attempts=ctx.attempts,
                deferred=result.deferred,
            )
        )
        if result.state is not ItemState.PENDING:
            self._finished_at.append(time.monotonic())
            self._on_outcome(self.spec.record.kind, result.state.value)
        if len(self._pending) >= FLUSH_ITEMS:
            self.flush()

    # -------------------------------------------------------------------------- flush

    def flush(self) -> None:
        """Commit finished items (and what the kind checkpoints with them) in one transaction."""
        batch, self._pending = self._pending, []
        # No await between the checkpoint and the commit: every outcome in `batch` was
        # recorded after its effect (an export line) was written, and before this checkpoint.
        kind_state = self._resources.checkpoint()
        changes: dict[str, Any] = {} if kind_state is None else {"kind_state": kind_state}
        if batch or changes:
            self.env.store.record_outcomes(self.spec.id, batch, **changes)
        self._on_flush(self)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self.flush()
