"""The plugin's Luau core (Core/Api, Core/Connection, Core/Json) against a real companion server.

A real `dsm serve` app runs on loopback (tools/testing/server.py) and the plugin's own Luau runs in
the harness (tools/luau_harness): HttpService:RequestAsync there performs real HTTP, so every
request below is built, sent, validated and decoded by the same code Studio runs.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared_schema import PROTOCOL_MAJOR
from shared_schema.common import Role
from shared_schema.registry import ROUTES
from tools.luau_harness import LuauHarness
from tools.luau_harness.convert import from_lua
from tools.testing.server import Server, entry_path, idem, running_server

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_SRC = ROOT / "plugin" / "src"

U = 1
DS = "Saves/2024 ü"  # a "/" and a space and non-ASCII: every path segment must be encoded
KEY = "player/1 ✓"
# A big integer beyond doubles, {} next to [], non-ASCII: the value must come back as written.
VALUE = '{"coins":12345678901234567890,"bag":{},"list":[],"name":"Ünï ✓","ratio":1.0}'

# Globals of the Luau side: `api`, and helpers that turn results into plain tables.
SETUP = """
local Api = require("Core/Api")
local HttpService = game:GetService("HttpService")
_G.api = Api.new({
    baseUrl = %s,
    send = function(request)
        return pcall(function()
            return HttpService:RequestAsync(request)
        end)
    end,
    jsonEncode = function(value) return HttpService:JSONEncode(value) end,
    jsonDecode = function(text) return HttpService:JSONDecode(text) end,
    guid = function() return HttpService:GenerateGUID(false) end,
})
"""


async def lua(h: LuauHarness, code: str) -> Any:
    """Run a Luau snippet (yielding on HTTP) and return its first value as Python data."""
    values = await h.eval_async(code)
    return from_lua(values[0]) if values else None


def pairing_code(server: Server) -> str:
    match = re.search(r"(\d{4}) ?(\d{4})", server.announced[-1])
    assert match, server.announced[-1]
    return match.group(1) + match.group(2)


def luau_string(text: str) -> str:
    """A Luau string literal for `text`: JSON's string syntax with UTF-8 kept as is (Luau spells
    \\u escapes differently), which Luau reads the same way."""
    return json.dumps(text, ensure_ascii=False)


async def pair_from_luau(h: LuauHarness, server: Server) -> dict[str, Any]:
    started = await lua(h, 'return api:pairStart({client_name = "Studio e2e"})')
    assert started["ok"], started
    ticket = started["value"]
    assert ticket["code_length"] == 8
    code = pairing_code(server)
    completed = await lua(
        h,
        f"""
        local result = api:pairComplete({{
            pairing_id = {luau_string(ticket["pairing_id"])},
            code = {luau_string(code)},
            client_name = "Studio e2e",
        }})
        if result.ok then api:setToken(result.value.token) end
        return result
        """,
    )
    assert completed["ok"], completed
    paired: dict[str, Any] = completed["value"]
    return paired


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Server, LuauHarness]]:
    async with running_server(tmp_path) as server:
        with LuauHarness(PLUGIN_SRC) as h:
            await h.eval_async(SETUP % luau_string(server.base_url))
            yield server, h


REF = f"{{universe_id = {U}, datastore = {luau_string(DS)}, key = {luau_string(KEY)}}}"


async def test_hello_and_pairing(setup: tuple[Server, LuauHarness]) -> None:
    server, h = setup
    hello = await lua(h, "return api:hello()")
    assert hello["ok"] and hello["model"] == "Hello"
    assert hello["value"]["protocol_major"] == PROTOCOL_MAJOR
    assert hello["value"]["backend"] == "EMULATOR"
    # Data routes need a token: the plugin refuses to send without one.
    unpaired = await lua(h, "return api:listUniverses()")
    assert unpaired["error"]["kind"] == "Unauthenticated" and "status" not in unpaired["error"]

    paired = await pair_from_luau(h, server)
    assert paired["role"] == "editor" and paired["token"]
    universes = await lua(h, "return api:listUniverses()")
    assert universes["ok"], universes
    assert [u["universe_id"] for u in universes["value"]["universes"]] == [U]
    assert universes["value"]["source"]["kind"] == "EMULATOR"


async def test_a_wrong_pairing_code_is_a_typed_error(setup: tuple[Server, LuauHarness]) -> None:
    server, h = setup
    started = await lua(h, 'return api:pairStart({client_name = "Studio e2e"})')
    wrong = "00000000" if pairing_code(server) != "00000000" else "11111111"
    result = await lua(
        h,
        f"""return api:pairComplete({{pairing_id = {luau_string(started["value"]["pairing_id"])},
            code = "{wrong}", client_name = "Studio e2e"}})""",
    )
    assert result["ok"] is False
    assert result["error"]["kind"] == "ApiError" and result["error"]["code"] == "PAIRING_FAILED"
    assert result["error"]["status"] in (400, 403)
    assert result["error"]["message"]


async def test_entries_round_trip_and_conflict(setup: tuple[Server, LuauHarness]) -> None:
    server, h = setup
    await pair_from_luau(h, server)
    other = await server.pair("second writer")

    created = await lua(
        h, f"return api:createEntry({REF}, {{value_json = {luau_string(VALUE)}, user_ids = {{7}}}})"
    )
    assert created["ok"], created
    view = created["value"]
    assert view["key"] == KEY and view["datastore"] == DS
    assert view["value_json"] == VALUE  # byte for byte: never decoded in Luau
    assert view["size_bytes"] == len(VALUE.encode("utf-8"))
    assert view["user_ids"] == [7]
    # What the server stored is what the plugin sent.
    status, stored = await server.call("GET", entry_path(U, DS, KEY), other)
    assert status == 200 and stored["value_json"] == VALUE

    again = await lua(h, f'return api:createEntry({REF}, {{value_json = "1"}})')
    assert again["error"]["code"] == "ALREADY_EXISTS" and again["error"]["status"] == 409

    got = await lua(h, f"return api:getEntry({REF})")
    assert got["ok"] and got["value"]["revision"] == view["revision"]

    updated = await lua(
        h,
        f"""return api:updateEntry({REF}, {{value_json = '{{"coins":1}}',
            expected_revision = {luau_string(view["revision"])}}})""",
    )
    assert updated["ok"], updated
    seen = updated["value"]["revision"]
    assert seen != view["revision"]
    assert updated["value"]["user_ids"] == [7]  # omitted: carried over

    # A second writer saves first...
    status, theirs = await server.call(
        "PUT",
        entry_path(U, DS, KEY),
        other,
        json={"value_json": '{"coins":2}', "expected_revision": seen, "idempotency_key": idem()},
    )
    assert status == 200, theirs
    # ...so the plugin's save on the revision it showed is refused, with the current entry.
    conflict = await lua(
        h,
        f"""return api:updateEntry({REF}, {{value_json = '{{"coins":3}}',
            expected_revision = {luau_string(seen)}}})""",
    )
    assert conflict["ok"] is False
    error = conflict["error"]
    assert error["kind"] == "ApiError" and error["code"] == "CONFLICT" and error["status"] == 409
    assert error["retryable"] is False
    assert error["details"]["current"]["revision"] == theirs["revision"]
    assert error["details"]["current"]["value_json"] == '{"coins":2}'
    assert re.fullmatch(r"[0-9A-Fa-f-]{36}", error["idempotencyKey"])

    keys = await lua(h, f'return api:listKeys({U}, {luau_string(DS)}, {{prefix = "player/"}})')
    assert keys["ok"] and [item["key"] for item in keys["value"]["items"]] == [KEY]

    revisions = await lua(h, f"return api:listRevisions({REF})")
    assert revisions["ok"], revisions
    # Open Cloud (and the emulator) keeps one backup revision per key per hour, plus the latest.
    listed = {item["revision"] for item in revisions["value"]["items"]}
    assert {view["revision"], theirs["revision"]} <= listed
    diff = await lua(
        h,
        f"return api:diff({REF}, {luau_string(view['revision'])}, {luau_string(theirs['revision'])})",
    )
    assert diff["ok"], diff
    assert {op["path"] for op in diff["value"]["operations"]} >= {"/coins"}

    deleted = await lua(
        h,
        f"return api:deleteEntry({REF}, {{expected_revision = {luau_string(theirs['revision'])}}})",
    )
    assert deleted["ok"] and deleted["value"]["journal_id"] >= 1
    undone = await lua(h, f"return api:undo({deleted['value']['journal_id']})")
    assert undone["ok"] and undone["model"] == "EntryView"
    assert undone["value"]["value_json"] == '{"coins":2}'


async def test_odd_keys_survive_the_path_encoding(setup: tuple[Server, LuauHarness]) -> None:
    server, h = setup
    await pair_from_luau(h, server)
    for key in ("a/b", "with space", "50%", "q?x#y", "plus+sign", "é✓", "x:increment", "..", "."):
        ref = f"{{universe_id = {U}, datastore = {luau_string(DS)}, key = {luau_string(key)}}}"
        made = await lua(
            h, f"return api:createEntry({ref}, {{value_json = {luau_string(json.dumps(key))}}})"
        )
        assert made["ok"], (key, made)
        assert made["value"]["key"] == key
        got = await lua(h, f"return api:getEntry({ref})")
        assert got["ok"] and got["value"]["key"] == key, (key, got)
        assert json.loads(got["value"]["value_json"]) == key


async def test_event_polling_sees_a_write(setup: tuple[Server, LuauHarness]) -> None:
    server, h = setup
    await pair_from_luau(h, server)
    first = await lua(h, "return api:pollEvents({timeout = 0})")
    assert first["ok"] and first["model"] == "EventBatch", first
    cursor = first["value"]["next_cursor"]
    other = await server.pair("second writer")
    status, _ = await server.call(
        "POST",
        entry_path(U, DS, "evented"),
        other,
        json={"value_json": "1", "idempotency_key": idem()},
    )
    assert status == 200
    batch = await lua(h, f"return api:pollEvents({{cursor = {cursor}, timeout = 5}})")
    assert batch["ok"] and batch["model"] == "EventBatch", batch
    changed = [e for e in batch["value"]["events"] if e["type"] == "entry.changed"]
    assert changed and changed[0]["payload"]["key"] == "evented"
    assert batch["value"]["next_cursor"] > cursor
    # A cursor this server never issued answers resync.
    resync = await lua(h, "return api:pollEvents({cursor = 999999, timeout = 0})")
    assert resync["ok"] and resync["model"] == "EventResync" and resync["value"]["resync"] is True


def test_luau_tables_match_the_route_registry() -> None:
    with LuauHarness(PLUGIN_SRC) as h:
        wrappers = from_lua(h.eval('return require("Core/Api").WRAPPERS')[0])
        idempotent = from_lua(h.eval('return require("Core/Api").IDEMPOTENT')[0])
    # Every request/response route; the WebSocket stream has its own client, not a wrapper.
    assert set(wrappers) == {route.operation_id for route in ROUTES if not route.websocket}
    expected = {}
    for route in ROUTES:
        if route.body is not None and "idempotency_key" in route.body.model_fields:
            expected[route.operation_id] = "body"
        elif route.query is not None and "idempotency_key" in route.query.model_fields:
            expected[route.operation_id] = "query"
    assert idempotent == expected


# ---------------------------------------------------------------------------------------------
# The connection driver: pairing, events, revoked token, server stopped and restarted.

CONNECTION = """
local Connection = require("Core/Connection")
_G.seen = { events = {}, resyncs = {}, states = {} }
_G.conn = Connection.new({
    api = api,
    getToken = function() return _G.storedToken end,
    setToken = function(token) _G.storedToken = token end,
    spawn = function(fn) task.spawn(fn) end,
    delay = function(seconds, fn) return task.delay(seconds, fn) end,
    cancel = function(thread) task.cancel(thread) end,
    sleep = function(seconds) task.wait(seconds) end,
    random = function() return 1 end,
    clientName = "Studio e2e",
    eventOptions = { timeout = 1 },
    onEvents = function(events)
        for _, event in events do table.insert(seen.events, event.type .. ":" .. tostring(event.payload.key)) end
    end,
    onResync = function(reason) table.insert(seen.resyncs, reason) end,
})
conn:subscribe(function(state) table.insert(seen.states, state.name) end)
"""


async def state_of(h: LuauHarness) -> dict[str, Any]:
    state: dict[str, Any] = await lua(
        h,
        "local s = conn:getState() return {name = s.name, step = s.step, message = s.message, "
        "instanceId = s.instanceId}",
    )
    return state


async def wait_for_state(h: LuauHarness, name: str, timeout: float = 15.0) -> dict[str, Any]:
    """Let the Luau side run (HTTP, and virtual time for retry timers) until the state is `name`."""
    deadline = time.monotonic() + timeout
    while True:
        state = await state_of(h)
        if state["name"] == name:
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"still {state} waiting for {name}")
        await h.wait_until(lambda: True, timeout=1)
        await h.advance_async(0.25)


async def test_connection_lifecycle(tmp_path: Path) -> None:
    key = b"k" * 32
    with LuauHarness(PLUGIN_SRC) as h:
        async with running_server(tmp_path, data_key=key) as server:
            await h.eval_async(SETUP % luau_string(server.base_url))
            await h.eval_async(CONNECTION)
            await h.eval_async("conn:start()")
            await wait_for_state(h, "NeedsPairing")

            await h.eval_async("conn:beginPairing()")
            await h.wait_until(lambda: bool(server.announced))
            pairing = await wait_for_state(h, "Pairing")
            assert pairing["step"] == "awaitingCode"
            await h.eval_async(f"conn:submitCode({luau_string(pairing_code(server))})")
            connected = await wait_for_state(h, "Connected")
            first_instance = connected["instanceId"]
            assert await lua(h, "return _G.storedToken ~= nil")

            # The event stream delivers another writer's change.
            other = await server.pair("second writer", role=Role.ADMIN)
            status, _ = await server.call(
                "POST",
                entry_path(U, DS, "live"),
                other,
                json={"value_json": "1", "idempotency_key": idem()},
            )
            assert status == 200
            deadline = time.monotonic() + 10
            while "entry.changed:live" not in (await lua(h, "return seen.events") or []):
                assert time.monotonic() < deadline, "no entry.changed event arrived"
                await h.wait_until(lambda: True, timeout=1)
                await h.advance_async(0.1)

            # Revoking the plugin's token: the next poll gets 401 -> TokenRevoked, token dropped.
            status, tokens = await server.call("GET", "/tokens", other)
            assert status == 200
            mine = [t for t in tokens["tokens"] if t["name"] == "Studio e2e" and not t["revoked"]]
            status, _ = await server.call("DELETE", f"/tokens/{mine[0]['token_id']}", other)
            assert status == 200
            revoked = await wait_for_state(h, "TokenRevoked")
            assert "Pair again" in revoked["message"]
            assert await lua(h, "return _G.storedToken == nil")

            announced = len(server.announced)
            await h.eval_async("conn:beginPairing()")
            await h.wait_until(lambda: len(server.announced) > announced)
            await wait_for_state(h, "Pairing")
            await h.eval_async(f"conn:submitCode({luau_string(pairing_code(server))})")
            await wait_for_state(h, "Connected")

        # The server is gone: the plugin says so and keeps retrying on its back-off timer.
        reconnecting = await wait_for_state(h, "Reconnecting")
        assert "dsm serve" in reconnecting["message"]

        # The server comes back (same data directory: the token survives) with a new instance
        # id: the plugin reconnects and resyncs without a failure screen.
        async with running_server(tmp_path, data_key=key) as restarted:
            await h.eval_async(f"api.baseUrl = {luau_string(restarted.base_url)}")
            back = await wait_for_state(h, "Connected", timeout=30)
            assert back["instanceId"] != first_instance
            assert "The server restarted." in await lua(h, "return seen.resyncs")
            await h.eval_async("conn:destroy()")
        states = await lua(h, "return seen.states")
        assert "Failed" not in states and "ServerDown" not in states


async def test_http_disabled_has_its_own_screen(setup: tuple[Server, LuauHarness]) -> None:
    _, h = setup
    h.http_enabled = False
    await h.eval_async(CONNECTION)
    await h.eval_async("conn:start()")
    state = await wait_for_state(h, "HttpDisabled")
    assert "allow" in state["message"].lower()
    h.http_enabled = True
    await h.eval_async("conn:retry()")
    await wait_for_state(h, "NeedsPairing")
    await h.eval_async("conn:destroy()")


def test_json_parses_a_4_mib_value_in_the_luau_vm() -> None:
    players = {}
    index = 0
    text = ""
    while True:
        players[f"player_{index}"] = {
            "coins": 12345678901234567890 + index,
            "level": index % 100,
            "ratio": 0.5,
            "inventory": [
                {"id": f"item-{n}", "count": n, "tags": ["rare", "ünï"]} for n in range(5)
            ],
            "flags": {"vip": index % 2 == 0, "banned": None},
        }
        index += 1
        if index % 200 == 0:
            candidate = json.dumps({"players": players}, ensure_ascii=False, separators=(",", ":"))
            if len(candidate.encode("utf-8")) > 4 * 1024 * 1024:
                break
            text = candidate
    size = len(text.encode("utf-8"))
    assert 4 * 1024 * 1024 - 200_000 < size <= 4 * 1024 * 1024
    with LuauHarness(PLUGIN_SRC) as h:
        parse, encode = h.eval(
            """
            local Json = require("Core/Json")
            local root
            local function parse(text)
                local problem
                root, problem = Json.parse(text)
                assert(root ~= nil, problem and problem.message)
                return Json.countNodes(root)
            end
            local function encode(text)
                return Json.encode(root) == text
            end
            return parse, encode
            """
        )
        started = time.perf_counter()
        (nodes,) = h.call(parse, text)
        seconds = time.perf_counter() - started
        (same,) = h.call(encode, text)
    print(f"Json.parse of {size} bytes ({nodes} nodes) in the Luau VM: {seconds:.2f} s")
    assert same is True and nodes > 200_000
    # Measured at about 0.5 s on the 2-core CI machine; the bound only catches pathological
    # slowness (e.g. quadratic string building), not ordinary machine variance.
    assert seconds < 15
