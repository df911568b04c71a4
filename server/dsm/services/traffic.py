"""Time series of this server's real Open Cloud traffic, for the plugin's Monitor view.

Every call the Open Cloud client makes is counted into a one-second bucket (operation, outcome,
budget category, status, latency); cache fallbacks and finished job items are counted too. The
last hour is kept; ten-second buckets are the one-second ones merged. Seconds without traffic
have no bucket at all, so a chart can never draw a line nobody measured.

`MonitorTicker` publishes each finished second that had traffic as a `monitor.tick` event (with
the finished ten-second bucket and the budget every ten seconds), which is what keeps the
plugin's charts live.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared_schema.common import Backend
from shared_schema.events import EventType
from shared_schema.monitor import (
    BudgetUse,
    MonitorTickPayload,
    OperationTotal,
    TrafficBucket,
    TrafficSeries,
)

from ..opencloud import ops
from ..opencloud.ratelimit import BucketStats
from .journaled import Publisher

HORIZON_SECONDS = 3600
MAX_LATENCIES_PER_SECOND = 2000
COUNTED_BY = "this server's own Open Cloud client: every call it made, as it happened"
NO_JOB_ENGINE = (
    "not fed yet: no jobs engine has attached to this server; job items will be counted here "
    "once one does"
)

_CATEGORY = {op.name: op.category for op in ops.ALL_OPS}


def outcome_of(status: int | str) -> str:
    """Coarse class of a call's result, so error counts need no status arithmetic."""
    if isinstance(status, str):
        return "no_answer"  # "timeout" or "network_error": nothing came back
    if status == 429:
        return "throttled"
    if 200 <= status < 400:
        return "ok"
    if 400 <= status < 500:
        return "client_error"
    if status >= 500:
        return "server_error"
    return "other"


def nearest_rank(ordered: list[float], q: float) -> float:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class _Bucket:
    outcomes: Counter[str] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    by_category: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    by_op_outcome: Counter[tuple[str, str]] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    cache_served: int = 0
    cache_missing: int = 0
    job_items: int = 0

    def merge(self, other: _Bucket) -> None:
        self.outcomes.update(other.outcomes)
        self.by_operation.update(other.by_operation)
        self.by_category.update(other.by_category)
        self.errors.update(other.errors)
        self.by_op_outcome.update(other.by_op_outcome)
        self.latencies.extend(other.latencies)
        self.cache_served += other.cache_served
        self.cache_missing += other.cache_missing
        self.job_items += other.job_items

    def model(self, start: int, seconds: int) -> TrafficBucket:
        ordered = sorted(self.latencies)
        return TrafficBucket(
            start=datetime.fromtimestamp(start, UTC),
            seconds=seconds,
            calls=sum(self.outcomes.values()),
            ok=self.outcomes["ok"],
            throttled=self.outcomes["throttled"],
            client_errors=self.outcomes["client_error"],
            server_errors=self.outcomes["server_error"],
            no_answer=self.outcomes["no_answer"],
            by_operation=dict(self.by_operation),
            by_category=dict(self.by_category),
            errors_by_code=dict(self.errors),
            latency_p50_ms=round(nearest_rank(ordered, 0.5) * 1000, 3) if ordered else None,
            latency_p99_ms=round(nearest_rank(ordered, 0.99) * 1000, 3) if ordered else None,
            cache_served=self.cache_served,
            cache_missing=self.cache_missing,
            job_items=self.job_items,
        )


class Traffic:
    """The buckets; fed from the client's on_call hook, the read path and the jobs engine."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._seconds: dict[int, _Bucket] = {}
        self.last_call_at: float | None = None
        self.job_feed: str | None = None
        self.counting_since = clock()

    def _bucket(self) -> _Bucket:
        second = int(self._clock())
        bucket = self._seconds.get(second)
        if bucket is None:
            bucket = self._seconds[second] = _Bucket()
            for old in [s for s in self._seconds if s <= second - HORIZON_SECONDS]:
                del self._seconds[old]
        return bucket

    def record_call(self, operation: str, status: int | str, latency_s: float) -> None:
        bucket = self._bucket()
        outcome = outcome_of(status)
        bucket.outcomes[outcome] += 1
        bucket.by_operation[operation] += 1
        bucket.by_category[_CATEGORY.get(operation, "other")] += 1
        bucket.by_op_outcome[(operation, outcome)] += 1
        if outcome != "ok":
            bucket.errors[str(status)] += 1
        if len(bucket.latencies) < MAX_LATENCIES_PER_SECOND:
            bucket.latencies.append(max(0.0, latency_s))
        self.last_call_at = self._clock()

    def record_cache(self, served: bool) -> None:
        bucket = self._bucket()
        if served:
            bucket.cache_served += 1
        else:
            bucket.cache_missing += 1

    def attach_jobs(self, name: str) -> None:
        """A jobs engine says it will feed `record_job_items`; shown with the series."""
        self.job_feed = name

    def record_job_items(self, count: int = 1) -> None:
        """The jobs engine's hook: `count` job items finished (written, read, skipped)."""
        self._bucket().job_items += max(0, count)

    # ------------------------------------------------------------------ reading

    def merged(self, start: int, seconds: int) -> _Bucket | None:
        merged = None
        for second in range(start, start + seconds):
            bucket = self._seconds.get(second)
            if bucket is not None:
                merged = merged or _Bucket()
                merged.merge(bucket)
        return merged

    def series(
        self,
        window_seconds: int,
        bucket_seconds: int,
        *,
        budget: list[BudgetUse],
        backend: Backend | None,
    ) -> TrafficSeries:
        now = int(self._clock())
        # Whole buckets that have ended: the current, unfinished second is not shown yet.
        end = now - now % bucket_seconds
        start = end - window_seconds
        start -= start % bucket_seconds
        buckets = []
        totals = _Bucket()
        for bucket_start in range(start, end, bucket_seconds):
            merged = self.merged(bucket_start, bucket_seconds)
            if merged is not None:
                buckets.append(merged.model(bucket_start, bucket_seconds))
                totals.merge(merged)
        by_op = [
            OperationTotal(operation=op, outcome=outcome, calls=n)
            for (op, outcome), n in sorted(totals.by_op_outcome.items())
        ]
        return TrafficSeries(
            window_seconds=end - start,
            bucket_seconds=bucket_seconds,
            start=datetime.fromtimestamp(start, UTC),
            end=datetime.fromtimestamp(end, UTC),
            counted_by=COUNTED_BY,
            backend=backend,
            buckets=buckets,
            totals=totals.model(start, max(1, end - start)),
            by_operation_outcome=by_op,
            budget=budget,
            last_call_at=(
                datetime.fromtimestamp(self.last_call_at, UTC)
                if self.last_call_at is not None
                else None
            ),
            counting_since=datetime.fromtimestamp(self.counting_since, UTC),
            job_throughput=(
                f"fed by {self.job_feed}" if self.job_feed is not None else NO_JOB_ENGINE
            ),
        )


def budget_uses(snapshot: list[BucketStats]) -> list[BudgetUse]:
    return [
        BudgetUse(
            universe_id=b.universe_id,
            category=b.category,
            used_last_minute=b.used,
            allowed_per_minute=float(b.allowed),
            paused_seconds=max(0.0, b.paused_for),
        )
        for b in snapshot
    ]


class MonitorTicker:
    """Publishes each finished second with traffic as `monitor.tick` (cancel-safe lifecycle)."""

    def __init__(
        self,
        traffic: Traffic,
        events: Publisher,
        budget: Callable[[], list[BudgetUse]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._traffic = traffic
        self._events = events
        self._budget = budget
        self._clock = clock
        self._last = int(clock())

    def tick(self) -> int:
        """Publish every second finished since the last tick; returns how many were sent."""
        now = int(self._clock())
        sent = 0
        for second in range(self._last, now):
            bucket = self._traffic.merged(second, 1)
            ten = None
            budget = None
            if (second + 1) % 10 == 0:
                merged = self._traffic.merged(second - 9, 10)
                ten = merged.model(second - 9, 10) if merged is not None else None
                budget = self._budget() if ten is not None else None
            if bucket is None and ten is None:
                continue
            self._events.publish(
                EventType.MONITOR_TICK,
                MonitorTickPayload(
                    second=bucket.model(second, 1) if bucket is not None else None,
                    ten_seconds=ten,
                    budget=budget,
                ),
            )
            sent += 1
        self._last = max(self._last, now)
        return sent

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[MonitorTicker]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(1.0 - (self._clock() % 1.0) + 0.02)
                self.tick()

        task = asyncio.create_task(loop(), name="dsm-monitor-ticker")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
