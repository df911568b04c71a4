"""Issue 10 in the plugin, end to end: its real Luau in the harness (pluau) against a real
companion server on the emulator, driven through the widget like a user.

Session-locked saves (ProfileStore, ProfileService, Lapis): the entry view says who holds the
player's session and since when (read back through the revision history), edits only the data
part and keeps every other byte of the wrapper, and warns before a write to a held entry.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from dsm.emulator.clock import ManualClock
from dsm.emulator.context import EmulatorConfig
from dsm.emulator.throttle import LimitsConfig
from dsm.http.appkeys import TOKEN_STORE
from dsm.services.jobs.session_locks import detect
from dsm.storage.vault import ApiKeyRecord
from shared_schema.common import Role
from tools.luau_harness import LuauHarness
from tools.testing.emulator import start_emulator
from tools.testing.plugin import PLUGIN_SRC, PluginDriver, profile_save, write_entry
from tools.testing.server import Server, entry_path, idem, running_server
from tools.testing.upstream import server_on_emulator

CLIENT_NAME = "DataStore Manager Pro (Studio)"  # plugin/src/Config.luau CLIENT_NAME


@pytest.fixture(params=["Deferred", "Immediate"])
def harness(request: pytest.FixtureRequest) -> Iterator[LuauHarness]:
    h = LuauHarness(PLUGIN_SRC, signal_behavior=request.param)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path) as s:
        yield s


@asynccontextmanager
async def opencloud_server(
    tmp_path: Path, environment: str, clock: ManualClock | None = None
) -> AsyncIterator[Server]:
    """The server on its LIVE code path (a key for universe 1, labelled "Main game" and tagged
    `environment`) against a separate emulator standing in for apis.roblox.com, on `clock`."""
    config = EmulatorConfig(data_dir=tmp_path / "opencloud", limits=LimitsConfig(mode="off"))
    if clock is not None:
        config.clock = clock
    runner, open_cloud_url, _ = await start_emulator(config)
    record = ApiKeyRecord(
        id="main",
        label="Main game",
        api_key=SecretStr("test-key-" + idem()),
        universes=[1],
        environment=environment,
        added_at=datetime.now(UTC),
    )
    try:
        async with running_server(
            tmp_path / "server", keys=[record], open_cloud_base_url=open_cloud_url
        ) as server:
            yield server
    finally:
        await runner.cleanup()


async def connected(
    harness: LuauHarness, server: Server, universe_label: str = "Emulator universe 1"
) -> PluginDriver:
    driver = await PluginDriver.open(harness, server)
    await driver.pair(universe_label)
    return driver


async def stored(server: Server, token: str, datastore: str, key: str) -> dict[str, Any]:
    status, view = await server.call("GET", entry_path(1, datastore, key) + "?scope=global", token)
    assert status == 200, view
    result: dict[str, Any] = view
    return result


def shown_time(rfc3339: str) -> str:
    """A server time as the plugin shows it (Core/Format.timestamp)."""
    at = datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


# -- session-locked saves ---------------------------------------------------------------------


def profile(job: str, loads: int, coins: int, saved_ago: int) -> str:
    return profile_save(job, loads, coins, saved_ago, now=time.time())


async def test_a_held_session_is_shown_and_only_its_data_is_edited(
    harness: LuauHarness, tmp_path: Path
) -> None:
    # Open Cloud's clock: the revisions are an hour apart, the newest 40 s old.
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3, seconds=40))
    async with server_on_emulator(tmp_path, clock) as server:
        game = await server.pair("Game server")
        # An earlier session on another server, then three hourly saves by the one holding it now.
        await write_entry(server, game, "PlayerData", "Player_1", profile("job-old", 1, 5, 4000))
        clock.advance(hours=1)
        first = await write_entry(
            server, game, "PlayerData", "Player_1", profile("job-a", 2, 10, 7300)
        )
        clock.advance(hours=1)
        await write_entry(server, game, "PlayerData", "Player_1", profile("job-a", 2, 15, 3700))
        clock.advance(hours=1)
        await write_entry(server, game, "PlayerData", "Player_1", profile("job-a", 2, 20, 40))
        await check_held_session(harness, server, game, first)


async def check_held_session(
    harness: LuauHarness, server: Server, game: str, first: dict[str, Any]
) -> None:
    before = (await stored(server, game, "PlayerData", "Player_1"))["value_json"]
    d = await connected(harness, server, "Universe 1 at ")
    await d.open_entry("PlayerData", "Player_1")
    await d.wait_text("ProfileStore session held by place 1818, server job-a")
    assert d.has_text("Last saved 4") and d.has_text("loaded 2 times so far")
    # Since when: the oldest of the newest revisions naming this session (job-a, load 2).
    await d.wait_text(f"Held since {shown_time(first['updated_at'])} or earlier")
    assert d.has_text("lost at that server's next save")

    # The tree shows only the data part; the wrapper is on its own read-only tab.
    assert d.has_text("Coins:") and not d.has_text("MetaData:")
    await d.click(d.row_with("TreeRow", "Coins:"))
    await d.wait_for(lambda: d.rendered("Editor"), "the inline editor did not open")
    await d.type(d.element("Editor"), "99")
    await d.wait_text("Unsaved changes: value")

    await d.click("SaveButton")
    await d.wait_for(lambda: d.rendered("SaveDialog"), "no save dialog")
    warning = d.element("SaveDialog/Card/Body/Warning").text
    assert "held by place 1818, server job-a" in warning
    assert "lost at that server's next save" in warning
    assert d.element("ConfirmButton").text == "Save anyway"
    await d.click("ConfirmButton")
    await d.wait_text("Saved Player_1")

    after = (await stored(server, game, "PlayerData", "Player_1"))["value_json"]
    old_data = detect(before, now=datetime.now(UTC))
    new_data = detect(after, now=datetime.now(UTC))
    assert old_data is not None and new_data is not None
    assert json.loads(new_data.data_json) == {"Coins": 99, "Inventory": ["sword"]}
    # Every byte outside the data part is the game server's, unchanged.
    assert after == before.replace(old_data.data_json, new_data.data_json, 1)
    assert new_data.holder == old_data.holder


async def test_a_data_part_that_is_not_json_holds_the_save(
    harness: LuauHarness, server: Server
) -> None:
    game = await server.pair("Game server")
    await write_entry(server, game, "PlayerData", "Player_2", profile("job-b", 1, 1, 10))
    d = await connected(harness, server)
    await d.open_entry("PlayerData", "Player_2")
    await d.wait_text("ProfileStore session held by")
    await d.click("RawTab")
    await d.wait_for(lambda: d.rendered("RawText"), "no raw editor")
    assert '"Coins": 1' in d.element("RawText").text and "MetaData" not in d.element("RawText").text
    await d.type(d.element("RawText"), '{"Coins": ')
    await d.wait_text("The new data is not JSON")
    assert d.element("SaveButton").get("AutoButtonColor") is False  # disabled
    await d.type(d.element("RawText"), "5")
    await d.wait_text("needs its Data to be a table")
    await d.click("WrapperTab")
    await d.wait_for(lambda: d.rendered("WrapperValue"), "no whole-value tab")
    assert "ActiveSession" in d.element("WrapperValue/RawScroll/RawText").text


# -- the Open Cloud budget and the CCU it assumes ------------------------------------------------


def make_admin(server: Server) -> None:
    """What `dsm tokens role ID admin` does to the plugin's token (pairing gives editor)."""
    store = server.app[TOKEN_STORE]
    mine = [t for t in store.list_tokens() if t.name == CLIENT_NAME]
    assert len(mine) == 1
    store.set_role(mine[0].token_id, Role.ADMIN)


async def test_the_status_bar_shows_the_budget_and_the_ccu_set_from_the_plugin(
    harness: LuauHarness, server: Server
) -> None:
    d = await connected(harness, server)
    await d.click("Universe_1")
    await d.wait_text("Budget: CCU 0 (default) · 150 writes/min · 150 reads/min")
    await d.click("JobsButton")
    await d.wait_for(lambda: d.rendered("BudgetButton"), "no Jobs screen")
    await d.click("BudgetButton")
    await d.wait_text("CCU 0 (server default) · 50% kept for game servers")
    assert d.has_text("300 + 20")  # the documented formula, from the server
    await d.type("CcuInput", "2,500", enter=False)
    await d.click("ConfirmButton")
    await d.wait_text("admin")  # an editor may not raise the budget
    make_admin(server)
    await d.click("ConfirmButton")
    await d.wait_text("CCU 2,500 (set for this universe)")
    await d.wait_text("Budget: CCU 2,500 · 25,150 writes/min · 50,150 reads/min")
    teammate = await server.pair("Teammate")
    status, budget = await server.call("GET", "/universes/1/budget", teammate)
    assert status == 200 and budget["ccu"] == 2500 and budget["ccu_source"] == "universe"
    await d.click("DefaultCcuButton")
    await d.wait_text("Budget: CCU 0 (default)")
