"""Tests for the emulator's documented throttles (dsm.emulator.throttle)."""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsm.emulator.clock import ManualClock
from dsm.emulator.throttle import (
    BUDGETS,
    LimitsConfig,
    ThrottleDecision,
    Throttler,
    parse_overrides,
)

MB = 1024 * 1024
KB = 1024
U = "1234"
KEY = "api-key-a"


def make(
    clock: ManualClock, *, ccu: int = 0, overrides: dict[str, float] | None = None
) -> Throttler:
    return Throttler(LimitsConfig(ccu=ccu, overrides=overrides or {}), clock)


def hit(
    t: Throttler,
    *budgets: str,
    entry_key: str | None = None,
    request_bytes: int = 0,
    units: int = 1,
) -> ThrottleDecision:
    return t.check(
        universe_id=U,
        api_key=KEY,
        budgets=budgets,
        entry_key=entry_key,
        request_bytes=request_bytes,
        units=units,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_documented_table_at_ccu_zero_and_scaled() -> None:
    base = LimitsConfig()
    scaled = LimitsConfig(ccu=100)
    expected = {
        "v1.read": (300, 300),
        "v1.write": (300, 300),
        "v1.control": (300, 300),
        "ordered_v1.read": (300, 300),
        "ordered_v1.write": (300, 300),
        "v2.standard.read": (300, 4300),
        "v2.standard.write": (300, 2300),
        "v2.standard.list": (300, 500),
        "v2.standard.remove": (300, 4300),
        "v2.ordered.read": (300, 4300),
        "v2.ordered.write": (300, 2300),
        "v2.ordered.list": (300, 500),
        "v2.ordered.remove": (300, 4300),
        "gateway.v1": (5000, 5000),
        "gateway.ordered_v1": (500, 500),
        "gateway.snapshot": (60, 60),
        "gateway.messaging": (5000, 5000),
        "memory_store": (1000, 13000),
    }
    assert set(expected) == set(BUDGETS)
    for name, (at_zero, at_100) in expected.items():
        assert base.requests_per_minute(name) == at_zero, name
        assert scaled.requests_per_minute(name) == at_100, name
    assert base.bytes_per_minute("v1.read") == 20 * MB
    assert base.bytes_per_minute("v1.write") == 10 * MB
    assert base.bytes_per_minute("v2.standard.read") is None
    assert base.key_limit_per_minute("v2.standard.read") == 25 * MB
    assert base.key_limit_per_minute("v2.standard.write") == 4 * MB
    assert base.key_limit_per_minute("v2.ordered.write") is None
    assert base.key_limit_per_minute("memory_store") == 100_000


def test_exact_sliding_window_limit(clock: ManualClock) -> None:
    t = make(clock)
    for _ in range(150):
        assert hit(t, "v1.read").allowed
    clock.advance(30)
    for _ in range(150):
        assert hit(t, "v1.read").allowed
    refused = hit(t, "v1.read")
    assert not refused.allowed
    assert refused.budget == "v1.read"
    assert refused.reason == "TooManyRequests"
    # The oldest 150 leave the window exactly 60 s after they were charged.
    assert refused.retry_after == pytest.approx(30.0)
    clock.advance(29.999999)
    assert not hit(t, "v1.read").allowed
    clock.advance(0.000001)
    for _ in range(150):
        assert hit(t, "v1.read").allowed
    # A fixed-minute counter would now allow more; the sliding window does not.
    assert not hit(t, "v1.read").allowed


def test_universes_are_independent_but_owner_budgets_span_universes(clock: ManualClock) -> None:
    t = make(clock)
    for _ in range(60):
        assert t.check(universe_id="1", api_key=KEY, budgets=["gateway.snapshot"]).allowed
    # The same key owner is refused in another universe: gateway limits are per owner.
    d = t.check(universe_id="2", api_key=KEY, budgets=["gateway.snapshot"])
    assert not d.allowed and d.budget == "gateway.snapshot"
    assert t.check(universe_id="1", api_key="other", budgets=["gateway.snapshot"]).allowed
    for _ in range(300):
        assert t.check(universe_id="1", api_key=KEY, budgets=["v1.control"]).allowed
    assert not t.check(universe_id="1", api_key=KEY, budgets=["v1.control"]).allowed
    assert t.check(universe_id="2", api_key=KEY, budgets=["v1.control"]).allowed


def test_refused_request_charges_no_budget(clock: ManualClock) -> None:
    t = make(clock, overrides={"v2.standard.list": 3})
    for _ in range(3):
        assert hit(t, "gateway.v1", "v2.standard.list").allowed
    assert t.usage("gateway.v1", api_key=KEY) == 3
    for _ in range(10):
        d = hit(t, "gateway.v1", "v2.standard.list")
        assert not d.allowed and d.budget == "v2.standard.list"
    # The gateway budget that had room was not charged by the refused attempts.
    assert t.usage("gateway.v1", api_key=KEY) == 3
    assert t.usage("v2.standard.list", universe_id=U) == 3


def test_refusal_reports_the_budget_with_the_longest_wait(clock: ManualClock) -> None:
    t = make(clock, overrides={"v1.write": 1, "gateway.v1": 1})
    assert hit(t, "v1.write").allowed
    clock.advance(20)
    assert hit(t, "gateway.v1").allowed
    d = hit(t, "v1.write", "gateway.v1")
    assert not d.allowed
    assert d.budget == "gateway.v1"
    assert d.retry_after == pytest.approx(60.0)


def test_v1_byte_budgets_count_raw_bytes(clock: ManualClock) -> None:
    t = make(clock)
    for _ in range(10):
        assert hit(t, "v1.write", request_bytes=MB).allowed
    d = hit(t, "v1.write", request_bytes=1)
    assert not d.allowed
    assert (d.budget, d.reason, d.unit) == ("v1.write", "TooManyRequests", "bytes")
    assert d.limit == 10 * MB and d.remaining == 0
    assert t.usage("v1.write", universe_id=U) == 10  # the refused request was not counted
    assert hit(t, "v1.write", request_bytes=0).allowed
    # Read throughput is separate and larger.
    for _ in range(20):
        assert hit(t, "v1.read", request_bytes=MB).allowed
    assert not hit(t, "v1.read", request_bytes=1).allowed


def test_per_key_throughput_rounds_each_request_up_to_whole_kb(clock: ManualClock) -> None:
    t = make(clock, overrides={"v2.standard.write.key": 3 * KB})
    # 800 B + 1.2 KB count as 1 KB + 2 KB = 3 KB, the documented example.
    assert hit(t, "v2.standard.write", entry_key="s/global/k", request_bytes=800).allowed
    assert hit(t, "v2.standard.write", entry_key="s/global/k", request_bytes=1229).allowed
    d = hit(t, "v2.standard.write", entry_key="s/global/k", request_bytes=1)
    assert not d.allowed
    assert (d.budget, d.reason, d.unit) == ("v2.standard.write", "KeyThrottled", "bytes")
    assert d.retry_after == pytest.approx(60.0)
    # Other keys and requests without a key are unaffected.
    assert hit(t, "v2.standard.write", entry_key="s/global/other", request_bytes=3 * KB).allowed
    assert hit(t, "v2.standard.write", request_bytes=10 * KB).allowed
    # An exact multiple of 1 KB is not rounded further.
    clock.advance(60)
    for _ in range(3):
        assert hit(t, "v2.standard.write", entry_key="s/global/k", request_bytes=KB).allowed


def test_documented_per_key_limits(clock: ManualClock) -> None:
    t = make(clock)
    assert hit(t, "v2.standard.write", entry_key="k", request_bytes=4 * MB).allowed
    d = hit(t, "v2.standard.write", entry_key="k", request_bytes=1)
    assert not d.allowed and d.reason == "KeyThrottled"
    for _ in range(6):
        assert hit(t, "v2.standard.read", entry_key="k", request_bytes=4 * MB).allowed
    assert hit(t, "v2.standard.read", entry_key="k", request_bytes=MB).allowed
    d = hit(t, "v2.standard.read", entry_key="k", request_bytes=1)
    assert not d.allowed and d.reason == "KeyThrottled" and d.budget == "v2.standard.read"
    # Ordered data stores have no per-key throughput budget.
    for _ in range(10):
        assert hit(t, "v2.ordered.write", entry_key="k", request_bytes=4 * MB).allowed


def test_request_that_can_never_fit_is_refused_without_charging(clock: ManualClock) -> None:
    t = make(clock)
    d = hit(t, "gateway.v1", "v2.standard.write", entry_key="k", request_bytes=4 * MB + 1)
    assert not d.allowed and d.reason == "KeyThrottled" and d.retry_after == 60.0
    assert t.usage("gateway.v1", api_key=KEY) == 0


def test_ccu_scales_v2_and_memory_store_budgets(clock: ManualClock) -> None:
    t = make(clock, ccu=10)
    for _ in range(320):  # 300 + 10 x 2
        assert hit(t, "v2.standard.list").allowed
    assert not hit(t, "v2.standard.list").allowed
    for _ in range(500):  # 300 + 10 x 20
        assert hit(t, "v2.ordered.write").allowed
    assert not hit(t, "v2.ordered.write").allowed
    # v1 budgets do not scale with users.
    for _ in range(300):
        assert hit(t, "v1.read").allowed
    assert not hit(t, "v1.read").allowed


def test_memory_store_request_units(clock: ManualClock) -> None:
    t = make(clock, ccu=1)  # 1000 + 120 units per minute
    assert hit(t, "memory_store", entry_key="queue:q", units=1000).allowed
    d = hit(t, "memory_store", entry_key="queue:q", units=121)
    assert not d.allowed
    assert (d.reason, d.unit, d.remaining) == ("TotalRequestsOverLimit", "units", 120)
    assert hit(t, "memory_store", entry_key="queue:q", units=120).allowed

    s = make(clock, overrides={"memory_store.key": 5})
    for _ in range(5):
        assert hit(s, "memory_store", entry_key="map:m").allowed
    d = hit(s, "memory_store", entry_key="map:m")
    assert not d.allowed and d.reason == "DataStructureRequestsOverLimit"
    assert hit(s, "memory_store", entry_key="map:other").allowed


def test_overrides_replace_limits(clock: ManualClock) -> None:
    t = make(clock, ccu=1000, overrides={"v2.standard.read": 2, "v1.read.bytes": 10})
    assert hit(t, "v2.standard.read").allowed
    assert hit(t, "v2.standard.read").allowed
    assert not hit(t, "v2.standard.read").allowed  # CCU scaling does not apply to overrides
    assert hit(t, "v1.read", request_bytes=10).allowed
    assert not hit(t, "v1.read", request_bytes=1).allowed

    blocked = make(clock, overrides={"v1.control": 0})
    d = hit(blocked, "v1.control")
    assert not d.allowed and d.limit == 0

    unlimited = make(clock, overrides={"gateway.snapshot": math.inf})
    for _ in range(500):
        assert hit(unlimited, "gateway.snapshot").allowed
    assert unlimited.tracked_windows() == 0  # disabled limits keep no state


def test_parse_overrides() -> None:
    assert parse_overrides("v2.standard.read=120, v1.write=60,,") == {
        "v2.standard.read": 120.0,
        "v1.write": 60.0,
    }
    assert parse_overrides("v1.write.bytes=1048576,v2.standard.write.key=inf") == {
        "v1.write.bytes": 1048576.0,
        "v2.standard.write.key": math.inf,
    }
    assert parse_overrides("") == {}
    for bad in (
        "nope=1",
        "v1.write",
        "v1.write=abc",
        "v1.write=-1",
        "v1.control.bytes=5",
        "v2.ordered.read.key=5",
        "v1.write=nan",
        "=5",
    ):
        with pytest.raises(ValueError):
            parse_overrides(bad)
    cfg = LimitsConfig.from_cli("documented", 5, "v2.standard.read=120")
    assert cfg.requests_per_minute("v2.standard.read") == 120
    assert cfg.requests_per_minute("v2.standard.write") == 400
    with pytest.raises(ValueError):
        LimitsConfig.from_cli("strict")
    with pytest.raises(ValueError):
        LimitsConfig(overrides={"unknown": 1})
    with pytest.raises(ValueError):
        LimitsConfig(ccu=-1)


def test_off_mode_allows_everything(clock: ManualClock) -> None:
    t = Throttler(LimitsConfig(mode="off"), clock)
    for _ in range(6000):
        d = hit(t, "gateway.snapshot", "v1.write", request_bytes=MB, entry_key="k")
        assert d.allowed
    assert d == ThrottleDecision(allowed=True)
    assert d.headers() == {}
    assert t.tracked_windows() == 0
    with pytest.raises(ValueError):
        hit(t, "not.a.budget")


def test_headers_report_tightest_budget_when_allowed(clock: ManualClock) -> None:
    t = make(clock)
    d = hit(t, "gateway.v1", "v1.read", request_bytes=100)
    assert d.allowed and d.budget == "v1.read"
    assert (d.limit, d.remaining, d.reset) == (300, 299, 60.0)
    assert d.headers() == {
        "x-ratelimit-limit": "300, 300;w=60",
        "x-ratelimit-remaining": "299",
        "x-ratelimit-reset": "60",
    }
    clock.advance(10.5)
    d = hit(t, "gateway.v1", "v1.read")
    assert d.remaining == 298 and d.reset == 60.0


def test_headers_when_refused(clock: ManualClock) -> None:
    t = make(clock, overrides={"gateway.snapshot": 2})
    hit(t, "gateway.snapshot")
    clock.advance(0.5)
    hit(t, "gateway.snapshot")
    clock.advance(0.25)
    d = hit(t, "gateway.snapshot")
    assert not d.allowed
    assert d.retry_after == pytest.approx(59.25)
    assert d.reset == pytest.approx(59.75)
    assert d.headers() == {
        "x-ratelimit-limit": "2, 2;w=60",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": "60",
        "retry-after": "60",
    }
    clock.advance(59.0)  # 59.75 s after the first charge
    d = hit(t, "gateway.snapshot")
    assert d.retry_after == pytest.approx(0.25)
    assert d.headers()["retry-after"] == "1"  # rounded up, never 0


def test_pruning_drops_idle_windows(clock: ManualClock) -> None:
    t = make(clock)
    for i in range(200):
        assert hit(t, "v2.standard.write", entry_key=f"key-{i}", request_bytes=10).allowed
    # One count window plus one window per key.
    assert t.tracked_windows() == 201
    clock.advance(59)
    t.prune()
    assert t.tracked_windows() == 201
    clock.advance(1)
    t.prune()
    assert t.tracked_windows() == 0
    # Automatic sweep: checks keep running without an explicit prune().
    for i in range(50):
        hit(t, "v2.standard.write", entry_key=f"k{i}", request_bytes=1)
    clock.advance(120)
    hit(t, "v2.standard.list")
    assert t.tracked_windows() == 1


def test_same_instant_charges_share_one_entry(clock: ManualClock) -> None:
    t = make(clock)
    for _ in range(300):
        hit(t, "v1.read")
    window = t._windows[("v1.read", "n", U, "")]
    assert len(window.entries) == 1 and window.total == 300


def test_clock_moving_backwards_does_not_reopen_the_window(clock: ManualClock) -> None:
    t = make(clock, overrides={"v1.read": 1})
    assert hit(t, "v1.read").allowed
    clock.set(clock.now() - timedelta(hours=1))
    assert not hit(t, "v1.read").allowed
    clock.set(clock.now() + timedelta(hours=1, seconds=60))
    assert hit(t, "v1.read").allowed


def test_invalid_arguments(clock: ManualClock) -> None:
    t = make(clock)
    with pytest.raises(ValueError):
        hit(t, "v1.read", request_bytes=-1)
    with pytest.raises(ValueError):
        hit(t, "memory_store", units=0)
    with pytest.raises(ValueError):
        hit(t, "v3.read")


# --- property test: the throttler matches a brute-force sliding-window model ------------------

_OVERRIDES = {
    "gateway.v1": 7.0,
    "v1.write": 5.0,
    "v1.write.bytes": 8000.0,
    "v2.standard.write": 6.0,
    "v2.standard.write.key": 4096.0,
}
_DIMENSION_LIMITS = {"gw": 7, "v1n": 5, "v1b": 8000, "v2n": 6, "v2k": 4096}
_BUDGET_CHOICES = ["gateway.v1", "v1.write", "v2.standard.write"]
_WINDOW_US = 60_000_000

_op = st.tuples(
    st.integers(min_value=0, max_value=25_000),  # ms to advance before the request
    st.lists(st.sampled_from(_BUDGET_CHOICES), min_size=1, max_size=3, unique=True),
    st.sampled_from([None, "a", "b"]),
    st.integers(min_value=0, max_value=5000),
)


def _dimensions(budgets: list[str], key: str | None, nbytes: int) -> dict[str, int]:
    dims: dict[str, int] = {}
    if "gateway.v1" in budgets:
        dims["gw"] = 1
    if "v1.write" in budgets:
        dims["v1n"] = 1
        dims["v1b"] = nbytes
    if "v2.standard.write" in budgets:
        dims["v2n"] = 1
        if key is not None:
            dims[f"v2k:{key}"] = math.ceil(nbytes / 1024) * 1024
    return dims


@settings(max_examples=200, deadline=None)
@given(st.lists(_op, min_size=1, max_size=120))
def test_property_matches_sliding_window_model(
    ops: list[tuple[int, list[str], str | None, int]],
) -> None:
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))
    t = Throttler(LimitsConfig(overrides=dict(_OVERRIDES)), clock)
    history: dict[str, list[tuple[int, int]]] = defaultdict(list)  # dim -> [(time_us, amount)]
    for advance_ms, budgets, key, nbytes in ops:
        clock.advance(milliseconds=advance_ms)
        now_us = (clock.now() - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        dims = _dimensions(budgets, key, nbytes)
        fits = all(
            sum(a for ts, a in history[d] if ts > now_us - _WINDOW_US) + amount
            <= _DIMENSION_LIMITS[d.split(":")[0]]
            for d, amount in dims.items()
        )
        decision = t.check(
            universe_id="u", api_key="k", budgets=budgets, entry_key=key, request_bytes=nbytes
        )
        assert decision.allowed == fits
        if fits:
            for d, amount in dims.items():
                history[d].append((now_us, amount))
        else:
            assert decision.retry_after > 0
            assert decision.headers()["retry-after"].isdigit()

    # Invariant: no half-open 60 s window holds more than the limit of any dimension.
    for dim, events in history.items():
        limit = _DIMENSION_LIMITS[dim.split(":")[0]]
        times = [ts for ts, _ in events]
        for i, (start, _) in enumerate(events):
            end = bisect.bisect_left(times, start + _WINDOW_US)
            assert sum(a for _, a in events[i:end]) <= limit
