"""The emulator's legacy standard data stores v1 surface, driven over real loopback HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from dsm.emulator.app import EmulatorConfig
from dsm.emulator.auth import KeyGrant
from dsm.emulator.clock import ManualClock
from dsm.emulator.throttle import LimitsConfig

from .conftest import RunningEmulator, start_emulator

UNIVERSE = "1234"
BASE = f"/datastores/v1/universes/{UNIVERSE}/standard-datastores"
ENTRIES = BASE + "/datastore/entries"
ENTRY = ENTRIES + "/entry"
VERSIONS = ENTRY + "/versions"
VERSION = VERSIONS + "/version"
START = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)

VERSION_RE = re.compile(r"[0-9A-F]{16}\.\d{10}\.[0-9A-F]{16}\.01")
BODY_TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z")
HEADER_TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}\+00:00")


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def v1_code(self) -> str:
        details = self.json()["errorDetails"]
        assert details[0]["errorDetailType"] == "DatastoreErrorInfo"
        return str(details[0]["datastoreErrorCode"])


async def call(
    emu: RunningEmulator,
    method: str,
    path: str,
    params: Mapping[str, str] | None = None,
    *,
    data: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    async with emu.http.request(
        method, emu.url(path), params=params, data=data, headers=headers
    ) as resp:
        return Reply(resp.status, resp.headers, await resp.read())


def entry(key: str, datastore: str = "Coins", **extra: str) -> dict[str, str]:
    return {"datastoreName": datastore, "entryKey": key, **extra}


async def put(
    emu: RunningEmulator,
    key: str,
    value: str,
    *,
    datastore: str = "Coins",
    headers: Mapping[str, str] | None = None,
    **extra: str,
) -> Reply:
    return await call(
        emu, "POST", ENTRY, entry(key, datastore, **extra), data=value.encode(), headers=headers
    )


def md5(raw: bytes) -> str:
    return base64.b64encode(hashlib.md5(raw).digest()).decode()


async def versions_of(emu: RunningEmulator, key: str, **extra: str) -> list[dict[str, Any]]:
    reply = await call(emu, "GET", VERSIONS, entry(key, limit="100", **extra))
    assert reply.status == 200, reply.body
    return list(reply.json()["versions"])


# ------------------------------------------------------------------ set / get


async def test_set_answers_entry_version(emulator: RunningEmulator) -> None:
    reply = await put(emulator, "player_1", '{"gold": 5}')
    assert reply.status == 200
    body = reply.json()
    assert set(body) == {"version", "deleted", "contentLength", "createdTime", "objectCreatedTime"}
    assert VERSION_RE.fullmatch(body["version"])
    assert body["version"].split(".")[1] == "0000000001"
    assert body["deleted"] is False
    assert body["contentLength"] == len(b'{"gold": 5}')
    assert body["createdTime"] == "2026-03-10T12:00:00.0000000Z"
    assert body["objectCreatedTime"] == body["createdTime"]


async def test_get_returns_raw_value_and_metadata_headers(emulator: RunningEmulator) -> None:
    value = '{"gold": 5, "name": "Zoë"}'
    written = await put(
        emulator,
        "player_1",
        value,
        headers={"roblox-entry-attributes": '{"tier": "gold"}', "roblox-entry-userids": "[1, 2]"},
    )
    emulator.clock.advance(minutes=5)
    reply = await call(emulator, "GET", ENTRY, entry("player_1"))
    assert reply.status == 200
    assert reply.body == value.encode()  # stored as sent, not re-encoded
    assert reply.headers["content-md5"] == md5(value.encode())
    assert reply.headers["roblox-entry-version"] == written.json()["version"]
    assert reply.headers["roblox-entry-created-time"] == "2026-03-10T12:00:00.0000000+00:00"
    assert HEADER_TIME_RE.fullmatch(reply.headers["roblox-entry-version-created-time"])
    assert json.loads(reply.headers["roblox-entry-attributes"]) == {"tier": "gold"}
    assert json.loads(reply.headers["roblox-entry-userids"]) == [1, 2]


async def test_second_write_keeps_creation_time_and_bumps_sequence(
    emulator: RunningEmulator,
) -> None:
    first = (await put(emulator, "k", "1")).json()
    emulator.clock.advance(minutes=90)
    second = (await put(emulator, "k", "2")).json()
    assert second["version"].split(".")[1] == "0000000002"
    assert second["objectCreatedTime"] == first["objectCreatedTime"]
    assert second["createdTime"] == "2026-03-10T13:30:00.0000000Z"


async def test_omitted_metadata_is_cleared(emulator: RunningEmulator) -> None:
    await put(
        emulator,
        "k",
        "1",
        headers={"roblox-entry-attributes": '{"a": 1}', "roblox-entry-userids": "[7]"},
    )
    await put(emulator, "k", "2")
    reply = await call(emulator, "GET", ENTRY, entry("k"))
    assert "roblox-entry-attributes" not in reply.headers
    assert json.loads(reply.headers["roblox-entry-userids"]) == []


async def test_user_ids_accept_a_bare_comma_list(emulator: RunningEmulator) -> None:
    await put(emulator, "k", "1", headers={"roblox-entry-userids": "5, 6"})
    reply = await call(emulator, "GET", ENTRY, entry("k"))
    assert json.loads(reply.headers["roblox-entry-userids"]) == [5, 6]


async def test_scopes_are_separate_namespaces(emulator: RunningEmulator) -> None:
    await put(emulator, "k", '"global value"')
    await put(emulator, "k", '"special value"', scope="special")
    assert (await call(emulator, "GET", ENTRY, entry("k"))).body == b'"global value"'
    special = await call(emulator, "GET", ENTRY, entry("k", scope="special"))
    assert special.body == b'"special value"'


async def test_get_missing_entry_and_missing_data_store(emulator: RunningEmulator) -> None:
    missing_store = await call(emulator, "GET", ENTRY, entry("k", "Nowhere"))
    assert missing_store.status == 404
    assert missing_store.json()["error"] == "NOT_FOUND"
    assert missing_store.v1_code == "DatastoreNotFound"
    await put(emulator, "other", "1")
    missing_key = await call(emulator, "GET", ENTRY, entry("k"))
    assert missing_key.status == 404
    assert missing_key.v1_code == "EntryNotFound"


async def test_query_names_match_case_insensitively(emulator: RunningEmulator) -> None:
    await put(emulator, "k", "1")
    reply = await call(
        emulator, "GET", ENTRY, {"DatastoreName": "Coins", "EntryKey": "k", "Scope": "global"}
    )
    assert reply.status == 200
    assert reply.body == b"1"


# --------------------------------------------------------- conditional writes


async def test_exclusive_create(emulator: RunningEmulator) -> None:
    created = await put(
        emulator,
        "k",
        '{"v": 1}',
        exclusiveCreate="true",
        headers={"roblox-entry-attributes": '{"a": "b"}', "roblox-entry-userids": "[9]"},
    )
    assert created.status == 200
    refused = await put(emulator, "k", '{"v": 2}', exclusiveCreate="true")
    assert refused.status == 412
    assert refused.body == b'{"v": 1}'  # the current value, not an error envelope
    assert refused.headers["roblox-entry-version"] == created.json()["version"]
    assert refused.headers["content-md5"] == md5(b'{"v": 1}')
    assert json.loads(refused.headers["roblox-entry-attributes"]) == {"a": "b"}
    assert json.loads(refused.headers["roblox-entry-userids"]) == [9]
    assert (await call(emulator, "GET", ENTRY, entry("k"))).body == b'{"v": 1}'


async def test_exclusive_create_succeeds_over_a_tombstone(emulator: RunningEmulator) -> None:
    await put(emulator, "k", "1")
    await call(emulator, "DELETE", ENTRY, entry("k"))
    assert (await put(emulator, "k", "2", exclusiveCreate="true")).status == 200


async def test_match_version(emulator: RunningEmulator) -> None:
    first = (await put(emulator, "k", "1")).json()["version"]
    updated = await put(emulator, "k", "2", matchVersion=first)
    assert updated.status == 200
    stale = await put(emulator, "k", "3", matchVersion=first)
    assert stale.status == 412
    assert stale.body == b"2"
    assert stale.headers["roblox-entry-version"] == updated.json()["version"]


async def test_match_version_without_entry_gives_empty_412(emulator: RunningEmulator) -> None:
    await put(emulator, "other", "1")
    missing_key = await put(
        emulator, "k", "1", matchVersion="08D9E6A3F2188CFF.0000000001.08D9E6A3F2188CFF.01"
    )
    assert missing_key.status == 412
    assert missing_key.body == b""
    assert "roblox-entry-version" not in missing_key.headers
    missing_store = await put(
        emulator,
        "k",
        "1",
        datastore="NewStore",
        matchVersion="0" * 16 + ".0000000001." + "0" * 16 + ".01",
    )
    assert missing_store.status == 412
    assert missing_store.body == b""
    # The refused write must not leave an empty data store behind.
    listed = await call(emulator, "GET", BASE, {"limit": "10"})
    assert [d["name"] for d in listed.json()["datastores"]] == ["Coins"]


async def test_exclusive_create_and_match_version_together(emulator: RunningEmulator) -> None:
    reply = await put(emulator, "k", "1", exclusiveCreate="true", matchVersion="x")
    assert reply.status == 400
    assert reply.json()["error"] == "INVALID_ARGUMENT"
    assert reply.v1_code == "ExclusiveCreateAndMatchVersionCannotBeSet"


# ---------------------------------------------------------- body validation


async def test_content_md5(emulator: RunningEmulator) -> None:
    good = await put(emulator, "k", '"750"', headers={"content-md5": md5(b'"750"')})
    assert good.status == 200
    bad = await put(emulator, "k", '"751"', headers={"content-md5": md5(b'"750"')})
    assert bad.status == 400
    assert bad.v1_code == "ChecksumMismatch"
    garbage = await put(emulator, "k", '"751"', headers={"content-md5": "not base64!"})
    assert garbage.v1_code == "ChecksumMismatch"
    assert (await call(emulator, "GET", ENTRY, entry("k"))).body == b'"750"'


@pytest.mark.parametrize("body", ["not json", "", "{", "NaN", '{"a": Infinity}'])
async def test_content_not_json(emulator: RunningEmulator, body: str) -> None:
    reply = await put(emulator, "k", body)
    assert reply.status == 400
    assert reply.v1_code == "ContentNotJson"


async def test_content_not_utf8(emulator: RunningEmulator) -> None:
    reply = await call(emulator, "POST", ENTRY, entry("k"), data=b'"\xff"')
    assert reply.v1_code == "ContentNotJson"


async def test_content_too_big(emulator: RunningEmulator) -> None:
    limit = 4 * 1024 * 1024
    at_limit = '"' + "a" * (limit - 2) + '"'
    assert (await put(emulator, "k", at_limit)).status == 200
    reply = await put(emulator, "k", '"' + "a" * (limit - 1) + '"')
    assert reply.status == 400
    assert reply.v1_code == "ContentTooBig"


async def test_content_length_required(emulator: RunningEmulator) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"1"

    reply = await call(emulator, "POST", ENTRY, entry("k"), data=chunks())
    assert reply.status == 400
    assert reply.v1_code == "ContentLengthRequired"


@pytest.mark.parametrize("attributes", ["[1, 2]", "not json", json.dumps({"k": "x" * 300})])
async def test_invalid_attributes(emulator: RunningEmulator, attributes: str) -> None:
    reply = await put(emulator, "k", "1", headers={"roblox-entry-attributes": attributes})
    assert reply.status == 400
    assert reply.v1_code == "InvalidAttributes"
    increment = await call(
        emulator,
        "POST",
        ENTRY + "/increment",
        entry("k"),
        headers={"roblox-entry-attributes": attributes},
    )
    assert increment.v1_code == "InvalidAttributes"


@pytest.mark.parametrize("user_ids", ["[1, 2, 3, 4, 5]", '["a"]', "{}", "1, x"])
async def test_invalid_user_ids(emulator: RunningEmulator, user_ids: str) -> None:
    reply = await put(emulator, "k", "1", headers={"roblox-entry-userids": user_ids})
    assert reply.status == 400
    assert reply.v1_code == "InvalidUserIds"


async def test_four_user_ids_are_allowed(emulator: RunningEmulator) -> None:
    reply = await put(emulator, "k", "1", headers={"roblox-entry-userids": "[1, 2, 3, 4]"})
    assert reply.status == 200


# ------------------------------------------------------------ name validation


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"entryKey": "k"}, "InvalidDataStoreName"),
        ({"datastoreName": "", "entryKey": "k"}, "InvalidDataStoreName"),
        ({"datastoreName": "d" * 51, "entryKey": "k"}, "InvalidDataStoreName"),
        ({"datastoreName": "Coins"}, "InvalidEntryKey"),
        ({"datastoreName": "Coins", "entryKey": "é" * 26}, "InvalidEntryKey"),  # 52 bytes
        ({"datastoreName": "Coins", "entryKey": "k", "scope": "s" * 51}, "InvalidDataStoreScope"),
    ],
)
async def test_invalid_names(emulator: RunningEmulator, params: dict[str, str], code: str) -> None:
    for method, path, data in (
        ("GET", ENTRY, None),
        ("POST", ENTRY, b"1"),
        ("DELETE", ENTRY, None),
        ("POST", ENTRY + "/increment", None),
        ("GET", VERSIONS, None),
    ):
        reply = await call(emulator, method, path, params, data=data)
        assert reply.status == 400, (method, path)
        assert reply.v1_code == code, (method, path)


async def test_fifty_byte_names_are_allowed(emulator: RunningEmulator) -> None:
    reply = await put(emulator, "k" * 50, "1", datastore="d" * 50, scope="s" * 50)
    assert reply.status == 200


async def test_invalid_universe_id(emulator: RunningEmulator) -> None:
    reply = await call(
        emulator, "GET", "/datastores/v1/universes/abc/standard-datastores", {"limit": "5"}
    )
    assert reply.status == 400
    assert reply.v1_code == "InvalidUniverseId"


# -------------------------------------------------------------------- delete


async def test_delete_writes_a_tombstone(emulator: RunningEmulator) -> None:
    await put(emulator, "k", '"v"')
    emulator.clock.advance(minutes=1)
    deleted = await call(emulator, "DELETE", ENTRY, entry("k"))
    assert deleted.status == 204
    assert deleted.body == b""
    gone = await call(emulator, "GET", ENTRY, entry("k"))
    assert gone.status == 404
    assert gone.v1_code == "EntryNotFound"
    versions = await versions_of(emulator, "k")
    assert [v["deleted"] for v in versions] == [False, True]
    assert versions[1]["contentLength"] == 0
    again = await call(emulator, "DELETE", ENTRY, entry("k"))
    assert again.status == 404
    assert again.v1_code == "EntryNotFound"


async def test_delete_missing_entry_is_404(emulator: RunningEmulator) -> None:
    await put(emulator, "other", "1")
    reply = await call(emulator, "DELETE", ENTRY, entry("k"))
    assert reply.status == 404
    assert reply.v1_code == "EntryNotFound"


# ----------------------------------------------------------------- increment


async def test_increment(emulator: RunningEmulator) -> None:
    url = ENTRY + "/increment"
    created = await call(emulator, "POST", url, entry("k"))
    assert created.status == 200
    assert created.body == b"1"  # DS1 default incrementBy is 1
    bumped = await call(
        emulator,
        "POST",
        url,
        entry("k", incrementBy="41"),
        headers={"roblox-entry-attributes": '{"a": 1}', "roblox-entry-userids": "[3]"},
    )
    assert bumped.status == 200
    assert bumped.body == b"42"
    assert bumped.headers["content-md5"] == md5(b"42")
    assert bumped.headers["roblox-entry-version"].split(".")[1] == "0000000002"
    assert HEADER_TIME_RE.fullmatch(bumped.headers["roblox-entry-created-time"])
    assert json.loads(bumped.headers["roblox-entry-attributes"]) == {"a": 1}
    assert json.loads(bumped.headers["roblox-entry-userids"]) == [3]
    down = await call(emulator, "POST", url, entry("k", incrementBy="-50"))
    assert down.body == b"-8"
    assert "roblox-entry-attributes" not in down.headers  # omitted metadata is cleared
    assert (await call(emulator, "GET", ENTRY, entry("k"))).body == b"-8"


async def test_increment_non_numeric_value(emulator: RunningEmulator) -> None:
    await put(emulator, "k", '"text"')
    reply = await call(emulator, "POST", ENTRY + "/increment", entry("k"))
    assert reply.status == 400
    assert reply.v1_code == "ExistingValueNotNumeric"


async def test_increment_limits(emulator: RunningEmulator) -> None:
    url = ENTRY + "/increment"
    await put(emulator, "k", str(2**63 - 1))
    overflow = await call(emulator, "POST", url, entry("k"))
    assert overflow.v1_code == "IncrementValueTooLarge"
    await put(emulator, "low", str(-(2**63)))
    underflow = await call(emulator, "POST", url, entry("low", incrementBy="-1"))
    assert underflow.v1_code == "IncrementValueTooSmall"
    huge = await call(emulator, "POST", url, entry("n", incrementBy=str(2**63)))
    assert huge.v1_code == "IncrementValueTooLarge"
    tiny = await call(emulator, "POST", url, entry("n", incrementBy=str(-(2**63) - 1)))
    assert tiny.v1_code == "IncrementValueTooSmall"
    fraction = await call(emulator, "POST", url, entry("n", incrementBy="1.5"))
    assert fraction.status == 400
    assert "whole number" in fraction.json()["message"]


async def test_increment_revives_a_tombstone(emulator: RunningEmulator) -> None:
    await put(emulator, "k", "10")
    await call(emulator, "DELETE", ENTRY, entry("k"))
    reply = await call(emulator, "POST", ENTRY + "/increment", entry("k", incrementBy="3"))
    assert reply.body == b"3"


# ---------------------------------------------------------------- list stores


async def test_list_datastores(emulator: RunningEmulator) -> None:
    await put(emulator, "k", "1", datastore="PlayerInventory")
    emulator.clock.advance(seconds=1)
    await put(emulator, "k", "1", datastore="PlayerHP")
    await put(emulator, "k", "1", datastore="Coins")
    reply = await call(emulator, "GET", BASE, {"prefix": "Player", "limit": "10"})
    assert reply.status == 200
    assert reply.json() == {
        "datastores": [
            {"name": "PlayerHP", "createdTime": "2026-03-10T12:00:01.0000000Z"},
            {"name": "PlayerInventory", "createdTime": "2026-03-10T12:00:00.0000000Z"},
        ],
        "nextPageCursor": "",
    }


async def test_list_datastores_pages_with_cursor(emulator: RunningEmulator) -> None:
    names = [f"Store{i}" for i in range(5)]
    for name in names:
        await put(emulator, "k", "1", datastore=name)
    default = await call(emulator, "GET", BASE)
    assert len(default.json()["datastores"]) == 1  # DS1's documented default limit is 1
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = (await call(emulator, "GET", BASE, params)).json()
        seen += [d["name"] for d in page["datastores"]]
        pages += 1
        cursor = page["nextPageCursor"]
        if not cursor:
            break
    assert seen == names
    assert pages == 3


async def test_list_datastores_clamps_limit(emulator: RunningEmulator) -> None:
    for i in range(3):
        await put(emulator, "k", "1", datastore=f"S{i}")
    reply = await call(emulator, "GET", BASE, {"limit": "100000"})
    assert len(reply.json()["datastores"]) == 3
    negative = await call(emulator, "GET", BASE, {"limit": "-1"})
    assert negative.status == 400


# --------------------------------------------------------------- list entries


async def test_list_entries_scopes(emulator: RunningEmulator) -> None:
    for key in ("User_3", "User_4"):
        await put(emulator, key, "1")
    for key in ("User_6", "User_7"):
        await put(emulator, key, "1", scope="special")
    default = await call(emulator, "GET", ENTRIES, {"datastoreName": "Coins"})
    assert default.json() == {
        "keys": [{"scope": "global", "key": "User_3"}, {"scope": "global", "key": "User_4"}],
        "nextPageCursor": "",
    }
    special = await call(emulator, "GET", ENTRIES, {"datastoreName": "Coins", "scope": "special"})
    assert [k["key"] for k in special.json()["keys"]] == ["User_6", "User_7"]
    every = await call(emulator, "GET", ENTRIES, {"datastoreName": "Coins", "allScopes": "true"})
    assert every.json()["keys"] == [
        {"scope": "global", "key": "User_3"},
        {"scope": "global", "key": "User_4"},
        {"scope": "special", "key": "User_6"},
        {"scope": "special", "key": "User_7"},
    ]
    # Published clients spell it AllScopes and send "False" next to a scope.
    quiet = await call(
        emulator,
        "GET",
        ENTRIES,
        {"datastoreName": "Coins", "scope": "special", "AllScopes": "False"},
    )
    assert [k["key"] for k in quiet.json()["keys"]] == ["User_6", "User_7"]


async def test_list_entries_scope_with_all_scopes_is_rejected(emulator: RunningEmulator) -> None:
    await put(emulator, "k", "1")
    reply = await call(
        emulator,
        "GET",
        ENTRIES,
        {"datastoreName": "Coins", "scope": "special", "allScopes": "true"},
    )
    assert reply.status == 400
    assert reply.v1_code == "InvalidDataStoreScope"


async def test_list_entries_includes_tombstones_and_prefix(emulator: RunningEmulator) -> None:
    for key in ("house_1", "house_2", "pet_1"):
        await put(emulator, key, "1")
    await call(emulator, "DELETE", ENTRY, entry("house_2"))
    reply = await call(emulator, "GET", ENTRIES, {"datastoreName": "Coins", "prefix": "house"})
    assert [k["key"] for k in reply.json()["keys"]] == ["house_1", "house_2"]


async def test_list_entries_missing_data_store(emulator: RunningEmulator) -> None:
    reply = await call(emulator, "GET", ENTRIES, {"datastoreName": "Nowhere"})
    assert reply.status == 404
    assert reply.v1_code == "DatastoreNotFound"


async def test_list_entries_pages_and_binds_cursor(emulator: RunningEmulator) -> None:
    keys = [f"key_{i:02d}" for i in range(7)]
    for key in keys:
        await put(emulator, key, "1")
    query = {"datastoreName": "Coins", "prefix": "key_", "limit": "3"}
    first = (await call(emulator, "GET", ENTRIES, query)).json()
    assert [k["key"] for k in first["keys"]] == keys[:3]
    cursor = first["nextPageCursor"]
    assert cursor
    # The page size may change between pages; the query may not.
    second = (
        await call(emulator, "GET", ENTRIES, query | {"cursor": cursor, "limit": "10"})
    ).json()
    assert [k["key"] for k in second["keys"]] == keys[3:]
    assert second["nextPageCursor"] == ""
    other_query = await call(emulator, "GET", ENTRIES, query | {"cursor": cursor, "prefix": "k"})
    assert other_query.status == 400
    assert other_query.v1_code == "InvalidCursor"
    other_scope = await call(
        emulator, "GET", ENTRIES, query | {"cursor": cursor, "scope": "special"}
    )
    assert other_scope.v1_code == "InvalidCursor"
    malformed = await call(emulator, "GET", ENTRIES, query | {"cursor": "%%%not-a-cursor"})
    assert malformed.status == 400
    assert malformed.v1_code == "InvalidCursor"
    stores_cursor = await call(emulator, "GET", BASE, {"cursor": cursor})
    assert stores_cursor.v1_code == "InvalidCursor"


# ------------------------------------------------------------------- versions


async def _hourly_writes(emu: RunningEmulator, key: str, count: int) -> list[str]:
    versions = []
    for i in range(count):
        if i:
            emu.clock.advance(hours=1)
        versions.append((await put(emu, key, str(i))).json()["version"])
    return versions


async def test_list_versions_order_and_time_window(emulator: RunningEmulator) -> None:
    written = await _hourly_writes(emulator, "k", 3)  # 12:00, 13:00, 14:00
    ascending = await versions_of(emulator, "k")
    assert [v["version"] for v in ascending] == written
    assert all(BODY_TIME_RE.fullmatch(v["createdTime"]) for v in ascending)
    assert {v["objectCreatedTime"] for v in ascending} == {"2026-03-10T12:00:00.0000000Z"}
    descending = await versions_of(emulator, "k", sortOrder="Descending")
    assert [v["version"] for v in descending] == written[::-1]
    since = await versions_of(emulator, "k", startTime="2026-03-10T13:00:00Z")
    assert [v["version"] for v in since] == written[1:]
    until = await versions_of(emulator, "k", endTime="2026-03-10T13:30:00.5+00:00")
    assert [v["version"] for v in until] == written[:2]
    naive = await versions_of(emulator, "k", startTime="2026-03-10T13:00:00")
    assert [v["version"] for v in naive] == written[1:]


async def test_list_versions_errors(emulator: RunningEmulator) -> None:
    await put(emulator, "k", "1")
    order = await call(emulator, "GET", VERSIONS, entry("k", sortOrder="Newest"))
    assert order.status == 400
    assert order.v1_code == "InvalidSortOrder"
    start = await call(emulator, "GET", VERSIONS, entry("k", startTime="yesterday"))
    assert start.v1_code == "InvalidStartTime"
    end = await call(emulator, "GET", VERSIONS, entry("k", endTime="2026-13-01T00:00:00Z"))
    assert end.v1_code == "InvalidEndTime"
    backwards = await call(
        emulator,
        "GET",
        VERSIONS,
        entry("k", startTime="2026-03-10T13:00:00Z", endTime="2026-03-10T12:00:00Z"),
    )
    assert backwards.v1_code == "InvalidEndTime"
    missing_store = await call(emulator, "GET", VERSIONS, entry("k", "Nowhere"))
    assert missing_store.status == 404
    assert missing_store.v1_code == "DatastoreNotFound"


async def test_list_versions_pages(emulator: RunningEmulator) -> None:
    written = await _hourly_writes(emulator, "k", 5)
    query = entry("k", limit="2", sortOrder="Descending")
    seen: list[str] = []
    cursor = ""
    while True:
        params = query | ({"cursor": cursor} if cursor else {})
        page = (await call(emulator, "GET", VERSIONS, params)).json()
        seen += [v["version"] for v in page["versions"]]
        cursor = page["nextPageCursor"]
        if not cursor:
            break
        flipped = await call(
            emulator, "GET", VERSIONS, query | {"cursor": cursor, "sortOrder": "Ascending"}
        )
        assert flipped.v1_code == "InvalidCursor"
    assert seen == written[::-1]


async def test_get_version(emulator: RunningEmulator) -> None:
    first = (
        await put(emulator, "k", '"old"', headers={"roblox-entry-attributes": '{"a": 1}'})
    ).json()
    emulator.clock.advance(hours=1)
    await put(emulator, "k", '"new"')
    reply = await call(emulator, "GET", VERSION, entry("k", versionId=first["version"]))
    assert reply.status == 200
    assert reply.body == b'"old"'
    assert reply.headers["roblox-entry-version"] == first["version"]
    assert reply.headers["content-md5"] == md5(b'"old"')
    assert reply.headers["roblox-entry-version-created-time"] == (
        "2026-03-10T12:00:00.0000000+00:00"
    )
    assert json.loads(reply.headers["roblox-entry-attributes"]) == {"a": 1}


async def test_get_version_errors(emulator: RunningEmulator) -> None:
    first = (await put(emulator, "k", "1")).json()["version"]
    unknown = first[:-2] + "02"
    missing = await call(emulator, "GET", VERSION, entry("k", versionId=unknown))
    assert missing.status == 404
    assert missing.v1_code == "VersionNotFound"
    other_key = await call(emulator, "GET", VERSION, entry("k2", versionId=first))
    assert other_key.v1_code == "VersionNotFound"
    for bad in ("", "latest", "08D9E6A3F2188CFF.1.08D9E6A3F2188CFF.01"):
        malformed = await call(emulator, "GET", VERSION, entry("k", versionId=bad))
        assert malformed.status == 400
        assert malformed.v1_code == "InvalidVersionId"


async def test_get_tombstone_version_is_204(emulator: RunningEmulator) -> None:
    await put(emulator, "k", "1")
    emulator.clock.advance(hours=1)
    await call(emulator, "DELETE", ENTRY, entry("k"))
    tombstone = (await versions_of(emulator, "k"))[-1]
    assert tombstone["deleted"] is True
    reply = await call(emulator, "GET", VERSION, entry("k", versionId=tombstone["version"]))
    assert reply.status == 204
    assert reply.body == b""
    assert reply.headers["roblox-entry-version"] == tombstone["version"]
    assert "content-md5" not in reply.headers


async def test_versions_collapse_within_an_hour(emulator: RunningEmulator) -> None:
    clock = emulator.clock
    v1 = (await put(emulator, "k", "1")).json()["version"]  # 12:00, first of the hour: kept
    clock.advance(minutes=10)
    v2 = (await put(emulator, "k", "2")).json()["version"]  # 12:10
    clock.advance(minutes=10)
    v3 = (await put(emulator, "k", "3")).json()["version"]  # 12:20 replaces 12:10
    assert len({v1, v2, v3}) == 3  # every write still answers a fresh version
    assert [v["version"] for v in await versions_of(emulator, "k")] == [v1, v3]
    gone = await call(emulator, "GET", VERSION, entry("k", versionId=v2))
    assert gone.v1_code == "VersionNotFound"
    clock.advance(hours=1)
    v4 = (await put(emulator, "k", "4")).json()["version"]  # 13:20, a new hour
    assert [v["version"] for v in await versions_of(emulator, "k")] == [v1, v3, v4]


async def test_superseded_versions_expire_after_thirty_days(emulator: RunningEmulator) -> None:
    clock = emulator.clock
    v1 = (await put(emulator, "k", "1")).json()["version"]  # 12:00
    clock.advance(hours=1)
    v2 = (await put(emulator, "k", "2")).json()["version"]  # 13:00 supersedes v1
    clock.advance(hours=1)
    v3 = (await put(emulator, "k", "3")).json()["version"]  # 14:00 supersedes v2
    clock.set(START + timedelta(hours=1) + timedelta(days=30) - timedelta(minutes=2))
    assert [v["version"] for v in await versions_of(emulator, "k")] == [v1, v2, v3]
    clock.set(START + timedelta(hours=1) + timedelta(days=30, minutes=1))
    assert [v["version"] for v in await versions_of(emulator, "k")] == [v2, v3]
    clock.set(START + timedelta(days=400))
    assert [v["version"] for v in await versions_of(emulator, "k")] == [v3]  # latest stays
    assert (await call(emulator, "GET", ENTRY, entry("k"))).body == b"3"


async def test_tombstoned_key_is_purged_after_thirty_days(emulator: RunningEmulator) -> None:
    clock = emulator.clock
    await put(emulator, "keep", "1")
    await put(emulator, "k", "1")
    tombstone_time = clock.advance(minutes=5)
    await call(emulator, "DELETE", ENTRY, entry("k"))
    clock.set(tombstone_time + timedelta(days=29))
    listed = await call(emulator, "GET", ENTRIES, {"datastoreName": "Coins"})
    assert [k["key"] for k in listed.json()["keys"]] == ["k", "keep"]
    clock.set(tombstone_time + timedelta(days=30, minutes=1))
    listed = await call(emulator, "GET", ENTRIES, {"datastoreName": "Coins"})
    assert [k["key"] for k in listed.json()["keys"]] == ["keep"]
    assert await versions_of(emulator, "k") == []


# --------------------------------------------------------------- auth, limits


async def test_missing_api_key_is_401(emulator: RunningEmulator) -> None:
    async with (
        aiohttp.ClientSession() as bare,
        bare.get(emulator.url(BASE), params={"limit": "5"}) as resp,
    ):
        assert resp.status == 401
        assert await resp.json() == {"errors": [{"code": 0, "message": "Invalid API Key"}]}


ALL_V1_SCOPES = [
    "universe-datastores.control:list",
    "universe-datastores.control:create",
    "universe-datastores.objects:list",
    "universe-datastores.objects:read",
    "universe-datastores.objects:create",
    "universe-datastores.objects:update",
    "universe-datastores.objects:delete",
    "universe-datastores.versions:list",
    "universe-datastores.versions:read",
]


@pytest.fixture
async def keyed(clock: ManualClock) -> AsyncIterator[RunningEmulator]:
    """An emulator with a keys file; requests choose their key with the x-api-key header."""
    config = EmulatorConfig(
        clock=clock,
        limits=LimitsConfig(mode="off"),
        keys=[
            KeyGrant(key="admin", scopes=ALL_V1_SCOPES),
            KeyGrant(key="reader", scopes=["universe-datastores.objects:read"]),
            KeyGrant(
                key="creator",
                scopes=["universe-datastores.objects:create", "universe-datastores.control:create"],
            ),
            KeyGrant(key="updater", scopes=["universe-datastores.objects:update"]),
            KeyGrant(key="elsewhere", universes=["999"], scopes=ALL_V1_SCOPES),
            KeyGrant(key="coins-only", scopes=ALL_V1_SCOPES, datastores=["Coins"]),
        ],
    )
    runner, base_url, ctx = await start_emulator(config)
    async with aiohttp.ClientSession() as http:
        yield RunningEmulator(base_url, ctx, clock, http)
    await runner.cleanup()


def as_key(key: str) -> dict[str, str]:
    return {"x-api-key": key}


async def test_unknown_key_is_401(keyed: RunningEmulator) -> None:
    reply = await call(keyed, "GET", BASE, headers=as_key("nope"))
    assert reply.status == 401


async def test_missing_scope_is_403(keyed: RunningEmulator) -> None:
    assert (await put(keyed, "k", "1", headers=as_key("admin"))).status == 200
    assert (await call(keyed, "GET", ENTRY, entry("k"), headers=as_key("reader"))).status == 200
    for method, path, params in (
        ("GET", BASE, {}),
        ("GET", ENTRIES, {"datastoreName": "Coins"}),
        ("DELETE", ENTRY, entry("k")),
        ("GET", VERSIONS, entry("k")),
        ("GET", VERSION, entry("k", versionId="0" * 16 + ".0000000001." + "0" * 16 + ".01")),
    ):
        reply = await call(keyed, method, path, params, headers=as_key("reader"))
        assert reply.status == 403, (method, path)
        assert reply.json()["error"] == "INSUFFICIENT_SCOPE"
        assert reply.v1_code == "InsufficientScope"


async def test_set_scopes_depend_on_what_exists(keyed: RunningEmulator) -> None:
    # A new data store needs control:create as well as objects:create.
    no_control = await put(keyed, "k", "1", datastore="New", headers=as_key("updater"))
    assert no_control.status == 403
    assert "control:create" in no_control.json()["message"]
    assert (await put(keyed, "k", "1", datastore="New", headers=as_key("creator"))).status == 200
    # An existing key needs objects:update; a new key in an existing store objects:create.
    refused = await put(keyed, "k", "2", datastore="New", headers=as_key("creator"))
    assert refused.status == 403
    assert "objects:update" in refused.json()["message"]
    assert (await put(keyed, "k", "2", datastore="New", headers=as_key("updater"))).status == 200
    new_key = await put(keyed, "k2", "1", datastore="New", headers=as_key("updater"))
    assert new_key.status == 403
    increment = await call(
        keyed, "POST", ENTRY + "/increment", entry("k3", "New"), headers=as_key("updater")
    )
    assert increment.status == 403
    assert (
        await call(
            keyed, "POST", ENTRY + "/increment", entry("k3", "New"), headers=as_key("creator")
        )
    ).status == 200


async def test_key_restricted_to_other_universe_or_store(keyed: RunningEmulator) -> None:
    elsewhere = await call(keyed, "GET", BASE, headers=as_key("elsewhere"))
    assert elsewhere.status == 403
    assert elsewhere.v1_code == "Forbidden"
    assert (await put(keyed, "k", "1", headers=as_key("coins-only"))).status == 200
    other_store = await put(keyed, "k", "1", datastore="Gems", headers=as_key("coins-only"))
    assert other_store.status == 403
    assert other_store.v1_code == "Forbidden"


@pytest.fixture
async def throttled(clock: ManualClock) -> AsyncIterator[RunningEmulator]:
    config = EmulatorConfig(
        clock=clock,
        limits=LimitsConfig(mode="documented", overrides={"v1.write": 2, "v1.read.bytes": 10}),
    )
    runner, base_url, ctx = await start_emulator(config)
    async with aiohttp.ClientSession(headers={"x-api-key": "k"}) as http:
        yield RunningEmulator(base_url, ctx, clock, http)
    await runner.cleanup()


async def test_v1_write_budget_answers_429(throttled: RunningEmulator) -> None:
    assert (await put(throttled, "a", "1")).status == 200
    assert (await put(throttled, "b", "1")).status == 200
    refused = await put(throttled, "c", "1")
    assert refused.status == 429
    assert refused.json()["error"] == "RESOURCE_EXHAUSTED"
    assert refused.v1_code == "TooManyRequests"
    assert "retry-after" in refused.headers
    missing = await call(throttled, "GET", ENTRY, entry("c"))
    assert missing.v1_code == "EntryNotFound"  # the refused write was not applied
    throttled.clock.advance(seconds=61)
    assert (await put(throttled, "c", "1")).status == 200


async def test_v1_read_bytes_count_the_value_read(throttled: RunningEmulator) -> None:
    await put(throttled, "big", '"' + "x" * 20 + '"')
    refused = await call(throttled, "GET", ENTRY, entry("big"))
    assert refused.status == 429
    assert refused.v1_code == "TooManyRequests"
