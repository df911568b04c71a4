"""Cloud v2 standard data stores in the emulator, over real loopback HTTP."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest

from dsm.emulator.app import EmulatorConfig
from dsm.emulator.auth import KeyGrant
from dsm.emulator.clock import ManualClock
from dsm.emulator.errors import STATUS_BY_CODE, EmulatorError
from dsm.emulator.throttle import LimitsConfig
from dsm.emulator.timefmt import rfc3339

from .conftest import RunningEmulator, start_emulator

U = "/cloud/v2/universes/123"
DS = f"{U}/data-stores/players"


async def call(
    emu: RunningEmulator, method: str, path: str, body: Any = None, **params: str
) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {"params": params}
    if body is not None:
        kwargs["json"] = body
    async with emu.http.request(method, emu.url(path), **kwargs) as resp:
        assert resp.headers["X-DSM-Emulator"]
        text = await resp.text()
        return resp.status, (json.loads(text) if text else None)


async def create(emu: RunningEmulator, key: str, value: Any, **extra: Any) -> dict[str, Any]:
    status, body = await call(emu, "POST", f"{DS}/entries", {"value": value, **extra}, id=key)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def test_create_get_roundtrip_with_metadata(emulator: RunningEmulator) -> None:
    created = await create(
        emulator, "user_1", {"coins": 5, "inv": []}, users=["users/1"], attributes={"a": 1}
    )
    assert created["path"] == "universes/123/data-stores/players/entries/user_1"
    assert created["etag"] == created["revisionId"]
    assert created["state"] == "ACTIVE"
    status, got = await call(emulator, "GET", f"{DS}/entries/user_1")
    assert status == 200
    assert got["value"] == {"coins": 5, "inv": []}
    assert got["users"] == ["users/1"]
    assert got["attributes"] == {"a": 1}
    assert got["revisionId"] == created["revisionId"]
    # Version ids have Roblox's HEX16.%010d.HEX16.01 shape.
    parts = got["revisionId"].split(".")
    assert [len(p) for p in parts] == [16, 10, 16, 2] and parts[3] == "01"


async def test_create_existing_is_400_and_missing_get_is_404(emulator: RunningEmulator) -> None:
    await create(emulator, "k", 1)
    status, body = await call(emulator, "POST", f"{DS}/entries", {"value": 2}, id="k")
    assert status == 400 and body["code"] == "INVALID_ARGUMENT"
    status, body = await call(emulator, "GET", f"{DS}/entries/nope")
    assert status == 404 and body["code"] == "NOT_FOUND"


async def test_update_etag_conflict_and_allow_missing(emulator: RunningEmulator) -> None:
    first = await create(emulator, "k", 1)
    status, updated = await call(
        emulator, "PATCH", f"{DS}/entries/k", {"value": 2, "etag": first["etag"]}
    )
    assert status == 200 and updated["value"] == 2
    status, body = await call(
        emulator, "PATCH", f"{DS}/entries/k", {"value": 3, "etag": first["etag"]}
    )
    assert status == 409 and body["code"] == "ABORTED"
    status, body = await call(emulator, "PATCH", f"{DS}/entries/new", {"value": 1})
    assert status == 404
    status, body = await call(
        emulator, "PATCH", f"{DS}/entries/new", {"value": 1}, allowMissing="true"
    )
    assert status == 200 and body["value"] == 1


async def test_omitted_metadata_is_cleared(emulator: RunningEmulator) -> None:
    await create(emulator, "k", 1, users=["users/9"], attributes={"x": "y"})
    status, body = await call(emulator, "PATCH", f"{DS}/entries/k", {"value": 2})
    assert status == 200
    assert body["users"] == [] and body["attributes"] == {}


async def test_write_validation_errors(emulator: RunningEmulator) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"value": 1, "users": ["users/1"] * 5}, "user"),
        ({"value": 1, "users": [1]}, "users/"),
        ({"value": 1, "attributes": {"k": "x" * 300}}, "300"),
        ({"value": 1, "attributes": [1]}, "object"),
        ({}, "value"),
    ]
    for body, fragment in cases:
        status, err = await call(emulator, "POST", f"{DS}/entries", body, id="bad")
        assert status == 400, body
        assert fragment in err["message"]
    status, err = await call(emulator, "POST", f"{DS}/entries", {"value": 1}, id="x" * 51)
    assert status == 400 and "50 bytes" in err["message"]
    big = "a" * (4 * 1024 * 1024)
    status, err = await call(emulator, "POST", f"{DS}/entries", {"value": big}, id="big")
    assert status == 400 and "limit" in err["message"]
    async with emulator.http.post(
        emulator.url(f"{DS}/entries"), params={"id": "k"}, data="{not json"
    ) as resp:
        assert resp.status == 400


async def test_delete_then_list_with_show_deleted(emulator: RunningEmulator) -> None:
    await create(emulator, "a", 1)
    await create(emulator, "b", 2)
    status, _ = await call(emulator, "DELETE", f"{DS}/entries/a")
    assert status == 200
    status, _body = await call(emulator, "DELETE", f"{DS}/entries/a")
    assert status == 404
    _, listed = await call(emulator, "GET", f"{DS}/entries")
    assert [e["id"] for e in listed["dataStoreEntries"]] == ["b"]
    _, listed = await call(emulator, "GET", f"{DS}/entries", showDeleted="true")
    assert [e["id"] for e in listed["dataStoreEntries"]] == ["a", "b"]
    assert set(listed["dataStoreEntries"][0]) == {"path", "id"}


async def test_list_paging_filter_and_token_binding(emulator: RunningEmulator) -> None:
    for i in range(5):
        await create(emulator, f"p_{i}", i)
    await create(emulator, "other", 0)
    seen: list[str] = []
    token = ""
    while True:
        params = {"maxPageSize": "2", "filter": 'id.startsWith("p_")'}
        if token:
            params["pageToken"] = token
        status, page = await call(emulator, "GET", f"{DS}/entries", **params)
        assert status == 200
        seen += [e["id"] for e in page["dataStoreEntries"]]
        token = page.get("nextPageToken", "")
        if not token:
            break
        # Changing the filter on a follow-up page is rejected.
        status, _err = await call(emulator, "GET", f"{DS}/entries", pageToken=token, filter="")
        assert status == 400
    assert seen == [f"p_{i}" for i in range(5)]
    status, _ = await call(emulator, "GET", f"{DS}/entries", filter="id == 'x'")
    assert status == 400
    status, _ = await call(emulator, "GET", f"{DS}/entries", pageToken="garbage!")
    assert status == 400


async def test_scopes_and_all_scopes_listing(emulator: RunningEmulator) -> None:
    status, _ = await call(emulator, "POST", f"{DS}/scopes/s1/entries", {"value": 1}, id="k")
    assert status == 200
    await create(emulator, "k", 2)  # global scope
    _, listed = await call(emulator, "GET", f"{DS}/scopes/-/entries")
    paths = [e["path"] for e in listed["dataStoreEntries"]]
    assert paths == [
        "universes/123/data-stores/players/scopes/global/entries/k",
        "universes/123/data-stores/players/scopes/s1/entries/k",
    ]
    _, value = await call(emulator, "GET", f"{DS}/scopes/s1/entries/k")
    assert value["value"] == 1


async def test_increment_creates_adds_and_rejects_non_numbers(emulator: RunningEmulator) -> None:
    status, body = await call(emulator, "POST", f"{DS}/entries/n:increment", {"amount": 5})
    assert status == 200 and body["value"] == 5
    status, body = await call(emulator, "POST", f"{DS}/entries/n:increment", {"amount": -2})
    assert body["value"] == 3
    status, body = await call(emulator, "POST", f"{DS}/entries/n:increment", {})
    assert body["value"] == 4  # default amount is 1
    await create(emulator, "s", "text")
    status, body = await call(emulator, "POST", f"{DS}/entries/s:increment", {"amount": 1})
    assert status == 400
    status, body = await call(emulator, "POST", f"{DS}/entries/n:increment", {"amount": "x"})
    assert status == 400
    status, body = await call(emulator, "POST", f"{DS}/entries/n:increment", {"amount": 2**60})
    assert status == 200 and body["value"] == 2**53  # clamped like Roblox's doubles


async def test_revisions_hourly_collapse_and_time_travel(
    emulator: RunningEmulator, clock: ManualClock
) -> None:
    first = await create(emulator, "k", 1)  # 12:00, first write of the hour: kept
    clock.advance(60)
    await call(emulator, "PATCH", f"{DS}/entries/k", {"value": 2})  # replaced below
    clock.advance(60)
    third = (await call(emulator, "PATCH", f"{DS}/entries/k", {"value": 3}))[1]
    clock.advance(3600)  # next hour
    fourth = (await call(emulator, "PATCH", f"{DS}/entries/k", {"value": 4}))[1]
    _, revs = await call(emulator, "GET", f"{DS}/entries/k:listRevisions")
    ids = [r["revisionId"] for r in revs["dataStoreEntries"]]
    assert ids == [fourth["revisionId"], third["revisionId"], first["revisionId"]]
    assert revs["dataStoreEntries"][0]["id"] == f"k@{fourth['revisionId']}"
    # Every revision listed can be fetched by its path.
    _, old = await call(emulator, "GET", f"{DS}/entries/k@{first['revisionId']}")
    assert old["value"] == 1
    when = clock.now() - timedelta(minutes=30)
    _, at = await call(emulator, "GET", f"{DS}/entries/k@latest:{rfc3339(when)}")
    assert at["value"] == 3
    status, _ = await call(emulator, "GET", f"{DS}/entries/k@not-a-version")
    assert status == 400
    # The time filter narrows the list.
    cutoff = rfc3339(clock.now() - timedelta(minutes=5))
    _, recent = await call(
        emulator, "GET", f"{DS}/entries/k:listRevisions", filter=f"revision_create_time >= {cutoff}"
    )
    assert [r["revisionId"] for r in recent["dataStoreEntries"]] == [fourth["revisionId"]]
    status, _ = await call(emulator, "GET", f"{DS}/entries/k:listRevisions", filter="id > 1")
    assert status == 400


async def test_superseded_versions_expire_after_30_days(
    emulator: RunningEmulator, clock: ManualClock
) -> None:
    await create(emulator, "k", 1)
    clock.advance(hours=2)
    await call(emulator, "PATCH", f"{DS}/entries/k", {"value": 2})
    clock.advance(days=30, minutes=1)
    _, revs = await call(emulator, "GET", f"{DS}/entries/k:listRevisions")
    assert [r["id"].split("@")[0] for r in revs["dataStoreEntries"]] == ["k"]
    _, value = await call(emulator, "GET", f"{DS}/entries/k")
    assert value["value"] == 2  # the latest version never expires


async def test_tombstone_purged_after_30_days(
    emulator: RunningEmulator, clock: ManualClock
) -> None:
    await create(emulator, "k", 1)
    await call(emulator, "DELETE", f"{DS}/entries/k")
    _, listed = await call(emulator, "GET", f"{DS}/entries", showDeleted="true")
    assert len(listed["dataStoreEntries"]) == 1
    clock.advance(days=30, minutes=1)
    _, listed = await call(emulator, "GET", f"{DS}/entries", showDeleted="true")
    assert listed["dataStoreEntries"] == []


async def test_data_store_soft_delete_undelete_and_expiry(
    emulator: RunningEmulator, clock: ManualClock
) -> None:
    await create(emulator, "k", 1)
    status, store = await call(emulator, "DELETE", f"{U}/data-stores/players")
    assert status == 200 and store["state"] == "DELETED"
    assert store["expireTime"] == rfc3339(clock.now() + timedelta(days=30))
    status, _ = await call(emulator, "GET", f"{DS}/entries/k")
    assert status == 404  # inaccessible at once
    _, listed = await call(emulator, "GET", f"{U}/data-stores")
    assert listed["dataStores"] == []
    _, listed = await call(emulator, "GET", f"{U}/data-stores", showDeleted="true")
    assert listed["dataStores"][0]["state"] == "DELETED"
    status, again = await call(emulator, "DELETE", f"{U}/data-stores/players")
    assert status == 200 and again == store  # deleting twice is a no-op
    status, restored = await call(emulator, "POST", f"{U}/data-stores/players:undelete", {})
    assert status == 200 and restored["state"] == "ACTIVE" and "expireTime" not in restored
    _, value = await call(emulator, "GET", f"{DS}/entries/k")
    assert value["value"] == 1
    await call(emulator, "DELETE", f"{U}/data-stores/players")
    clock.advance(days=30, minutes=1)
    _, listed = await call(emulator, "GET", f"{U}/data-stores", showDeleted="true")
    assert listed["dataStores"] == []  # purged; the name is reusable
    await create(emulator, "fresh", 1)


async def test_list_data_stores_filter_and_paging(emulator: RunningEmulator) -> None:
    for name in ("a1", "a2", "b1"):
        status, _ = await call(
            emulator, "POST", f"{U}/data-stores/{name}/entries", {"value": 1}, id="k"
        )
        assert status == 200
    _, page = await call(
        emulator, "GET", f"{U}/data-stores", maxPageSize="1", filter='id.startsWith("a")'
    )
    assert [s["id"] for s in page["dataStores"]] == ["a1"]
    _, page2 = await call(
        emulator,
        "GET",
        f"{U}/data-stores",
        maxPageSize="1",
        filter='id.startsWith("a")',
        pageToken=page["nextPageToken"],
    )
    assert [s["id"] for s in page2["dataStores"]] == ["a2"]
    assert "nextPageToken" not in page2


async def test_snapshot_once_per_utc_day_and_forces_backup(
    emulator: RunningEmulator, clock: ManualClock
) -> None:
    first = await create(emulator, "k", 1)
    clock.advance(60)
    second = (await call(emulator, "PATCH", f"{DS}/entries/k", {"value": 2}))[1]
    status, snap = await call(emulator, "POST", f"{U}/data-stores:snapshot", {})
    assert status == 200 and snap["newSnapshotTaken"] is True
    _, again = await call(emulator, "POST", f"{U}/data-stores:snapshot", {})
    assert again == {"newSnapshotTaken": False, "latestSnapshotTime": snap["latestSnapshotTime"]}
    clock.advance(60)
    # Same hour, but the snapshot forces the previous data to be kept.
    third = (await call(emulator, "PATCH", f"{DS}/entries/k", {"value": 3}))[1]
    _, revs = await call(emulator, "GET", f"{DS}/entries/k:listRevisions")
    assert [r["revisionId"] for r in revs["dataStoreEntries"]] == [
        third["revisionId"],
        second["revisionId"],
        first["revisionId"],
    ]
    clock.advance(days=1)
    _, next_day = await call(emulator, "POST", f"{U}/data-stores:snapshot", {})
    assert next_day["newSnapshotTaken"] is True


async def test_value_text_is_preserved_exactly(emulator: RunningEmulator) -> None:
    body = '{"value": {"big": 12345678901234567890, "f": 1.5, "empty": {}, "list": []}}'
    async with emulator.http.post(
        emulator.url(f"{DS}/entries"),
        params={"id": "k"},
        data=body,
        headers={"content-type": "application/json"},
    ) as resp:
        assert resp.status == 200
    async with emulator.http.get(emulator.url(f"{DS}/entries/k")) as resp:
        text = await resp.text()
    assert '"value":{"big":12345678901234567890,"f":1.5,"empty":{},"list":[]}' in text


async def test_unknown_route_and_missing_key(emulator: RunningEmulator) -> None:
    status, _ = await call(emulator, "GET", f"{U}/nothing-here")
    assert status == 404
    async with emulator.http.get(emulator.url(f"{DS}/entries"), headers={"x-api-key": ""}) as r:
        assert r.status == 401
        assert (await r.json()) == {"errors": [{"code": 0, "message": "Invalid API Key"}]}
    status, _body = await call(emulator, "GET", "/cloud/v2/universes/abc/data-stores")
    assert status == 400


async def test_index_says_it_is_an_emulator(emulator: RunningEmulator) -> None:
    async with emulator.http.get(emulator.url("/"), headers={"x-api-key": ""}) as resp:
        info = await resp.json()
    assert info["emulator"] is True and "not a live" in info["notice"]


# --- keys file: 401 for unknown keys, 403 for missing scope or universe ------------------


@pytest.fixture
async def restricted(clock: ManualClock) -> Any:
    config = EmulatorConfig(
        clock=clock,
        limits=LimitsConfig(mode="off"),
        keys=[
            KeyGrant(
                key="reader",
                universes=["123"],
                scopes=["universe-datastores.objects:read", "universe-datastores.objects:list"],
            ),
            KeyGrant(key="admin", universes=["*"], scopes=["universe-datastores.objects:create"]),
        ],
    )
    runner, base, _ = await start_emulator(config)
    yield base
    await runner.cleanup()


async def test_keys_file_scopes_and_universes(restricted: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:

        async def status_of(method: str, path: str, key: str, **kw: Any) -> tuple[int, Any]:
            async with http.request(
                method, restricted + path, headers={"x-api-key": key}, **kw
            ) as resp:
                return resp.status, await resp.json(content_type=None)

        assert (await status_of("GET", f"{DS}/entries", "unknown"))[0] == 401
        status, body = await status_of(
            "POST", f"{DS}/entries", "reader", params={"id": "k"}, json={"value": 1}
        )
        assert status == 403 and body["code"] == "PERMISSION_DENIED"
        assert "universe-datastores.objects:create" in body["message"]
        status, _ = await status_of(
            "POST", f"{DS}/entries", "admin", params={"id": "k"}, json={"value": 1}
        )
        assert status == 200
        assert (await status_of("GET", f"{DS}/entries/k", "reader"))[0] == 200
        status, body = await status_of(
            "GET", "/cloud/v2/universes/999/data-stores/x/entries/k", "reader"
        )
        assert status == 403 and "999" in body["message"]


# --- documented throttling --------------------------------------------------------------


@pytest.fixture
async def throttled(clock: ManualClock) -> Any:
    config = EmulatorConfig(
        clock=clock, limits=LimitsConfig(mode="documented", overrides={"v2.standard.read": 2})
    )
    runner, base, _ = await start_emulator(config)
    yield base
    await runner.cleanup()


async def test_v2_read_budget_answers_429_with_retry_after(
    throttled: str, clock: ManualClock
) -> None:
    import aiohttp

    async with aiohttp.ClientSession(headers={"x-api-key": "k"}) as http:
        async with http.post(throttled + f"{DS}/entries", params={"id": "k"}, json={"value": 1}):
            pass
        for _ in range(2):
            async with http.get(throttled + f"{DS}/entries/k") as resp:
                assert resp.status == 200
                assert "x-ratelimit-remaining" in resp.headers
        async with http.get(throttled + f"{DS}/entries/k") as resp:
            assert resp.status == 429
            assert int(resp.headers["retry-after"]) >= 1
            assert (await resp.json())["code"] == "RESOURCE_EXHAUSTED"
        clock.advance(61)
        async with http.get(throttled + f"{DS}/entries/k") as resp:
            assert resp.status == 200


async def test_a_delete_keeps_the_version_it_replaced_within_the_hour(
    emulator: RunningEmulator,
) -> None:
    """RemoveAsync "creates a tombstone version while retaining the previous version": even a
    same-hour successor (which the next write would collapse) survives a delete, on v1 and v2."""
    store = emulator.ctx.standard
    for key in ("v2key", "v1key"):
        for value in ("1", "2"):
            store.write("1", "ds", "global", key, value, attributes=None, user_ids=[])
            emulator.clock.advance(60)
    base = emulator.url("/cloud/v2/universes/1/data-stores/ds/entries/v2key")
    async with emulator.http.delete(base) as resp:
        assert resp.status == 200
    v1 = emulator.url("/datastores/v1/universes/1/standard-datastores/datastore/entries/entry")
    params = {"datastoreName": "ds", "entryKey": "v1key"}
    async with emulator.http.delete(v1, params=params) as resp:
        assert resp.status in (200, 204)
    for key in ("v2key", "v1key"):
        versions, _ = store.list_versions("1", "ds", "global", key, descending=True, limit=10)
        assert [v.deleted for v in versions] == [True, False, False]
        assert [v.value for v in versions[1:]] == ["2", "1"]


# -- where the emulator used to differ from Roblox's documentation --------------------------------


async def test_latest_time_more_than_ten_minutes_ahead_is_refused(
    emulator: RunningEmulator, clock: ManualClock
) -> None:
    """Get Data Store Entry: the `@latest:<time>` timestamp must be "not more than ten minutes
    in the future"."""
    await create(emulator, "k", 1)
    edge = clock.now() + timedelta(minutes=10)
    status, body = await call(emulator, "GET", f"{DS}/entries/k@latest:{rfc3339(edge)}")
    assert (status, body["value"]) == (200, 1)
    beyond = edge + timedelta(seconds=1)
    status, body = await call(emulator, "GET", f"{DS}/entries/k@latest:{rfc3339(beyond)}")
    assert status == 400 and body["code"] == "INVALID_ARGUMENT"
    assert "ten minutes in the future" in body["message"]


@pytest.mark.parametrize("scoped", [False, True])
async def test_entry_delete_answers_an_empty_json_object(
    emulator: RunningEmulator, scoped: bool
) -> None:
    """Responses recorded from Open Cloud: `{}` with a JSON content type, not an empty body."""
    await create(emulator, "k", 1)
    path = f"{DS}/scopes/global/entries/k" if scoped else f"{DS}/entries/k"
    async with emulator.http.delete(emulator.url(path)) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert await resp.text() == "{}"


async def test_times_carry_nine_fractional_digits(
    emulator: RunningEmulator, clock: ManualClock
) -> None:
    """Roblox's data store times have 100 ns precision: `2024-07-22T19:06:55.829412600Z`."""
    clock.set(clock.now().replace(microsecond=829412))
    created = await create(emulator, "k", 1)
    assert created["createTime"] == clock.now().strftime("%Y-%m-%dT%H:%M:%S") + ".829412000Z"
    assert created["revisionCreateTime"] == created["createTime"]
    _, revisions = await call(emulator, "GET", f"{DS}/entries/k:listRevisions")
    assert revisions["dataStoreEntries"][0]["createTime"] == created["createTime"]
    _, store = await call(emulator, "DELETE", f"{U}/data-stores/players")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", store["expireTime"])


async def test_the_counter_inside_revision_ids_is_hexadecimal(
    emulator: RunningEmulator, clock: ManualClock
) -> None:
    """Recorded revision ids read `...0000000009...` then `...000000000A...`."""
    revision = (await create(emulator, "k", 0))["revisionId"]
    counters = [revision.split(".")[1]]
    for value in range(1, 11):
        clock.advance(hours=1)  # one kept version per hour
        _, body = await call(emulator, "PATCH", f"{DS}/entries/k", {"value": value})
        counters.append(body["revisionId"].split(".")[1])
    assert counters[8:] == ["0000000009", "000000000A", "000000000B"]
    revision = body["revisionId"]
    status, got = await call(emulator, "GET", f"{DS}/entries/k@{revision}")
    assert (status, got["value"]) == (200, 10)


async def test_undeleting_an_active_store_is_invalid_argument(emulator: RunningEmulator) -> None:
    """The errors guide's v2 table has no FAILED_PRECONDITION; INVALID_ARGUMENT is nearest."""
    await create(emulator, "k", 1)
    status, body = await call(emulator, "POST", f"{U}/data-stores/players:undelete", {})
    assert status == 400
    assert body["code"] == "INVALID_ARGUMENT" and "is not deleted" in body["message"]


# The errors guide's tables: v2 codes and v1 codes (INSUFFICIENT_SCOPE is v1's own), by status.
DOCUMENTED_CODES = {
    "INVALID_ARGUMENT": 400,
    "INSUFFICIENT_SCOPE": 403,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "NOT_IMPLEMENTED": 501,
    "UNAVAILABLE": 503,
}


def test_the_emulator_answers_only_documented_error_codes() -> None:
    gateway_only = {"UNAUTHENTICATED": 401}  # sent in the gateway envelope, never as a code
    assert DOCUMENTED_CODES | gateway_only == STATUS_BY_CODE
    for code in ("FAILED_PRECONDITION", "ALREADY_EXISTS"):
        with pytest.raises(ValueError, match="not an Open Cloud error code"):
            EmulatorError(code, "never sent")


async def test_listing_checks_at_most_512_stores_when_hiding_deleted_ones(
    emulator: RunningEmulator,
) -> None:
    """List Data Stores: hiding deleted stores, a call checks up to 512; "If all checked data
    stores are deleted, it will return an empty list with a page token to continue"."""
    standard = emulator.ctx.standard
    for n in range(520):
        standard.write("123", f"a{n:03d}", "global", "k", "1", attributes=None, user_ids=[])
        standard.delete_datastore("123", f"a{n:03d}")
    for name in ("b0", "b1", "b2"):
        standard.write("123", name, "global", "k", "1", attributes=None, user_ids=[])
    status, first = await call(emulator, "GET", f"{U}/data-stores", maxPageSize="10")
    assert status == 200 and first["dataStores"] == [] and first["nextPageToken"]
    _, second = await call(
        emulator, "GET", f"{U}/data-stores", maxPageSize="10", pageToken=first["nextPageToken"]
    )
    assert [s["id"] for s in second["dataStores"]] == ["b0", "b1", "b2"]
    assert "nextPageToken" not in second
    _, with_deleted = await call(
        emulator, "GET", f"{U}/data-stores", maxPageSize="10", showDeleted="true"
    )
    assert [s["state"] for s in with_deleted["dataStores"]] == ["DELETED"] * 10


@pytest.mark.parametrize(
    "stamp",
    ["2024-12-02T06:00Z", "2024-12-02", "2024-12-02 06:00:00Z", "2024-12-02T06:00:00"],
)
async def test_v2_timestamps_must_be_rfc_3339(emulator: RunningEmulator, stamp: str) -> None:
    """Types guide: timestamps are RFC 3339 (date, time with seconds, then Z or an offset)."""
    await create(emulator, "k", 1)
    status, body = await call(emulator, "GET", f"{DS}/entries/k@latest:{stamp}")
    assert status == 400 and body["code"] == "INVALID_ARGUMENT"
    status, body = await call(
        emulator, "GET", f"{DS}/entries/k:listRevisions", filter=f"revision_create_time >= {stamp}"
    )
    assert status == 400 and body["code"] == "INVALID_ARGUMENT"


async def test_v2_timestamps_accept_offsets_and_nine_digits(
    emulator: RunningEmulator, clock: ManualClock
) -> None:
    await create(emulator, "k", 1)
    local = (clock.now() + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.123456789+02:00")
    status, body = await call(emulator, "GET", f"{DS}/entries/k@latest:{local}")
    assert (status, body["value"]) == (200, 1)
