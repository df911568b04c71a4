"""Pure pieces of the Open Cloud client: back-off, retry-after, the scope table, wire helpers."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsm.opencloud.ops import ALL_OPS, SCOPES_BY_OPERATION
from dsm.opencloud.ratelimit import DOCUMENTED_RATES
from dsm.opencloud.retry import RetryPolicy, parse_retry_after
from dsm.opencloud.wire import json_equal, raw_array_items, raw_object_fields


@given(st.integers(min_value=1, max_value=200), st.integers(min_value=0, max_value=2**32))
def test_backoff_is_jittered_and_capped(retry_number: int, seed: int) -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    delay = policy.backoff(retry_number, random.Random(seed))
    assert 0.0 <= delay <= min(8.0, 0.5 * 2 ** (retry_number - 1))


def test_backoff_spreads_out_clients() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=30.0)
    rng = random.Random(1)
    delays = {round(policy.backoff(5, rng), 6) for _ in range(50)}
    assert len(delays) == 50  # no two clients retry in lockstep


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=-1)


def test_parse_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=now) == 30.0


def test_every_operation_names_its_roblox_scopes() -> None:
    names = [op.name for op in ALL_OPS]
    assert len(names) == len(set(names))
    for op in ALL_OPS:
        if op.name != "probe":
            assert op.scopes, op.name
            # Every category is a documented budget the limiter paces to.
            assert op.category in DOCUMENTED_RATES, op.name
    assert {op.category for op in ALL_OPS if op.name.startswith("ordered.")} == {
        "ordered.read",
        "ordered.write",
        "ordered.list",
        "ordered.remove",
    }
    assert {op.category for op in ALL_OPS if op.name.startswith("v1.")} == {"v1.read", "v1.write"}
    assert {op.category for op in ALL_OPS if op.name.startswith(("queue.", "sorted_map."))} == {
        "memory"
    }
    assert SCOPES_BY_OPERATION["entries.update"] == ("universe-datastores.objects:update",)
    assert SCOPES_BY_OPERATION["entries.increment"] == (
        "universe-datastores.objects:create",
        "universe-datastores.objects:update",
    )
    assert SCOPES_BY_OPERATION["messaging.publish"] == ("universe-messaging-service:publish",)


def test_raw_fields_keep_exact_value_text() -> None:
    body = '{"path": "p", "value" : {"b": 1.50, "a": "\\u00e9"} , "n": [1, 2]}'
    fields = raw_object_fields(body)
    assert fields["value"] == '{"b": 1.50, "a": "\\u00e9"}'
    assert raw_array_items(fields["n"]) == ["1", "2"]
    assert raw_array_items("[]") == []
    with pytest.raises(ValueError):
        raw_object_fields("[1]")


def test_json_equal_compares_meaning() -> None:
    assert json_equal('{"a": 1.0, "b": [true]}', '{"b":[true],"a":1}')
    assert not json_equal("1", "true")
    assert not json_equal('"1"', "1")
    assert json_equal(None, None) and not json_equal(None, "null")
