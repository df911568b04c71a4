"""OpenCloudClient under injected faults: retries, lost answers, 429s, pacing and metrics.

The emulator's fault injection (ctx.faults) fails requests before they are applied (error,
drop) or applies a write and then closes the connection (lost_response). The client must
recover reads, resolve lost write answers by re-reading, and never apply a write twice.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dsm.emulator.app import EmulatorConfig
from dsm.emulator.clock import ManualClock
from dsm.emulator.throttle import LimitsConfig
from dsm.opencloud.client import (
    CARRY_OVER,
    NetworkError,
    OpenCloudClient,
    RetryPolicy,
    WriteOutcomeUnknown,
)
from dsm.opencloud.ratelimit import ClientRateLimiter

from .conftest import API_KEY, RunningEmulator, start_emulator

U = 31337
PATIENT = RetryPolicy(base_delay=0.001, max_delay=0.005, max_attempts=15, max_write_resends=15)


async def no_sleep(_: float) -> None:
    return None


def faults(emulator: RunningEmulator, seed: int, **rates: float) -> None:
    emulator.ctx.rng = random.Random(seed)
    for name, value in rates.items():
        setattr(emulator.ctx.faults, name, value)


def seq(revision_id: str) -> int:
    """The write sequence number inside a Roblox-shaped version id (segment 2, hexadecimal)."""
    return int(revision_id.split(".")[1], 16)


def fault_first_write(client: OpenCloudClient, emulator: RunningEmulator, fault: str) -> list[int]:
    """Inject ``fault`` (drop_rate or lost_response_rate) into the next write only.

    Returns a one-item list counting the writes sent from now on.
    """
    original = client._request
    writes = [0]

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("write"):
            writes[0] += 1
        first = kwargs.get("write") and writes[0] == 1
        setattr(emulator.ctx.faults, fault, 1.0 if first else 0.0)
        return await original(*args, **kwargs)

    client._request = wrapped  # type: ignore[method-assign]
    return writes


@pytest.fixture
async def client(emulator: RunningEmulator) -> AsyncIterator[OpenCloudClient]:
    async with OpenCloudClient(
        api_key=API_KEY, base_url=emulator.base_url, retry=PATIENT, sleep=no_sleep
    ) as c:
        yield c


async def test_reads_recover_from_errors_and_dropped_connections(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    for i in range(20):
        await client.create_entry(U, "ds", f"k{i:02d}", str(i))
    faults(emulator, 1, error_rate=0.3, drop_rate=0.2)
    values = [(await client.get_entry(U, "ds", f"k{i:02d}")).value_json for i in range(20)]
    keys = [e.key async for e in client.iter_entries(U, "ds", page_size=3)]
    assert values == [str(i) for i in range(20)]
    assert keys == [f"k{i:02d}" for i in range(20)]
    assert emulator.ctx.fault_counts["error"] > 0 and emulator.ctx.fault_counts["drop"] > 0


async def test_conditional_writes_apply_exactly_once_under_all_faults(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    faults(emulator, 7, error_rate=0.2, drop_rate=0.15, lost_response_rate=0.3)
    rounds = 30
    for _ in range(rounds):
        # CARRY_OVER makes each increment a read + etag-conditional write.
        entry = await client.increment_entry(
            U, "ds", "counter", 1, attributes=CARRY_OVER, user_ids=CARRY_OVER
        )
        emulator.clock.advance(hours=1)  # keep every revision (Roblox collapses per UTC hour)
    assert emulator.ctx.fault_counts["lost_response"] > 0
    faults(emulator, 0, error_rate=0, drop_rate=0, lost_response_rate=0)
    final = await client.get_entry(U, "ds", "counter")
    assert final.value_json == str(rounds)
    assert seq(final.revision_id) == rounds == seq(entry.revision_id)
    revisions = [r async for r in client.iter_revisions(U, "ds", "counter")]
    assert len(revisions) == rounds


async def test_lost_create_and_update_answers_are_resolved_by_rereading(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    faults(emulator, 3, lost_response_rate=1.0)
    created = await client.create_entry(U, "ds", "k", '{"v":1}', attributes={"a": 1}, user_ids=[2])
    updated = await client.update_entry(
        U, "ds", "k", '{"v":2}', attributes={"a": 1}, user_ids=[2], etag=created.etag
    )
    # Unconditional: the re-read shows our write, so it is reported as applied.
    plain = await client.update_entry(U, "ds", "k", '{"v":3}', attributes=None, user_ids=[])
    assert emulator.ctx.fault_counts["lost_response"] == 3
    assert (created.value_json, updated.value_json, plain.value_json) == (
        '{"v":1}',
        '{"v":2}',
        '{"v":3}',
    )
    assert seq(plain.revision_id) == 3  # three writes, none repeated


async def test_unconditional_write_not_applied_is_unknown_not_repeated(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    await client.create_entry(U, "ds", "k", "1")
    faults(emulator, 5, drop_rate=1.0)
    emulator.ctx.faults.error_rate = 0
    # Drops also hit the re-read, so lift them once the write has failed.
    original = client._request

    async def drop_only_writes(*args: Any, **kwargs: Any) -> Any:
        emulator.ctx.faults.drop_rate = 1.0 if kwargs.get("write") else 0.0
        return await original(*args, **kwargs)

    client._request = drop_only_writes  # type: ignore[method-assign]
    with pytest.raises(WriteOutcomeUnknown) as info:
        await client.update_entry(U, "ds", "k", "2", attributes=None, user_ids=[])
    assert "pass etag= or CARRY_OVER" in str(info.value)
    assert info.value.current is not None and info.value.current.value_json == "1"
    assert isinstance(info.value.cause, NetworkError)
    # The same write with an etag is resolved: still at that etag, so it is re-sent.
    client._request = original  # type: ignore[method-assign]
    current = await client.get_entry(U, "ds", "k")
    writes = fault_first_write(client, emulator, "drop_rate")
    done = await client.update_entry(
        U, "ds", "k", "2", attributes=None, user_ids=[], etag=current.etag
    )
    assert done.value_json == "2" and writes == [2]
    assert seq(done.revision_id) == 2


async def test_increments_are_never_repeated(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    faults(emulator, 11, error_rate=0.15, drop_rate=0.1, lost_response_rate=0.3)
    emulator.ctx.faults.error_statuses = [500, 503]
    successes = unknown = 0
    for _ in range(40):
        try:
            await client.increment_entry(U, "ds", "n", 1, attributes=None, user_ids=[])
            successes += 1
        except WriteOutcomeUnknown as exc:
            unknown += 1
            assert "never repeated" in str(exc)
    lost = emulator.ctx.fault_counts["lost_response"]
    assert unknown >= lost > 0 and successes > 0
    faults(emulator, 0, error_rate=0, drop_rate=0, lost_response_rate=0)
    final = await client.get_entry(U, "ds", "n")
    # Applied = answered successes + writes whose answer was lost after applying; no extras.
    assert final.value_json == str(successes + lost)
    assert seq(final.revision_id) == successes + lost


async def test_v1_conditional_sets_apply_exactly_once(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    await client.v1_set_entry(U, "ds", "v", b"0", attributes={"keep": True}, user_ids=[1])
    faults(emulator, 13, error_rate=0.2, drop_rate=0.1, lost_response_rate=0.3)
    for i in range(1, 21):
        await client.v1_set_entry(U, "ds", "v", str(i), attributes=CARRY_OVER, user_ids=CARRY_OVER)
    faults(emulator, 0, error_rate=0, drop_rate=0, lost_response_rate=0)
    got = await client.v1_get_entry(U, "ds", "v")
    assert got.raw == b"20" and got.attributes == {"keep": True} and got.user_ids == [1]
    assert seq(got.version) == 21


async def test_deletes_resolve_with_expected_revision(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    await client.create_entry(U, "ds", "a", "1")
    await client.create_entry(U, "ds", "b", "1")
    faults(emulator, 17, lost_response_rate=1.0)
    await client.delete_entry(U, "ds", "a")  # applied; the re-read finds it gone
    emulator.ctx.faults.lost_response_rate = 0
    b = await client.get_entry(U, "ds", "b")
    writes = fault_first_write(client, emulator, "drop_rate")
    await client.delete_entry(U, "ds", "b", expected_revision=b.revision_id)
    assert writes == [2]
    assert [e.key async for e in client.iter_entries(U, "ds")] == []


async def test_non_rereadable_writes_are_unknown_and_not_repeated(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    faults(emulator, 19, lost_response_rate=1.0)
    with pytest.raises(WriteOutcomeUnknown, match="not repeated"):
        await client.publish_message(U, "topic", "hello once")
    with pytest.raises(WriteOutcomeUnknown):
        await client.queue_add(U, "q", '{"job": 1}')
    with pytest.raises(WriteOutcomeUnknown) as ordered:
        await client.ordered_increment(U, "ods", "p", 5)
    assert ordered.value.current is not None and ordered.value.current.value == 5
    faults(emulator, 0, lost_response_rate=0)
    async with emulator.http.get(emulator.url("/_emulator/messages")) as resp:
        assert len((await resp.json())["messages"]) == 1
    assert len((await client.queue_read(U, "q", count=10)).items) == 1
    assert (await client.ordered_get(U, "ods", "p")).value == 5


async def test_idempotent_writes_recover_under_faults(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    await client.create_entry(U, "store", "k", "1")
    faults(emulator, 23, error_rate=0.3, drop_rate=0.2, lost_response_rate=0.3)
    emulator.ctx.faults.error_statuses = [500, 503]
    assert (await client.delete_data_store(U, "store")).state == "DELETED"
    assert (await client.undelete_data_store(U, "store")).state == "ACTIVE"
    assert (await client.snapshot_data_stores(U)).latest_snapshot_time is not None
    made = await client.ordered_create(U, "o", "x", 3)
    assert made.value == 3
    item = await client.sorted_map_create(U, "m", "i", '"v"', ttl_seconds=60)
    assert item.value_json == '"v"'
    changed = await client.sorted_map_update(
        U, "m", "i", '"w"', ttl_seconds=60, expected_etag=item.etag
    )
    assert changed.value_json == '"w"'
    await client.sorted_map_delete(U, "m", "i", expected_etag=changed.etag)
    assert await client._map_get_or_none(str(U), "m", "i") is None
    flushed = await client.flush_memory_store(U)
    assert flushed.operation_id

    faults(emulator, 0, error_rate=0, drop_rate=0, lost_response_rate=0)
    await client.queue_add(U, "q", '"job"')
    read = await client.queue_read(U, "q")
    writes = fault_first_write(client, emulator, "lost_response_rate")
    await client.queue_discard(U, "q", read.read_id)  # lost, re-sent: discarding is idempotent
    assert writes == [2]
    emulator.clock.advance(seconds=120)
    assert (await client.queue_read(U, "q", count=10)).items == []


# --------------------------------------------------------------------------- 429s


async def test_429_retry_after_from_fault_injection_is_honoured(
    emulator: RunningEmulator,
) -> None:
    sleeps: list[float] = []

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    faults(emulator, 29, error_rate=0.5)
    emulator.ctx.faults.error_statuses = [429]
    async with OpenCloudClient(
        api_key=API_KEY, base_url=emulator.base_url, retry=PATIENT, sleep=record
    ) as client:
        for i in range(10):
            await client.create_entry(U, "ds", f"k{i}", "1")
    injected = emulator.ctx.fault_counts["error"]
    assert injected > 0
    assert sleeps == [1.0] * injected  # the emulator's retry-after: 1, once per 429


class RecordingLimiter(ClientRateLimiter):
    def __init__(self, clock: ManualClock, *, read_headers: bool = True, **kw: Any) -> None:
        self.virtual = 0.0
        self.clock = clock
        self.read_headers = read_headers
        self.penalties: list[tuple[str, str, float]] = []
        self.acquired: list[tuple[str, str]] = []
        super().__init__(time_fn=lambda: self.virtual, sleep=self._sleep_virtual, **kw)

    def observe(self, universe_id: str, category: str, headers: Mapping[str, str]) -> None:
        if self.read_headers:
            super().observe(universe_id, category, headers)

    async def _sleep_virtual(self, seconds: float) -> None:
        # Waiting moves both the limiter's clock and the emulator's, so throttles refill.
        self.virtual += seconds
        self.clock.advance(seconds=seconds)

    async def acquire(self, universe_id: str, category: str) -> float:
        self.acquired.append((universe_id, category))
        return await super().acquire(universe_id, category)

    def penalize(self, universe_id: str, category: str, retry_after: float) -> None:
        self.penalties.append((universe_id, category, retry_after))
        super().penalize(universe_id, category, retry_after)


@pytest.fixture
def throttled_config(clock: ManualClock) -> EmulatorConfig:
    return EmulatorConfig(
        clock=clock, limits=LimitsConfig(mode="documented", overrides={"v2.standard.write": 2})
    )


async def test_real_429_penalizes_limiter_and_waits_retry_after(
    throttled_config: EmulatorConfig, clock: ManualClock
) -> None:
    runner, base_url, _ = await start_emulator(throttled_config)
    # Blind to x-ratelimit-* headers, the limiter paces to its own budget and meets 429s.
    limiter = RecordingLimiter(clock, read_headers=False)
    try:
        async with OpenCloudClient(
            api_key=API_KEY, base_url=base_url, retry=PATIENT, limiter=limiter, sleep=no_sleep
        ) as client:
            for i in range(5):  # the emulator allows 2 writes per minute
                await client.create_entry(U, "ds", f"k{i}", str(i))
            assert (await client.get_entry(U, "ds", "k4")).value_json == "4"
    finally:
        await runner.cleanup()
    assert limiter.penalties, "the 429s must reach the limiter"
    assert all(p[:2] == (str(U), "write") for p in limiter.penalties)
    assert all(p[2] > 0 for p in limiter.penalties)
    # Categories follow the operation: creates are writes, gets are reads.
    assert (str(U), "write") in limiter.acquired and (str(U), "read") in limiter.acquired
    # Waiting happened on the limiter (virtual time), at least the largest retry-after.
    assert limiter.virtual >= max(p[2] for p in limiter.penalties)


async def test_ratelimit_headers_slow_the_limiter_before_any_429(
    throttled_config: EmulatorConfig, clock: ManualClock
) -> None:
    # The budget says 150 writes a minute; the server's headers say 2. Heeding them, the client
    # paces to 2 a minute and never meets a 429 (headers can only lower the pace).
    runner, base_url, _ = await start_emulator(throttled_config)
    limiter = RecordingLimiter(clock)
    try:
        async with OpenCloudClient(
            api_key=API_KEY, base_url=base_url, retry=PATIENT, limiter=limiter, sleep=no_sleep
        ) as client:
            for i in range(5):
                await client.create_entry(U, "ds", f"k{i}", str(i))
    finally:
        await runner.cleanup()
    assert limiter.penalties == []
    assert limiter.allowed(str(U), "write") == 2
    assert limiter.virtual >= 60.0  # five writes at two a minute take over a minute


# ------------------------------------------------------------- metrics and backends


async def test_on_call_reports_every_http_call_and_backend(emulator: RunningEmulator) -> None:
    calls: list[tuple[str, int | str, float, str]] = []
    faults(emulator, 31, error_rate=1.0)
    emulator.ctx.faults.error_statuses = [503]
    async with OpenCloudClient(
        api_key=API_KEY,
        base_url=emulator.base_url,
        retry=RetryPolicy(base_delay=0.001, max_delay=0.002, max_attempts=3),
        sleep=no_sleep,
        on_call=lambda *event: calls.append(event),
    ) as client:
        initial = client.backend
        assert initial is None
        with pytest.raises(Exception, match="HTTP 503"):
            await client.get_entry(U, "ds", "k")
        assert client.backend == "EMULATOR"
        emulator.ctx.faults.error_rate = 0
        await client.create_entry(U, "ds", "k", "1")
    assert [(c[0], c[1], c[3]) for c in calls] == [
        ("entries.get", 503, "EMULATOR"),
        ("entries.get", 503, "EMULATOR"),
        ("entries.get", 503, "EMULATOR"),
        ("entries.create", 200, "EMULATOR"),
    ]
    assert all(isinstance(c[2], float) and c[2] >= 0 for c in calls)


async def test_live_backend_detection_and_network_labels() -> None:
    async def root(_: web.Request) -> web.Response:
        return web.Response(status=404, text="not here")

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.Response(text="{}")

    app = web.Application()
    app.router.add_get("/", root)
    app.router.add_route("*", "/{tail:.*}", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    calls: list[tuple[str, int | str, float, str]] = []
    try:
        async with OpenCloudClient(
            api_key=API_KEY,
            base_url=f"http://127.0.0.1:{port}",
            retry=RetryPolicy(base_delay=0.001, max_delay=0.002, max_attempts=2),
            timeout=aiohttp.ClientTimeout(total=0.2),
            on_call=lambda *event: calls.append(event),
        ) as client:
            assert await client.detect_backend() == "LIVE"
            with pytest.raises(NetworkError, match="timed out"):
                await client.get_entry(U, "ds", "k")
    finally:
        await runner.cleanup()
    assert calls[0][:2] == ("probe", 404) and calls[0][3] == "LIVE"
    assert [(c[0], c[1], c[3]) for c in calls[1:]] == [("entries.get", "timeout", "LIVE")] * 2


async def test_timed_out_write_is_not_blindly_repeated(emulator: RunningEmulator) -> None:
    calls: list[tuple[str, int | str, float, str]] = []
    emulator.ctx.faults.latency_ms = 400
    async with OpenCloudClient(
        api_key=API_KEY,
        base_url=emulator.base_url,
        retry=RetryPolicy(base_delay=0.001, max_delay=0.002, max_attempts=2),
        timeout=aiohttp.ClientTimeout(total=0.1),
        sleep=no_sleep,
        on_call=lambda *event: calls.append(event),
    ) as client:
        with pytest.raises(WriteOutcomeUnknown) as info:
            await client.increment_entry(U, "ds", "n", 1, attributes=None, user_ids=[])
    assert "re-reading it to check failed too" in str(info.value)
    # One increment was sent; only the re-read was retried.
    assert [(c[0], c[1]) for c in calls] == [
        ("entries.increment", "timeout"),
        ("entries.get", "timeout"),
        ("entries.get", "timeout"),
    ]
