"""Client mistakes get a typed 4xx, never a 500 (security suite: hostile input).

Each case is one the hostile review sent: bodies that are not UTF-8, integers past 2^63, dates
whose UTC time falls before year 1, values nested hundreds deep or holding a lone surrogate.
The server runs on its embedded emulator over real loopback HTTP; the emulator is also hit
directly, because it must refuse the same values with Open Cloud's own 400, never answer 500.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dsm.emulator.app import EMULATOR
from shared_schema.common import Role
from shared_schema.constraints import MAX_JSON_DEPTH
from tools.testing.server import Server, entry_path, idem, running_server

from .conftest import RunningEmulator
from .test_security import raw_http

U = 1
DS = "Hostile"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Server, str]]:
    async with running_server(tmp_path) as running:
        yield running, await running.pair()


def bad_request(status: int, body: Any) -> str:
    assert status == 400, body
    assert set(body) == {"error"} and body["error"]["code"] == "BAD_REQUEST", body
    message: str = body["error"]["message"]
    return message


async def create(running: Server, token: str, key: str, value_json: str) -> tuple[int, Any]:
    """POST a new entry through the server, as the plugin does."""
    return await running.call(
        "POST",
        entry_path(U, DS, key),
        token,
        json={"value_json": value_json, "idempotency_key": idem()},
    )


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# ---------------------------------------------------------------------------------------------
# No client mistake reaches a 500


@pytest.mark.parametrize(
    "query",
    [
        {"before": str(2**63)},
        {"before": str(2**53)},
        {"before": "0"},
        {"universe": str(2**63)},
        {"universe": "-1"},
        {"limit": str(2**70)},
    ],
)
async def test_journal_integers_are_bounded(
    server: tuple[Server, str], query: dict[str, str]
) -> None:
    running, token = server
    bad_request(*await running.call("GET", "/journal", token, params=query))


@pytest.mark.parametrize("field", ["min", "max"])
async def test_ordered_filter_bounds_are_checked_before_open_cloud(
    server: tuple[Server, str], field: str
) -> None:
    running, token = server
    path = f"/universes/{U}/ordered/Board/scopes/global/entries"
    for value in (str(2**63), str(-(2**63) - 1), str(2**53)):
        message = bad_request(*await running.call("GET", path, token, params={field: value}))
        assert field in message


@pytest.mark.parametrize(
    "time", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+00:01"]
)
async def test_dates_that_overflow_utc_are_refused(server: tuple[Server, str], time: str) -> None:
    running, token = server
    path = entry_path(U, DS, "k")
    bad_request(*await running.call("GET", path + "/at", token, params={"time": time}))
    for name in ("start", "end"):
        message = bad_request(
            *await running.call("GET", path + "/revisions", token, params={name: time})
        )
        assert "UTC" in message


async def test_a_body_that_is_not_utf8_is_a_400_on_every_bound_route(
    server: tuple[Server, str],
) -> None:
    running, token = server
    port = int(running.base_url.rsplit(":", 1)[1])
    body = b'{"value_json": "\xff\xfe", "idempotency_key": "abcdefgh12"}'
    for method, path in (
        ("POST", entry_path(U, DS, "k")),
        ("PUT", entry_path(U, DS, "k")),
        ("POST", entry_path(U, DS, "k") + "/increment"),
        ("POST", "/journal/1/undo"),
        ("POST", "/sessions"),
        ("POST", "/pair/start"),
    ):
        response = await raw_http(
            port,
            f"{method} /api/v1{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n",
            body,
        )
        bad_request(response.status, response.json())


async def test_values_nested_past_the_limit_are_refused_up_front(
    server: tuple[Server, str],
) -> None:
    running, token = server
    deepest = nested(MAX_JSON_DEPTH)
    status, created = await create(running, token, "deep", deepest)
    assert status == 200 and created["value_json"] == deepest
    for depth in (MAX_JSON_DEPTH + 1, 495, 5000):
        message = bad_request(*await create(running, token, f"deep{depth}", nested(depth)))
        assert str(MAX_JSON_DEPTH) in message
    # Nothing was journaled for the refused writes: they never got near Open Cloud.
    status, journal = await running.call("GET", "/journal", token)
    assert status == 200 and [item["key"] for item in journal["items"]] == ["deep"]


@pytest.mark.parametrize(
    "value_json", ['"\\ud800"', '{"\\udfff": 1}', '["ok", "\\udbff tail"]', '"\\ude00\\ud83d"']
)
async def test_lone_surrogates_are_a_400(server: tuple[Server, str], value_json: str) -> None:
    running, token = server
    message = bad_request(*await create(running, token, "sur", value_json))
    assert "surrogate" in message
    status, journal = await running.call("GET", "/journal", token)
    assert status == 200 and journal["items"] == []


async def test_a_surrogate_pair_is_text_and_round_trips(server: tuple[Server, str]) -> None:
    running, token = server
    status, created = await create(running, token, "emoji", '"\\ud83d\\ude00"')
    assert status == 200, created
    assert json.loads(created["value_json"]) == "\U0001f600"


# ---------------------------------------------------------------------------------------------
# The emulator refuses the same values with Open Cloud's 400, never a 500

V2 = f"/cloud/v2/universes/{U}/data-stores/{DS}/scopes/global/entries"
V1 = f"/datastores/v1/universes/{U}/standard-datastores/datastore/entries/entry"
MAP = f"/cloud/v2/universes/{U}/memory-store/sorted-maps/m/items"
QUEUE = f"/cloud/v2/universes/{U}/memory-store/queues/q/items"
ORDERED = f"/cloud/v2/universes/{U}/ordered-data-stores/o/scopes/global/entries"
MESSAGE = f"/cloud/v2/universes/{U}:publishMessage"


def hostile_bodies() -> list[tuple[str, str, dict[str, str], bytes]]:
    deep = nested(MAX_JSON_DEPTH + 1).encode()
    surrogate = b'"\\ud800"'
    cases: list[tuple[str, str, dict[str, str], bytes]] = []
    for raw in (b"\xff\xfe", deep, surrogate, b"[" * 100_000):
        cases += [
            ("POST", V2, {"id": "k"}, b'{"value": ' + raw + b"}"),
            ("PATCH", V2 + "/k", {"allowMissing": "true"}, b'{"value": ' + raw + b"}"),
            ("POST", V1, {"datastoreName": DS, "entryKey": "k"}, raw),
            ("POST", MAP, {"id": "i"}, b'{"value": ' + raw + b', "ttl": "60s"}'),
            ("POST", QUEUE, {}, b'{"data": ' + raw + b', "ttl": "60s"}'),
            ("POST", ORDERED, {"id": "e"}, b'{"value": ' + raw + b"}"),
            ("POST", MESSAGE, {}, b'{"topic": "t", "message": ' + raw + b"}"),
        ]
    return cases


async def test_the_emulator_answers_400_for_every_hostile_value(
    emulator: RunningEmulator,
) -> None:
    for method, path, params, body in hostile_bodies():
        async with emulator.http.request(
            method,
            emulator.url(path),
            params=params,
            data=body,
            headers={"Content-Type": "application/json"},
        ) as response:
            text = await response.text()
            assert response.status == 400, (method, path, body[:40], response.status, text)


async def test_the_emulator_keeps_a_value_at_the_limit(emulator: RunningEmulator) -> None:
    value = nested(MAX_JSON_DEPTH)
    async with emulator.http.post(
        emulator.url(V2), params={"id": "edge"}, data=f'{{"value": {value}}}'.encode()
    ) as created:
        assert created.status == 200, await created.text()
    async with emulator.http.get(emulator.url(V2 + "/edge")) as read:
        assert json.loads(await read.text())["value"] == json.loads(value)


async def test_pydantic_messages_lose_their_value_error_prefix(
    server: tuple[Server, str],
) -> None:
    running, token = server
    status, body = await create(running, token, "k", "{")
    message = bad_request(status, body)
    assert "Value error" not in message and "not valid JSON text" in message


# ---------------------------------------------------------------------------------------------
# Open Cloud's refusals are the client's 4xx, with what to do; 5xx only when upstream failed


async def test_stale_or_forged_cursors_are_a_400_that_says_what_to_do(
    server: tuple[Server, str],
) -> None:
    running, token = server
    status, _ = await create(running, token, "k", "1")
    assert status == 200
    for path in (
        "/universes/1/datastores",
        f"/universes/1/datastores/{DS}/keys",
        entry_path(U, DS, "k") + "/revisions",
        "/universes/1/ordered/Board/scopes/global/entries",
        "/universes/1/memory/sorted-maps/m/items",
    ):
        for cursor in ("-1", "not-a-cursor", "A" * 4096):
            message = bad_request(
                *await running.call("GET", path, token, params={"cursor": cursor})
            )
            assert "first page" in message, (path, message)


async def test_a_malformed_revision_id_is_a_400(server: tuple[Server, str]) -> None:
    running, token = server
    status, _ = await create(running, token, "k", "1")
    assert status == 200
    for revision in ("zzz", "-1", "0" * 256, "08DF51BC.x"):
        message = bad_request(
            *await running.call("GET", entry_path(U, DS, "k") + f"/revisions/{revision}", token)
        )
        assert "revision list" in message
        status, body = await running.call(
            "GET",
            entry_path(U, DS, "k") + "/diff",
            token,
            params={"from": revision, "to": revision},
        )
        bad_request(status, body)


async def test_undeleting_a_live_store_is_a_conflict(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        admin = await running.pair("admin", role=Role.ADMIN)
        await create(running, admin, "k", "1")
        status, body = await running.call("POST", f"/universes/1/datastores/{DS}/undelete", admin)
        assert status == 409 and body["error"]["code"] == "CONFLICT"
        assert "nothing to undelete" in body["error"]["message"]


async def test_values_too_deep_for_python_are_read_but_not_compared(
    server: tuple[Server, str],
) -> None:
    # Only a game server can store such a value (this server and the emulator's API refuse
    # it), so it is written straight into the emulator's store, as Open Cloud would hold it.
    running, token = server
    emulator = running.upstream.emulator
    assert emulator is not None
    store = emulator.runner.app[EMULATOR].standard
    store.write("1", DS, "global", "abyss", nested(5000), attributes=None, user_ids=[])
    status, read = await running.call("GET", entry_path(U, DS, "abyss"), token)
    assert status == 200 and read["value_json"] == nested(5000)  # reading still works
    revision = read["revision"]
    message = bad_request(
        *await running.call(
            "GET",
            entry_path(U, DS, "abyss") + "/diff",
            token,
            params={"from": revision, "to": revision},
        )
    )
    assert "too deeply to compare" in message


@pytest.mark.parametrize(
    "target",
    [
        "/universes/1/datastores/ds/entries/%ff",
        "/universes/1/datastores/%ed%a0%80/entries/k",
        "/universes/1/datastores/ds/entries/k?scope=%ff",
        "/universes/1/datastores/ds/keys?prefix=%ed%a0%80",
        "/journal?key=%c3",
    ],
)
async def test_urls_whose_bytes_are_not_utf8_are_a_400(
    server: tuple[Server, str], target: str
) -> None:
    # aiohttp would read /entries/%ff as the key "%ff" and ?scope=%ff as U+FFFD.
    running, token = server
    port = int(running.base_url.rsplit(":", 1)[1])
    response = await raw_http(
        port,
        f"GET /api/v1{target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n",
    )
    assert "UTF-8" in bad_request(response.status, response.json())


async def test_a_revision_window_that_ends_before_it_starts_is_refused_up_front(
    server: tuple[Server, str],
) -> None:
    running, token = server
    message = bad_request(
        *await running.call(
            "GET",
            entry_path(U, DS, "k") + "/revisions",
            token,
            params={"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        )
    )
    assert "start is after end" in message
