"""Ordered data stores in the emulator, v1 and v2, over real loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from dsm.emulator.app import EmulatorConfig
from dsm.emulator.auth import KeyGrant
from dsm.emulator.clock import ManualClock
from dsm.emulator.ordered import OrderedStore
from dsm.emulator.throttle import LimitsConfig

from .conftest import RunningEmulator, start_emulator

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
V1 = "/ordered-data-stores/v1/universes/123/orderedDataStores/scores/scopes/global/entries"
V2 = "/cloud/v2/universes/123/ordered-data-stores/scores/scopes/global/entries"
READ = "universe.ordered-data-store.scope.entry:read"
WRITE = "universe.ordered-data-store.scope.entry:write"


async def call(
    emulator: RunningEmulator,
    method: str,
    path: str,
    *,
    params: dict[str, str] | None = None,
    body: Any = None,
    raw: str | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else None
    json_body = body if raw is None and body is not None else None
    async with emulator.http.request(
        method, emulator.url(path), params=params, json=json_body, data=data
    ) as response:
        text = await response.text()
        return response.status, (await response.json() if text else None)


def store(emulator: RunningEmulator) -> OrderedStore:
    return emulator.ctx.ordered


def seed(emulator: RunningEmulator, values: dict[str, int]) -> None:
    for entry_id, value in values.items():
        store(emulator).create("123", "scores", "global", entry_id, value)


def assert_v1_error(body: Any, code: str) -> None:
    assert set(body) == {"code", "message"}
    assert body["code"] == code
    assert body["message"]


# v1 entries -------------------------------------------------------------------


async def test_v1_create_returns_entry_with_v1_path(emulator: RunningEmulator) -> None:
    status, body = await call(emulator, "POST", V1, params={"id": "alice"}, body={"value": 42})
    assert status == 200
    assert body == {
        "path": "universes/123/orderedDataStores/scores/scopes/global/entries/alice",
        "id": "alice",
        "value": 42,
    }
    status, body = await call(emulator, "GET", V1 + "/alice")
    assert (status, body["value"]) == (200, 42)


async def test_v1_create_existing_is_400_entry_already_exists(emulator: RunningEmulator) -> None:
    await call(emulator, "POST", V1, params={"id": "alice"}, body={"value": 1})
    status, body = await call(emulator, "POST", V1, params={"id": "alice"}, body={"value": 2})
    assert status == 400
    assert body == {"code": "INVALID_ARGUMENT", "message": "Entry already exists."}
    assert store(emulator).require("123", "scores", "global", "alice").value == 1


@pytest.mark.parametrize(
    ("params", "body", "raw"),
    [
        ({}, {"value": 1}, None),  # id missing
        ({"id": ""}, {"value": 1}, None),
        ({"id": "x" * 51}, {"value": 1}, None),  # over 50 bytes
        ({"id": "a"}, {}, None),  # value missing
        ({"id": "a"}, {"value": 1.5}, None),
        ({"id": "a"}, {"value": True}, None),
        ({"id": "a"}, {"value": "ten"}, None),
        ({"id": "a"}, {"value": INT64_MAX + 1}, None),
        ({"id": "a"}, {"value": INT64_MIN - 1}, None),
        ({"id": "a"}, {"value": 1e19}, None),
        ({"id": "a"}, None, "{not json"),
        ({"id": "a"}, None, '{"value": NaN}'),
        ({"id": "a"}, None, "[1]"),
        ({"id": "a"}, None, ""),
    ],
)
async def test_v1_create_rejects_bad_input(
    emulator: RunningEmulator, params: dict[str, str], body: Any, raw: str | None
) -> None:
    status, answer = await call(emulator, "POST", V1, params=params, body=body, raw=raw)
    assert status == 400
    assert_v1_error(answer, "INVALID_ARGUMENT")
    assert store(emulator).get("123", "scores", "global", "a") is None


async def test_v1_accepts_int64_bounds_and_proto_json_numbers(emulator: RunningEmulator) -> None:
    cases = {"max": INT64_MAX, "min": INT64_MIN, "text": "17", "float": 5.0, "exp": "1e3"}
    for entry_id, value in cases.items():
        status, _ = await call(emulator, "POST", V1, params={"id": entry_id}, body={"value": value})
        assert status == 200
    values = {e: store(emulator).require("123", "scores", "global", e).value for e in cases}
    assert values == {"max": INT64_MAX, "min": INT64_MIN, "text": 17, "float": 5, "exp": 1000}


async def test_v1_get_missing_is_404(emulator: RunningEmulator) -> None:
    status, body = await call(emulator, "GET", V1 + "/nobody")
    assert status == 404
    assert_v1_error(body, "NOT_FOUND")
    assert "nobody" in body["message"]


async def test_v1_update_requires_allow_missing_for_new_entries(
    emulator: RunningEmulator,
) -> None:
    status, body = await call(emulator, "PATCH", V1 + "/bob", body={"value": 7})
    assert status == 404
    assert_v1_error(body, "NOT_FOUND")
    assert store(emulator).get("123", "scores", "global", "bob") is None

    status, body = await call(
        emulator, "PATCH", V1 + "/bob", params={"allow_missing": "true"}, body={"value": 7}
    )
    assert (status, body["value"], body["id"]) == (200, 7, "bob")

    status, body = await call(emulator, "PATCH", V1 + "/bob", body={"value": 9})
    assert (status, body["value"]) == (200, 9)
    # The same value again leaves the entry as it is.
    status, body = await call(
        emulator, "PATCH", V1 + "/bob", params={"allow_missing": "True"}, body={"value": 9}
    )
    assert (status, body["value"]) == (200, 9)


async def test_v1_update_rejects_bad_flag_and_over_int64(emulator: RunningEmulator) -> None:
    seed(emulator, {"bob": 1})
    status, body = await call(
        emulator, "PATCH", V1 + "/bob", params={"allow_missing": "maybe"}, body={"value": 2}
    )
    assert status == 400
    assert "allow_missing" in body["message"]
    status, body = await call(emulator, "PATCH", V1 + "/bob", body={"value": INT64_MAX + 1})
    assert status == 400
    assert_v1_error(body, "INVALID_ARGUMENT")
    assert store(emulator).require("123", "scores", "global", "bob").value == 1


async def test_v1_delete_is_immediate_and_200_even_when_missing(
    emulator: RunningEmulator,
) -> None:
    seed(emulator, {"carol": 3})
    status, body = await call(emulator, "DELETE", V1 + "/carol")
    assert (status, body) == (200, {})  # `{}` as JSON, like every recorded Open Cloud delete
    assert (await call(emulator, "GET", V1 + "/carol"))[0] == 404
    status, body = await call(emulator, "DELETE", V1 + "/carol")
    assert (status, body) == (200, {})
    # A deleted id can be created again at once: there is no tombstone.
    status, _ = await call(emulator, "POST", V1, params={"id": "carol"}, body={"value": 1})
    assert status == 200


async def test_v1_increment(emulator: RunningEmulator) -> None:
    seed(emulator, {"dave": 10})
    status, body = await call(emulator, "POST", V1 + "/dave:increment", body={"amount": 5})
    assert status == 200
    assert body == {
        "path": "universes/123/orderedDataStores/scores/scopes/global/entries/dave",
        "id": "dave",
        "value": 15,
    }
    status, body = await call(emulator, "POST", V1 + "/dave:increment", body={"amount": -20})
    assert (status, body["value"]) == (200, -5)
    # A missing entry is created with the amount.
    status, body = await call(emulator, "POST", V1 + "/erin:increment", body={"amount": 4})
    assert (status, body["value"]) == (200, 4)


async def test_v1_increment_clamps_to_int64(emulator: RunningEmulator) -> None:
    seed(emulator, {"high": INT64_MAX - 1, "low": INT64_MIN + 1})
    status, body = await call(emulator, "POST", V1 + "/high:increment", body={"amount": 10})
    assert (status, body["value"]) == (200, INT64_MAX)
    status, body = await call(emulator, "POST", V1 + "/low:increment", body={"amount": -10})
    assert (status, body["value"]) == (200, INT64_MIN)
    assert (await call(emulator, "GET", V1 + "/high"))[1]["value"] == INT64_MAX


@pytest.mark.parametrize("amount", [INT64_MAX + 1, 1.5, "x", None])
async def test_v1_increment_rejects_bad_amount(emulator: RunningEmulator, amount: Any) -> None:
    seed(emulator, {"dave": 10})
    status, body = await call(emulator, "POST", V1 + "/dave:increment", body={"amount": amount})
    assert status == 400
    assert_v1_error(body, "INVALID_ARGUMENT")
    assert store(emulator).require("123", "scores", "global", "dave").value == 10


async def test_v1_ids_with_colons_and_unknown_verbs(emulator: RunningEmulator) -> None:
    seed(emulator, {"a:b": 1})
    status, body = await call(emulator, "GET", V1 + "/a:b")
    assert (status, body["id"]) == (200, "a:b")
    status, body = await call(emulator, "POST", V1 + "/a:b:increment", body={"amount": 1})
    assert (status, body["value"]) == (200, 2)
    status, body = await call(emulator, "POST", V1 + "/a:b:double", body={"amount": 1})
    assert status == 404
    assert body["code"] == "NOT_FOUND"


async def test_v1_accepts_lowercase_datastores_segment(emulator: RunningEmulator) -> None:
    path = V1.replace("orderedDataStores", "orderedDatastores")
    status, body = await call(emulator, "POST", path, params={"id": "x"}, body={"value": 3})
    assert status == 200
    assert body["path"].startswith("universes/123/orderedDataStores/")


async def test_v1_rejects_bad_universe_and_long_names(emulator: RunningEmulator) -> None:
    status, body = await call(emulator, "GET", V1.replace("/123/", "/abc/"))
    assert status == 400
    assert_v1_error(body, "INVALID_ARGUMENT")
    status, body = await call(emulator, "GET", V1.replace("/scores/", "/" + "s" * 51 + "/"))
    assert status == 400
    status, body = await call(emulator, "GET", V1.replace("/global/", "/" + "g" * 51 + "/"))
    assert status == 400


# v1 listing -------------------------------------------------------------------


async def test_v1_list_orders_by_value_with_id_tie_break(emulator: RunningEmulator) -> None:
    seed(emulator, {"b": 5, "a": 5, "c": 1, "d": 9, "e": -3})
    status, body = await call(emulator, "GET", V1)
    assert status == 200
    assert [e["id"] for e in body["entries"]] == ["e", "c", "a", "b", "d"]
    assert "nextPageToken" not in body
    assert body["entries"][0] == {
        "path": "universes/123/orderedDataStores/scores/scopes/global/entries/e",
        "id": "e",
        "value": -3,
    }
    status, body = await call(emulator, "GET", V1, params={"order_by": "desc"})
    assert [e["id"] for e in body["entries"]] == ["d", "a", "b", "c", "e"]


async def test_v1_list_empty_scope(emulator: RunningEmulator) -> None:
    status, body = await call(emulator, "GET", V1)
    assert (status, body) == (200, {"entries": []})


async def test_v1_list_is_per_store_and_scope(emulator: RunningEmulator) -> None:
    seed(emulator, {"here": 1})
    store(emulator).create("123", "scores", "other", "there", 2)
    store(emulator).create("123", "coins", "global", "elsewhere", 3)
    store(emulator).create("456", "scores", "global", "far", 4)
    body = (await call(emulator, "GET", V1))[1]
    assert [e["id"] for e in body["entries"]] == ["here"]


async def test_v1_list_pages_across_pages(emulator: RunningEmulator) -> None:
    values = {f"p{i:02d}": i % 4 for i in range(23)}
    seed(emulator, values)
    expected = sorted(values, key=lambda k: (-values[k], k))
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        params = {"max_page_size": "5", "order_by": "desc"}
        if token:
            params["page_token"] = token
        status, body = await call(emulator, "GET", V1, params=params)
        assert status == 200
        pages += 1
        assert len(body["entries"]) <= 5
        seen += [e["id"] for e in body["entries"]]
        token = body.get("nextPageToken")
        if not token:
            break
    assert seen == expected
    assert pages == 5


async def test_v1_list_page_size_default_and_coercion(emulator: RunningEmulator) -> None:
    seed(emulator, {f"k{i:03d}": i for i in range(120)})
    body = (await call(emulator, "GET", V1))[1]
    assert len(body["entries"]) == 10
    assert "nextPageToken" in body
    body = (await call(emulator, "GET", V1, params={"max_page_size": "1000"}))[1]
    assert len(body["entries"]) == 100
    status, body = await call(emulator, "GET", V1, params={"max_page_size": "-1"})
    assert status == 400
    status, body = await call(emulator, "GET", V1, params={"max_page_size": "ten"})
    assert status == 400


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        ("entry >= 10", ["j10", "j20", "j50", "j60"]),
        ("entry <= 10", ["jneg", "j5", "j10"]),
        ("entry >= 10 && entry <= 50", ["j10", "j20", "j50"]),
        ("entry <= 50 && entry >= 10", ["j10", "j20", "j50"]),
        ("entry >= -7 && entry <= 5", ["jneg", "j5"]),
        ("entry >= 51 && entry <= 50", []),
    ],
)
async def test_v1_list_filters(
    emulator: RunningEmulator, filter_text: str, expected: list[str]
) -> None:
    seed(emulator, {"j5": 5, "j10": 10, "j20": 20, "j50": 50, "j60": 60, "jneg": -7})
    status, body = await call(emulator, "GET", V1, params={"filter": filter_text})
    assert status == 200
    assert [e["id"] for e in body["entries"]] == expected


BAD_FILTERS = [
    "entry<=10",
    "entry  <= 10",
    "entry <=  10",
    " entry <= 10",
    "entry <= 10 ",
    "10 <= entry",
    "Entry <= 10",
    "ENTRY <= 10",
    "entry < 10",
    "entry == 10",
    "entry <= ten",
    "entry <= 1.5",
    "entry <= 10 && entry <= 50",
    "entry >= 10 && entry >= 50",
    "entry >= 10 &&  entry <= 50",
    "entry >= 10 & entry <= 50",
    "entry >= 10 || entry <= 50",
    "entry >= 1 && entry <= 5 && entry >= 0",
    "value <= 10",
    f"entry <= {INT64_MAX + 1}",
]


@pytest.mark.parametrize("filter_text", BAD_FILTERS)
async def test_v1_list_rejects_bad_filters(emulator: RunningEmulator, filter_text: str) -> None:
    status, body = await call(emulator, "GET", V1, params={"filter": filter_text})
    assert status == 400
    assert_v1_error(body, "INVALID_ARGUMENT")
    assert "filter" in body["message"]


async def test_v1_list_rejects_bad_order_by(emulator: RunningEmulator) -> None:
    status, body = await call(emulator, "GET", V1, params={"order_by": "DESC"})
    assert status == 400
    assert "order_by" in body["message"]


async def test_v1_page_tokens_are_bound_to_the_query(emulator: RunningEmulator) -> None:
    seed(emulator, {f"t{i}": i for i in range(6)})
    body = (await call(emulator, "GET", V1, params={"max_page_size": "2"}))[1]
    token = body["nextPageToken"]

    # Changing only the page size is allowed.
    status, body = await call(
        emulator, "GET", V1, params={"page_token": token, "max_page_size": "3"}
    )
    assert (status, [e["id"] for e in body["entries"]]) == (200, ["t2", "t3", "t4"])

    for changed in ({"order_by": "desc"}, {"filter": "entry >= 0"}):
        status, body = await call(emulator, "GET", V1, params={"page_token": token, **changed})
        assert status == 400
        assert_v1_error(body, "INVALID_ARGUMENT")
    other_store = V1.replace("/scores/", "/coins/")
    status, _ = await call(emulator, "GET", other_store, params={"page_token": token})
    assert status == 400
    status, _ = await call(emulator, "GET", V1, params={"page_token": "not-a-token"})
    assert status == 400


async def test_v1_paging_survives_deleting_the_last_seen_entry(
    emulator: RunningEmulator,
) -> None:
    seed(emulator, {"a": 1, "b": 2, "c": 3, "d": 4})
    body = (await call(emulator, "GET", V1, params={"max_page_size": "2"}))[1]
    await call(emulator, "DELETE", V1 + "/b")
    body = (
        await call(
            emulator,
            "GET",
            V1,
            params={"max_page_size": "2", "page_token": body["nextPageToken"]},
        )
    )[1]
    assert [e["id"] for e in body["entries"]] == ["c", "d"]


# v2 -----------------------------------------------------------------------------


async def test_v2_create_get_and_resource_shape(emulator: RunningEmulator) -> None:
    status, body = await call(emulator, "POST", V2, params={"id": "alice"}, body={"value": 42})
    assert status == 200
    assert body == {
        "path": "universes/123/ordered-data-stores/scores/scopes/global/entries/alice",
        "value": 42,
        "id": "alice",
    }
    assert (await call(emulator, "GET", V2 + "/alice")) == (200, body)


@pytest.mark.parametrize(
    ("sent", "stored"), [(2.4, 2), (2.5, 3), (-2.5, -3), (-2.4, -2), (7, 7), ("8.6", 9)]
)
async def test_v2_values_round_to_nearest_integer(
    emulator: RunningEmulator, sent: Any, stored: int
) -> None:
    status, body = await call(emulator, "POST", V2, params={"id": "r"}, body={"value": sent})
    assert (status, body["value"]) == (200, stored)


async def test_v2_create_errors(emulator: RunningEmulator) -> None:
    await call(emulator, "POST", V2, params={"id": "alice"}, body={"value": 1})
    status, body = await call(emulator, "POST", V2, params={"id": "alice"}, body={"value": 2})
    assert status == 400
    assert body == {"code": "INVALID_ARGUMENT", "message": "Entry already exists."}

    status, _ = await call(emulator, "POST", V2, params={"id": "x" * 63}, body={"value": 1})
    assert status == 200
    for params, sent in (
        ({"id": "y" * 64}, {"value": 1}),
        ({}, {"value": 1}),
        ({"id": "z"}, {}),
        ({"id": "z"}, {"value": None}),
        ({"id": "z"}, {"value": [1]}),
        ({"id": "z"}, {"value": 2.0**63}),
    ):
        status, body = await call(emulator, "POST", V2, params=params, body=sent)
        assert status == 400, (params, sent)
        assert set(body) == {"code", "message"}
        assert body["code"] == "INVALID_ARGUMENT"


async def test_v2_get_missing_is_404(emulator: RunningEmulator) -> None:
    status, body = await call(emulator, "GET", V2 + "/ghost")
    assert status == 404
    assert body["code"] == "NOT_FOUND"


async def test_v2_update_with_and_without_allow_missing(emulator: RunningEmulator) -> None:
    status, body = await call(emulator, "PATCH", V2 + "/bob", body={"value": 3})
    assert status == 404
    assert body["code"] == "NOT_FOUND"
    status, body = await call(
        emulator, "PATCH", V2 + "/bob", params={"allowMissing": "true"}, body={"value": 3}
    )
    assert (status, body["value"]) == (200, 3)
    status, body = await call(emulator, "PATCH", V2 + "/bob", body={"value": 4.6})
    assert (status, body["value"]) == (200, 5)
    status, body = await call(emulator, "PATCH", V2 + "/bob", body={"other": 1})
    assert status == 400


async def test_v2_delete_is_404_when_missing(emulator: RunningEmulator) -> None:
    seed(emulator, {"carol": 1})
    async with emulator.http.delete(emulator.url(V2 + "/carol")) as resp:
        # Recorded Open Cloud responses: `{}` with a JSON content type, not an empty body.
        assert (resp.status, resp.content_type, await resp.text()) == (
            200,
            "application/json",
            "{}",
        )
    status, body = await call(emulator, "DELETE", V2 + "/carol")
    assert status == 404
    assert body["code"] == "NOT_FOUND"


async def test_v2_increment(emulator: RunningEmulator) -> None:
    seed(emulator, {"dave": 10, "top": INT64_MAX - 2})
    status, body = await call(emulator, "POST", V2 + "/dave:increment", body={"amount": 2})
    assert (status, body["value"], body["id"]) == (200, 12, "dave")
    status, body = await call(emulator, "POST", V2 + "/new:increment", body={"amount": -4})
    assert (status, body["value"]) == (200, -4)
    status, body = await call(emulator, "POST", V2 + "/top:increment", body={"amount": 100})
    assert (status, body["value"]) == (200, INT64_MAX)
    for bad in ({"amount": 1.5}, {}, {"amount": "one"}, {"amount": INT64_MAX + 1}):
        status, body = await call(emulator, "POST", V2 + "/dave:increment", body=bad)
        assert status == 400, bad
        assert body["code"] == "INVALID_ARGUMENT"
    assert store(emulator).require("123", "scores", "global", "dave").value == 12
    status, _ = await call(emulator, "POST", V2 + "/dave:decrement", body={"amount": 1})
    assert status == 404


async def test_v2_list_order_filter_and_paging(emulator: RunningEmulator) -> None:
    values = {"b": 5, "a": 5, "c": 1, "d": 9, "e": 30}
    seed(emulator, values)
    status, body = await call(emulator, "GET", V2)
    assert status == 200
    assert set(body) == {"orderedDataStoreEntries"}
    assert [e["id"] for e in body["orderedDataStoreEntries"]] == ["c", "a", "b", "d", "e"]
    assert body["orderedDataStoreEntries"][0] == {
        "path": "universes/123/ordered-data-stores/scores/scopes/global/entries/c",
        "value": 1,
        "id": "c",
    }

    seen: list[str] = []
    params = {"orderBy": "value desc", "maxPageSize": "2", "filter": "entry <= 9"}
    while True:
        status, body = await call(emulator, "GET", V2, params=params)
        assert status == 200
        seen += [e["id"] for e in body["orderedDataStoreEntries"]]
        if "nextPageToken" not in body:
            break
        params["pageToken"] = body["nextPageToken"]
    assert seen == ["d", "a", "b", "c"]

    status, body = await call(emulator, "GET", V2, params={"orderBy": "value"})
    assert body["orderedDataStoreEntries"][0]["id"] == "c"


async def test_v2_list_errors(emulator: RunningEmulator) -> None:
    seed(emulator, {f"t{i}": i for i in range(4)})
    for params in (
        {"orderBy": "desc"},
        {"orderBy": "id"},
        {"orderBy": "value  desc"},
        {"filter": "entry<=3"},
        {"filter": "entry <= 3 && entry <= 5"},
        {"pageToken": "garbage"},
        {"maxPageSize": "-5"},
    ):
        status, body = await call(emulator, "GET", V2, params=params)
        assert status == 400, params
        assert body["code"] == "INVALID_ARGUMENT"

    body = (await call(emulator, "GET", V2, params={"maxPageSize": "1"}))[1]
    token = body["nextPageToken"]
    status, _ = await call(
        emulator, "GET", V2, params={"pageToken": token, "orderBy": "value desc"}
    )
    assert status == 400
    status, _ = await call(emulator, "GET", V2, params={"pageToken": token, "filter": "entry >= 1"})
    assert status == 400
    # A v1 token is not a v2 token.
    v1_token = (await call(emulator, "GET", V1, params={"max_page_size": "1"}))[1]["nextPageToken"]
    status, _ = await call(emulator, "GET", V2, params={"pageToken": v1_token})
    assert status == 400


async def test_v2_page_size_default_and_maximum(emulator: RunningEmulator) -> None:
    seed(emulator, {f"k{i:03d}": i for i in range(105)})
    body = (await call(emulator, "GET", V2))[1]
    assert len(body["orderedDataStoreEntries"]) == 10
    body = (await call(emulator, "GET", V2, params={"maxPageSize": "500"}))[1]
    assert len(body["orderedDataStoreEntries"]) == 100


async def test_v1_and_v2_share_state(emulator: RunningEmulator) -> None:
    await call(emulator, "POST", V1, params={"id": "shared"}, body={"value": 10})
    status, body = await call(emulator, "POST", V2 + "/shared:increment", body={"amount": 5})
    assert (status, body["value"]) == (200, 15)
    assert (await call(emulator, "GET", V1 + "/shared"))[1]["value"] == 15
    await call(emulator, "DELETE", V1 + "/shared")
    assert (await call(emulator, "GET", V2 + "/shared"))[0] == 404


# Auth -------------------------------------------------------------------------


async def test_missing_key_is_401_in_gateway_envelope(emulator: RunningEmulator) -> None:
    async with aiohttp.ClientSession() as anonymous:
        for path in (V1, V2):
            async with anonymous.get(emulator.url(path)) as response:
                assert response.status == 401
                body = await response.json()
                assert body == {"errors": [{"code": 0, "message": "Invalid API Key"}]}


@pytest.fixture
async def keyed(clock: ManualClock) -> AsyncIterator[str]:
    config = EmulatorConfig(
        clock=clock,
        limits=LimitsConfig(mode="off"),
        keys=[
            KeyGrant(key="reader", universes=["123"], scopes=[READ]),
            KeyGrant(key="writer", universes=["123"], scopes=[READ, WRITE]),
            KeyGrant(key="elsewhere", universes=["999"], scopes=[READ, WRITE]),
        ],
    )
    runner, base_url, _ = await start_emulator(config)
    yield base_url
    await runner.cleanup()


async def keyed_call(
    base_url: str, key: str, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers={"x-api-key": key}) as session,
        session.request(method, base_url + path, **kwargs) as response,
    ):
        return response.status, await response.json()


async def test_scopes_are_enforced(keyed: str) -> None:
    write = {"params": {"id": "a"}, "json": {"value": 1}}
    status, body = await keyed_call(keyed, "reader", "POST", V1, **write)
    assert status == 403
    assert set(body) == {"code", "message"}
    assert WRITE in body["message"]
    status, body = await keyed_call(keyed, "reader", "POST", V2, **write)
    assert status == 403
    assert body["code"] == "PERMISSION_DENIED"
    for path in (V1 + "/a:increment", V2 + "/a:increment"):
        status, _ = await keyed_call(keyed, "reader", "POST", path, json={"amount": 1})
        assert status == 403
    for path in (V1 + "/a", V2 + "/a"):
        assert (await keyed_call(keyed, "reader", "DELETE", path))[0] == 403
        assert (await keyed_call(keyed, "reader", "PATCH", path, json={"value": 2}))[0] == 403

    status, _ = await keyed_call(keyed, "writer", "POST", V1, **write)
    assert status == 200
    assert (await keyed_call(keyed, "reader", "GET", V1 + "/a"))[0] == 200
    assert (await keyed_call(keyed, "reader", "GET", V2))[0] == 200
    assert (await keyed_call(keyed, "elsewhere", "GET", V1 + "/a"))[0] == 403
    assert (await keyed_call(keyed, "elsewhere", "GET", V2))[0] == 403
    assert (await keyed_call(keyed, "unknown", "GET", V2))[0] == 401


# Throttling -------------------------------------------------------------------


@pytest.fixture
async def throttled(clock: ManualClock) -> AsyncIterator[str]:
    config = EmulatorConfig(
        clock=clock,
        limits=LimitsConfig(overrides={"ordered_v1.write": 2, "v2.ordered.list": 1}),
    )
    runner, base_url, _ = await start_emulator(config)
    yield base_url
    await runner.cleanup()


async def test_budgets_are_charged(throttled: str, clock: ManualClock) -> None:
    for i in range(2):
        status, _ = await keyed_call(
            throttled, "k", "POST", V1, params={"id": f"w{i}"}, json={"value": i}
        )
        assert status == 200
    status, body = await keyed_call(
        throttled, "k", "POST", V1, params={"id": "w2"}, json={"value": 2}
    )
    assert status == 429
    assert body["code"] == "RESOURCE_EXHAUSTED"
    # Reads draw on a different budget.
    assert (await keyed_call(throttled, "k", "GET", V1 + "/w0"))[0] == 200

    assert (await keyed_call(throttled, "k", "GET", V2))[0] == 200
    assert (await keyed_call(throttled, "k", "GET", V2))[0] == 429
    assert (await keyed_call(throttled, "k", "GET", V2 + "/w0"))[0] == 200
    clock.advance(61)
    assert (await keyed_call(throttled, "k", "GET", V2))[0] == 200
