"""Cloud v2 memory stores in the emulator (sorted maps, queues, flush), over loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from dsm.emulator.app import EmulatorConfig
from dsm.emulator.auth import KeyGrant
from dsm.emulator.clock import ManualClock
from dsm.emulator.throttle import LimitsConfig

from .conftest import RunningEmulator, start_emulator

U = "/cloud/v2/universes/123"
MAP = f"{U}/memory-store/sorted-maps/scores/items"
QUEUE = f"{U}/memory-store/queues/lobby"
FLUSH = f"{U}/memory-store:flush"
DAYS_45 = timedelta(seconds=3_888_000)


async def call(
    emu: RunningEmulator,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: str | None = None,
    **params: str,
) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {"params": params}
    if body is not None:
        kwargs["json"] = body
    if raw is not None:
        kwargs["data"] = raw
    async with emu.http.request(method, emu.url(path), **kwargs) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else None)


def stamp(emu: RunningEmulator, after: timedelta) -> str:
    return (emu.clock.now() + after).strftime("%Y-%m-%dT%H:%M:%SZ")


async def put(emu: RunningEmulator, item_id: str, value: Any = 1, **extra: Any) -> dict[str, Any]:
    status, body = await call(emu, "POST", MAP, {"value": value, **extra}, id=item_id)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def list_ids(emu: RunningEmulator, **params: str) -> list[str]:
    status, body = await call(emu, "GET", MAP, maxPageSize="100", **params)
    assert status == 200, body
    return [item["id"] for item in body["items"]]


async def enqueue(emu: RunningEmulator, data: Any, **extra: Any) -> dict[str, Any]:
    status, body = await call(emu, "POST", f"{QUEUE}/items", {"data": data, **extra})
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def read(emu: RunningEmulator, **params: str) -> dict[str, Any]:
    status, body = await call(emu, "GET", f"{QUEUE}/items:read", **params)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def assert_400(status: int, body: Any, fragment: str) -> None:
    assert status == 400, body
    assert body["code"] == "INVALID_ARGUMENT"
    assert fragment in body["message"], body["message"]


# ----------------------------------------------------------------- sorted maps


async def test_create_and_get_item_wire_shape(emulator: RunningEmulator) -> None:
    created = await put(emulator, "player1", {"wins": 3}, ttl="300s", numericSortKey=2.5)
    assert created == {
        "path": "cloud/v2/universes/123/memory-store/sorted-maps/scores/items/player1",
        "value": {"wins": 3},
        "etag": created["etag"],
        "expireTime": stamp(emulator, timedelta(seconds=300)),
        "id": "player1",
        "numericSortKey": 2.5,
    }
    status, got = await call(emulator, "GET", f"{MAP}/player1")
    assert status == 200
    assert got == created


async def test_defaults_sort_key_kinds_and_integral_numbers(emulator: RunningEmulator) -> None:
    plain = await put(emulator, "a", "x")
    assert plain["expireTime"] == stamp(emulator, DAYS_45)  # default TTL is the 45-day max
    assert "numericSortKey" not in plain and "stringSortKey" not in plain
    assert (await put(emulator, "b", stringSortKey="gold"))["stringSortKey"] == "gold"
    assert (await put(emulator, "c", numericSortKey=7.0))["numericSortKey"] == 7


async def test_create_existing_item_is_409_aborted(emulator: RunningEmulator) -> None:
    """409 as clients expect, with a code from the errors guide's v2 table (no ALREADY_EXISTS)."""
    await put(emulator, "dup")
    status, body = await call(emulator, "POST", MAP, {"value": 2}, id="dup")
    assert status == 409
    assert body["code"] == "ABORTED" and "already exists" in body["message"]
    status, got = await call(emulator, "GET", f"{MAP}/dup")
    assert got["value"] == 1


async def test_create_accepts_id_and_capitalised_fields_in_body(emulator: RunningEmulator) -> None:
    status, body = await call(
        emulator, "POST", MAP, {"Id": "cap", "Value": [1, 2], "Ttl": "60s", "NumericSortKey": 4}
    )
    assert status == 200, body
    assert (body["id"], body["value"], body["numericSortKey"]) == ("cap", [1, 2], 4)
    assert body["expireTime"] == stamp(emulator, timedelta(seconds=60))


async def test_create_validation_errors(emulator: RunningEmulator) -> None:
    cases: list[tuple[dict[str, Any], dict[str, str], str]] = [
        ({"value": 1}, {}, "item id is required"),
        ({"value": 1}, {"id": "x" * 128}, "1-127"),
        ({}, {"id": "k"}, "'value'"),
        ({"value": "x" * (32 * 1024)}, {"id": "k"}, "ItemValueSizeTooLarge"),
        ({"value": 1, "ttl": "0s"}, {"id": "k"}, "InvalidExpirationTime"),
        ({"value": 1, "ttl": "3888001s"}, {"id": "k"}, "InvalidExpirationTime"),
        ({"value": 1, "ttl": "30"}, {"id": "k"}, "duration"),
        ({"value": 1, "ttl": 30}, {"id": "k"}, "duration string"),
        ({"value": 1, "stringSortKey": "a", "numericSortKey": 1}, {"id": "k"}, "not both"),
        ({"value": 1, "stringSortKey": "s" * 129}, {"id": "k"}, "limit is 128"),
        ({"value": 1, "numericSortKey": "5"}, {"id": "k"}, "numericSortKey must be a number"),
        ({"value": 1, "numericSortKey": True}, {"id": "k"}, "numericSortKey must be a number"),
    ]
    for body, params, fragment in cases:
        status, answer = await call(emulator, "POST", MAP, body, **params)
        assert_400(status, answer, fragment)
    status, answer = await call(emulator, "POST", MAP, raw="{not json", id="k")
    assert_400(status, answer, "not valid JSON")
    status, answer = await call(emulator, "POST", MAP, [1], id="k")
    assert_400(status, answer, "JSON object")
    assert await list_ids(emulator) == []


async def test_limits_at_the_boundary_are_accepted(emulator: RunningEmulator) -> None:
    # 32 KB of JSON: a string of 32,766 characters plus its two quotes.
    await put(emulator, "i" * 127, "v" * (32 * 1024 - 2), ttl="3888000s", stringSortKey="s" * 128)
    status, got = await call(emulator, "GET", f"{MAP}/{'i' * 127}")
    assert status == 200 and len(got["value"]) == 32 * 1024 - 2


async def test_get_missing_item_is_404(emulator: RunningEmulator) -> None:
    status, body = await call(emulator, "GET", f"{MAP}/nobody")
    assert status == 404
    assert body["code"] == "NOT_FOUND" and "nobody" in body["message"]


async def test_special_character_ids_round_trip(emulator: RunningEmulator) -> None:
    for item_id in ("a/b", "with space", "ünï:cødé?&#"):
        await put(emulator, item_id)
        status, got = await call(emulator, "GET", f"{MAP}/{quote(item_id, safe='')}")
        assert status == 200 and got["id"] == item_id


async def test_update_replaces_item_and_changes_etag(emulator: RunningEmulator) -> None:
    first = await put(emulator, "p", {"v": 1}, stringSortKey="b", ttl="100s")
    emulator.clock.advance(5)
    status, updated = await call(emulator, "PATCH", f"{MAP}/p", {"value": {"v": 2}, "ttl": "20s"})
    assert status == 200, updated
    assert updated["value"] == {"v": 2}
    assert "stringSortKey" not in updated  # a write replaces the sort key, as SetAsync does
    assert updated["expireTime"] == stamp(emulator, timedelta(seconds=20))
    assert updated["etag"] != first["etag"]
    status, again = await call(emulator, "PATCH", f"{MAP}/p", {"value": {"v": 2}})
    assert again["etag"] not in (first["etag"], updated["etag"])


async def test_update_missing_needs_allow_missing(emulator: RunningEmulator) -> None:
    status, body = await call(emulator, "PATCH", f"{MAP}/new", {"value": 1})
    assert status == 404 and "allowMissing" in body["message"]
    status, body = await call(emulator, "PATCH", f"{MAP}/new", {"value": 1}, allowMissing="maybe")
    assert_400(status, body, "allowMissing")
    status, body = await call(emulator, "PATCH", f"{MAP}/new", {"value": 1}, allowMissing="true")
    assert status == 200 and body["id"] == "new"
    status, body = await call(
        emulator, "PATCH", f"{MAP}/{'x' * 128}", {"value": 1}, allowMissing="true"
    )
    assert_400(status, body, "1-127")


async def test_update_honours_etag(emulator: RunningEmulator) -> None:
    item = await put(emulator, "e", 1)
    status, body = await call(emulator, "PATCH", f"{MAP}/e", {"value": 2, "etag": "stale"})
    assert status == 409
    assert body["code"] == "ABORTED" and item["etag"] in body["message"]
    status, body = await call(emulator, "PATCH", f"{MAP}/e", {"value": 3, "etag": item["etag"]})
    assert status == 200 and body["value"] == 3
    status, body = await call(emulator, "PATCH", f"{MAP}/e", {"value": 4, "etag": item["etag"]})
    assert status == 409  # the etag changed with the last write
    status, body = await call(
        emulator, "PATCH", f"{MAP}/ghost", {"value": 1, "etag": "1"}, allowMissing="true"
    )
    assert status == 409 and "does not exist" in body["message"]
    status, body = await call(emulator, "PATCH", f"{MAP}/e", {"value": 1, "etag": 5})
    assert_400(status, body, "etag must be a string")


async def test_delete_item_is_200_and_idempotent(emulator: RunningEmulator) -> None:
    await put(emulator, "gone")
    async with emulator.http.delete(emulator.url(f"{MAP}/gone")) as resp:
        assert resp.status == 200
        assert await resp.read() == b""
    assert (await call(emulator, "GET", f"{MAP}/gone"))[0] == 404
    assert (await call(emulator, "DELETE", f"{MAP}/gone"))[0] == 200


async def test_sorted_item_ttl_expiry_follows_the_clock(emulator: RunningEmulator) -> None:
    await put(emulator, "short", ttl="10s")
    await put(emulator, "long", ttl="11s")
    emulator.clock.advance(9.999)
    assert (await call(emulator, "GET", f"{MAP}/short"))[0] == 200
    emulator.clock.advance(0.001)
    assert (await call(emulator, "GET", f"{MAP}/short"))[0] == 404
    assert await list_ids(emulator) == ["long"]
    status, _ = await call(emulator, "PATCH", f"{MAP}/short", {"value": 1})
    assert status == 404  # an expired item is missing for updates too
    await put(emulator, "short", 2)  # and its id is free to create again


async def test_expire_time_is_whole_seconds_and_a_fractional_ttl_rounds_up(
    emulator: RunningEmulator,
) -> None:
    """Open Cloud reports expireTime in whole seconds; the item lives at least its TTL."""
    item = await put(emulator, "f", ttl="1.5s")
    assert item["expireTime"] == stamp(emulator, timedelta(seconds=2))
    emulator.clock.advance(1.9)
    got = await call(emulator, "GET", f"{MAP}/f")
    assert got[0] == 200 and got[1]["expireTime"] == item["expireTime"]
    emulator.clock.advance(0.1)
    assert (await call(emulator, "GET", f"{MAP}/f"))[0] == 404
    emulator.clock.advance(0.25)  # not on a whole second now
    queued = await enqueue(emulator, "q", ttl="10s")
    assert queued["expireTime"] == stamp(emulator, timedelta(seconds=10.75))


async def test_order_follows_roblox_sorted_map_rules(emulator: RunningEmulator) -> None:
    # The example from Roblox's sorted-map guide, inserted out of order.
    await put(emulator, "player7")
    await put(emulator, "player6", stringSortKey="someString")
    await put(emulator, "player3", numericSortKey=3.14)
    await put(emulator, "player5", numericSortKey=1)
    await put(emulator, "player0")
    await put(emulator, "player4", numericSortKey=1)
    await put(emulator, "player2", numericSortKey=0)
    await put(emulator, "player1", numericSortKey=-1)
    expected = [f"player{n}" for n in (1, 2, 4, 5, 3, 6, 0, 7)]
    assert await list_ids(emulator) == expected
    assert await list_ids(emulator, orderBy="id") == expected
    assert await list_ids(emulator, orderBy="id desc") == expected[::-1]
    assert await list_ids(emulator, orderBy="desc") == expected[::-1]
    status, body = await call(emulator, "GET", MAP, orderBy="value desc")
    assert_400(status, body, "orderBy")


async def test_string_order_is_by_code_point(emulator: RunningEmulator) -> None:
    for item_id in ("b", "B", "a", "é", "aa"):
        await put(emulator, item_id)
    assert await list_ids(emulator) == ["B", "a", "aa", "b", "é"]


async def test_list_pages_with_tokens(emulator: RunningEmulator) -> None:
    ids = [f"k{n:02d}" for n in range(7)]
    for item_id in reversed(ids):
        await put(emulator, item_id)
    status, first = await call(emulator, "GET", MAP)
    assert status == 200
    assert [i["id"] for i in first["items"]] == ["k00"]  # the default page size is 1
    assert first["items"][0]["path"].startswith("cloud/v2/universes/123/")
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        params = {"maxPageSize": "3", "filter": 'id > "k00"'}
        if token:
            params["pageToken"] = token
        status, page = await call(emulator, "GET", MAP, **params)
        assert status == 200, page
        pages += 1
        seen += [i["id"] for i in page["items"]]
        token = page.get("nextPageToken")
        if not token:
            break
    assert seen == ids[1:] and pages == 2
    status, desc = await call(emulator, "GET", MAP, maxPageSize="4", orderBy="id desc")
    status, rest = await call(
        emulator, "GET", MAP, maxPageSize="4", orderBy="id desc", pageToken=desc["nextPageToken"]
    )
    assert [i["id"] for i in desc["items"] + rest["items"]] == ids[::-1]
    assert "nextPageToken" not in rest


async def test_page_token_is_bound_to_the_query(emulator: RunningEmulator) -> None:
    for item_id in ("a", "b", "c"):
        await put(emulator, item_id)
    status, page = await call(emulator, "GET", MAP, filter='id > "a"')
    token = page["nextPageToken"]
    status, body = await call(emulator, "GET", MAP, filter='id > "b"', pageToken=token)
    assert_400(status, body, "does not match")
    status, body = await call(
        emulator, "GET", MAP, filter='id > "a"', orderBy="id desc", pageToken=token
    )
    assert_400(status, body, "does not match")
    status, body = await call(emulator, "GET", MAP, pageToken="garbage!")
    assert_400(status, body, "page token")
    status, body = await call(
        emulator, "GET", MAP, filter='id > "a"', maxPageSize="5", pageToken=token
    )
    assert status == 200 and [i["id"] for i in body["items"]] == ["c"]
    other = "/cloud/v2/universes/123/memory-store/sorted-maps/other/items"
    status, body = await call(emulator, "GET", other, filter='id > "a"', pageToken=token)
    assert_400(status, body, "does not match")


async def test_page_size_is_coerced_to_100(emulator: RunningEmulator) -> None:
    for n in range(101):
        await put(emulator, f"i{n:03d}")
    status, body = await call(emulator, "GET", MAP, maxPageSize="500")
    assert status == 200 and len(body["items"]) == 100 and body["nextPageToken"]
    status, body = await call(emulator, "GET", MAP, maxPageSize="-1")
    assert_400(status, body, "maxPageSize")
    status, body = await call(emulator, "GET", MAP, maxPageSize="ten")
    assert_400(status, body, "maxPageSize")


async def test_filters_on_id_and_sort_key(emulator: RunningEmulator) -> None:
    await put(emulator, "n1", numericSortKey=1)
    await put(emulator, "n5", numericSortKey=5)
    await put(emulator, "n9", numericSortKey=9.5)
    await put(emulator, "s-apple", stringSortKey="apple")
    await put(emulator, "s-pear", stringSortKey="pear")
    await put(emulator, "none")
    cases = {
        'id > "n1" && id < "s-pear"': ["n5", "n9", "none", "s-apple"],
        "sortKey > 1 && sortKey < 9.5": ["n5"],
        "sortKey > -1e3 && sortKey < 2": ["n1"],
        # Numbers sort before strings before no sort key, so these bounds span kinds.
        "sortKey > 5": ["n9", "s-apple", "s-pear", "none"],
        'sortKey < "b"': ["n1", "n5", "n9", "s-apple"],
        'sortKey > "apple"': ["s-pear", "none"],
        "sortKey > 'apple' && id < 'z'": ["s-pear", "none"],
        '"n5" < id': ["n9", "none", "s-apple", "s-pear"],
        '  id>"n1"&&id<"n9"  ': ["n5"],
        'id > "\\u006e5"': ["n9", "none", "s-apple", "s-pear"],
        "": ["n1", "n5", "n9", "s-apple", "s-pear", "none"],
    }
    for expression, expected in cases.items():
        status, body = await call(emulator, "GET", MAP, maxPageSize="100", filter=expression)
        assert status == 200, (expression, body)
        assert sorted(i["id"] for i in body["items"]) == sorted(expected), expression
    assert await list_ids(emulator, filter="sortKey > 5") == ["n9", "s-apple", "s-pear", "none"]


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ('id >= "a"', "Unsupported filter syntax"),
        ('id <= "a"', "Unsupported filter syntax"),
        ('id == "a"', "Unsupported filter syntax"),
        ('id > "a" || id < "b"', "Unsupported filter syntax"),
        ('!(id > "a")', "Unsupported filter syntax"),
        ('(id > "a")', "Unsupported filter syntax"),
        ('id.startsWith("a")', "Unsupported filter syntax"),
        ("value > 1", "Unknown filter field 'value'"),
        ("id > 5", "quoted string"),
        ('id > "a" &&', "Incomplete"),
        ("id", "Incomplete"),
        ('id > "a" id < "b"', "Expected &&"),
        ("id > sortKey", "exactly one field"),
        ('"a" < "b"', "exactly one field"),
        ('id > "a', "Unsupported filter syntax"),
        ('id > "\\q"', "Unsupported escape"),
        ("sortKey > 5u", "Unsupported filter syntax"),
        ("sortKey > 1e999", "finite"),
    ],
)
async def test_unsupported_filters_are_400(
    emulator: RunningEmulator, expression: str, fragment: str
) -> None:
    status, body = await call(emulator, "GET", MAP, filter=expression)
    assert_400(status, body, fragment)


async def test_maps_and_universes_are_separate(emulator: RunningEmulator) -> None:
    await put(emulator, "shared", 1)
    other_map = f"{U}/memory-store/sorted-maps/other/items"
    assert (await call(emulator, "GET", f"{other_map}/shared"))[0] == 404
    other_universe = "/cloud/v2/universes/456/memory-store/sorted-maps/scores/items"
    assert (await call(emulator, "GET", f"{other_universe}/shared"))[0] == 404
    status, body = await call(
        emulator, "GET", "/cloud/v2/universes/abc/memory-store/sorted-maps/s/items"
    )
    assert_400(status, body, "universe")


# ---------------------------------------------------------------------- queues


async def test_add_queue_item_wire_shape(emulator: RunningEmulator) -> None:
    item = await enqueue(emulator, {"player": 1}, ttl="60s", priority=2.5)
    assert item == {
        "path": f"cloud/v2/universes/123/memory-store/queues/lobby/items/{item['id']}",
        "data": {"player": 1},
        "priority": 2.5,
        "expireTime": stamp(emulator, timedelta(seconds=60)),
        "id": item["id"],
    }
    plain = await enqueue(emulator, "x")
    assert plain["priority"] == 0
    assert plain["expireTime"] == stamp(emulator, DAYS_45)
    assert plain["id"] != item["id"]


async def test_add_queue_item_validation(emulator: RunningEmulator) -> None:
    cases: list[tuple[Any, str]] = [
        ({}, "'data'"),
        ({"data": "x" * (32 * 1024 - 1)}, "ItemValueSizeTooLarge"),
        ({"data": 1, "priority": "high"}, "priority must be a number"),
        ({"data": 1, "ttl": "3888001s"}, "InvalidExpirationTime"),
        ({"data": 1, "ttl": "-1s"}, "InvalidExpirationTime"),
    ]
    for body, fragment in cases:
        status, answer = await call(emulator, "POST", f"{QUEUE}/items", body)
        assert_400(status, answer, fragment)
    assert (await read(emulator, count="10"))["items"] == []


async def test_read_orders_by_priority_then_fifo(emulator: RunningEmulator) -> None:
    for data, priority in (("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1), ("f", 10)):
        await enqueue(emulator, data, priority=priority)
    body = await read(emulator, count="6")
    assert [i["data"] for i in body["items"]] == ["f", "b", "d", "a", "c", "e"]
    assert isinstance(body["readId"], str) and body["readId"]


async def test_read_defaults_to_one_item(emulator: RunningEmulator) -> None:
    await enqueue(emulator, "first")
    await enqueue(emulator, "second")
    body = await read(emulator)
    assert [i["data"] for i in body["items"]] == ["first"]


async def test_read_items_are_invisible_during_the_window(emulator: RunningEmulator) -> None:
    for data in ("a", "b", "c"):
        await enqueue(emulator, data)
    first = await read(emulator, count="2", invisibilityWindow="10s")
    assert [i["data"] for i in first["items"]] == ["a", "b"]
    second = await read(emulator, count="5")
    assert [i["data"] for i in second["items"]] == ["c"]
    emulator.clock.advance(9.9)
    assert (await read(emulator, count="5"))["items"] == []
    emulator.clock.advance(0.1)  # the 10 s window of the first read ends; c is still held
    again = await read(emulator, count="5", invisibilityWindow="60s")
    assert [i["data"] for i in again["items"]] == ["a", "b"]


async def test_discard_removes_the_read_items(emulator: RunningEmulator) -> None:
    for data in ("a", "b", "c"):
        await enqueue(emulator, data)
    held = await read(emulator, count="2", invisibilityWindow="5s")
    async with emulator.http.post(
        emulator.url(f"{QUEUE}/items:discard"), json={"readId": held["readId"]}
    ) as resp:
        # The spec gives a discard's 200 no content.
        assert (resp.status, await resp.read()) == (200, b"")
    emulator.clock.advance(5)
    assert [i["data"] for i in (await read(emulator, count="5"))["items"]] == ["c"]


async def test_discard_after_the_window_removes_nothing(emulator: RunningEmulator) -> None:
    await enqueue(emulator, "a")
    held = await read(emulator, invisibilityWindow="3s")
    emulator.clock.advance(3)
    status, _ = await call(emulator, "POST", f"{QUEUE}/items:discard", {"readId": held["readId"]})
    assert status == 200
    assert [i["data"] for i in (await read(emulator))["items"]] == ["a"]


async def test_discard_accepts_read_id_in_query_and_rejects_missing(
    emulator: RunningEmulator,
) -> None:
    await enqueue(emulator, "a")
    held = await read(emulator)
    status, body = await call(emulator, "POST", f"{QUEUE}/items:discard", readId=held["readId"])
    assert (status, body) == (200, None)
    emulator.clock.advance(30)
    assert (await read(emulator))["items"] == []
    status, body = await call(emulator, "POST", f"{QUEUE}/items:discard", {})
    assert_400(status, body, "readId is required")
    status, body = await call(emulator, "POST", f"{QUEUE}/items:discard", {"readId": "unknown"})
    assert (status, body) == (200, None)


async def test_all_or_nothing_reads_nothing_when_short(emulator: RunningEmulator) -> None:
    await enqueue(emulator, "a")
    await enqueue(emulator, "b")
    status, body = await call(
        emulator, "GET", f"{QUEUE}/items:read", count="3", allOrNothing="true"
    )
    assert status == 404
    assert body["code"] == "NOT_FOUND" and "allOrNothing" in body["message"]
    full = await read(emulator, count="2", allOrNothing="true")
    assert [i["data"] for i in full["items"]] == ["a", "b"]  # the refused read hid nothing


async def test_empty_read_returns_no_items(emulator: RunningEmulator) -> None:
    body = await read(emulator, count="5")
    assert body["items"] == [] and isinstance(body["readId"], str)


async def test_read_count_is_coerced_to_200(emulator: RunningEmulator) -> None:
    for n in range(201):
        await enqueue(emulator, n)
    body = await read(emulator, count="500")
    assert len(body["items"]) == 200 and body["items"][-1]["data"] == 199


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"invisibilityWindow": "0s"}, "greater than 0"),
        ({"invisibilityWindow": "-5s"}, "greater than 0"),
        ({"invisibilityWindow": "30"}, "ending with s"),
        ({"invisibilityWindow": "soon"}, "ending with s"),
        ({"count": "many"}, "count"),
        ({"count": "-1"}, "count"),
        ({"allOrNothing": "maybe"}, "allOrNothing"),
    ],
)
async def test_read_parameter_errors(
    emulator: RunningEmulator, params: dict[str, str], fragment: str
) -> None:
    await enqueue(emulator, "a")
    status, body = await call(emulator, "GET", f"{QUEUE}/items:read", **params)
    assert_400(status, body, fragment)
    assert len((await read(emulator))["items"]) == 1  # nothing was hidden by the bad call


async def test_queue_item_ttl_expiry(emulator: RunningEmulator) -> None:
    await enqueue(emulator, "brief", ttl="5s", priority=1)
    await enqueue(emulator, "lasting", ttl="50s")
    emulator.clock.advance(5)
    body = await read(emulator, count="5")
    assert [i["data"] for i in body["items"]] == ["lasting"]


async def test_queues_are_separate(emulator: RunningEmulator) -> None:
    await enqueue(emulator, "mine")
    status, body = await call(emulator, "GET", f"{U}/memory-store/queues/other/items:read")
    assert status == 200 and body["items"] == []


# ----------------------------------------------------------------------- flush


async def test_flush_removes_universe_data_and_polls_done(emulator: RunningEmulator) -> None:
    await put(emulator, "m1")
    await enqueue(emulator, "q1")
    other = "/cloud/v2/universes/456/memory-store/sorted-maps/scores/items"
    assert (await call(emulator, "POST", other, {"value": 1}, id="keep"))[0] == 200
    status, operation = await call(emulator, "POST", FLUSH)
    assert status == 200, operation
    prefix = "cloud/v2/universes/123/memory-store/operations/"
    assert operation["path"].startswith(prefix) and operation["done"] is False
    status, polled = await call(emulator, "GET", "/" + operation["path"])
    # A finished operation carries `response` (or `error`): Operation.done in the spec.
    assert (status, polled) == (200, {"path": operation["path"], "done": True, "response": {}})
    assert "response" not in operation and "error" not in operation
    assert (await call(emulator, "GET", f"{MAP}/m1"))[0] == 404
    assert await list_ids(emulator) == []
    assert (await read(emulator, count="5"))["items"] == []
    assert (await call(emulator, "GET", f"{other}/keep"))[0] == 200
    await put(emulator, "m1")  # the flushed universe works normally afterwards


async def test_flush_test_scope_leaves_live_data(emulator: RunningEmulator) -> None:
    await put(emulator, "live")
    status, operation = await call(emulator, "POST", FLUSH, scope="TEST")
    assert status == 200
    status, polled = await call(emulator, "GET", "/" + operation["path"], scope="TEST")
    assert polled["done"] is True
    assert (await call(emulator, "GET", f"{MAP}/live"))[0] == 200
    status, body = await call(emulator, "POST", FLUSH, scope="STAGING")
    assert_400(status, body, "LIVE or TEST")
    assert (await call(emulator, "GET", f"{MAP}/live"))[0] == 200


async def test_unknown_operation_is_404(emulator: RunningEmulator) -> None:
    status, body = await call(emulator, "GET", f"{U}/memory-store/operations/nope")
    assert status == 404 and body["code"] == "NOT_FOUND"
    _, operation = await call(emulator, "POST", FLUSH)
    operation_id = operation["path"].rsplit("/", 1)[1]
    status, _ = await call(
        emulator, "GET", f"/cloud/v2/universes/456/memory-store/operations/{operation_id}"
    )
    assert status == 404


# ------------------------------------------------------------ auth and limits


async def test_missing_key_is_401(emulator: RunningEmulator) -> None:
    async with aiohttp.ClientSession() as bare:
        for method, path in (("GET", MAP), ("POST", f"{QUEUE}/items"), ("POST", FLUSH)):
            async with bare.request(method, emulator.url(path), json={"data": 1}) as resp:
                assert resp.status == 401
                assert await resp.json() == {"errors": [{"code": 0, "message": "Invalid API Key"}]}


@pytest.fixture
async def keyed(clock: ManualClock) -> AsyncIterator[str]:
    config = EmulatorConfig(
        clock=clock,
        limits=LimitsConfig(mode="off"),
        keys=[
            KeyGrant(key="map-reader", universes=["123"], scopes=["memory-store.sorted-map:read"]),
            KeyGrant(
                key="map-writer",
                universes=["123"],
                scopes=["memory-store.sorted-map:read", "memory-store.sorted-map:write"],
            ),
            KeyGrant(key="producer", universes=["123"], scopes=["memory-store.queue:add"]),
            KeyGrant(
                key="consumer",
                universes=["123"],
                scopes=["memory-store.queue:dequeue", "memory-store.queue:discard"],
            ),
            KeyGrant(key="flusher", universes=["123"], scopes=["universe.memory-store:flush"]),
            KeyGrant(
                key="elsewhere",
                universes=["999"],
                scopes=["memory-store.sorted-map:read", "memory-store:flush"],
            ),
        ],
    )
    runner, base_url, _ = await start_emulator(config)
    yield base_url
    await runner.cleanup()


async def as_key(base_url: str, key: str, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers={"x-api-key": key}) as session,
        session.request(method, base_url + path, **kwargs) as resp,
    ):
        text = await resp.text()
        return resp.status, (json.loads(text) if text else None)


async def test_scopes_are_enforced(keyed: str) -> None:
    write = {"params": {"id": "a"}, "json": {"value": 1}}
    status, body = await as_key(keyed, "map-reader", "POST", MAP, **write)
    assert status == 403
    assert (
        body["code"] == "PERMISSION_DENIED" and "memory-store.sorted-map:write" in body["message"]
    )
    assert (await as_key(keyed, "map-writer", "POST", MAP, **write))[0] == 200
    assert (await as_key(keyed, "map-reader", "GET", f"{MAP}/a"))[0] == 200
    assert (await as_key(keyed, "map-reader", "DELETE", f"{MAP}/a"))[0] == 403
    assert (await as_key(keyed, "map-reader", "PATCH", f"{MAP}/a", json={"value": 2}))[0] == 403
    assert (await as_key(keyed, "producer", "GET", MAP))[0] == 403

    assert (await as_key(keyed, "producer", "POST", f"{QUEUE}/items", json={"data": 1}))[0] == 200
    assert (await as_key(keyed, "producer", "GET", f"{QUEUE}/items:read"))[0] == 403
    assert (await as_key(keyed, "consumer", "POST", f"{QUEUE}/items", json={"data": 1}))[0] == 403
    status, held = await as_key(keyed, "consumer", "GET", f"{QUEUE}/items:read")
    assert status == 200 and len(held["items"]) == 1
    discard = {"json": {"readId": held["readId"]}}
    assert (await as_key(keyed, "producer", "POST", f"{QUEUE}/items:discard", **discard))[0] == 403
    assert (await as_key(keyed, "consumer", "POST", f"{QUEUE}/items:discard", **discard))[0] == 200

    assert (await as_key(keyed, "map-writer", "POST", FLUSH))[0] == 403
    status, operation = await as_key(keyed, "flusher", "POST", FLUSH)  # `universe.` alias
    assert status == 200
    assert (await as_key(keyed, "flusher", "GET", "/" + operation["path"]))[0] == 200
    assert (await as_key(keyed, "map-reader", "GET", "/" + operation["path"]))[0] == 403
    status, body = await as_key(keyed, "elsewhere", "GET", MAP)
    assert status == 403 and "universe 123" in body["message"]
    assert (await as_key(keyed, "nobody", "GET", MAP))[0] == 401


@asynccontextmanager
async def limited(clock: ManualClock, **limits: Any) -> AsyncIterator[RunningEmulator]:
    """An emulator enforcing the documented limits, optionally with overrides."""
    config = EmulatorConfig(clock=clock, limits=LimitsConfig(mode="documented", **limits))
    runner, base_url, ctx = await start_emulator(config)
    try:
        async with aiohttp.ClientSession(headers={"x-api-key": "k"}) as http:
            yield RunningEmulator(base_url, ctx, clock, http)
    finally:
        await runner.cleanup()


async def test_universe_memory_quota(clock: ManualClock) -> None:
    async with limited(clock, ccu=0) as emulator:
        await _universe_memory_quota(emulator)


async def _universe_memory_quota(emulator: RunningEmulator) -> None:
    # 64 KB with no concurrent users: two ~31 KB items fit, a third does not.
    big = "x" * (31 * 1024)
    await put(emulator, "one", big)
    await put(emulator, "two", big)
    status, body = await call(emulator, "POST", MAP, {"value": big}, id="three")
    assert status == 429
    assert body["code"] == "RESOURCE_EXHAUSTED" and "TotalMemoryOverLimit" in body["message"]
    status, body = await call(emulator, "POST", f"{QUEUE}/items", {"data": big})
    assert status == 429 and "TotalMemoryOverLimit" in body["message"]
    # Writes that shrink memory still succeed, and freed memory can be reused.
    assert (await call(emulator, "PATCH", f"{MAP}/two", {"value": "small"}))[0] == 200
    await put(emulator, "three", big)


async def test_expired_items_free_quota_in_untouched_structures(clock: ManualClock) -> None:
    async with limited(clock, ccu=0) as emulator:
        big = "x" * (31 * 1024)
        await put(emulator, "brief", big, ttl="5s")
        await enqueue(emulator, big, ttl="5s")
        status, body = await call(emulator, "POST", MAP, {"value": big}, id="later")
        assert status == 429
        emulator.clock.advance(5)
        # Neither structure was touched since the expiry; their memory is free anyway.
        other = f"{U}/memory-store/sorted-maps/fresh/items"
        for item_id in ("a", "b"):
            status, body = await call(emulator, "POST", other, {"value": big}, id=item_id)
            assert status == 200, body


async def test_memory_quota_grows_with_ccu(clock: ManualClock) -> None:
    async with limited(clock, ccu=10) as emulator:
        await _memory_quota_grows_with_ccu(emulator)


async def _memory_quota_grows_with_ccu(emulator: RunningEmulator) -> None:
    big = "x" * (31 * 1024)
    for n in range(2):  # 64 KB + 12 KB fits two big items and more small ones
        await put(emulator, f"big{n}", big)
    await put(emulator, "extra", "y" * (10 * 1024))
    status, body = await call(emulator, "POST", MAP, {"value": "z" * 5000}, id="over")
    assert status == 429 and "TotalMemoryOverLimit" in body["message"]


async def test_request_units_count_items_returned(clock: ManualClock) -> None:
    async with limited(clock, overrides={"memory_store": 4}) as emulator:
        await _request_units_count_items_returned(emulator)


async def _request_units_count_items_returned(emulator: RunningEmulator) -> None:
    for data in ("a", "b"):
        await enqueue(emulator, data)  # 2 units
    url = emulator.url(f"{QUEUE}/items:read")
    async with emulator.http.get(url, params={"count": "2"}) as resp:
        assert resp.status == 200  # 2 more units: the budget of 4 is now spent
        assert resp.headers["x-ratelimit-limit"] == "4, 4;w=60"
        assert resp.headers["x-ratelimit-remaining"] == "0"
    async with emulator.http.get(emulator.url(MAP)) as resp:
        assert resp.status == 429
        assert int(resp.headers["retry-after"]) > 0
        body = await resp.json()
    assert body["code"] == "RESOURCE_EXHAUSTED" and "TotalRequestsOverLimit" in body["message"]


async def test_throttled_read_hides_nothing(clock: ManualClock) -> None:
    async with limited(clock, overrides={"memory_store": 5}) as emulator:
        await _throttled_read_hides_nothing(emulator)


async def _throttled_read_hides_nothing(emulator: RunningEmulator) -> None:
    for data in ("a", "b", "c"):
        await enqueue(emulator, data)  # 3 units
    status, body = await call(emulator, "GET", f"{QUEUE}/items:read", count="3")
    assert status == 429  # 3 items would cost 3 units; only 2 remain
    emulator.clock.advance(60)
    status, body = await call(emulator, "GET", f"{QUEUE}/items:read", count="3")
    assert status == 200 and [i["data"] for i in body["items"]] == ["a", "b", "c"]


@pytest.mark.parametrize("ttl", ["1e3s", "1.0000000001s", " 30s", "30 s", "+30s", "infs", "0x1Es"])
async def test_durations_follow_the_types_guide(emulator: RunningEmulator, ttl: str) -> None:
    """Durations are seconds with at most nine fractional digits and the `s` suffix."""
    status, body = await call(emulator, "POST", f"{QUEUE}/items", {"data": 1, "ttl": ttl})
    assert_400(status, body, "is not a duration")
    status, body = await call(
        emulator, "GET", f"{QUEUE}/items:read", invisibilityWindow=ttl.replace("30", "3")
    )
    assert_400(status, body, "invisibilityWindow")


async def test_nanosecond_durations_are_accepted(emulator: RunningEmulator) -> None:
    item = await enqueue(emulator, "a", ttl="0.000000001s")  # rounds up to the next second
    assert item["expireTime"] == stamp(emulator, timedelta(seconds=1))
    status, _ = await call(emulator, "GET", f"{QUEUE}/items:read", invisibilityWindow="2.5s")
    assert status == 200
