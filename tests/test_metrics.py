"""Metrics: real Open Cloud calls (client -> emulator) counted, Prometheus text, the summary."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dsm.app import event_stream
from dsm.app import metrics as metrics_lifecycle
from dsm.config import ServerConfig
from dsm.emulator.app import EmulatorConfig
from dsm.emulator.clock import ManualClock
from dsm.emulator.throttle import LimitsConfig
from dsm.http import routes_events, routes_metrics
from dsm.http.appkeys import METRICS
from dsm.opencloud.client import NotFound, OpenCloudClient, RetryPolicy
from dsm.opencloud.ratelimit import ClientBudget, ClientRateLimiter
from dsm.services.events import EventBus
from dsm.services.metrics import (
    CONTENT_TYPE,
    MeteredRateLimiter,
    Metrics,
    nearest_rank,
    outcome_of,
)
from shared_schema.events import EventBatch, ThrottleChangedPayload
from shared_schema.metrics import MetricSample, MetricsSummary

from .conftest import API_KEY, RunningEmulator, start_emulator
from .test_events import Companion, companion, serving

U = 4242
PATIENT = RetryPolicy(base_delay=0.001, max_delay=0.005, max_attempts=15, max_write_resends=15)
Call = tuple[str, int | str, float, str]


def samples(summary: MetricsSummary, name: str) -> list[MetricSample]:
    return [s for s in summary.samples if s.name == name]


def by_labels(summary: MetricsSummary, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    return {tuple(s.labels[k] for k in keys): s.value for s in samples(summary, name)}


def parse_text(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> sorted labels -> value, from Prometheus text via the official parser."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def teed(metrics: Metrics, calls: list[Call]) -> Any:
    """The client's on_call hook, also keeping every call for the test to compare against."""

    def hook(operation: str, status: int | str, latency_s: float, backend: str) -> None:
        calls.append((operation, status, latency_s, backend))
        metrics.on_call(operation, status, latency_s, backend)

    return hook


# --------------------------------------------------------------------------- no invention


def test_a_fresh_server_reports_no_calls() -> None:
    clock = ManualClock()
    metrics = Metrics(instance_id="run-1", clock=clock.now)
    clock.advance(seconds=12)
    summary = metrics.summary()
    assert summary.instance_id == "run-1"
    assert summary.started_at == clock.now() - timedelta(seconds=12)
    assert summary.uptime_seconds == 12
    [observed] = samples(summary, "dsm_opencloud_calls_observed_total")
    assert observed.value == 0 and observed.labels == {}
    assert observed.help is not None and "none yet" in observed.help
    # No per-operation counts, latencies, budgets or throttles are made up.
    assert [s.name for s in summary.samples] == ["dsm_opencloud_calls_observed_total"]
    text = metrics.exposition().decode()
    assert "dsm_opencloud_calls_observed_total 0.0" in text
    assert "dsm_opencloud_recent_latency_seconds{" not in text


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "ok"),
        (204, "ok"),
        (429, "throttled"),
        (404, "client_error"),
        (412, "client_error"),
        (500, "server_error"),
        (503, "server_error"),
        ("timeout", "no_answer"),
        ("network_error", "no_answer"),
    ],
)
def test_outcomes(status: int | str, outcome: str) -> None:
    assert outcome_of(status) == outcome


# --------------------------------------------------------------------------- real calls


async def test_real_client_calls_are_counted(emulator: RunningEmulator) -> None:
    metrics = Metrics(instance_id="run-1")
    calls: list[Call] = []
    async with OpenCloudClient(
        api_key=API_KEY, base_url=emulator.base_url, on_call=teed(metrics, calls)
    ) as client:
        for i in range(3):
            await client.create_entry(U, "coins", f"k{i}", str(i))
        for i in range(2):
            await client.get_entry(U, "coins", f"k{i}")
        with pytest.raises(NotFound):
            await client.get_entry(U, "coins", "missing")

    counted = Counter((op, str(status), backend) for op, status, _, backend in calls)
    assert counted == Counter(
        {
            ("entries.create", "200", "EMULATOR"): 3,
            ("entries.get", "200", "EMULATOR"): 2,
            ("entries.get", "404", "EMULATOR"): 1,
        }
    )
    summary = metrics.summary()
    assert samples(summary, "dsm_opencloud_calls_observed_total")[0].value == len(calls)
    assert by_labels(
        summary, "dsm_opencloud_calls_total", "operation", "status", "backend", "outcome"
    ) == {
        ("entries.create", "200", "EMULATOR", "ok"): 3,
        ("entries.get", "200", "EMULATOR", "ok"): 2,
        ("entries.get", "404", "EMULATOR", "client_error"): 1,
    }
    assert by_labels(summary, "dsm_opencloud_call_seconds_count", "operation") == {
        ("entries.create",): 3,
        ("entries.get",): 3,
    }
    for operation in ("entries.create", "entries.get"):
        recorded = sorted(lat for op, _, lat, _ in calls if op == operation)
        quantiles = {
            s.labels["quantile"]: s.value
            for s in samples(summary, "dsm_opencloud_recent_latency_seconds")
            if s.labels["operation"] == operation
        }
        # Percentiles are recorded latencies, picked by nearest rank: never interpolated.
        assert quantiles == {"0.5": nearest_rank(recorded, 0.5), "0.95": recorded[-1]}
        assert set(quantiles.values()) <= set(recorded)
    assert by_labels(summary, "dsm_opencloud_recent_latency_calls", "operation") == {
        ("entries.create",): 3,
        ("entries.get",): 3,
    }
    assert not any(
        name.endswith(("_bucket", "_created")) for name in {s.name for s in summary.samples}
    )

    # The Prometheus text says the same, as the official parser reads it.
    parsed = parse_text(metrics.exposition().decode())
    assert parsed["dsm_opencloud_calls_observed_total"] == {(): 6.0}
    totals = {
        dict(labels)["operation"] + "/" + dict(labels)["status"]: value
        for labels, value in parsed["dsm_opencloud_calls_total"].items()
    }
    assert totals == {"entries.create/200": 3, "entries.get/200": 2, "entries.get/404": 1}
    buckets = parsed["dsm_opencloud_call_seconds_bucket"]
    assert buckets[(("backend", "EMULATOR"), ("le", "+Inf"), ("operation", "entries.get"))] == 3


def test_percentiles_use_a_bounded_window_of_recent_calls() -> None:
    metrics = Metrics(instance_id="run-1", reservoir_size=100)
    for ms in range(1, 151):
        metrics.on_call("entries.get", 200, ms / 1000, "LIVE")
    summary = metrics.summary()
    quantiles = by_labels(summary, "dsm_opencloud_recent_latency_seconds", "quantile")
    # The window holds the last 100 calls (51..150 ms): p50 is its 50th value, p95 its 95th.
    assert quantiles == {("0.5",): 0.100, ("0.95",): 0.145}
    assert by_labels(summary, "dsm_opencloud_recent_latency_calls", "operation") == {
        ("entries.get",): 100
    }
    # The cumulative histogram still counts every call.
    assert by_labels(summary, "dsm_opencloud_call_seconds_count", "operation") == {
        ("entries.get",): 150
    }
    assert samples(summary, "dsm_opencloud_call_seconds_sum")[0].value == pytest.approx(
        sum(range(1, 151)) / 1000
    )


def test_cache_lookups_are_counted() -> None:
    metrics = Metrics(instance_id="run-1")
    metrics.cache_hit()
    metrics.cache_hit("entry")
    metrics.cache_miss("list")
    metrics.cache_miss()
    assert by_labels(metrics.summary(), "dsm_cache_lookups_total", "kind", "result") == {
        ("entry", "hit"): 2,
        ("list", "miss"): 1,
        ("entry", "miss"): 1,
    }


async def test_a_plain_limiter_feeds_the_budget_gauges() -> None:
    metrics = Metrics(instance_id="run-1")
    metrics.attach_limiter(None)  # no limiter: no budget series, not zeros
    assert samples(metrics.summary(), "dsm_opencloud_budget_remaining") == []
    limiter = ClientRateLimiter(ClientBudget(reserve_share=0.5))
    metrics.attach_limiter(limiter)
    for _ in range(3):
        await limiter.acquire("9", "read")
    await limiter.acquire("9", "list")
    summary = metrics.summary()
    keys = ("universe_id", "category")
    assert by_labels(summary, "dsm_opencloud_budget_used", *keys) == {
        ("9", "read"): 3,
        ("9", "list"): 1,
    }
    assert by_labels(summary, "dsm_opencloud_budget_remaining", *keys) == {
        ("9", "read"): 147,
        ("9", "list"): 149,
    }
    assert by_labels(summary, "dsm_opencloud_budget_paused_seconds", *keys) == {
        ("9", "read"): 0,
        ("9", "list"): 0,
    }


# --------------------------------------------------------------------------- throttling


class VirtualTime:
    """Time for the rate limiter that moves only when it sleeps, and moves the emulator too."""

    def __init__(self, clock: ManualClock) -> None:
        self.now = 0.0
        self.clock = clock

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.clock.advance(seconds=seconds)


async def no_sleep(_: float) -> None:
    return None


def test_a_429_counts_as_throttled() -> None:
    metrics = Metrics(instance_id="run-1")
    metrics.on_call("entries.update", 429, 0.02, "LIVE")
    metrics.on_call("entries.update", 200, 0.02, "LIVE")
    assert by_labels(metrics.summary(), "dsm_opencloud_calls_total", "status", "outcome") == {
        ("429", "throttled"): 1,
        ("200", "ok"): 1,
    }


class HeaderBlindLimiter(MeteredRateLimiter):
    def observe(self, universe_id: str, category: str, headers: Mapping[str, str]) -> None:
        return None


async def test_real_429s_are_counted_per_universe_and_announced(clock: ManualClock) -> None:
    config = EmulatorConfig(
        clock=clock, limits=LimitsConfig(mode="documented", overrides={"v2.standard.write": 2})
    )
    runner, base_url, _ = await start_emulator(config)
    bus = EventBus(64)
    metrics = Metrics(instance_id=bus.instance_id, bus=bus)
    virtual = VirtualTime(clock)
    # Blind to x-ratelimit-* headers (which would slow it before any 429), as the limiter is to
    # game servers spending the shared budget: the 429s are what it learns from.
    limiter = HeaderBlindLimiter(metrics=metrics, time_fn=virtual, sleep=virtual.sleep)
    calls: list[Call] = []
    try:
        async with OpenCloudClient(
            api_key=API_KEY,
            base_url=base_url,
            retry=PATIENT,
            limiter=limiter,
            sleep=no_sleep,
            on_call=teed(metrics, calls),
        ) as client:
            for i in range(5):  # the emulator allows 2 writes per minute
                await client.create_entry(U, "ds", f"k{i}", str(i))
            await client.get_entry(U, "ds", "k4")
        summary = metrics.summary()
        budget = limiter.snapshot()
    finally:
        metrics.close()
        await runner.cleanup()

    throttled = [c for c in calls if c[1] == 429]
    assert throttled, "the emulator's write limit must have answered 429"
    assert all(op == "entries.create" for op, *_ in throttled)
    assert by_labels(summary, "dsm_opencloud_throttles_total", "universe_id", "category") == {
        (str(U), "write"): len(throttled)
    }
    statuses = by_labels(summary, "dsm_opencloud_calls_total", "operation", "outcome")
    assert statuses == {
        ("entries.create", "throttled"): len(throttled),
        ("entries.create", "ok"): 5,
        ("entries.get", "ok"): 1,
    }
    # The budget gauges are the limiter's own snapshot, not a separate estimate.
    remaining = by_labels(summary, "dsm_opencloud_budget_remaining", "universe_id", "category")
    allowed = by_labels(summary, "dsm_opencloud_budget_allowed", "universe_id", "category")
    assert {(b.universe_id, b.category) for b in budget} == set(remaining) == set(allowed)
    for bucket in budget:
        assert allowed[(bucket.universe_id, bucket.category)] == bucket.allowed == 150
    # Repeated 429s during one pause announce the start once; the end comes when it is over.
    answer = bus.check(0)
    assert isinstance(answer, EventBatch)
    [event] = answer.events
    payload = ThrottleChangedPayload.model_validate_json(json.dumps(event.payload))
    assert (payload.universe_id, payload.category, payload.throttled) == (U, "write", True)
    assert payload.retry_after_seconds is not None and payload.retry_after_seconds > 0
    assert payload.message is not None and f"universe {U}" in payload.message


async def test_the_end_of_a_pause_is_announced() -> None:
    bus = EventBus(16)
    metrics = Metrics(instance_id=bus.instance_id, bus=bus)
    metrics.record_throttle("77", "read", 0.05)
    metrics.record_throttle("77", "read", 0.2)  # extends the same pause
    metrics.record_throttle("77", "read", 0.01)  # inside the pause: nothing changes
    first = bus.check(0)
    assert isinstance(first, EventBatch) and len(first.events) == 1
    answer = await bus.wait(1, 5)
    assert isinstance(answer, EventBatch)
    [end] = answer.events
    payload = ThrottleChangedPayload.model_validate_json(json.dumps(end.payload))
    assert (payload.universe_id, payload.category, payload.throttled) == (77, "read", False)
    await asyncio.sleep(0.1)
    assert bus.latest_seq == 2, "the shorter, superseded pauses must not announce an end"
    assert by_labels(metrics.summary(), "dsm_opencloud_throttles_total", "universe_id") == {
        ("77",): 3
    }
    metrics.close()


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Companion]:
    async with companion(
        tmp_path,
        config=ServerConfig(data_dir=tmp_path),
        contexts=(event_stream, metrics_lifecycle),
        setups=(serving({**routes_events.HANDLERS, **routes_metrics.HANDLERS}),),
    ) as running:
        yield running


@pytest.mark.parametrize("path", ["/metrics", "/api/v1/metrics", "/api/v1/metrics/summary"])
async def test_metrics_need_a_token(server: Companion, path: str) -> None:
    async with server.http.get(server.url(path)) as resp:
        body = await resp.json()
    assert resp.status == 401 and body["error"]["code"] == "UNAUTHENTICATED"


async def test_prometheus_text_and_summary_over_http(server: Companion) -> None:
    metrics = server.app[METRICS]
    metrics.on_call("entries.list", 200, 0.03, "EMULATOR")
    metrics.on_call("entries.list", "timeout", 30.0, "EMULATOR")
    for path in ("/metrics", "/api/v1/metrics"):
        async with server.http.get(server.url(path), headers=server.auth()) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == CONTENT_TYPE
            text = await resp.text()
        parsed = parse_text(text)
        assert parsed["dsm_opencloud_calls_observed_total"] == {(): 2.0}
        outcomes = {
            dict(labels)["outcome"]: value
            for labels, value in parsed["dsm_opencloud_calls_total"].items()
        }
        assert outcomes == {"ok": 1, "no_answer": 1}

    async with server.http.get(
        server.url("/api/v1/metrics/summary"), headers=server.auth()
    ) as resp:
        assert resp.status == 200
        summary = MetricsSummary.model_validate_json(await resp.text())
    assert summary.instance_id == server.bus.instance_id
    assert by_labels(summary, "dsm_opencloud_calls_total", "status") == {
        ("200",): 1,
        ("timeout",): 1,
    }
    assert samples(summary, "dsm_opencloud_calls_observed_total")[0].value == 2
