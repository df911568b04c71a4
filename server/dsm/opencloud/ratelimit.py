"""Client-side pacing for Open Cloud calls.

Open Cloud v2 data store budgets are shared with the experience's live game servers
(opencloud-api.md section 9.3), so an external tool that spends the whole budget starves in-game
saves. The limiter keeps every (universe, category) bucket below ``budget x (1 - reserve_share)``
requests in any sliding 60 s window and spaces requests evenly (``60 / allowed`` apart), which is
the fixed-delay pacing Roblox recommends for Open Cloud callers. A 429 from the server is fed
back through :meth:`ClientRateLimiter.penalize`, which pauses that bucket, and the
``x-ratelimit-*`` headers of every answer through :meth:`ClientRateLimiter.observe`: both can only
ever lower the pace below the documented budget, never raise it.

Two priorities share each bucket: interactive calls (the default) and background calls (jobs,
inside :func:`background_calls`). A background caller holds at most one reservation, and an
interactive caller takes over the earliest future reservation of a background caller, which
queues again: the plugin's calls go first, and with no interactive traffic background work
uses the whole share.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import IntEnum

__all__ = [
    "DEFAULT_CATEGORY_RPM",
    "DOCUMENTED_RATES",
    "MAX_CCU",
    "WINDOW_SECONDS",
    "BucketStats",
    "ClientBudget",
    "ClientRateLimiter",
    "DocumentedRate",
    "Priority",
    "background_calls",
    "current_priority",
    "parse_ratelimit_limit",
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
_MAX_RESERVE_SHARE = 0.9
# Far above any experience's concurrent users; refuses typos such as an extra zero or two.
MAX_CCU = 10_000_000

_DS_LIMITS = "docs/cloud-services/data-stores/error-codes-and-limits.md (Access limits)"
_V1_LIMITS = "docs/cloud/guides/data-stores/throttling.md (legacy standard data stores)"
_MS_LIMITS = "docs/cloud-services/memory-stores/index.md (request units)"


@dataclass(frozen=True, slots=True)
class DocumentedRate:
    """One documented Open Cloud budget: ``base + per_ccu x CCU`` requests per minute."""

    base: float
    per_ccu: float
    label: str  # what draws on it, for people
    source: str  # where Roblox documents it (paths under shared/opencloud)

    def rpm(self, ccu: int) -> float:
        return self.base + self.per_ccu * ccu

    def formula(self) -> str:
        return f"{self.base:g} + {self.per_ccu:g} × CCU" if self.per_ccu else f"{self.base:g}"


# Limiter category -> documented budget per universe. Standard and ordered v2 data stores have
# separate budgets with the same formulas, shared with the game's servers; legacy v1 limits do
# not scale with users; memory stores count request units (a request is at least one unit).
DOCUMENTED_RATES: Mapping[str, DocumentedRate] = {
    "read": DocumentedRate(300, 40, "Standard data stores: read (Get Entry)", _DS_LIMITS),
    "write": DocumentedRate(
        300, 20, "Standard data stores: write (Create, Update, Increment Entry)", _DS_LIMITS
    ),
    "list": DocumentedRate(
        300, 2, "Standard data stores: list (data stores, entries, revisions)", _DS_LIMITS
    ),
    "remove": DocumentedRate(
        300, 40, "Standard data stores: remove (Delete Entry, Delete Data Store)", _DS_LIMITS
    ),
    "ordered.read": DocumentedRate(300, 40, "Ordered data stores: read (Get)", _DS_LIMITS),
    "ordered.write": DocumentedRate(
        300, 20, "Ordered data stores: write (Create, Update, Increment)", _DS_LIMITS
    ),
    "ordered.list": DocumentedRate(300, 2, "Ordered data stores: list", _DS_LIMITS),
    "ordered.remove": DocumentedRate(300, 40, "Ordered data stores: remove (Delete)", _DS_LIMITS),
    "v1.read": DocumentedRate(300, 0, "Legacy v1 standard data stores: read", _V1_LIMITS),
    "v1.write": DocumentedRate(300, 0, "Legacy v1 standard data stores: write", _V1_LIMITS),
    "memory": DocumentedRate(1000, 120, "Memory stores: request units", _MS_LIMITS),
}


def _extra_at(ccu: int) -> dict[str, float]:
    return {c: r.rpm(ccu) for c, r in DOCUMENTED_RATES.items() if c not in DEFAULT_CATEGORY_RPM}


class Priority(IntEnum):
    INTERACTIVE = 0  # the plugin's own calls: served first
    BACKGROUND = 1  # jobs: use whatever interactive calls leave


_PRIORITY: ContextVar[Priority] = ContextVar("dsm_ratelimit_priority", default=Priority.INTERACTIVE)


def current_priority() -> Priority:
    return _PRIORITY.get()


@contextlib.contextmanager
def background_calls() -> Iterator[None]:
    """Open Cloud calls made inside (and in tasks started inside) yield to interactive ones."""
    token = _PRIORITY.set(Priority.BACKGROUND)
    try:
        yield
    finally:
        _PRIORITY.reset(token)


_LIMIT_ITEM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:;\s*w\s*=\s*(\d+(?:\.\d+)?))?\s*$")


def parse_ratelimit_limit(value: str | None) -> float | None:
    """The tightest per-60-second rate in an ``x-ratelimit-limit`` header, None if unreadable.

    The header lists ``N`` and ``N;w=SECONDS`` items (a bare ``N`` uses a 60 s window), e.g.
    ``1000, 1000;w=60``. Anything malformed is ignored rather than guessed at.
    """
    if not value:
        return None
    best: float | None = None
    for item in value.split(","):
        match = _LIMIT_ITEM.match(item)
        if match is None:
            return None
        limit = float(match.group(1))
        window = float(match.group(2)) if match.group(2) else WINDOW_SECONDS
        if window <= 0:
            return None
        per_window = limit * WINDOW_SECONDS / window
        best = per_window if best is None else min(best, per_window)
    return best


@dataclass
class ClientBudget:
    """Universe budgets (requests per minute) and the share left for game servers.

    ``read``/``write``/``list``/``remove`` are the v2 standard data store request types;
    ``extra`` holds every other category (ordered, v1, memory) and defaults to their documented
    budgets at CCU 0, so a budget built for tests still covers every call the client makes.
    """

    read: float = DEFAULT_CATEGORY_RPM["read"]
    write: float = DEFAULT_CATEGORY_RPM["write"]
    list: float = DEFAULT_CATEGORY_RPM["list"]
    remove: float = DEFAULT_CATEGORY_RPM["remove"]
    reserve_share: float = 0.5
    extra: dict[str, float] = field(default_factory=lambda: _extra_at(0))

    def __post_init__(self) -> None:
        if not 0.0 <= self.reserve_share <= _MAX_RESERVE_SHARE:
            raise ValueError(f"reserve_share must be within 0..{_MAX_RESERVE_SHARE}")
        for category in self.categories():
            if self.allowed_per_window(category) < 1:
                raise ValueError(f"budget for {category!r} leaves less than one request per minute")

    @classmethod
    def for_ccu(cls, ccu: int, reserve_share: float = 0.5) -> ClientBudget:
        """Every documented budget (:data:`DOCUMENTED_RATES`) at ``ccu`` concurrent users."""
        if not 0 <= ccu <= MAX_CCU:
            raise ValueError(f"ccu must be within 0..{MAX_CCU:,}")
        rpm = {c: r.rpm(ccu) for c, r in DOCUMENTED_RATES.items()}
        return cls(
            read=rpm["read"],
            write=rpm["write"],
            list=rpm["list"],
            remove=rpm["remove"],
            reserve_share=reserve_share,
            extra=_extra_at(ccu),
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


class _Ticket:
    """A background caller's reservation; ``stolen`` once an interactive caller took its slot."""

    __slots__ = ("slot", "stolen")

    def __init__(self, slot: float) -> None:
        self.slot = slot
        self.stolen = False


class _Bucket:
    __slots__ = (
        "advertised",
        "allowed",
        "background",
        "interval",
        "paused_until",
        "released",
        "slots",
        "waiting",
    )

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.interval = WINDOW_SECONDS / allowed
        # Reserved release times, sorted; includes future reservations of sleeping callers.
        self.slots: deque[float] = deque()
        # Times requests were actually let through. Late wake-ups make these differ from slots.
        self.released: deque[float] = deque()
        # Reservations held by background callers, earliest first (a subset of ``slots``).
        self.background: deque[_Ticket] = deque()
        self.paused_until = -math.inf
        self.waiting = 0
        # Requests per 60 s the last x-ratelimit-limit header allowed, if any.
        self.advertised: float | None = None

    def resize(self, allowed: int) -> None:
        if allowed != self.allowed:
            self.allowed = allowed
            self.interval = WINDOW_SECONDS / allowed


class ClientRateLimiter:
    """Per-(universe, category) sliding-window limiter with even pacing and two priorities.

    Each ``acquire`` reserves a release time synchronously (so concurrent coroutines cannot
    race): at least ``interval`` after the previous reservation, not before a penalty pause ends,
    and at least ``60 s + margin`` after the ``allowed``-th previous reservation *and* the
    ``allowed``-th previous actual release. On waking, the caller re-checks the actual releases
    of the last ``60 s + margin`` and re-queues if an event-loop stall pushed it too close, so
    the window limit holds for real release times, not just planned ones. ``margin`` absorbs
    network jitter between client and server at a cost of ``margin / 60`` of throughput.

    Budgets are per universe: ``budget_for(universe_id)`` (when given) is asked on every
    acquire, so a CCU changed while the server runs applies to the next request; ``budget`` is
    used otherwise. An interactive caller whose own slot would come after a background caller's
    takes that slot instead (the set of reserved times does not change, so neither does any
    window count), and the background caller queues again when it wakes.

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
        budget_for: Callable[[str], ClientBudget] | None = None,
    ) -> None:
        if math.isnan(margin) or margin < 0:
            raise ValueError("margin must be >= 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        # Up to `burst` requests may go back to back (an interactive user opening a view);
        # after that they are paced at 60/allowed. The window limit holds either way.
        self._burst = burst
        self._budget = budget if budget is not None else ClientBudget()
        self._budget_for = budget_for
        self._time = time_fn
        self._sleep = sleep
        self._horizon = WINDOW_SECONDS + margin
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._last_sweep = -math.inf

    @property
    def budget(self) -> ClientBudget:
        """The budget of universes ``budget_for`` does not cover (all of them without it)."""
        return self._budget

    def budget_of(self, universe_id: str) -> ClientBudget:
        """The documented budget this universe is paced to (before headers lower it)."""
        return self._budget_for(universe_id) if self._budget_for is not None else self._budget

    def _allowed(self, universe_id: str, category: str, advertised: float | None) -> int:
        allowed = self.budget_of(universe_id).allowed_per_window(category)
        if advertised is not None:
            # Headers only ever lower the pace; never below one request per window.
            allowed = max(1, min(allowed, math.floor(advertised)))
        if allowed < 1:
            raise ValueError(f"budget for {category!r} allows no requests")
        return allowed

    def _bucket(self, universe_id: str, category: str) -> _Bucket:
        key = (universe_id, category)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._allowed(universe_id, category, None))
        else:
            bucket.resize(self._allowed(universe_id, category, bucket.advertised))
        return bucket

    def allowed(self, universe_id: str, category: str) -> int:
        """Requests per 60 s this client sends in a bucket now (budget share, headers applied)."""
        bucket = self._buckets.get((universe_id, category))
        return self._allowed(universe_id, category, bucket.advertised if bucket else None)

    def _next_slot(self, bucket: _Bucket, now: float) -> float:
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
        return slot

    def _reserve(
        self, bucket: _Bucket, now: float, priority: Priority
    ) -> tuple[float, _Ticket | None]:
        slot = self._next_slot(bucket, now)
        if priority is Priority.BACKGROUND:
            bucket.slots.append(slot)  # slot >= every earlier reservation: the deque stays sorted
            ticket = _Ticket(slot)
            bucket.background.append(ticket)
            return slot, ticket
        while bucket.background and bucket.background[0].stolen:
            bucket.background.popleft()
        if bucket.background and bucket.background[0].slot < slot:
            victim = bucket.background.popleft()
            victim.stolen = True
            return victim.slot, None  # the reserved time is now ours; ``slots`` is unchanged
        bucket.slots.append(slot)
        return slot, None

    @staticmethod
    def _drop_ticket(bucket: _Bucket, ticket: _Ticket) -> None:
        with contextlib.suppress(ValueError):
            bucket.background.remove(ticket)

    async def acquire(self, universe_id: str, category: str) -> float:
        """Wait until a request in ``category`` may be sent; returns the seconds waited.

        The caller's priority comes from the context (:func:`background_calls`).
        """
        priority = current_priority()
        start = self._time()
        # Sweep before looking the bucket up so it cannot be dropped while this call holds it.
        self._maybe_sweep(start)
        bucket = self._bucket(universe_id, category)
        bucket.waiting += 1
        try:
            while True:
                slot, ticket = self._reserve(bucket, self._time(), priority)
                try:
                    # Loop because a sleep may return a hair early (float or timer granularity).
                    while (now := self._time()) < slot:
                        await self._sleep(slot - now)
                except BaseException:
                    # Cancelled before sending: hand the slot back, unless an interactive caller
                    # already owns it. Removing a reservation only lowers window counts.
                    if ticket is None or not ticket.stolen:
                        _discard(bucket.slots, slot)
                    if ticket is not None:
                        self._drop_ticket(bucket, ticket)
                    raise
                if ticket is not None:
                    if ticket.stolen:
                        continue  # an interactive call went in our place: queue again
                    self._drop_ticket(bucket, ticket)
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

    def observe(self, universe_id: str, category: str, headers: Mapping[str, str]) -> None:
        """Learn from an answer's ``x-ratelimit-*`` headers; they can only slow a bucket down.

        ``x-ratelimit-limit`` caps the bucket's rate (it describes the API key's own limit, which
        may be tighter than the documented budget; it never raises the pace above it), and
        ``x-ratelimit-remaining: 0`` pauses the bucket until ``x-ratelimit-reset``.
        """
        limit = parse_ratelimit_limit(headers.get("x-ratelimit-limit"))
        remaining = _header_number(headers.get("x-ratelimit-remaining"))
        reset = _header_number(headers.get("x-ratelimit-reset"))
        if limit is None and remaining is None:
            return
        bucket = self._bucket(universe_id, category)
        if limit is not None:
            bucket.advertised = limit
            bucket.resize(self._allowed(universe_id, category, limit))
        if remaining is not None and remaining <= 0 and reset is not None and reset > 0:
            wait = min(reset, WINDOW_SECONDS)
            bucket.paused_until = max(bucket.paused_until, self._time() + wait)

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


def _header_number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None
