"""The emulator's documented Open Cloud throttles (reference: opencloud-api.md sections 8.2 and 9).

Every limit is a sliding 60-second window: "N per minute" means at most N in any half-open
60 s interval ``[t, t + 60)``. A request is allowed only if *every* budget it draws on has room,
and then all of them are charged together; a refused request consumes nothing.

Budget names (rpm = requests per minute; MB = 1024 x 1024 bytes, KB = 1024 bytes, matching the
4,194,304-byte "4 MB" value limit):

=====================  =====================  ===============================================
Budget                 Scope                  Limit
=====================  =====================  ===============================================
``v1.read``            universe               300 rpm + 20 MB/min read bytes
``v1.write``           universe               300 rpm + 10 MB/min write bytes
``v1.control``         universe               300 rpm (delete / undelete data store)
``ordered_v1.read``    universe               300 rpm
``ordered_v1.write``   universe               300 rpm
``v2.standard.read``   universe               300 + 40 x CCU rpm; per key 25 MB/min
``v2.standard.write``  universe               300 + 20 x CCU rpm; per key 4 MB/min
``v2.standard.list``   universe               300 + 2 x CCU rpm
``v2.standard.remove`` universe               300 + 40 x CCU rpm
``v2.ordered.read``    universe               300 + 40 x CCU rpm
``v2.ordered.write``   universe               300 + 20 x CCU rpm
``v2.ordered.list``    universe               300 + 2 x CCU rpm
``v2.ordered.remove``  universe               300 + 40 x CCU rpm
``gateway.v1``         API-key owner          5000 rpm
``gateway.ordered_v1`` API-key owner          500 rpm
``gateway.snapshot``   API-key owner          60 rpm
``gateway.messaging``  API-key owner          5000 rpm
``memory_store``       universe               1000 + 120 x CCU request units/min;
                                              per structure 100,000 units/min
=====================  =====================  ===============================================

Per-key data store throughput (``KeyThrottled``) rounds every request up to the next whole KB
(800 B + 1.2 KB count as 3 KB); it applies when the caller passes ``entry_key``. The v1
universe byte budgets count raw bytes because no rounding is documented for them. The
``/cloud/v2`` gateway limit (1,000,000 rpm per owner) is not modelled: it is far above the
per-universe budgets an emulator run can reach, and tracking it could cost a million timestamps
per owner.

Overrides replace a computed limit (CCU scaling included; fractions round down) and take
``math.inf`` to disable it:
``<budget>`` is requests (or memory-store units) per minute, ``<budget>.bytes`` the universe
bytes per minute, ``<budget>.key`` the per-key limit (bytes per minute for data stores, request
units per minute per structure for ``memory_store``).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from dsm.emulator.clock import Clock

__all__ = [
    "BUDGETS",
    "WINDOW_SECONDS",
    "BudgetSpec",
    "LimitsConfig",
    "ThrottleDecision",
    "Throttler",
    "parse_overrides",
]

WINDOW_SECONDS = 60
# Integer microseconds keep window boundaries exact; float epoch seconds would drift by an ulp.
_WINDOW_US = WINDOW_SECONDS * 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MB = 1024 * 1024
_KB = 1024
# A full sweep of idle windows at most once per window keeps the amortised cost O(1) per check.
_SWEEP_INTERVAL_US = _WINDOW_US

Unit = Literal["requests", "units", "bytes"]
# (budget, dimension "n"/"b"/"k", universe id or API key, entry key or "")
_WindowKey = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """Static description of one documented budget."""

    name: str
    scope: Literal["universe", "owner"]
    base_per_minute: float
    per_ccu_per_minute: float = 0.0
    bytes_per_minute: float | None = None
    key_limit_per_minute: float | None = None
    # Data store per-key limits are byte throughput; memory-store per-structure limits are units.
    key_unit: Unit = "bytes"
    count_unit: Unit = "requests"
    reason: str = "TooManyRequests"
    key_reason: str = "KeyThrottled"


def _v2(name: str, per_ccu: float, key_bytes: float | None = None) -> BudgetSpec:
    return BudgetSpec(name, "universe", 300, per_ccu, key_limit_per_minute=key_bytes)


BUDGETS: dict[str, BudgetSpec] = {
    spec.name: spec
    for spec in (
        BudgetSpec("v1.read", "universe", 300, bytes_per_minute=20 * _MB),
        BudgetSpec("v1.write", "universe", 300, bytes_per_minute=10 * _MB),
        BudgetSpec("v1.control", "universe", 300),
        BudgetSpec("ordered_v1.read", "universe", 300),
        BudgetSpec("ordered_v1.write", "universe", 300),
        _v2("v2.standard.read", 40, 25 * _MB),
        _v2("v2.standard.write", 20, 4 * _MB),
        _v2("v2.standard.list", 2),
        _v2("v2.standard.remove", 40),
        _v2("v2.ordered.read", 40),
        _v2("v2.ordered.write", 20),
        _v2("v2.ordered.list", 2),
        _v2("v2.ordered.remove", 40),
        BudgetSpec("gateway.v1", "owner", 5000),
        BudgetSpec("gateway.ordered_v1", "owner", 500),
        BudgetSpec("gateway.snapshot", "owner", 60),
        BudgetSpec("gateway.messaging", "owner", 5000),
        BudgetSpec(
            "memory_store",
            "universe",
            1000,
            120,
            key_limit_per_minute=100_000,
            key_unit="units",
            count_unit="units",
            reason="TotalRequestsOverLimit",
            key_reason="DataStructureRequestsOverLimit",
        ),
    )
}


def _override_known(name: str) -> bool:
    if name in BUDGETS:
        return True
    base, _, suffix = name.rpartition(".")
    spec = BUDGETS.get(base)
    if spec is None:
        return False
    if suffix == "bytes":
        return spec.bytes_per_minute is not None
    if suffix == "key":
        return spec.key_limit_per_minute is not None
    return False


def _validate_override(name: str, value: float) -> None:
    if not _override_known(name):
        raise ValueError(f"unknown throttle budget {name!r}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"throttle override {name!r} must be >= 0, got {value!r}")


def parse_overrides(text: str) -> dict[str, float]:
    """Parse a CLI string such as ``"v2.standard.read=120,v1.write.bytes=1048576"``.

    ``inf`` disables a limit. Unknown names and malformed pairs raise ``ValueError`` so a typo
    on the command line does not silently leave the documented limit in place.
    """
    result: dict[str, float] = {}
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        name, sep, value_text = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"expected NAME=RPM, got {part!r}")
        try:
            value = float(value_text.strip())
        except ValueError:
            raise ValueError(f"invalid number in throttle override {part!r}") from None
        _validate_override(name, value)
        result[name] = value
    return result


@dataclass
class LimitsConfig:
    """Which limits the emulator enforces."""

    mode: Literal["documented", "off"] = "documented"
    ccu: int = 0
    overrides: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("documented", "off"):
            raise ValueError(f"unknown limits mode {self.mode!r}")
        if self.ccu < 0:
            raise ValueError("ccu must be >= 0")
        for name, value in self.overrides.items():
            _validate_override(name, value)

    @classmethod
    def from_cli(cls, mode: str = "documented", ccu: int = 0, overrides: str = "") -> LimitsConfig:
        if mode not in ("documented", "off"):
            raise ValueError(f"unknown limits mode {mode!r}")
        return cls(
            mode="off" if mode == "off" else "documented",
            ccu=ccu,
            overrides=parse_overrides(overrides),
        )

    def requests_per_minute(self, budget: str) -> float:
        """Effective request (or memory-store unit) limit; ``math.inf`` when disabled."""
        spec = BUDGETS[budget]
        if budget in self.overrides:
            return self.overrides[budget]
        return spec.base_per_minute + spec.per_ccu_per_minute * self.ccu

    def bytes_per_minute(self, budget: str) -> float | None:
        """Universe byte throughput limit, or ``None`` when the budget has none."""
        spec = BUDGETS[budget]
        if spec.bytes_per_minute is None:
            return None
        return self.overrides.get(f"{budget}.bytes", spec.bytes_per_minute)

    def key_limit_per_minute(self, budget: str) -> float | None:
        """Per-key (or per-structure) limit, or ``None`` when the budget has none."""
        spec = BUDGETS[budget]
        if spec.key_limit_per_minute is None:
            return None
        return self.overrides.get(f"{budget}.key", spec.key_limit_per_minute)


@dataclass(frozen=True, slots=True)
class ThrottleDecision:
    """Outcome of one check plus the data for the ``x-ratelimit-*`` response headers.

    When allowed, ``budget``/``limit``/``remaining``/``reset`` describe the tightest request
    budget after charging. When refused they describe the budget that refused (the one needing
    the longest wait), in that budget's ``unit``. ``reset`` follows the Open Cloud definition:
    seconds until the quota is back to the full limit (the newest charge leaves the window).
    All limit fields are ``None`` in "off" mode.
    """

    allowed: bool
    budget: str | None = None
    reason: str | None = None
    retry_after: float = 0.0
    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    unit: Unit = "requests"
    window: int = WINDOW_SECONDS

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.limit is not None:
            out["x-ratelimit-limit"] = f"{self.limit}, {self.limit};w={self.window}"
            out["x-ratelimit-remaining"] = str(max(0, self.remaining or 0))
            out["x-ratelimit-reset"] = str(math.ceil(self.reset or 0.0))
        if not self.allowed:
            out["retry-after"] = str(max(1, math.ceil(self.retry_after)))
        return out


class _Window:
    """Charges inside the last 60 s as (time_us, amount) pairs, oldest first."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[tuple[int, int]] = deque()
        self.total = 0

    def prune(self, now_us: int) -> None:
        entries = self.entries
        while entries and entries[0][0] + _WINDOW_US <= now_us:
            self.total -= entries.popleft()[1]

    def add(self, now_us: int, amount: int) -> None:
        if amount <= 0:
            return
        # Merging same-instant charges keeps bursts (and ManualClock tests) to one entry.
        if self.entries and self.entries[-1][0] == now_us:
            t, prev = self.entries[-1]
            self.entries[-1] = (t, prev + amount)
        else:
            self.entries.append((now_us, amount))
        self.total += amount

    def wait_us(self, now_us: int, amount: int, limit: int) -> int:
        """Microseconds until ``amount`` more would fit; assumes it does not fit now."""
        if amount > limit:
            return _WINDOW_US  # can never fit; a full window is the honest upper bound
        must_free = self.total + amount - limit
        freed = 0
        for t, a in self.entries:
            freed += a
            if freed >= must_free:
                return t + _WINDOW_US - now_us
        return _WINDOW_US

    def reset_us(self, now_us: int) -> int:
        return self.entries[-1][0] + _WINDOW_US - now_us if self.entries else 0


@dataclass(slots=True)
class _Charge:
    budget: str
    window_key: _WindowKey
    limit: int
    amount: int
    unit: Unit
    reason: str
    headline: bool  # request-count dimensions feed the x-ratelimit headers when allowed


class Throttler:
    """Enforces :data:`BUDGETS` for the emulator. Thread-safe; ``check`` never blocks."""

    def __init__(self, config: LimitsConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[_WindowKey, _Window] = {}
        self._last_now_us = 0
        self._last_sweep_us = 0

    @property
    def config(self) -> LimitsConfig:
        return self._config

    def _now_us(self) -> int:
        now_us = (self._clock.now() - _EPOCH) // timedelta(microseconds=1)
        # A ManualClock can be set backwards; windows must stay time-ordered, so time never
        # runs backwards for the throttler.
        self._last_now_us = max(self._last_now_us, now_us)
        return self._last_now_us

    def check(
        self,
        *,
        universe_id: str,
        api_key: str,
        budgets: Sequence[str],
        entry_key: str | None = None,
        request_bytes: int = 0,
        units: int = 1,
    ) -> ThrottleDecision:
        """Charge one request against ``budgets`` if every one of them has room.

        ``entry_key`` identifies the key (data stores) or structure (memory stores) for per-key
        limits; pass something unique within the universe such as ``"store/scope/key"``.
        ``request_bytes`` is the body written or the value returned. ``units`` is the memory
        store request-unit cost; every other budget charges one request.
        """
        if request_bytes < 0 or units < 1:
            raise ValueError("request_bytes must be >= 0 and units >= 1")
        names = list(dict.fromkeys(budgets))  # a budget listed twice is still one charge
        for name in names:
            if name not in BUDGETS:
                raise ValueError(f"unknown throttle budget {name!r}")
        if self._config.mode == "off":
            return ThrottleDecision(allowed=True)
        charges = list(self._charges(names, universe_id, api_key, entry_key, request_bytes, units))
        with self._lock:
            now_us = self._now_us()
            self._maybe_sweep(now_us)
            refused: tuple[int, _Charge, _Window] | None = None
            for charge in charges:
                window = self._windows.get(charge.window_key)
                if window is None:
                    if charge.amount > charge.limit:
                        wait = _WINDOW_US
                        if refused is None or wait > refused[0]:
                            refused = (wait, charge, _Window())
                    continue
                window.prune(now_us)
                if window.total + charge.amount > charge.limit:
                    wait = window.wait_us(now_us, charge.amount, charge.limit)
                    if refused is None or wait > refused[0]:
                        refused = (wait, charge, window)
            if refused is not None:
                wait, charge, window = refused
                return ThrottleDecision(
                    allowed=False,
                    budget=charge.budget,
                    reason=charge.reason,
                    retry_after=wait / 1_000_000,
                    limit=charge.limit,
                    remaining=max(0, charge.limit - window.total),
                    reset=window.reset_us(now_us) / 1_000_000,
                    unit=charge.unit,
                )
            tightest: tuple[int, _Charge, _Window] | None = None
            for charge in charges:
                window = self._windows.get(charge.window_key)
                if window is None:
                    if charge.amount <= 0:
                        continue  # nothing to record; do not allocate an empty window
                    window = self._windows[charge.window_key] = _Window()
                window.add(now_us, charge.amount)
                remaining = charge.limit - window.total
                if charge.headline and (tightest is None or remaining < tightest[0]):
                    tightest = (remaining, charge, window)
            if tightest is None:
                return ThrottleDecision(allowed=True)
            remaining, charge, window = tightest
            return ThrottleDecision(
                allowed=True,
                budget=charge.budget,
                limit=charge.limit,
                remaining=remaining,
                reset=window.reset_us(now_us) / 1_000_000,
                unit=charge.unit,
            )

    def _charges(
        self,
        names: Iterable[str],
        universe_id: str,
        api_key: str,
        entry_key: str | None,
        request_bytes: int,
        units: int,
    ) -> Iterable[_Charge]:
        cfg = self._config
        for name in names:
            spec = BUDGETS[name]
            scope_id = universe_id if spec.scope == "universe" else api_key
            rpm = cfg.requests_per_minute(name)
            if math.isfinite(rpm):
                amount = units if spec.count_unit == "units" else 1
                yield _Charge(
                    name,
                    (name, "n", scope_id, ""),
                    int(rpm),
                    amount,
                    spec.count_unit,
                    spec.reason,
                    headline=True,
                )
            bpm = cfg.bytes_per_minute(name)
            if bpm is not None and math.isfinite(bpm):
                yield _Charge(
                    name,
                    (name, "b", scope_id, ""),
                    int(bpm),
                    request_bytes,
                    "bytes",
                    spec.reason,
                    headline=False,
                )
            kpm = cfg.key_limit_per_minute(name)
            if entry_key is not None and kpm is not None and math.isfinite(kpm):
                # Data store keys are charged in whole KB, as documented.
                key_amount = (
                    math.ceil(request_bytes / _KB) * _KB if spec.key_unit == "bytes" else units
                )
                yield _Charge(
                    name,
                    (name, "k", universe_id, entry_key),
                    int(kpm),
                    key_amount,
                    spec.key_unit,
                    spec.key_reason,
                    headline=False,
                )

    def _maybe_sweep(self, now_us: int) -> None:
        if now_us - self._last_sweep_us >= _SWEEP_INTERVAL_US:
            self._sweep(now_us)

    def _sweep(self, now_us: int) -> None:
        self._last_sweep_us = now_us
        idle = []
        for key, window in self._windows.items():
            window.prune(now_us)
            if not window.entries:
                idle.append(key)
        for key in idle:
            del self._windows[key]

    def prune(self) -> None:
        """Drop expired charges and empty windows now (also done automatically once a minute)."""
        with self._lock:
            self._sweep(self._now_us())

    def tracked_windows(self) -> int:
        """Number of live windows, for metrics and memory-bound tests."""
        with self._lock:
            return len(self._windows)

    def usage(self, budget: str, *, universe_id: str = "", api_key: str = "") -> int:
        """Requests (or units) charged to ``budget`` in the current window; for metrics."""
        spec = BUDGETS[budget]
        scope_id = universe_id if spec.scope == "universe" else api_key
        with self._lock:
            window = self._windows.get((budget, "n", scope_id, ""))
            if window is None:
                return 0
            window.prune(self._now_us())
            return window.total
