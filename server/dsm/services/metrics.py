"""The server's own counters: Open Cloud calls, latency, throttling, client budget, cache.

Everything here is counted from what actually happened in this server run; nothing is
estimated or pre-filled. The metrics live in a private prometheus-client CollectorRegistry (not
the process-global one), exposed as Prometheus text on `GET /metrics` and, for the plugin, as
`MetricsSummary` samples on `GET /metrics/summary`.

Latency percentiles (p50/p95) are computed from a sliding window of the most recent
RESERVOIR_SIZE recorded latencies per (operation, backend), by the nearest-rank method. They
describe recent calls only; the cumulative distribution since start is the histogram.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import datetime
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from shared_schema.events import EventType, ThrottleChangedPayload
from shared_schema.metrics import MetricSample, MetricsSummary

from ..opencloud.ratelimit import BucketStats, ClientBudget, ClientRateLimiter
from .events import EventBus, utc_now
from .traffic import Traffic, outcome_of

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_QUANTILES",
    "RESERVOIR_SIZE",
    "MeteredRateLimiter",
    "Metrics",
    "outcome_of",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
RESERVOIR_SIZE = 1000
LATENCY_QUANTILES = (0.5, 0.95)
# Open Cloud answers in tens of milliseconds to a few seconds; 30 s is the client's ceiling.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BudgetSource(Protocol):
    """What Metrics reads from dsm.opencloud.ratelimit.ClientRateLimiter."""

    def snapshot(self) -> list[BucketStats]: ...


def nearest_rank(ordered: list[float], q: float) -> float:
    """The q-quantile of an ascending, non-empty list: an actual recorded value, never a blend."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class Metrics:
    def __init__(
        self,
        *,
        instance_id: str,
        bus: EventBus | None = None,
        clock: Callable[[], datetime] = utc_now,
        reservoir_size: int = RESERVOIR_SIZE,
    ) -> None:
        if reservoir_size < 1:
            raise ValueError("reservoir_size must be at least 1")
        self.instance_id = instance_id
        self.registry = CollectorRegistry()
        self._bus = bus
        self._clock = clock
        self.started_at = clock()
        self._reservoir_size = reservoir_size
        self._recent: dict[tuple[str, str], deque[float]] = {}
        self._budget: BudgetSource | None = None
        self._throttle_ends: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._throttle_until: dict[tuple[str, str], float] = {}
        # The same calls as time series for the Monitor view (services/traffic.py).
        self.traffic = Traffic()

        self._calls_observed = Counter(
            "dsm_opencloud_calls_observed",
            "Open Cloud calls made since the server started, all operations (0: none yet).",
            registry=self.registry,
        )
        self._calls = Counter(
            "dsm_opencloud_calls",
            "Open Cloud calls by operation, HTTP status (or timeout/network_error), backend "
            "and outcome (ok, throttled, client_error, server_error, no_answer).",
            ["operation", "status", "backend", "outcome"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "dsm_opencloud_call_seconds",
            "Time from sending an Open Cloud request to its answer (or failure).",
            ["operation", "backend"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._throttles = Counter(
            "dsm_opencloud_throttles",
            "429 (too many requests) answers that paused a universe's request budget.",
            ["universe_id", "category"],
            registry=self.registry,
        )
        self._cache = Counter(
            "dsm_cache_lookups",
            "Cache lookups by kind (entry, list) and result (hit, miss).",
            ["kind", "result"],
            registry=self.registry,
        )
        self._job_items = Counter(
            "dsm_job_items",
            "Bulk job items finished, by job kind and outcome (applied, skipped, failed): the "
            "jobs' throughput.",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self._job_states = Counter(
            "dsm_job_transitions",
            "Bulk jobs entering a state (queued, running, paused, succeeded, ...), by job kind.",
            ["kind", "state"],
            registry=self.registry,
        )
        self.registry.register(_LatencyWindowCollector(self))
        self.registry.register(_BudgetCollector(self))

    # ------------------------------------------------------------------ feeds

    def on_call(self, operation: str, status: int | str, latency_s: float, backend: str) -> None:
        """The Open Cloud client's observability hook (dsm.opencloud.transport.OnCall)."""
        latency = max(0.0, latency_s)
        self._calls_observed.inc()
        self._calls.labels(operation, str(status), backend, outcome_of(status)).inc()
        self._latency.labels(operation, backend).observe(latency)
        window = self._recent.get((operation, backend))
        if window is None:
            window = self._recent[(operation, backend)] = deque(maxlen=self._reservoir_size)
        window.append(latency)
        self.traffic.record_call(operation, status, latency)

    def cache_hit(self, kind: str = "entry") -> None:
        """The cache layer served a lookup; `kind` is what was looked up (entry, list)."""
        self._cache.labels(kind, "hit").inc()
        # The read path looks in the cache only when Open Cloud failed or throttles: a hit is a
        # fallback served, a miss a failed read with nothing to fall back on.
        self.traffic.record_cache(served=True)

    def cache_miss(self, kind: str = "entry") -> None:
        self._cache.labels(kind, "miss").inc()
        self.traffic.record_cache(served=False)

    def job_item(self, kind: str, outcome: str) -> None:
        """A job item got its outcome (applied, skipped or failed)."""
        self._job_items.labels(kind, outcome).inc()
        self.traffic.record_job_items(1)

    def job_state(self, kind: str, state: str) -> None:
        """A job entered `state`."""
        self._job_states.labels(kind, state).inc()

    def attach_limiter(self, limiter: BudgetSource | None) -> None:
        """Report the client rate limiter's buckets (its snapshot(), read at every scrape).

        Per-universe 429 counts and throttle.changed events need the limiter to be a
        MeteredRateLimiter, which attaches itself.
        """
        self._budget = limiter

    def record_throttle(self, universe_id: str, category: str, retry_after: float) -> None:
        """A 429 paused a (universe, category) budget for `retry_after` seconds.

        Publishes `throttle.changed` when the budget starts being held back and again when the
        pause is over; repeated 429s during one pause only extend it.
        """
        self._throttles.labels(universe_id, category).inc()
        key = (universe_id, category)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # No loop to time the end of the pause with: report the start only.
            self._publish_throttle(key, throttled=True, retry_after=retry_after)
            return
        until = loop.time() + max(0.0, retry_after)
        previous = self._throttle_until.get(key)
        if previous is not None and previous >= until:
            return
        self._throttle_until[key] = until
        handle = self._throttle_ends.pop(key, None)
        if handle is not None:
            handle.cancel()
        self._throttle_ends[key] = loop.call_at(until, self._throttle_over, key)
        if previous is None:
            self._publish_throttle(key, throttled=True, retry_after=retry_after)

    def close(self) -> None:
        for handle in self._throttle_ends.values():
            handle.cancel()
        self._throttle_ends.clear()
        self._throttle_until.clear()

    # ------------------------------------------------------------------ reads

    def exposition(self) -> bytes:
        """Prometheus text format; serve with CONTENT_TYPE."""
        return _generate_latest(self.registry)

    def summary(self) -> MetricsSummary:
        """Every counter and gauge sample, with histogram totals but not their buckets."""
        samples: list[MetricSample] = []
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith(("_created", "_bucket")):
                    continue  # creation stamps and per-bucket counts add nothing for the plugin
                samples.append(
                    MetricSample(
                        name=sample.name,
                        labels=dict(sample.labels),
                        value=float(sample.value),
                        help=family.documentation or None,
                    )
                )
        uptime = (self._clock() - self.started_at).total_seconds()
        return MetricsSummary(
            instance_id=self.instance_id,
            started_at=self.started_at,
            uptime_seconds=max(0.0, uptime),
            samples=samples,
        )

    def latency_windows(self) -> Iterator[tuple[str, str, list[float]]]:
        """(operation, backend, ascending recent latencies) for every window with data."""
        for (operation, backend), window in sorted(self._recent.items()):
            if window:
                yield operation, backend, sorted(window)

    def budget_snapshot(self) -> list[BucketStats]:
        return self._budget.snapshot() if self._budget is not None else []

    # ------------------------------------------------------------------ helpers

    def _throttle_over(self, key: tuple[str, str]) -> None:
        self._throttle_ends.pop(key, None)
        self._throttle_until.pop(key, None)
        self._publish_throttle(key, throttled=False, retry_after=None)

    def _publish_throttle(
        self, key: tuple[str, str], *, throttled: bool, retry_after: float | None
    ) -> None:
        if self._bus is None or self._bus.closed:
            return
        universe, category = key
        where = f"in universe {universe}" if universe else "server-wide"
        message = (
            f"Open Cloud answered 429 (too many requests) to {category} calls {where}; this "
            f"server holds those calls back for {retry_after:.1f} s."
            if throttled and retry_after is not None
            else f"{category.capitalize()} calls {where} are no longer held back."
        )
        self._bus.publish(
            EventType.THROTTLE_CHANGED,
            ThrottleChangedPayload(
                universe_id=int(universe) if universe.isdigit() and int(universe) > 0 else None,
                category=category,
                throttled=throttled,
                retry_after_seconds=max(0.0, retry_after) if retry_after is not None else None,
                message=message,
            ),
        )


class MeteredRateLimiter(ClientRateLimiter):
    """The client rate limiter, reporting each 429 penalty and its budgets to Metrics.

    The transport calls `penalize(universe, category, wait)` on every 429 answer of a
    universe-scoped call, so this is where a throttle's universe and budget are known.
    """

    def __init__(
        self,
        budget: ClientBudget | None = None,
        *,
        metrics: Metrics,
        time_fn: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        margin: float = 0.05,
        burst: int = 1,
        budget_for: Callable[[str], ClientBudget] | None = None,
    ) -> None:
        super().__init__(
            budget, time_fn=time_fn, sleep=sleep, margin=margin, burst=burst, budget_for=budget_for
        )
        self._metrics = metrics
        metrics.attach_limiter(self)

    def penalize(self, universe_id: str, category: str, retry_after: float) -> None:
        super().penalize(universe_id, category, retry_after)
        self._metrics.record_throttle(universe_id, category, retry_after)


class _LatencyWindowCollector:
    """p50/p95 and sample count of the recent-latency windows, computed at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        quantiles, counts = self._families()
        for operation, backend, ordered in self._metrics.latency_windows():
            for q in LATENCY_QUANTILES:
                quantiles.add_metric([operation, backend, f"{q:g}"], nearest_rank(ordered, q))
            counts.add_metric([operation, backend], float(len(ordered)))
        return [quantiles, counts]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "dsm_opencloud_recent_latency_seconds",
                f"Latency quantiles (nearest rank) over the last {RESERVOIR_SIZE} calls per "
                "operation and backend.",
                labels=["operation", "backend", "quantile"],
            ),
            GaugeMetricFamily(
                "dsm_opencloud_recent_latency_calls",
                "How many recorded calls the recent latency quantiles are computed from.",
                labels=["operation", "backend"],
            ),
        )


class _BudgetCollector:
    """The client rate limiter's per-(universe, category) budget, read at scrape time."""

    _FIELDS = (
        ("allowed", "Requests per 60 s this server allows itself (the unreserved share)."),
        ("used", "Requests sent in the last 60 s."),
        ("remaining", "Requests still allowed in the current 60 s window."),
        ("waiting", "Calls queued for a free slot right now."),
        ("paused_seconds", "Seconds left of a pause imposed by a 429; 0 when not paused."),
    )

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return list(self._families().values())

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        for bucket in self._metrics.budget_snapshot():
            labels = [bucket.universe_id, bucket.category]
            families["allowed"].add_metric(labels, float(bucket.allowed))
            families["used"].add_metric(labels, float(bucket.used))
            families["remaining"].add_metric(labels, float(max(0, bucket.allowed - bucket.used)))
            families["waiting"].add_metric(labels, float(bucket.waiting))
            families["paused_seconds"].add_metric(labels, bucket.paused_for)
        return list(families.values())

    def _families(self) -> dict[str, GaugeMetricFamily]:
        return {
            name: GaugeMetricFamily(
                f"dsm_opencloud_budget_{name}", text, labels=["universe_id", "category"]
            )
            for name, text in self._FIELDS
        }
