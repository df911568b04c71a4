"""An assistant's proposal, made through `dsm mcp` with the SDK's client, as a person sees it
in the plugin's Jobs view, and approved there (docs/assistants.md)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp.client.client import Client

from dsm.assistants.api import CompanionApi
from dsm.assistants.server import build_server
from shared_schema.common import Role
from tools.luau_harness import LuauHarness
from tools.testing.plugin import PluginDriver, make_admin
from tools.testing.server import Server, running_server

from .test_plugin_jobs_ui import JOB_SERVER, game_writes, stored
from .test_plugin_layout_ui import cut_off_sideways


@pytest.fixture
def signal_behavior() -> str:
    """One mode is enough here: what is checked does not depend on when handlers run."""
    return "Deferred"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path, **JOB_SERVER) as s:
        yield s


async def test_a_person_sees_and_approves_an_assistants_proposal(
    harness: LuauHarness, server: Server
) -> None:
    game_writes(server, 3)
    bot = await server.pair("claude", role=Role.ASSISTANT)
    async with Client(build_server(CompanionApi(server.base_url, bot))) as client:
        proposal = await client.call_tool(
            "propose_transform",
            {"universe_id": 1, "datastores": ["PlayerData"], "program": ".coins = 1",
             "key_prefix": "Player_"},
        )  # fmt: skip
    assert not proposal.is_error and proposal.structured_content is not None
    job_id = proposal.structured_content["job_id"]
    teammate = await server.pair("Teammate")
    before = await stored(server, teammate, "PlayerData", "Player_1")

    d = await PluginDriver.open(harness, server)
    await d.pair("Emulator universe 1")
    make_admin(server)  # a transform needs an admin to start it
    await d.click("Universe_1")
    await d.click("JobsButton")
    proposed = "the AI assistant claude (a proposal: it runs only if you start it)"
    await d.wait_for(lambda: any(proposed in t for t in d.texts()), "the list shows no proposal")
    await d.click(d.row_with("JobRow", "Planned (dry run)"))
    await d.wait_for(lambda: d.rendered("StartButton"), "no Start on the proposal")
    assert any(proposed in t for t in d.texts())
    now = await stored(server, teammate, "PlayerData", "Player_1")
    assert (now["revision"], now["value_json"]) == (before["revision"], before["value_json"])

    await d.click("StartButton")
    await d.wait_text("Succeeded", timeout=30)
    assert any("the AI assistant claude, approved by " in t for t in d.texts())
    for key in ("Player_1", "Player_2", "Player_3"):
        view = await stored(server, teammate, "PlayerData", key)
        assert json.loads(view["value_json"])["coins"] == 1
    status, job = await server.call("GET", f"/jobs/{job_id}", teammate)
    assert status == 200 and job["state"] == "succeeded" and job["progress"]["applied"] == 3


async def test_the_jobs_screen_shows_each_assistants_use_of_its_caps(
    harness: LuauHarness, server: Server
) -> None:
    bot = await server.pair("claude", role=Role.ASSISTANT)
    for _ in range(2):
        assert (await server.call("GET", "/me", bot))[0] == 200
    d = await PluginDriver.open(harness, server)
    await d.pair("Emulator universe 1")
    await d.click("Universe_1")
    await d.click("JobsButton")
    await d.wait_for(lambda: d.rendered("AssistantsButton"), "no Jobs screen")
    await d.click("AssistantsButton")
    # The plugin pairs as an editor: listing tokens is an admin's, so it says where else to look.
    await d.wait_text("`dsm tokens list` shows each assistant's usage")
    make_admin(server)
    await d.click("ConfirmButton")  # Refresh
    await d.wait_text(
        "claude, in the last minute: 2 of 120 API requests (118 left) · "
        "0 of 60 Open Cloud requests (60 left)"
    )
    rows = [e for e in harness.find_all("AssistantRow") if e.node().rendered]
    assert len(rows) == 1  # the plugin's own (admin) token is a person's: not capped, not listed
    assert cut_off_sideways(harness, "AssistantsDialog") == []
    assert (await server.call("GET", "/me", bot))[0] == 200
    await d.click("ConfirmButton")
    await d.wait_text("claude, in the last minute: 3 of 120 API requests (117 left)")
