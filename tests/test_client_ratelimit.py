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

from dsm.opencloud.ratelimit import (
    BucketStats,
    ClientBudget,
    ClientRateLimiter,
    background_calls,
    parse_ratelimit_limit,
)

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
    assert b.categories() == {
        "read": 300,
        "write": 300,
        "list": 300,
        "remove": 300,
        "ordered.read": 300,
        "ordered.write": 300,
        "ordered.list": 300,
        "ordered.remove": 300,
        "v1.read": 300,
        "v1.write": 300,
        "memory": 1000,
    }
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
    assert b.categories() == {
        "read": 2300,
        "write": 1300,
        "list": 400,
        "remove": 2300,
        "ordered.read": 2300,
        "ordered.write": 1300,
        "ordered.list": 400,
        "ordered.remove": 2300,
        "v1.read": 300,  # legacy v1 limits do not grow with users
        "v1.write": 300,
        "memory": 7000,  # 1000 + 120 x CCU request units
    }
    assert b.allowed_per_window("list") == 320
    for bad in (-1, 10_000_001):
        with pytest.raises(ValueError):
            ClientBudget.for_ccu(bad)


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


# --- priorities, per-universe budgets and what Open Cloud's headers say ----------------------


async def background_worker(
    limiter: ClientRateLimiter, vt: VirtualTime, until: float, out: list[float]
) -> None:
    with background_calls():
        while vt.now < until:
            await limiter.acquire("u", "write")
            out.append(vt.now)


@pytest.mark.asyncio
async def test_background_alone_uses_the_whole_share() -> None:
    vt = VirtualTime()
    limiter = ClientRateLimiter(ClientBudget(write=300), time_fn=vt.time, sleep=vt.sleep)
    grants: list[float] = []
    await vt.run(*(background_worker(limiter, vt, 600.0, grants) for _ in range(30)))
    assert max_in_any_window(grants) <= 150
    assert len([t for t in grants if t < 600.0]) >= 0.97 * 150 * 10


@pytest.mark.asyncio
async def test_interactive_calls_jump_ahead_of_queued_background_work() -> None:
    vt = VirtualTime()
    limiter = ClientRateLimiter(ClientBudget(write=300), time_fn=vt.time, sleep=vt.sleep)
    background: list[float] = []
    interactive_waits: list[float] = []

    async def user() -> None:
        # A user clicks every 7 s while 30 background workers keep the bucket saturated.
        await vt.sleep(5.0)
        for _ in range(20):
            interactive_waits.append(await limiter.acquire("u", "write"))
            await vt.sleep(7.0)

    await vt.run(user(), *(background_worker(limiter, vt, 200.0, background) for _ in range(30)))
    interval = WINDOW / 150
    # Without priority each click would queue behind 30 reservations (12 s); with it, at most
    # one pacing interval.
    assert max(interactive_waits) <= interval + 1e-9
    assert max_in_any_window(background) <= 150
    assert len([t for t in background if t < 200.0]) >= 0.9 * (150 * 200 / 60 - 20)


@pytest.mark.asyncio
async def test_priority_mix_never_exceeds_the_window() -> None:
    vt = VirtualTime()
    limiter = ClientRateLimiter(
        ClientBudget(write=60, reserve_share=0.0), time_fn=vt.time, sleep=vt.sleep, burst=5
    )
    grants: list[float] = []

    async def interactive(start: float) -> None:
        await vt.sleep(start)
        for _ in range(8):
            await limiter.acquire("u", "write")
            grants.append(vt.now)

    async def background() -> None:
        with background_calls():
            while vt.now < 300.0:
                await limiter.acquire("u", "write")
                grants.append(vt.now)

    await vt.run(
        *(interactive(s) for s in (0.0, 33.3, 90.0, 91.0)), *(background() for _ in range(6))
    )
    assert max_in_any_window(grants) <= 60


@pytest.mark.asyncio
async def test_cancelled_background_waiter_whose_slot_was_taken_keeps_the_taker_slot() -> None:
    vt = VirtualTime()
    limiter = ClientRateLimiter(
        ClientBudget(read=2, reserve_share=0.0), time_fn=vt.time, sleep=vt.sleep
    )
    granted: list[float] = []

    async def scenario() -> None:
        await limiter.acquire("u", "read")  # t=0
        with background_calls():
            victim = vt.spawn(limiter.acquire("u", "read"))  # reserves t=30
        await asyncio.sleep(0)
        await vt.sleep(1.0)
        vt.spawn(take())  # takes over t=30 from the background caller
        await asyncio.sleep(0)
        victim.cancel()
        await asyncio.sleep(0)
        await take()  # t=60.05: the cancelled caller did not hand back the taker's slot

    async def take() -> None:
        await limiter.acquire("u", "read")
        granted.append(vt.now)

    await vt.run(scenario())
    assert sorted(granted) == [pytest.approx(30.0), pytest.approx(60.05)]


@pytest.mark.asyncio
async def test_budget_for_gives_each_universe_its_own_budget_and_follows_changes() -> None:
    vt = VirtualTime()
    ccu = {"big": 100}
    limiter = ClientRateLimiter(
        ClientBudget.for_ccu(0),
        time_fn=vt.time,
        sleep=vt.sleep,
        budget_for=lambda u: ClientBudget.for_ccu(ccu.get(u, 0)),
    )
    assert limiter.allowed("big", "write") == (300 + 20 * 100) // 2
    assert limiter.allowed("small", "write") == 150
    assert limiter.allowed("big", "ordered.list") == (300 + 2 * 100) // 2
    assert limiter.allowed("big", "memory") == (1000 + 120 * 100) // 2
    grants: list[float] = []

    async def burst_then_change() -> None:
        for _ in range(5):
            await limiter.acquire("big", "write")
            grants.append(vt.now)
        ccu["big"] = 0  # the user lowered the CCU while the server runs
        for _ in range(3):
            await limiter.acquire("big", "write")
            grants.append(vt.now)

    await vt.run(burst_then_change())
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    assert gaps[0] == pytest.approx(WINDOW / 1150)
    assert gaps[-1] == pytest.approx(WINDOW / 150)


def test_parse_ratelimit_limit() -> None:
    assert parse_ratelimit_limit("1000, 1000;w=60") == 1000
    assert parse_ratelimit_limit("300") == 300
    assert parse_ratelimit_limit("10;w=1, 500;w=60") == 500  # 10 a second is 600 a minute
    assert parse_ratelimit_limit("10;w=1") == 600
    for bad in (None, "", "lots", "10;w=0", "10;q=5", "-1"):
        assert parse_ratelimit_limit(bad) is None


def test_headers_only_ever_lower_the_pace() -> None:
    vt = VirtualTime()
    limiter = ClientRateLimiter(ClientBudget(), time_fn=vt.time, sleep=vt.sleep)
    limiter.observe("u", "read", {"x-ratelimit-limit": "1000000, 1000000;w=60"})
    assert limiter.allowed("u", "read") == 150  # a generous per-key limit changes nothing
    limiter.observe("u", "read", {"x-ratelimit-limit": "40, 40;w=60"})
    assert limiter.allowed("u", "read") == 40
    limiter.observe("u", "read", {"x-ratelimit-limit": "0"})
    assert limiter.allowed("u", "read") == 1  # never stops a bucket outright
    limiter.observe("u", "read", {"x-ratelimit-limit": "garbage"})
    assert limiter.allowed("u", "read") == 1  # an unreadable header is ignored, not trusted
    limiter.observe("u", "read", {"x-ratelimit-limit": "5000"})
    assert limiter.allowed("u", "read") == 150  # the latest header counts, capped by the budget
    assert limiter.allowed("u", "write") == 150  # other buckets are untouched


@pytest.mark.asyncio
async def test_remaining_zero_pauses_until_reset() -> None:
    vt = VirtualTime()
    limiter = ClientRateLimiter(ClientBudget(), time_fn=vt.time, sleep=vt.sleep)
    limiter.observe("u", "read", {"x-ratelimit-remaining": "3", "x-ratelimit-reset": "40"})
    assert limiter.paused_for("u", "read") == 0.0
    limiter.observe("u", "read", {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "12"})
    assert limiter.paused_for("u", "read") == pytest.approx(12.0)
    limiter.observe("u", "read", {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "99999"})
    assert limiter.paused_for("u", "read") == pytest.approx(60.0)  # at most one window
    waited: list[float] = []

    async def one() -> None:
        waited.append(await limiter.acquire("u", "read"))

    await vt.run(one())
    assert waited == [pytest.approx(60.0)]
