"""Live monitoring: the traffic time series holds only what was counted, the ticker publishes
finished seconds with traffic, and the API's figures equal the requests that really reached Open
Cloud (counted by a proxy in front of the emulator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from dsm.services.traffic import MonitorTicker, Traffic
from shared_schema.common import Role
from shared_schema.events import EventType
from shared_schema.monitor import BudgetUse, MonitorTickPayload
from tests.test_offline import CuttableProxy, serving
from tests.test_team import emulator, eventually
from tools.testing import jobs
from tools.testing.server import entry_path, idem, running_server

T0 = 1_750_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[EventType, BaseModel]] = []

    def publish(self, type: EventType, payload: BaseModel) -> object:
        self.events.append((type, payload))
        return None


def test_buckets_hold_only_counted_calls() -> None:
    clock = Clock()
    traffic = Traffic(clock)
    clock.now = T0 + 0.1
    traffic.record_call("entries.get", 200, 0.040)
    traffic.record_call("entries.get", 200, 0.020)
    traffic.record_call("entries.update", 429, 0.100)
    clock.now = T0 + 3.5
    traffic.record_call("entries.list", "timeout", 30.0)
    traffic.record_cache(served=True)
    traffic.record_job_items(7)
    clock.now = T0 + 10.2
    series = traffic.series(10, 1, budget=[], backend=None)
    assert [b.start.timestamp() for b in series.buckets] == [T0, T0 + 3]  # idle seconds absent
    first, second = series.buckets
    assert (first.calls, first.ok, first.throttled) == (3, 2, 1)
    assert first.by_operation == {"entries.get": 2, "entries.update": 1}
    assert first.by_category == {"read": 2, "write": 1}
    assert first.errors_by_code == {"429": 1}
    assert (first.latency_p50_ms, first.latency_p99_ms) == (40.0, 100.0)  # nearest rank
    assert (second.no_answer, second.cache_served, second.job_items) == (1, 1, 7)
    assert series.totals.calls == 4
    assert "not fed yet" in series.job_throughput
    ten = traffic.series(60, 10, budget=[], backend=None)
    assert [(b.start.timestamp(), b.seconds, b.calls) for b in ten.buckets] == [(T0, 10, 4)]
    # An hour later nothing is left: no line is drawn from memory.
    clock.now = T0 + 3700
    assert traffic.series(3600, 10, budget=[], backend=None).buckets == []


def test_the_ticker_publishes_finished_seconds_with_traffic_only() -> None:
    clock = Clock()
    traffic = Traffic(clock)
    events = Recorder()
    budget = [BudgetUse(universe_id="1", category="read", used_last_minute=3,
                        allowed_per_minute=150, paused_seconds=0)]  # fmt: skip
    ticker = MonitorTicker(traffic, events, lambda: budget, clock=clock)
    clock.now = T0 + 1.5
    traffic.record_call("entries.get", 200, 0.01)
    clock.now = T0 + 5.0
    assert ticker.tick() == 1  # seconds T0..T0+4 finished; only T0+1 had traffic
    [(kind, tick)] = events.events
    assert kind is EventType.MONITOR_TICK and isinstance(tick, MonitorTickPayload)
    assert tick.second is not None and tick.second.calls == 1 and tick.ten_seconds is None
    clock.now = T0 + 20.0
    assert ticker.tick() == 1  # the 10 s boundary: the ten-second bucket and the budget
    (_, ten) = events.events[-1]
    assert isinstance(ten, MonitorTickPayload)
    assert ten.second is None and ten.ten_seconds is not None and ten.ten_seconds.calls == 1
    assert ten.budget == budget
    assert ticker.tick() == 0


class CountingProxy(CuttableProxy):
    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.requests = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        return await super().handle(request)


async def test_monitor_figures_equal_the_requests_that_reached_open_cloud(tmp_path: Path) -> None:
    proxy: CountingProxy
    async with emulator() as (url, _):
        proxy = CountingProxy(url)
        async with (
            serving(proxy) as proxy_url,
            running_server(tmp_path, upstream_url=proxy_url) as server,
        ):
            token = await server.pair()
            for n in range(4):
                status, _ = await server.call(
                    "POST",
                    entry_path(5, "players", f"p{n}"),
                    token,
                    json={"value_json": str(n), "idempotency_key": idem()},
                )
                assert status == 200
            status, _ = await server.call("GET", entry_path(5, "players", "nope"), token)
            assert status == 404
            series: dict[str, Any] = {}

            async def every_call_counted() -> bool:
                nonlocal series
                _, series = await server.call("GET", "/monitor/traffic?window_seconds=300", token)
                # Every request this server sent reached the proxy, and nothing else did.
                return sum(b["calls"] for b in series["buckets"]) == proxy.requests

            await eventually(every_call_counted, "the finished seconds to hold every call", 5)
            totals = series["totals"]
            assert totals["calls"] == proxy.requests >= 9  # probe, 4 x (read + create), 1 read
            assert totals["errors_by_code"] == {"404": totals["client_errors"]}
            assert series["counted_by"].startswith("this server's own Open Cloud client")
            assert series["backend"] == "EMULATOR"


async def test_features_say_what_the_index_holds_and_that_the_jobs_engine_runs(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, emulator_universes=[1, 2], budget_rpm=1_000_000) as server:
        token = await server.pair("admin", role=Role.ADMIN)
        await jobs.seed(server.call, token, 1, "PlayerData", {"a": {"coins": 1}, "b": 2})
        selection = {"universe_id": 1, "datastores": ["PlayerData"], "all_scopes": True}
        crawl = await jobs.run(server.call, token, {"kind": "crawl", "selection": selection})
        assert crawl["state"] == "succeeded", crawl

        status, answer = await server.call("GET", "/features", token)
        assert status == 200, answer
        by_id = {(f["feature_id"], f.get("universe_id")): f for f in answer["features"]}
        assert by_id[("jobs", None)]["status"] == "AVAILABLE"
        indexed = by_id[("search", 1)]
        assert indexed["status"] == "AVAILABLE", indexed
        assert indexed["how"].startswith("2 entries of 1 data store(s) indexed")
        empty = by_id[("search", 2)]
        assert empty["status"] == "UNAVAILABLE"
        assert empty["reason"].startswith("Nothing indexed for this universe yet")
