"""`dsm mcp` driven by the MCP SDK's own client, against a real companion server running the
emulator with the sample game crawled into the search index (docs/assistants.md)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import CallToolResult, TextContent
from pydantic import SecretStr

from dsm.assistants.api import CompanionApi
from dsm.assistants.results import REDACTED
from dsm.assistants.server import build_server
from dsm.emulator import sample_game
from dsm.emulator.context import EmulatorConfig
from dsm.emulator.throttle import LimitsConfig
from dsm.storage.vault import ApiKeyRecord
from shared_schema.common import Role
from tools.testing import jobs
from tools.testing.emulator import start_emulator
from tools.testing.server import Server, running_server

from .test_canary import canary, leak_forms, occurrences
from .test_index_e2e import crawl

U = 1
STORE = sample_game.PLAYER_STORE
PLAYERS = 40


@dataclass
class World:
    server: Server
    admin: str
    assistant: str
    transcript: list[str] = field(default_factory=list)  # every tool result, as text

    def client(self, token: str | None = None, **options: Any) -> Client:
        api = CompanionApi(self.server.base_url, token or self.assistant)
        return Client(build_server(api, **options))

    async def call(self, client: Client, tool: str, **arguments: Any) -> CallToolResult:
        result = await client.call_tool(tool, arguments)
        assert isinstance(result, CallToolResult)
        self.transcript.append(result.model_dump_json())
        return result

    async def ok(self, client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
        result = await self.call(client, tool, **arguments)
        assert not result.is_error, (tool, _text(result))
        assert result.structured_content is not None
        return result.structured_content


def _text(result: CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, TextContent))


def failure(result: CallToolResult) -> dict[str, Any]:
    """The UNAVAILABLE label of a failed call (the SDK puts its own words before it)."""
    assert result.is_error
    text = _text(result)
    label: dict[str, Any] = json.loads(text[text.index("{") :])["label"]
    return label


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with running_server(tmp_path, budget_rpm=1_000_000, job_plan_wait_seconds=20) as server:
        admin = await server.pair("Ana", role=Role.ADMIN)
        status, offer = await server.call(
            "POST", "/sample-game", admin, json={"seed": 3, "players": PLAYERS}
        )
        assert status == 200 and offer["loaded"], offer
        await crawl(server, admin, {"universe_id": U, "datastores": [STORE]})
        yield World(server, admin, await server.pair("claude", role=Role.ASSISTANT))


async def player_key(world: World) -> str:
    status, page = await world.server.call(
        "GET", f"/universes/{U}/datastores/{STORE}/keys?limit=1", world.admin
    )
    assert status == 200, page
    key: str = page["items"][0]["key"]
    return key


async def test_every_read_tool_answers_with_its_source(world: World) -> None:
    key = await player_key(world)
    async with world.client() as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"read_entry", "search", "propose_transform"} <= names
        assert not names & {"start_job", "write_entry", "delete_entry"}

        universes = await world.ok(client, "list_universes")
        assert universes["label"]["source"] == "EMULATOR"
        stores = await world.ok(client, "list_datastores", universe_id=U)
        assert stores["label"]["source"] == "EMULATOR"
        assert STORE in {s["name"] for s in stores["result"]["items"]}
        scopes = await world.ok(client, "list_scopes", universe_id=U, datastore=STORE)
        assert scopes["label"]["source"] == "EMULATOR"
        keys = await world.ok(client, "list_keys", universe_id=U, datastore=STORE, limit=5)
        assert keys["label"]["source"] == "EMULATOR" and len(keys["result"]["items"]) == 5

        entry = await world.ok(client, "read_entry", universe_id=U, datastore=STORE, key=key)
        assert entry["label"]["source"] in ("EMULATOR", "CACHED")
        assert entry["label"]["backend"] == "EMULATOR"
        assert json.loads(entry["result"]["value_json"])["coins"] is not None
        revisions = await world.ok(
            client, "list_revisions", universe_id=U, datastore=STORE, key=key
        )
        assert revisions["label"]["source"] == "EMULATOR"

        found = await world.ok(client, "search", universe_id=U, query="coins > 0", limit=5)
        label = found["label"]
        assert label["source"] == "CACHED" and label["backend"] == "EMULATOR"
        assert label["sample_data"] is True and label["as_of"]
        assert label["coverage"]["entries_indexed"] == PLAYERS and label["coverage"]["complete"]
        for tool, args in (
            ("analyse_schema", {"datastore": STORE}),
            ("analyse_economy", {"currencies": ["coins"]}),
            ("find_anomalies", {}),
        ):
            answer = await world.ok(client, tool, universe_id=U, **args)
            assert answer["label"]["source"] == "CACHED", tool
            assert answer["label"]["coverage"]["entries_indexed"] == PLAYERS, tool

        status = await world.ok(client, "index_status", universe_id=U)
        budget = await world.ok(client, "get_budget", universe_id=U)
        listing = await world.ok(client, "list_jobs")
        for answer in (status, budget, listing):
            assert answer["label"]["source"] in ("EMULATOR", "CACHED"), answer["label"]
            assert "EMULATOR" in answer["label"].values(), answer["label"]

        missing = await world.call(
            client, "read_entry", universe_id=U, datastore=STORE, key="nobody-here"
        )
        assert missing.is_error
        gone = failure(missing)
        assert gone["source"] == "UNAVAILABLE" and gone["code"] == "NOT_FOUND"

        schema = await client.read_resource(f"dsm://universes/{U}/datastores/{STORE}/schema")
        text = schema.contents[0].text  # type: ignore[union-attr]
        assert json.loads(text)["label"]["source"] == "CACHED"
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert prompts == {"find_broken_saves", "draft_migration"}
        prompt = await client.get_prompt(
            "draft_migration", {"universe_id": str(U), "datastore": STORE, "field": "coins"}
        )
        assert "propose_transform" in prompt.messages[0].content.text  # type: ignore[union-attr]
    assert_no_secrets(world)


async def test_large_values_are_summarised_not_returned(world: World) -> None:
    key = await player_key(world)
    async with world.client(max_value_chars=40) as client:
        entry = await world.ok(client, "read_entry", universe_id=U, datastore=STORE, key=key)
    value = entry["result"]["value_json"]
    assert value["summarised"] is True and value["chars"] > 40
    assert value["shape"]["coins"] in ("number", "string (3 chars)") or value["shape"]["coins"]
    assert "inventory" in value["shape"]


async def test_a_proposal_changes_nothing_until_a_person_starts_it_once(world: World) -> None:
    async with world.client() as client:
        found = await world.ok(client, "search", universe_id=U, query="coins > 500", limit=500)
        keys = sorted(hit["entry"]["key"] for hit in found["result"]["hits"])
        assert keys
        before = {k: await coins(world, k) for k in keys}
        proposal = await world.ok(
            client,
            "propose_transform",
            universe_id=U,
            datastores=[STORE],
            program=".coins += 1",
            query="coins > 500",
        )
    job_id = proposal["job_id"]
    assert proposal["state"] == "planned" and "Nothing has been written" in proposal["approval"]
    assert proposal["plan"]["items"] == len(keys)
    # Chosen by the index, with its coverage stated, and each entry re-checked live at run time.
    assert any(n.startswith("Selected from the search index") for n in proposal["plan"]["notes"])
    assert {k: await coins(world, k) for k in keys} == before

    status, view = await world.server.call("GET", f"/jobs/{job_id}", world.admin)
    assert status == 200 and view["proposed_by"] == "claude" and view["state"] == "planned"
    status, started = await world.server.call("POST", f"/jobs/{job_id}/start", world.admin, json={})
    assert status == 200, started
    done = await jobs.wait(world.server.call, world.admin, job_id)
    assert done["state"] == "succeeded" and done["progress"]["applied"] == len(keys)
    assert done["approved_by"] == "Ana"
    status, again = await world.server.call("POST", f"/jobs/{job_id}/start", world.admin, json={})
    assert status == 409, again
    assert {k: await coins(world, k) for k in keys} == {k: v + 1 for k, v in before.items()}
    assert_no_secrets(world)


async def coins(world: World, key: str) -> Any:
    view = await jobs.read_value(world.server.call, world.admin, U, STORE, key)
    assert view is not None
    return json.loads(view["value_json"])["coins"]


async def test_other_proposals_plan_and_never_start(world: World) -> None:
    key = await player_key(world)
    async with world.client() as client:
        revisions = await world.ok(
            client, "list_revisions", universe_id=U, datastore=STORE, key=key
        )
        revision = revisions["result"]["items"][0]["revision"]
        for tool, args in (
            ("propose_update_entry", {"datastore": STORE, "key": key, "new_value": {"coins": 1}}),
            ("propose_delete_keys", {"datastore": STORE, "keys": [key]}),
            ("propose_restore_revision", {"datastore": STORE, "key": key, "revision": revision}),
        ):
            proposal = await world.ok(client, tool, universe_id=U, **args)
            assert proposal["state"] == "planned" and proposal["plan"]["items"] == 1, tool
    status, page = await world.server.call("GET", "/jobs", world.admin)
    assert status == 200
    # The fixture's crawl is a job too; the assistant's three proposals are planned, not run.
    proposals = [j for j in page["jobs"] if j.get("proposed_by") == "claude"]
    assert [j["state"] for j in proposals] == ["planned"] * 3
    assert [j["kind"] for j in page["jobs"] if j not in proposals] == ["crawl"]
    assert await jobs.read_value(world.server.call, world.admin, U, STORE, key) is not None


async def test_a_viewer_token_cannot_even_propose(world: World) -> None:
    viewer = await world.server.pair("read only", role=Role.VIEWER)
    async with world.client(viewer) as client:
        listed = await world.ok(client, "list_universes")
        assert listed["label"]["source"] == "EMULATOR"
        assert "caps" not in listed  # a viewer token is not capped: nothing to count down
        refused = await world.call(
            client, "propose_delete_keys", universe_id=U, datastore=STORE, keys=["x"]
        )
    assert refused.is_error and failure(refused)["code"] == "FORBIDDEN"
    _, page = await world.server.call("GET", "/jobs", world.admin)
    assert [j["kind"] for j in page["jobs"]] == ["crawl"]  # the fixture's own crawl only


async def test_proposals_turned_off_still_allow_reading(tmp_path: Path) -> None:
    async with running_server(tmp_path, assistant_proposals=False) as server:
        token = await server.pair("claude", role=Role.ASSISTANT)
        async with Client(build_server(CompanionApi(server.base_url, token))) as client:
            result = await client.call_tool(
                "propose_delete_keys", {"universe_id": U, "datastore": STORE, "keys": ["x"]}
            )
            assert result.is_error and "turned off" in _text(result)
            listed = await client.call_tool("list_universes", {})
            assert not listed.is_error


async def test_caps_hold_under_a_tight_loop(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, assistant_requests_per_minute=8, assistant_opencloud_per_minute=1000
    ) as server:
        token = await server.pair("claude", role=Role.ASSISTANT)
        async with Client(build_server(CompanionApi(server.base_url, token))) as client:
            results = [await client.call_tool("list_universes", {}) for _ in range(20)]
    errors = [failure(r) for r in results if r.is_error]
    assert len(results) - len(errors) == 8
    # Each answer says what is left of the caps, counted by the server, down to nothing.
    left = [r.structured_content["caps"]["api_requests"]["left"] for r in results[:8]]
    assert left == sorted(left, reverse=True) and left[-1] == 0, left
    caps = results[0].structured_content["caps"]
    assert caps["window_seconds"] == 60 and caps["api_requests"]["cap"] == 8
    assert caps["opencloud_requests"] == {"used": 0, "cap": 1000, "left": 1000}
    assert errors and all(e["code"] == "RATE_LIMITED" for e in errors)
    assert "Try again in" in errors[0]["reason"]


async def test_a_token_planted_in_a_value_is_redacted(world: World) -> None:
    planted = {"note": f"copied by mistake: {world.assistant} and {world.admin}"}
    await jobs.seed(world.server.call, world.admin, U, STORE, {"planted": planted})
    async with world.client() as client:
        entry = await world.ok(client, "read_entry", universe_id=U, datastore=STORE, key="planted")
    assert REDACTED in entry["result"]["value_json"]
    assert_no_secrets(world)


def assert_no_secrets(world: World) -> None:
    """The canary: no bearer token, in any encoding, in anything a tool returned."""
    text = "\n".join(world.transcript)
    assert world.transcript
    for token in (world.admin, world.assistant):
        secret = token.removeprefix("dsm_")
        forms = [token, secret, secret[8:40], base64.b64encode(token.encode()).decode()[4:-4]]
        for form in forms:
            assert form not in text


# ------------------------------------------------------------------------------ transports


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_dsm_mcp_over_stdio(world: World) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "dsm.cli", "mcp"],
        env={**os.environ, "DSM_SERVER": world.server.base_url, "DSM_TOKEN": world.assistant},
    )
    async with Client(params) as client:
        result = await client.call_tool("list_universes", {})
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["label"]["source"] == "EMULATOR"


async def test_dsm_mcp_refuses_a_person_token(world: World) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dsm.cli", "mcp",
        env={**os.environ, "DSM_SERVER": world.server.base_url, "DSM_TOKEN": world.admin},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2 and b"--role assistant" in err
    assert world.admin.encode() not in out + err


async def test_dsm_mcp_over_http_guards_host_origin_and_token(world: World) -> None:
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dsm.cli", "mcp", "--http", "--port", str(port),
        env={**os.environ, "DSM_SERVER": world.server.base_url, "DSM_TOKEN": world.assistant},
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/mcp"
    init = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}},
    }  # fmt: skip
    accept = {"Accept": "application/json, text/event-stream"}
    bearer = {"Authorization": f"Bearer {world.assistant}", **accept}
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.post(url, json=init, headers=accept) as resp:
                        no_token = resp.status
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            assert no_token == 401
            wrong = {**accept, "Authorization": "Bearer dsm_not-the-token"}
            async with http.post(url, json=init, headers=wrong) as resp:
                assert resp.status == 401
            async with http.post(url, json=init, headers={**bearer, "Host": "evil.test"}) as resp:
                assert resp.status in (400, 403, 421)
            browser = {**bearer, "Origin": "http://127.0.0.1:9"}
            async with http.post(url, json=init, headers=browser) as resp:
                assert resp.status == 403
            async with http.post(url, json=init, headers=bearer) as resp:
                assert resp.status == 200, await resp.text()
    finally:
        process.terminate()
        await process.wait()


async def test_names_an_assistant_passes_stay_one_path_segment(world: World) -> None:
    await jobs.seed(world.server.call, world.admin, U, STORE, {"a/b?c#d": {"coins": 2}})
    async with world.client() as client:
        entry = await world.ok(client, "read_entry", universe_id=U, datastore=STORE, key="a/b?c#d")
        assert json.loads(entry["result"]["value_json"]) == {"coins": 2}
        for dots in (".", ".."):  # a key, not the parent path
            missing = await world.call(
                client, "read_entry", universe_id=U, datastore=STORE, key=dots
            )
            assert failure(missing)["code"] == "NOT_FOUND"
            assert "No API route" not in failure(missing)["reason"]


async def test_live_path_labels_production_confirmation_and_no_api_key(tmp_path: Path) -> None:
    """On the LIVE code path (an API key, a production universe): answers say LIVE, the API
    key appears in no tool result in any encoding, and starting a proposal still needs the
    universe's label typed."""
    api_key = canary("mcp")
    async with live_server(tmp_path, api_key) as server:
        admin = await server.pair("Ana", role=Role.ADMIN)
        world = World(server, admin, await server.pair("claude", role=Role.ASSISTANT))
        await jobs.seed(server.call, admin, U, "Players", {"p1": {"coins": 1}, "p2": {"c": 2}})
        await crawl(server, admin, {"universe_id": U, "datastores": ["Players"]})
        async with world.client() as client:
            for tool, args in (
                ("list_universes", {}),
                ("list_datastores", {"universe_id": U}),
                ("list_keys", {"universe_id": U, "datastore": "Players"}),
                ("list_revisions", {"universe_id": U, "datastore": "Players", "key": "p1"}),
            ):
                answer = await world.ok(client, tool, **args)
                assert answer["label"]["source"] == "LIVE", (tool, answer["label"])
            entry = await world.ok(
                client, "read_entry", universe_id=U, datastore="Players", key="p1"
            )
            assert entry["label"]["source"] in ("LIVE", "CACHED")
            assert entry["label"]["backend"] == "LIVE"
            found = await world.ok(client, "search", universe_id=U, query="coins >= 0")
            assert found["label"]["backend"] == "LIVE" and found["label"]["sample_data"] is False
            for tool in ("analyse_schema", "find_anomalies", "index_status"):
                await world.ok(client, tool, universe_id=U)
            await world.ok(client, "list_jobs")
            proposal = await world.ok(
                client, "propose_delete_keys", universe_id=U, datastore="Players", keys=["p1"]
            )
            await world.ok(client, "get_job", job_id=proposal["job_id"])
            await world.ok(client, "get_budget", universe_id=U)
        job_id = proposal["job_id"]
        status, refused = await server.call("POST", f"/jobs/{job_id}/start", admin, json={})
        assert status == 403 and refused["error"]["details"]["confirmation"] == "Main game"
        status, _ = await server.call(
            "POST", f"/jobs/{job_id}/start", admin, json={"confirm": "Main game"}
        )
        assert status == 200
        assert (await jobs.wait(server.call, admin, job_id))["state"] == "succeeded"
        text = "\n".join(world.transcript).encode()
        assert not occurrences(text, leak_forms(api_key))
        assert_no_secrets(world)


@asynccontextmanager
async def live_server(tmp_path: Path, api_key: str) -> AsyncIterator[Server]:
    """The server on its LIVE code path: an API key for universe 1 ("Main game", production)
    against a separate emulator standing in for apis.roblox.com."""
    runner, url, _ = await start_emulator(
        EmulatorConfig(data_dir=tmp_path / "opencloud", limits=LimitsConfig(mode="off"))
    )
    record = ApiKeyRecord(
        id="main", label="Main game", api_key=SecretStr(api_key), universes=[U],
        environment="production", added_at=datetime.now(UTC),
    )  # fmt: skip
    try:
        async with running_server(
            tmp_path / "server", keys=[record], open_cloud_base_url=url, budget_rpm=1_000_000
        ) as server:
            yield server
    finally:
        await runner.cleanup()
