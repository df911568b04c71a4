"""Tests for the Open Cloud client's limiter (dsm.opencloud.ratelimit), run on virtual time."""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsm.opencloud.ratelimit import BucketStats, ClientBudget, ClientRateLimiter

WINDOW = 60.0


class VirtualTime:
    """Deterministic virtual clock for asyncio tasks that only block in ``sleep``.

    The driver advances time to the earliest pending wake-up only once every task started with
    ``run``/``spawn`` is parked in ``sleep``, so concurrent sleepers never add their delays
    together. Tasks must therefore not await each other. ``lateness`` lets a test make wake-ups
    arrive late, like a stalled event loop.
    """

    def __init__(self, lateness: Callable[[], float] | None = None) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._lateness = lateness
        self._tasks: list[asyncio.Task[None]] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        extra = self._lateness() if self._lateness else 0.0
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(0.0, delay) + extra, next(self._seq), fut))
        await fut

    def _parked(self) -> int:
        return sum(1 for _, _, f in self._timers if not f.done())

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        return task

    async def run(self, *coros: Coroutine[Any, Any, None]) -> None:
        for coro in coros:
            self.spawn(coro)
        tasks = self._tasks  # spawn() may append while we drive
        while True:
            for _ in range(10_000):
                alive = sum(1 for t in tasks if not t.done())
                if alive == 0 or self._parked() >= alive:
                    break
                await asyncio.sleep(0)
            else:
                raise AssertionError("a task is blocked outside virtual time")
            if alive == 0:
                break
            while self._timers[0][2].done():  # drop timers of cancelled sleepers
                heapq.heappop(self._timers)
            wake, _, fut = heapq.heappop(self._timers)
            self.now = max(self.now, wake)
            fut.set_result(None)
        for t in tasks:
            if not t.cancelled():
                t.result()  # surface exceptions from workers


def max_in_any_window(times: list[float], window: float = WINDOW) -> int:
    """Largest number of events in any half-open window [t, t + window)."""
    ordered = sorted(times)
    best = 0
    for i, start in enumerate(ordered):
        best = max(best, bisect.bisect_left(ordered, start + window) - i)
    return best


async def worker(
    limiter: ClientRateLimiter,
    vt: VirtualTime,
    universe: str,
    category: str,
    until: float,
    out: list[float],
) -> None:
    while vt.now < until:
        await limiter.acquire(universe, category)
        out.append(vt.now)


def test_budget_defaults_and_reserve_share() -> None:
    b = ClientBudget()
    assert b.categories() == {"read": 300, "write": 300, "list": 300, "remove": 300}
    assert b.reserve_share == 0.5
    assert b.allowed_per_window("write") == 150
    assert ClientBudget(reserve_share=0.0).allowed_per_window("read") == 300
    assert ClientBudget(reserve_share=0.9).allowed_per_window("read") == 30
    extra = ClientBudget(extra={"ordered.write": 101}, reserve_share=0.5)
    assert extra.allowed_per_window("ordered.write") == 50  # rounded down, never over
    with pytest.raises(KeyError):
        b.allowed_per_window("publish")
    for bad in (-0.1, 0.95, 1.0):
        with pytest.raises(ValueError):
            ClientBudget(reserve_share=bad)
    with pytest.raises(ValueError):
        ClientBudget(list=1, reserve_share=0.5)  # would leave zero requests per minute


def test_budget_for_ccu_uses_documented_formula() -> None:
    b = ClientBudget.for_ccu(50, reserve_share=0.2)
    assert b.categories() == {"read": 2300, "write": 1300, "list": 400, "remove": 2300}
    assert b.allowed_per_window("list") == 320
    with pytest.raises(ValueError):
        ClientBudget.for_ccu(-1)


@pytest.mark.asyncio
async def test_sustained_concurrent_run_hits_95_percent_and_never_exceeds_window() -> None:
    vt = VirtualTime()
    limiter = ClientRateLimiter(ClientBudget(write=300), time_fn=vt.time, sleep=vt.sleep)
    allowed = 150
    grants: list[float] = []
    await vt.run(*(worker(limiter, vt, "u1", "write", 600.0, grants) for _ in range(40)))

    assert max_in_any_window(grants) <= allowed
    in_run = [t for t in grants if t < 600.0]
    assert len(in_run) >= 0.95 * allowed * 10
    # Even pacing: consecutive requests are at least 60 / allowed apart (no bursts).
    ordered = sorted(grants)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    assert min(gaps) >= WINDOW / allowed - 1e-9


@pytest.mark.asyncio
async def test_burst_goes_at_once_then_paces_and_never_exceeds_window() -> None:
    vt = VirtualTime()
    limiter = ClientRateLimiter(ClientBudget(read=300), time_fn=vt.time, sleep=vt.sleep, burst=10)
    allowed = 150
    grants: list[float] = []
    await vt.run(*(worker(limiter, vt, "u1", "read", 600.0, grants) for _ in range(40)))

    ordered = sorted(grants)
    assert ordered[:10] == [0.0] * 10  # an interactive burst is not held back
    assert ordered[10] > 0.0
    assert max_in_any_window(grants) <= allowed
    assert len([t for t in grants if t < 600.0]) >= 0.95 * allowed * 10


@pytest.mark.asyncio
async def test_buckets_are_independent_per_universe_and_category() -> None:
    vt = VirtualTime()
    limiter = ClientRateLimiter(
        ClientBudget(read=120, write=60, reserve_share=0.0), time_fn=vt.time, sleep=vt.sleep
    )
    out: dict[tuple[str, str], list[float]] = {
        (u, c): [] for u in ("u1", "u2") for c in ("read", "write")
    }
    await vt.run(
        *(
            worker(limiter, vt, u, c, 300.0, times)
            for (u, c), times in out.items()
            for _ in range(5)
        )
    )
    for (_, category), times in out.items():
        cap = 120 if category == "read" else 60
        assert max_in_any_window(times) <= cap
        assert len([t for t in times if t < 300.0]) >= 0.95 * cap * 5


@pytest.mark.asyncio
async def test_penalize_pauses_only_that_bucket() -> None:
    vt = VirtualTime()
    limiter = ClientRateLimiter(ClientBudget(), time_fn=vt.time, sleep=vt.sleep)
    writes: list[float] = []
    reads: list[float] = []
    seen: list[BucketStats] = []

    async def server_says_429() -> None:
        await vt.sleep(100.0)
        limiter.penalize("u1", "write", 30.0)
        seen.extend(limiter.snapshot())

    await vt.run(
        server_says_429(),
        *(worker(limiter, vt, "u1", "write", 200.0, writes) for _ in range(5)),
        *(worker(limiter, vt, "u1", "read", 200.0, reads) for _ in range(5)),
    )
    assert not [t for t in writes if 100.0 < t < 130.0]
    assert [t for t in writes if 130.0 <= t < 131.0]
    assert [t for t in reads if 100.0 < t < 130.0]  # the read bucket kept going
    paused = {s.category: s for s in seen}
    assert paused["write"].paused_for == pytest.approx(30.0)
    assert paused["read"].paused_for == 0.0
    assert max_in_any_window(writes) <= 150


@pytest.mark.asyncio
async def test_penalize_never_shortens_an_existing_pause() -> None:
    vt = VirtualTime()
    limiter = ClientRateLimiter(ClientBudget(), time_fn=vt.time, sleep=vt.sleep)
    limiter.penalize("u", "read", 20.0)
    limiter.penalize("u", "read", 5.0)
    waited: list[float] = []

    async def one() -> None:
        waited.append(await limiter.acquire("u", "read"))

    await vt.run(one())
    assert waited == [pytest.approx(20.0)]
    with pytest.raises(ValueError):
        limiter.penalize("u", "read", -1.0)


@pytest.mark.asyncio
async def test_acquire_returns_seconds_waited_and_paces_evenly() -> None:
    vt = VirtualTime()
    limiter = ClientRateLimiter(
        ClientBudget(read=60, reserve_share=0.0), time_fn=vt.time, sleep=vt.sleep
    )
    waits: list[float] = []

    async def seq() -> None:
        for _ in range(3):
            waits.append(await limiter.acquire("u", "read"))

    await vt.run(seq())
    assert waits == [0.0, pytest.approx(1.0), pytest.approx(1.0)]


@pytest.mark.asyncio
async def test_cancelled_waiter_hands_its_slot_back() -> None:
    vt = VirtualTime()
    limiter = ClientRateLimiter(
        ClientBudget(read=2, reserve_share=0.0), time_fn=vt.time, sleep=vt.sleep
    )
    granted: list[float] = []

    async def take() -> None:
        await limiter.acquire("u", "read")
        granted.append(vt.now)

    async def scenario() -> None:
        await take()  # t=0
        victim = vt.spawn(take())  # reserves t=30
        await vt.sleep(10.0)
        victim.cancel()
        await asyncio.sleep(0)
        assert limiter.snapshot()[0].waiting == 0
        await take()  # reuses the freed t=30 slot
        await take()  # third in the window: waits for t=0 to leave (60 s + margin)

    await vt.run(scenario())
    assert granted[0] == 0.0
    assert granted[1] == pytest.approx(30.0)
    assert granted[2] == pytest.approx(60.05)


@pytest.mark.asyncio
async def test_snapshot_counts_only_released_requests() -> None:
    vt = VirtualTime()
    limiter = ClientRateLimiter(ClientBudget(), time_fn=vt.time, sleep=vt.sleep)
    snaps: list[list[BucketStats]] = []

    async def observer() -> None:
        await vt.sleep(10.2)
        snaps.append(limiter.snapshot())
        await vt.sleep(65.0)
        snaps.append(limiter.snapshot())

    async def caller() -> None:
        await limiter.acquire("u9", "list")

    # 30 callers at once are paced 0.4 s apart, so by t=10.2 exactly 26 have been released.
    await vt.run(observer(), *(caller() for _ in range(30)))
    first = snaps[0][0]
    assert (first.universe_id, first.category) == ("u9", "list")
    assert (first.used, first.allowed, first.waiting) == (26, 150, 4)
    assert snaps[1][0].used == 0  # all older than 60 s by t=75


@pytest.mark.asyncio
async def test_idle_buckets_are_forgotten() -> None:
    vt = VirtualTime()
    limiter = ClientRateLimiter(ClientBudget(), time_fn=vt.time, sleep=vt.sleep)

    async def scenario() -> None:
        for i in range(100):
            await limiter.acquire(f"universe-{i}", "read")
        assert limiter.tracked_buckets() == 100
        await vt.sleep(61.0)
        await limiter.acquire("universe-0", "read")

    await vt.run(scenario())
    assert limiter.tracked_buckets() == 1


@pytest.mark.asyncio
async def test_late_wakeups_never_overfill_the_window() -> None:
    rng = random.Random(7)
    vt = VirtualTime(lateness=lambda: rng.choice([0.0, 0.0, 0.0, 0.3, 5.0]))
    limiter = ClientRateLimiter(
        ClientBudget(write=20, reserve_share=0.0), time_fn=vt.time, sleep=vt.sleep, margin=0.0
    )
    grants: list[float] = []
    await vt.run(*(worker(limiter, vt, "u", "write", 900.0, grants) for _ in range(8)))
    assert max_in_any_window(grants) <= 20


@pytest.mark.asyncio
async def test_real_event_loop_smoke() -> None:
    limiter = ClientRateLimiter(ClientBudget(read=6000, reserve_share=0.0))  # 10 ms apart
    start = time.monotonic()
    waits = await asyncio.gather(*(limiter.acquire("u", "read") for _ in range(6)))
    elapsed = time.monotonic() - start
    assert elapsed >= 0.05 - 0.005
    assert elapsed < 2.0
    assert max(waits) >= 0.045
    assert limiter.snapshot()[0].used == 6


def test_invalid_margin() -> None:
    with pytest.raises(ValueError):
        ClientRateLimiter(margin=-1.0)


# --- property test: any arrival pattern, penalties and late wake-ups keep the window ---------

_arrivals = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=200.0),  # when a caller starts
        st.integers(min_value=1, max_value=12),  # how many acquires it makes back to back
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(
    rpm=st.integers(min_value=1, max_value=40),
    reserve=st.sampled_from([0.0, 0.25, 0.5]),
    arrivals=_arrivals,
    penalties=st.lists(st.tuples(st.floats(0.0, 200.0), st.floats(0.0, 40.0)), max_size=3),
    late=st.lists(st.sampled_from([0.0, 0.0, 0.01, 0.7, 3.0]), min_size=1, max_size=8),
    margin=st.sampled_from([0.0, 0.05]),
)
def test_property_sliding_window_invariant(
    rpm: int,
    reserve: float,
    arrivals: list[tuple[float, int]],
    penalties: list[tuple[float, float]],
    late: list[float],
    margin: float,
) -> None:
    budget = ClientBudget(write=max(rpm, 2), reserve_share=reserve)
    allowed = budget.allowed_per_window("write")
    lateness = itertools.cycle(late)
    vt = VirtualTime(lateness=lambda: next(lateness))
    limiter = ClientRateLimiter(budget, time_fn=vt.time, sleep=vt.sleep, margin=margin)
    grants: list[float] = []
    pause_windows: list[tuple[float, float]] = []

    async def caller(start: float, count: int) -> None:
        await vt.sleep(start)
        for _ in range(count):
            waited = await limiter.acquire("u", "write")
            assert waited >= 0.0
            grants.append(vt.now)

    async def penalizer(at: float, retry_after: float) -> None:
        await vt.sleep(at)
        limiter.penalize("u", "write", retry_after)
        pause_windows.append((vt.now, vt.now + retry_after))

    async def main() -> None:
        await vt.run(*(caller(s, n) for s, n in arrivals), *(penalizer(a, r) for a, r in penalties))

    asyncio.run(main())
    assert len(grants) == sum(n for _, n in arrivals)  # nobody is starved or lost
    assert max_in_any_window(grants) <= allowed
    for begin, end in pause_windows:
        assert not [t for t in grants if begin < t < end]
