"""Client-side pacing for Open Cloud calls.

Open Cloud v2 data store budgets are shared with the experience's live game servers
(opencloud-api.md section 9.3), so an external tool that spends the whole budget starves in-game
saves. The limiter keeps every (universe, category) bucket below ``budget x (1 - reserve_share)``
requests in any sliding 60 s window and spaces requests evenly (``60 / allowed`` apart), which is
the fixed-delay pacing Roblox recommends for Open Cloud callers. A 429 from the server is fed
back through :meth:`ClientRateLimiter.penalize`, which pauses that bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_CATEGORY_RPM",
    "WINDOW_SECONDS",
    "BucketStats",
    "ClientBudget",
    "ClientRateLimiter",
]

WINDOW_SECONDS = 60.0
# v2 standard data store budgets at CCU 0 are 300 rpm per request type; the per-CCU increments
# are documented alongside (section 9.3) and used by ClientBudget.for_ccu.
DEFAULT_CATEGORY_RPM: Mapping[str, float] = {
    "read": 300.0,
    "write": 300.0,
    "list": 300.0,
    "remove": 300.0,
}
_PER_CCU_RPM: Mapping[str, float] = {"read": 40.0, "write": 20.0, "list": 2.0, "remove": 40.0}
_MAX_RESERVE_SHARE = 0.9


@dataclass
class ClientBudget:
    """Universe budgets (requests per minute) and the share left for game servers.

    ``extra`` adds categories beyond the four v2 request types, e.g. ``{"ordered.write": 300}``.
    """

    read: float = DEFAULT_CATEGORY_RPM["read"]
    write: float = DEFAULT_CATEGORY_RPM["write"]
    list: float = DEFAULT_CATEGORY_RPM["list"]
    remove: float = DEFAULT_CATEGORY_RPM["remove"]
    reserve_share: float = 0.5
    extra: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.reserve_share <= _MAX_RESERVE_SHARE:
            raise ValueError(f"reserve_share must be within 0..{_MAX_RESERVE_SHARE}")
        for category in self.categories():
            if self.allowed_per_window(category) < 1:
                raise ValueError(f"budget for {category!r} leaves less than one request per minute")

    @classmethod
    def for_ccu(cls, ccu: int, reserve_share: float = 0.5) -> ClientBudget:
        """Documented v2 standard budgets (300 + CCU x {40, 20, 2, 40}) for a known CCU."""
        if ccu < 0:
            raise ValueError("ccu must be >= 0")
        rpm = {c: DEFAULT_CATEGORY_RPM[c] + _PER_CCU_RPM[c] * ccu for c in DEFAULT_CATEGORY_RPM}
        return cls(
            read=rpm["read"],
            write=rpm["write"],
            list=rpm["list"],
            remove=rpm["remove"],
            reserve_share=reserve_share,
        )

    def categories(self) -> dict[str, float]:
        return {
            "read": self.read,
            "write": self.write,
            "list": self.list,
            "remove": self.remove,
            **self.extra,
        }

    def allowed_per_window(self, category: str) -> int:
        """Requests this client may send per 60 s for ``category`` (the unreserved share)."""
        rpm = self.categories().get(category)
        if rpm is None:
            raise KeyError(f"unknown rate-limit category {category!r}")
        if math.isnan(rpm) or rpm < 0:
            raise ValueError(f"budget for {category!r} must be >= 0")
        # The epsilon only undoes float error (300 x 0.1 is 29.999...); rounding stays downward.
        return math.floor(rpm * (1.0 - self.reserve_share) + 1e-9)


@dataclass(frozen=True, slots=True)
class BucketStats:
    """Figures for one bucket. ``used`` counts requests actually released in the last 60 s."""

    universe_id: str
    category: str
    used: int
    allowed: int
    waiting: int
    paused_for: float


def _discard(slots: deque[float], slot: float) -> None:
    # The slot may already be pruned if its caller woke very late; nothing to hand back then.
    with contextlib.suppress(ValueError):
        slots.remove(slot)


def _keep_recent(times: deque[float], now: float, horizon: float) -> None:
    # Written as ``t + horizon <= now`` on purpose: _reserve schedules at ``t + horizon``, and
    # the same float expression on both sides guarantees a kept entry yields a slot > now.
    while times and times[0] + horizon <= now:
        times.popleft()


class _Bucket:
    __slots__ = ("allowed", "interval", "paused_until", "released", "slots", "waiting")

    def __init__(self, allowed: int, interval: float) -> None:
        self.allowed = allowed
        self.interval = interval
        # Reserved release times, sorted; includes future reservations of sleeping callers.
        self.slots: deque[float] = deque()
        # Times requests were actually let through. Late wake-ups make these differ from slots.
        self.released: deque[float] = deque()
        self.paused_until = -math.inf
        self.waiting = 0


class ClientRateLimiter:
    """Per-(universe, category) sliding-window limiter with even pacing.

    Each ``acquire`` reserves a release time synchronously (so concurrent coroutines cannot
    race): at least ``interval`` after the previous reservation, not before a penalty pause ends,
    and at least ``60 s + margin`` after the ``allowed``-th previous reservation *and* the
    ``allowed``-th previous actual release. On waking, the caller re-checks the actual releases
    of the last ``60 s + margin`` and re-queues if an event-loop stall pushed it too close, so
    the window limit holds for real release times, not just planned ones. ``margin`` absorbs
    network jitter between client and server at a cost of ``margin / 60`` of throughput.

    ``time_fn`` must be monotonic (seconds); ``sleep`` is awaited with a delay in seconds.
    """

    def __init__(
        self,
        budget: ClientBudget | None = None,
        *,
        time_fn: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        margin: float = 0.05,
        burst: int = 1,
    ) -> None:
        if math.isnan(margin) or margin < 0:
            raise ValueError("margin must be >= 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        # Up to `burst` requests may go back to back (an interactive user opening a view);
        # after that they are paced at 60/allowed. The window limit holds either way.
        self._burst = burst
        self._budget = budget if budget is not None else ClientBudget()
        self._time = time_fn
        self._sleep = sleep
        self._horizon = WINDOW_SECONDS + margin
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._last_sweep = -math.inf

    @property
    def budget(self) -> ClientBudget:
        return self._budget

    def _bucket(self, universe_id: str, category: str) -> _Bucket:
        key = (universe_id, category)
        bucket = self._buckets.get(key)
        if bucket is None:
            allowed = self._budget.allowed_per_window(category)
            if allowed < 1:
                raise ValueError(f"budget for {category!r} allows no requests")
            bucket = self._buckets[key] = _Bucket(allowed, WINDOW_SECONDS / allowed)
        return bucket

    def _reserve(self, bucket: _Bucket, now: float) -> float:
        n = bucket.allowed
        slots, released = bucket.slots, bucket.released
        _keep_recent(slots, now, self._horizon)
        _keep_recent(released, now, self._horizon)
        slot = max(now, bucket.paused_until)
        burst = min(self._burst, n)
        if len(slots) >= burst:
            slot = max(slot, slots[-burst] + burst * bucket.interval)
        if len(slots) >= n:
            slot = max(slot, slots[-n] + self._horizon)
        if len(released) >= n:
            slot = max(slot, released[-n] + self._horizon)
        slots.append(slot)  # slot >= every earlier reservation, so the deque stays sorted
        return slot

    async def acquire(self, universe_id: str, category: str) -> float:
        """Wait until a request in ``category`` may be sent; returns the seconds waited."""
        start = self._time()
        # Sweep before looking the bucket up so it cannot be dropped while this call holds it.
        self._maybe_sweep(start)
        bucket = self._bucket(universe_id, category)
        bucket.waiting += 1
        try:
            while True:
                slot = self._reserve(bucket, self._time())
                try:
                    # Loop because a sleep may return a hair early (float or timer granularity).
                    while (now := self._time()) < slot:
                        await self._sleep(slot - now)
                except BaseException:
                    # Cancelled before sending: hand the slot back. Removing a reservation can
                    # only lower window counts, so later reservations stay valid.
                    _discard(bucket.slots, slot)
                    raise
                _keep_recent(bucket.released, now, self._horizon)
                if bucket.paused_until > slot or len(bucket.released) >= bucket.allowed:
                    # A 429 arrived while we slept, or we woke so late that releasing now would
                    # overfill the window: re-queue (the new slot accounts for both).
                    _discard(bucket.slots, slot)
                    continue
                bucket.released.append(now)
                return now - start
        finally:
            bucket.waiting -= 1

    def penalize(self, universe_id: str, category: str, retry_after: float) -> None:
        """Pause a bucket after a 429; callers already queued re-queue behind the pause."""
        if math.isnan(retry_after) or retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        bucket = self._bucket(universe_id, category)
        bucket.paused_until = max(bucket.paused_until, self._time() + retry_after)

    def paused_for(self, universe_id: str, category: str) -> float:
        """Seconds until a bucket paused by a 429 may send again (0 when it is not paused)."""
        bucket = self._buckets.get((universe_id, category))
        if bucket is None:
            return 0.0
        return max(0.0, bucket.paused_until - self._time())

    def snapshot(self) -> list[BucketStats]:
        """Per-bucket usage for metrics; only requests already let through are counted."""
        now = self._time()
        stats: list[BucketStats] = []
        for (universe_id, category), bucket in sorted(self._buckets.items(), key=lambda kv: kv[0]):
            _keep_recent(bucket.released, now, self._horizon)
            used = sum(1 for t in bucket.released if t + WINDOW_SECONDS > now)
            stats.append(
                BucketStats(
                    universe_id=universe_id,
                    category=category,
                    used=used,
                    allowed=bucket.allowed,
                    waiting=bucket.waiting,
                    paused_for=max(0.0, bucket.paused_until - now),
                )
            )
        return stats

    def _maybe_sweep(self, now: float) -> None:
        # Forget idle buckets once per window so long runs over many universes stay bounded.
        if now - self._last_sweep < WINDOW_SECONDS:
            return
        self._last_sweep = now
        idle = []
        for key, b in self._buckets.items():
            _keep_recent(b.slots, now, self._horizon)
            _keep_recent(b.released, now, self._horizon)
            if b.waiting == 0 and b.paused_until <= now and not b.slots and not b.released:
                idle.append(key)
        for key in idle:
            del self._buckets[key]

    def tracked_buckets(self) -> int:
        """Number of buckets currently held, for memory-bound tests."""
        return len(self._buckets)
