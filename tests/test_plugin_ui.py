"""The whole plugin, end to end: its real Luau in the harness (pluau) against a real companion
server on the emulator, driven through its widget like a user (toolbar button, clicks, typing).

Covers pairing, browsing to an entry, editing, a conflicting write by a teammate (through the
server's API with another token), resolving it, revert from history, undo through the journal,
the failure screens (server not running, server stopped, token revoked) and a server restart
that resyncs without asking anything. Also measures the two figures the plugin must keep:
Luau time per frame scrolling 100,000 keys and time to show a 4 MiB entry.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from dsm.app import create_app
from dsm.config import ServerConfig
from dsm.emulator.app import EmulatorConfig
from dsm.emulator.throttle import LimitsConfig
from dsm.http.appkeys import TOKEN_STORE
from dsm.http.guards import BoundPort
from dsm.storage.crypto import new_key
from dsm.storage.vault import ApiKeyRecord
from shared_schema import PROTOCOL_MAJOR, PROTOCOL_MINOR
from shared_schema.common import Backend, Role
from shared_schema.hello import Hello
from shared_schema.registry import schema_hash
from tools.luau_harness import LuauHarness
from tools.luau_harness.http import HttpRequest
from tools.preview_plugin_scenarios import (
    PLUGIN_SRC,
    PORT_SETTING,
    TOOLBAR_BUTTON,
    WIDGET_SETTING,
    PluginDriver,
    free_port,
    player,
    write_entry,
)
from tools.testing.emulator import start_emulator
from tools.testing.plugin import NAME_SUFFIX_SETTING
from tools.testing.server import Server, entry_path, idem, running_server

TOKEN_PREFIX = "DataStoreManagerPro.token@"
JSON_SLICE_BYTES = 128 * 1024  # plugin/src/UI/Models/JsonTreeModel.luau SLICE_BYTES


def with_real_clock(h: LuauHarness) -> LuauHarness:
    """`realClock()` in Luau: wall-clock seconds (os.clock follows the harness's virtual clock,
    which does not move while Luau runs), for measuring Luau time."""
    h.lua.globals().set("realClock", h.lua.create_function(lambda lua, args: time.perf_counter()))
    return h


@pytest.fixture
def harness(signal_behavior: str) -> Iterator[LuauHarness]:
    """The shared harness (tests/conftest.py), with `realClock()` for the timing tests here."""
    h = with_real_clock(LuauHarness(PLUGIN_SRC, signal_behavior=signal_behavior))
    try:
        yield h
    finally:
        h.close()


async def get_entry(server: Server, token: str, datastore: str, key: str) -> dict[str, Any]:
    status, view = await server.call("GET", entry_path(1, datastore, key) + "?scope=global", token)
    assert status == 200, view
    result: dict[str, Any] = view
    return result


def value_of(view: dict[str, Any]) -> Any:
    return json.loads(view["value_json"])


async def connected(harness: LuauHarness, server: Server) -> PluginDriver:
    driver = await PluginDriver.open(harness, server)
    await driver.pair()
    return driver


async def edit_leaf(d: PluginDriver, label: str, text: str) -> None:
    """Click a scalar row of the JSON tree and type a new value into its inline editor. (A large
    value is read a slice per frame: let frames pass until the row is there.)"""
    for _ in range(60):
        if d._has_row("TreeRow", label):
            break
        await d.h.advance_async(1 / 60)
    await d.click(d.row_with("TreeRow", label))
    await d.wait_for(lambda: d.rendered("Editor"), "the inline editor did not open")
    await d.type(d.element("Editor"), text)


async def save_with_preview(d: PluginDriver) -> None:
    await d.click("SaveButton")
    await d.wait_for(lambda: d.rendered("SaveDialog"), "no save dialog")
    # The diff preview is shown before anything is sent.
    assert d.rendered("SaveDiff")
    await d.click("ConfirmButton")


# -- opening, pairing ---------------------------------------------------------------------------


async def test_toolbar_button_toggles_the_widget_and_it_remembers(
    harness: LuauHarness, server: Server
) -> None:
    d = await PluginDriver.open(harness, server)
    widget = harness.widget("DataStoreManagerPro")
    assert widget.get("Enabled") is True
    assert harness.plugin_settings[WIDGET_SETTING] is True
    await d.wait_text("Start pairing")
    await harness.click_async(harness.toolbar_button(TOOLBAR_BUTTON))
    assert widget.get("Enabled") is False
    assert harness.plugin_settings[WIDGET_SETTING] is False


async def test_pairing_keeps_the_token_only_in_plugin_settings(
    harness: LuauHarness, server: Server
) -> None:
    d = await connected(harness, server)
    tokens = [k for k in harness.plugin_settings if k.startswith(TOKEN_PREFIX)]
    assert tokens == [TOKEN_PREFIX + f"http://127.0.0.1:{d.port}"]
    token = harness.plugin_settings[tokens[0]]
    assert isinstance(token, str) and len(token) > 20
    # Nowhere in the widget's instances.
    for root in harness.tree():
        for node in root.walk():
            for text in (node.text, node.placeholder, node.name, node.title):
                assert not text or token not in text
    # The server knows it under the plugin's name.
    names = [t.name for t in server.app[TOKEN_STORE].list_tokens()]
    assert d.client_name in names
    assert d.rendered("EmulatorBanner")
    assert "EMULATOR" in d.texts()


async def start_pairing_as_install(
    server: Server, settings: dict[str, Any], seed: int, signal_behavior: str
) -> str:
    """Start the plugin with these plugin settings (a Studio restart keeps them) and start
    pairing; check that the screen and the console name the install alike. Returns that name."""
    h = LuauHarness(PLUGIN_SRC, settings=settings, seed=seed, signal_behavior=signal_behavior)
    try:
        d = await PluginDriver.open(h, server)
        await d.wait_text("Start pairing")
        short = "Studio · " + settings[NAME_SUFFIX_SETTING]
        assert re.fullmatch(r"Studio · [0-9A-HJKMNP-TV-Z]{4}", short), short
        assert d.client_name == f"DataStore Manager Pro ({short})"
        assert f"This Studio pairs as “{short}”" in d.element("PairingName").text
        await d.click("StartPairingButton")
        await d.wait_for(lambda: d.rendered("PairingCodeInput"), "no code field")
        # The screen names the code to type; the console shows it under the same name.
        assert f"The console shows a code for “{short}”" in d.element("PairingName").text
        assert f"Pairing code for {d.client_name}: " in server.announced[-1]
        return d.client_name
    finally:
        h.close()


async def test_each_install_pairs_under_its_own_name_kept_across_restarts(
    signal_behavior: str, server: Server
) -> None:
    settings: dict[str, Any] = {}
    first = await start_pairing_as_install(server, settings, 1, signal_behavior)
    # Restarted with another random seed: a fresh draw would differ, the setting does not.
    assert await start_pairing_as_install(server, settings, 2, signal_behavior) == first
    # Another install (its own settings) draws its own name.
    assert await start_pairing_as_install(server, {}, 2, signal_behavior) != first


async def test_a_wrong_pairing_code_is_explained_and_can_be_retyped(
    harness: LuauHarness, server: Server
) -> None:
    d = await PluginDriver.open(harness, server)
    await d.wait_text("Start pairing")
    await d.click("StartPairingButton")
    await d.wait_for(lambda: d.rendered("PairingCodeInput"), "no code field")
    await d.type("PairingCodeInput", "00000000")
    await d.wait_for(lambda: d.rendered("PairingError"), "no pairing error shown")
    assert d.rendered("PairingCodeInput")
    assert not any(k.startswith(TOKEN_PREFIX) for k in harness.plugin_settings)


# -- browsing and editing -----------------------------------------------------------------------


async def test_browse_to_an_entry_with_its_metadata_size_and_source(
    harness: LuauHarness, server: Server
) -> None:
    teammate = await server.pair("Teammate")
    await write_entry(
        server,
        teammate,
        "PlayerData",
        "Player_1",
        '{"coins": 10, "big": 12345678901234567890, "empty": {}}',
        attributes={"schema": 3},
        user_ids=[1001],
    )
    d = await connected(harness, server)
    await d.open_entry("PlayerData", "Player_1")
    texts = d.texts()
    # Big integers are shown exactly as stored (no double rounding).
    assert "12345678901234567890" in texts
    assert "{ 0 keys }" in texts
    assert any(t.startswith("Updated ") for t in texts)
    assert any(t.endswith("of 4 MB (0%)") for t in texts)
    assert d.element("SourceBadge").text == "EMULATOR"
    await d.click("MetadataTab")
    await d.wait_for(lambda: d.rendered("AttributesEditor"), "no attributes editor")
    values = [e.text for e in harness.find_all("AttributesEditor/Row1/Value")]
    assert values == ["3"]
    ids = [e.text for e in harness.find_all("UserIdsEditor/Row1/Value")]
    assert ids == ["1001"]


async def test_edit_conflict_keep_mine(harness: LuauHarness, server: Server) -> None:
    teammate = await server.pair("Teammate")
    await write_entry(server, teammate, "PlayerData", "Player_2", player(2))
    d = await connected(harness, server)
    await d.open_entry("PlayerData", "Player_2")
    await edit_leaf(d, "coins:", "25000")
    await d.wait_text("Unsaved changes: value")

    # A teammate saves the same key meanwhile; the event stream tells the plugin.
    theirs = player(2) | {"coins": 99, "level": 40}
    written = await write_entry(server, teammate, "PlayerData", "Player_2", theirs)
    await d.wait_text("Changed on the server by Teammate")

    await save_with_preview(d)
    await d.wait_text("Someone else saved Player_2")
    texts = d.texts()
    assert any('"coins": 99,' in t for t in texts)  # current (theirs), left
    assert any('"coins": 25000,' in t for t in texts)  # yours, right
    assert any("by Teammate" in t for t in texts)
    # Nothing was overwritten.
    assert (await get_entry(server, teammate, "PlayerData", "Player_2"))["revision"] == written[
        "revision"
    ]

    await d.click("KeepMineButton")
    await d.wait_text("Saved your version")
    now = await get_entry(server, teammate, "PlayerData", "Player_2")
    assert value_of(now)["coins"] == 25000
    assert value_of(now)["level"] == player(2)["level"]  # my whole value, as previewed
    assert now["revision"] != written["revision"]


async def test_edit_conflict_take_theirs_and_merge_by_hand(
    harness: LuauHarness, server: Server
) -> None:
    teammate = await server.pair("Teammate")
    await write_entry(server, teammate, "PlayerData", "Player_3", {"coins": 1, "level": 1})
    d = await connected(harness, server)
    await d.open_entry("PlayerData", "Player_3")

    # Take theirs: my edit is dropped, the current value shown.
    await edit_leaf(d, "coins:", "5")
    await write_entry(server, teammate, "PlayerData", "Player_3", {"coins": 2, "level": 9})
    await d.wait_text("Changed on the server")
    await save_with_preview(d)
    await d.wait_text("Someone else saved Player_3")
    await d.click("TakeTheirsButton")
    await d.wait_text("Your edit was discarded")
    assert "9" in d.texts()

    # Merge by hand: edit the raw text on top of the current revision.
    await edit_leaf(d, "coins:", "7")
    await write_entry(server, teammate, "PlayerData", "Player_3", {"coins": 3, "level": 10})
    await d.wait_text("Changed on the server")
    await save_with_preview(d)
    await d.wait_text("Someone else saved Player_3")
    await d.click("MergeTab")
    await d.wait_for(lambda: d.rendered("MergeEditor"), "no merge editor")
    await d.type(harness.find("MergeEditor/RawScroll/RawText"), '{"coins": 7, "level": 10}')
    await d.click("SaveMergedButton")
    await d.wait_text("Saved your version")
    now = await get_entry(server, teammate, "PlayerData", "Player_3")
    assert value_of(now) == {"coins": 7, "level": 10}


async def test_invalid_raw_json_is_refused_with_line_and_column(
    harness: LuauHarness, server: Server
) -> None:
    teammate = await server.pair("Teammate")
    await write_entry(server, teammate, "PlayerData", "Player_4", {"coins": 4})
    d = await connected(harness, server)
    await d.open_entry("PlayerData", "Player_4")
    await d.click("RawTab")
    await d.wait_for(lambda: d.rendered("RawText"), "no raw editor")
    await d.type(d.element("RawText"), '{\n  "coins": 4,\n}')
    await d.wait_text("Line 3, column 1: trailing comma")
    assert d.element("SaveButton").get("AutoButtonColor") is False  # disabled


async def test_looking_at_the_raw_tab_keeps_the_stored_formatting(
    harness: LuauHarness, server: Server
) -> None:
    """The raw editor shows the value pretty-printed; showing it is not an edit. (With deferred
    signals its change handler once took that text for the user's, so a later edit in the tree
    saved the whole value re-formatted.)"""
    teammate = await server.pair("Teammate")
    await write_entry(server, teammate, "PlayerData", "Player_5", '{"coins":5,"level":1}')
    d = await connected(harness, server)
    await d.open_entry("PlayerData", "Player_5")
    size_before = d.element("SizeText").text
    assert size_before.startswith("21 B of 4 MB")
    await d.click("RawTab")
    await d.wait_for(lambda: d.rendered("RawText"), "no raw editor")
    await harness.advance_async(1)
    assert '"coins": 5' in d.element("RawText").text
    assert d.element("SizeText").text == size_before, "the pretty text was taken for the value"
    assert d.element("SaveButton").get("AutoButtonColor") is False  # nothing to save
    await d.click("TreeTab")
    await edit_leaf(d, "coins:", "6")
    await d.wait_text("Unsaved changes: value")
    await save_with_preview(d)
    await d.wait_text("Saved")
    stored = await get_entry(server, teammate, "PlayerData", "Player_5")
    assert stored["value_json"] == '{"coins":6,"level":1}'


async def test_revert_from_history_and_undo_through_the_journal(
    harness: LuauHarness, server: Server
) -> None:
    teammate = await server.pair("Teammate")
    first = await write_entry(server, teammate, "PlayerData", "Player_5", {"coins": 1})
    d = await connected(harness, server)
    await d.open_entry("PlayerData", "Player_5")
    await edit_leaf(d, "coins:", "2")
    await save_with_preview(d)
    await d.wait_text("Saved Player_5")
    assert value_of(await get_entry(server, teammate, "PlayerData", "Player_5")) == {"coins": 2}

    # Revert to the first revision from the history.
    await d.click("HistoryButton")
    await d.wait_text("2 revisions")
    await d.click(d.row_with("RevisionRow", first["revision"]))
    await d.click("RevertButton")
    await d.wait_for(lambda: d.rendered("RevertDialog"), "no revert dialog")
    assert d.rendered("RevertDiff")
    await d.click("ConfirmButton")
    await d.wait_text("Reverted Player_5")
    assert value_of(await get_entry(server, teammate, "PlayerData", "Player_5")) == {"coins": 1}

    # Undo that revert through the journal: back to my edit.
    await d.click("JournalTab")
    await d.wait_text("#")
    await d.click(d.button_in_row("JournalRow", "revert by", "UndoButton"))
    await d.wait_for(lambda: d.rendered("UndoDialog"), "no undo dialog")
    await d.click("ConfirmButton")
    await d.wait_text("Undone: Player_5")
    assert value_of(await get_entry(server, teammate, "PlayerData", "Player_5")) == {"coins": 2}


# -- failure screens ----------------------------------------------------------------------------


async def test_no_server_shows_how_to_start_it_then_connects_on_another_port(
    harness: LuauHarness, server: Server
) -> None:
    harness.plugin_settings[PORT_SETTING] = free_port()
    harness.plugin_settings[WIDGET_SETTING] = False
    harness.run_scripts()
    await harness.click_async(harness.toolbar_button(TOOLBAR_BUTTON))
    d = PluginDriver(harness, server)
    await d.wait_text("The server is not running")
    assert d.element("ServeCommand").text == "dsm serve"
    assert any("Trying again in" in t for t in d.texts())
    # Retries run on a capped back-off timer; several minutes later it is still waiting calmly.
    await harness.advance_async(300)
    await d.wait_text("The server is not running")
    # The user started it with --port: point the plugin there.
    await d.type("PortInput", str(d.port))
    await d.click("UsePortButton")
    await d.wait_text("Start pairing")
    assert harness.plugin_settings[PORT_SETTING] == d.port


async def test_server_stopped_shows_connection_lost(harness: LuauHarness, tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        d = await connected(harness, server)
    # The server is gone: the long poll fails and the plugin says so. A poll cut mid-shutdown
    # (ConnectionClosed or a timeout rather than ConnectFail) is first retried after a back-off,
    # and back-off runs on the virtual clock: let virtual time pass while waiting for the screen.
    for _ in range(120):
        if d.has_text("Connection to the server lost"):
            break
        await harness.advance_async(1.0)
        await asyncio.sleep(0.05)
    await d.wait_text("Connection to the server lost", timeout=15)
    assert d.element("ServeCommand").text == "dsm serve"
    assert any("Server not running" in t or "Reconnecting" in t for t in d.texts())


async def test_revoked_token_asks_to_pair_again(harness: LuauHarness, server: Server) -> None:
    d = await connected(harness, server)
    store = server.app[TOKEN_STORE]
    mine = [t for t in store.list_tokens() if t.name == d.client_name]
    assert len(mine) == 1
    store.revoke(mine[0].token_id)
    await d.click("RefreshButton")
    await d.wait_text("Pair again")
    assert not any(k.startswith(TOKEN_PREFIX) for k in harness.plugin_settings)
    await d.click("PairAgainButton")
    await d.pair()


@asynccontextmanager
async def server_on_port(data_dir: Path, port: int, data_key: bytes) -> AsyncIterator[Server]:
    """Like tools.testing.server.running_server but on a fixed port, so a restart is the same
    address (a real `dsm serve` restart)."""
    import aiohttp

    announced: list[str] = []
    settings = ServerConfig(data_dir=data_dir, port=port, emulator_limits="off")
    app = create_app(
        settings, keys=[], data_key=data_key, port=BoundPort(port), announce=announced.append
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Server(f"http://127.0.0.1:{port}", app, http, announced)
    finally:
        await runner.cleanup()


async def test_server_restart_resyncs_silently(harness: LuauHarness, tmp_path: Path) -> None:
    port = free_port()
    key = new_key()
    async with server_on_port(tmp_path, port, key) as first:
        teammate = await first.pair("Teammate")
        await write_entry(first, teammate, "PlayerData", "Player_6", {"coins": 6})
        d = await connected(harness, first)
        await d.open_entry("PlayerData", "Player_6")
    async with server_on_port(tmp_path, port, key) as second:
        d.server = second
        # The same token still works: no pairing screen; the entry is read again.
        await write_entry(second, teammate, "PlayerData", "Player_6", {"coins": 66})
        deadline = time.monotonic() + 20
        while not d.has_text("66"):
            assert not d.has_text("Start pairing"), d.texts()
            assert time.monotonic() < deadline, d.texts()
            await harness.advance_async(1)
            await harness.step_async()
        await d.wait_text("Revision ")
        assert d.has_text("Player_6")
        assert not d.has_text("Pair again")


# -- figures ----------------------------------------------------------------------------------


SCROLL_BENCH = """
local Theme = require("UI/Theme")
local VirtualList = require("UI/Components/VirtualList")
local Kit = require("UI/Kit")
local palette = Theme.get()
local widget = plugin:CreateDockWidgetPluginGuiAsync("ScrollBench",
    DockWidgetPluginGuiInfo.new(Enum.InitialDockState.Float, true, true, 420, 560, 300, 300))
local items = table.create(100000)
for i = 1, 100000 do
    items[i] = { scope = "global", key = "Player_" .. i, deleted = i % 97 == 0 }
end
local list = VirtualList.new(palette, {
    rowHeight = palette.rowHeight,
    createRow = function()
        local row = Instance.new("TextButton")
        row.Text = ""
        Kit.label(palette, "", { Name = "KeyName", Size = UDim2.new(1, -16, 1, 0), Parent = row })
        return row
    end,
    updateRow = function(row, item)
        row.KeyName.Text = if item.deleted then item.key .. "  (deleted)" else item.key
    end,
})
list.instance.Parent = widget
list.setItems(items)
task.wait()
local frames = {}
local y = 0
-- Scroll the whole list: 2,000 frames, each moving a wheel notch or a page.
for frame = 1, 2000 do
    y += if frame % 10 == 0 then 480 else 57
    local started = realClock()
    list.scrollTo(y % (100000 * palette.rowHeight))
    frames[frame] = realClock() - started
end
local rows = 0
for _, child in list.instance:GetChildren() do
    if child:IsA("TextButton") then rows += 1 end
end
return frames, rows
"""


def test_scrolling_100k_keys_costs_little_luau_time_per_frame(harness: LuauHarness) -> None:
    frames, rows = harness.eval(SCROLL_BENCH)
    times = [frames.raw_get(i) * 1000 for i in range(1, 2001)]
    median = statistics.median(times)
    p99 = sorted(times)[int(len(times) * 0.99)]
    print(f"\nscroll 100,000 keys: median {median:.3f} ms/frame, p99 {p99:.3f} ms, {rows} rows")
    assert rows < 60  # only the rows in view exist
    assert median < 4.0  # a 60 fps frame is 16.7 ms; the list must use a small part of it


async def test_a_4_mib_entry_opens_quickly(harness: LuauHarness, server: Server) -> None:
    teammate = await server.pair("Teammate")
    items = []
    size = 2
    index = 0
    while True:
        item = json.dumps(
            {"id": index, "name": f"item_{index}", "tags": ["a", "b"], "n": 1.5},
            separators=(",", ":"),  # Open Cloud keeps values compact
        )
        if size + len(item) + 1 > 4 * 1024 * 1024 - 16:
            break
        items.append(item)
        size += len(item) + 1
        index += 1
    value = "[" + ",".join(items) + "]"
    assert 4 * 1024 * 1024 - 200 < len(value) <= 4 * 1024 * 1024
    await write_entry(server, teammate, "Big", "inventory", value)
    d = await connected(harness, server)
    await d.open_store("Big")
    await d.wait_for(lambda: d._has_row("KeyRow", "inventory"), "no key row")
    started = time.perf_counter()
    await d.click(d.row_with("KeyRow", "inventory"))
    # The first screen: the first rows, the root still being read ("[ 2527+ items ]").
    await d.wait_for(lambda: d.has_text("+ items ]"), "no first screen", timeout=60)
    elapsed = time.perf_counter() - started
    assert any(t.startswith("4 MB of 4 MB") for t in d.texts()), "|".join(d.texts())
    assert d.has_text('"item_0"') or d.has_text("[0]:")
    # The rest of the root is read a slice per frame; the row shows the whole count after.
    frames = 0
    while not d.has_text(f"[ {len(items)} items ]"):
        await harness.advance_async(1 / 60)
        frames += 1
        assert frames < 200, d.texts()
    # Luau's share: opening the value and the tree's rows (the first slice), then the rest.
    measure = harness.eval(
        """
        local JsonTreeModel = require("UI/Models/JsonTreeModel")
        return function(text)
            local started = realClock()
            local model = JsonTreeModel.new(text)
            local rows = JsonTreeModel.rows(model)
            local first = realClock() - started
            started = realClock()
            local slices = 0
            repeat
                local _, _, left = JsonTreeModel.work(model, {})
                slices += 1
            until not left
            return first, #rows, realClock() - started, slices, #JsonTreeModel.rows(model)
        end
        """
    )[0]
    first, first_rows, rest, slices, rows = harness.call(measure, value)
    print(
        f"\n4 MiB entry ({len(value):,} bytes, {len(items):,} items): first screen "
        f"{elapsed * 1000:.0f} ms after the click (HTTP included); Luau open + first rows "
        f"{first * 1000:.0f} ms ({first_rows} rows), the rest {rest * 1000:.0f} ms in {slices} "
        f"slices ({frames} frames in the plugin)"
    )
    assert 1 < first_rows < len(items) + 1
    assert rows == len(items) + 1
    assert elapsed < 20


async def test_an_inline_edit_sends_every_other_byte_as_stored(
    harness: LuauHarness, server: Server
) -> None:
    """Editing one field of a large value leaves the rest exactly as it was: big integers, 1.0,
    {} vs [], key order and spelling are not re-encoded. Checked on the request the plugin sent
    and on what the entry holds afterwards."""
    teammate = await server.pair("Teammate")
    filler = [
        {"id": i, "big": 12345678901234567890 + i, "ratio": 1.0, "tags": []} for i in range(3000)
    ]
    stored = (
        '{"zeta":{},"alpha":[],"score":9007199254740993,"ratio":1.0,"name":"élève",'
        '"inventory":' + json.dumps(filler, separators=(",", ":")) + ',"coins":10}'
    )
    await write_entry(server, teammate, "PlayerData", "Player_9", stored)
    base = (await get_entry(server, teammate, "PlayerData", "Player_9"))["value_json"]
    assert len(base) > JSON_SLICE_BYTES and "9007199254740993" in base
    sent = record_requests(harness)
    d = await connected(harness, server)
    await d.open_entry("PlayerData", "Player_9")
    await edit_leaf(d, "coins:", "11")
    await d.wait_text("Unsaved changes: value")
    await save_with_preview(d)
    await d.wait_text("Saved Player_9")
    expected = base.replace(',"coins":10}', ',"coins":11}')
    assert expected != base
    writes = [r for r in sent if r.method in ("PUT", "PATCH") and "/entries/Player_9" in r.url]
    assert len(writes) == 1
    assert json.loads(writes[0].body or b"{}")["value_json"] == expected
    after = await get_entry(server, teammate, "PlayerData", "Player_9")
    assert after["value_json"] == expected


def record_requests(h: LuauHarness) -> list[HttpRequest]:
    """Every HTTP request the plugin sends from now on, as sent."""
    sent: list[HttpRequest] = []
    submit = h._http.submit

    def recording(request: HttpRequest) -> Any:
        sent.append(request)
        return submit(request)

    h._http.submit = recording  # type: ignore[method-assign]
    return sent


# -- theme and lifecycle (no server needed: the server-down screen) --------------------------------


def start_without_server(h: LuauHarness) -> None:
    h.plugin_settings[PORT_SETTING] = free_port()
    h.run_scripts()  # the widget opens (remembered state defaults to open) and says hello
    h.step()
    assert any("The server is not running" in t for t in h.texts()), h.texts()


def test_theme_change_repaints_the_widget(harness: LuauHarness) -> None:
    start_without_server(harness)
    dark = harness.find("DataStoreManagerPro/Root").node()
    dark_title = harness.find("ServerDownScreen/Body/Title").node()
    harness.set_theme("Light")
    light = harness.find("DataStoreManagerPro/Root").node()
    light_title = harness.find("ServerDownScreen/Body/Title").node()
    assert dark.background != light.background
    assert dark_title.text_color != light_title.text_color
    assert light_title.text == "The server is not running"
    # Light backgrounds are light, dark ones dark.
    assert sum(light.background or (0, 0, 0)) > sum(dark.background or (255, 255, 255))


def test_unloading_stops_every_timer_and_request(harness: LuauHarness) -> None:
    start_without_server(harness)
    harness.unload_plugin()
    # Nothing keeps running: no retry timer, no status refresh, no long poll.
    harness.run_until_idle(limit=30)
    assert harness.errors == []


def test_unloading_while_the_widget_is_being_made_stops_everything(harness: LuauHarness) -> None:
    """CreateDockWidgetPluginGuiAsync yields; Studio may unload the plugin meanwhile."""
    harness.plugin_settings[PORT_SETTING] = free_port()
    harness.run_scripts(step=False)  # Main is waiting for its dock widget
    harness.unload_plugin()
    harness.run_until_idle(limit=30)
    assert harness.errors == []
    assert harness.widgets() == []


# -- deleted stores, ordered and memory stores ---------------------------------------------------


async def test_deleted_data_store_is_shown_and_undeleted_by_an_admin(
    harness: LuauHarness, server: Server
) -> None:
    admin = await server.pair("Admin", role=Role.ADMIN)
    await write_entry(server, admin, "OldStore", "k", {"v": 1})
    status, body = await server.call("DELETE", "/universes/1/datastores/OldStore", admin)
    assert status == 200, body
    d = await connected(harness, server)
    await d.click("Universe_1")
    await d.wait_text(" data store")
    assert not d.has_text("OldStore")
    await d.click("ShowDeletedButton")
    await d.wait_for(lambda: d._has_row("DataStoreRow", "OldStore"), "no deleted store row")
    assert d.has_text("DELETED")
    # The plugin's token is an editor: the server refuses and the plugin says how to fix it.
    await d.click(d.button_in_row("DataStoreRow", "OldStore", "UndeleteButton"))
    await d.wait_text("needs the admin role")
    store = server.app[TOKEN_STORE]
    mine = [t for t in store.list_tokens() if t.name == d.client_name]
    store.set_role(mine[0].token_id, Role.ADMIN)
    await d.click(d.button_in_row("DataStoreRow", "OldStore", "UndeleteButton"))
    await d.wait_text("Restored data store OldStore")
    status, page = await server.call("GET", "/universes/1/datastores", admin)
    assert [s["state"] for s in page["items"] if s["name"] == "OldStore"] == ["ACTIVE"]


async def open_by_name(
    d: PluginDriver, kind_tab: str | None, name: str, from_universes: bool = True
) -> None:
    if from_universes:
        await d.click("Universe_1")
    await d.wait_text(" data store")
    await d.click("OpenByNameButton")
    await d.wait_for(lambda: d.rendered("OpenStoreDialog"), "no open-by-name dialog")
    if kind_tab is not None:
        await d.click(kind_tab)
    await d.type("StoreNameInput", name, enter=False)
    await d.click("ConfirmButton")


async def test_ordered_store_is_sorted_and_filtered(harness: LuauHarness, server: Server) -> None:
    teammate = await server.pair("Teammate")
    wins = {"ann": 5, "bo": 42, "cy": 17, "di": 30, "ed": 8}
    for entry_id, value in wins.items():
        status, body = await server.call(
            "POST",
            "/universes/1/ordered/Wins/scopes/global/entries",
            teammate,
            json={"id": entry_id, "value": value, "idempotency_key": idem()},
        )
        assert status == 200, body
    d = await connected(harness, server)
    await open_by_name(d, None, "Wins")
    await d.wait_text("5 entries")

    def shown_ids() -> list[str]:
        rows = [e.node() for e in harness.find_all("OrderedRow") if e.node().rendered]
        rows.sort(key=lambda n: n.y)
        return [c.text or "" for n in rows for c in n.children if c.name == "Id"]

    assert shown_ids() == ["bo", "di", "cy", "ed", "ann"]  # highest first
    await d.type("MinInput", "8", enter=False)
    await d.type("MaxInput", "30", enter=False)
    await d.click("ApplyButton")
    await d.wait_text("3 entries with values 8 to 30")
    assert shown_ids() == ["di", "cy", "ed"]
    await d.click("OrderButton")
    await d.wait_for(lambda: shown_ids() == ["ed", "cy", "di"], "not re-sorted lowest first")


async def test_memory_sorted_map_and_queue_peek_with_its_warning(
    harness: LuauHarness, server: Server
) -> None:
    client = server.upstream.client_for(1)
    await client.sorted_map_create(1, "lobby", "a", '{"n": 1}', sort_key="zeta")
    await client.sorted_map_create(1, "lobby", "b", "[1,2]", sort_key=7)
    await client.queue_add(1, "jobs", '{"job": 1}', priority=5)
    d = await connected(harness, server)

    await open_by_name(d, "SortedMapTab", "lobby")
    await d.wait_text("2 items")
    assert d.has_text("b · sort key 7")
    assert d.has_text('{"n":1}')

    await d.click("Crumb2")  # back to the universe's data stores
    await open_by_name(d, "QueueTab", "jobs", from_universes=False)
    await d.wait_for(lambda: d.rendered("QueueWarning"), "no warning before peeking")
    assert d.has_text("invisible to your game servers")
    assert not d.has_text('{"job":1}')  # nothing is read until the user asks
    await d.click("PeekButton")
    await d.wait_text("1 item read.")
    assert d.has_text('{"job":1}')
    assert d.has_text("Nothing was removed")


# -- a LIVE production universe (the server's Open Cloud path, pointed at an emulator) -----------


@asynccontextmanager
async def live_server(tmp_path: Path) -> AsyncIterator[tuple[Server, web.AppRunner]]:
    """The server on its LIVE code path (a production key) against a separate emulator standing
    in for apis.roblox.com; yields the server and the stand-in's runner (to take it down)."""
    runner, open_cloud_url, _ = await start_emulator(
        EmulatorConfig(data_dir=tmp_path / "opencloud", limits=LimitsConfig(mode="off"))
    )
    record = ApiKeyRecord(
        id="main",
        label="Main game",
        api_key=SecretStr("test-key-" + idem()),
        universes=[1],
        environment="production",
        added_at=datetime.now(UTC),
    )
    try:
        async with running_server(
            tmp_path / "server", keys=[record], open_cloud_base_url=open_cloud_url
        ) as server:
            yield server, runner
    finally:
        await runner.cleanup()


async def test_live_production_universe_needs_typed_delete_confirmation(
    harness: LuauHarness, tmp_path: Path
) -> None:
    async with live_server(tmp_path) as (server, _):
        teammate = await server.pair("Teammate")
        await write_entry(server, teammate, "PlayerData", "Player_9", {"coins": 9})
        d = await PluginDriver.open(harness, server)
        await d.pair(universe_label="Main game")
        # Live data: no emulator banner, a LIVE badge and the universe tagged production.
        assert not d.rendered("EmulatorBanner")
        assert d.has_text("PRODUCTION")
        await d.open_entry("PlayerData", "Player_9")
        assert d.element("SourceBadge").text == "LIVE"

        await d.click("DeleteButton")
        await d.wait_for(lambda: d.rendered("DeleteDialog"), "no delete dialog")
        assert d.has_text("Type Player_9 to confirm.")
        assert d.element("ConfirmButton").get("AutoButtonColor") is False  # disabled until typed
        await d.type("ConfirmationInput", "player_9", enter=False)
        assert d.element("ConfirmButton").get("AutoButtonColor") is False
        await d.type("ConfirmationInput", "Player_9", enter=False)
        assert d.element("ConfirmButton").get("AutoButtonColor") is True
        await d.click("ConfirmButton")
        await d.wait_text("Deleted Player_9")
        status, view = await server.call(
            "GET", entry_path(1, "PlayerData", "Player_9") + "?scope=global", teammate
        )
        assert status == 404 or view.get("state") == "DELETED", view


async def test_cached_data_is_labelled_when_open_cloud_is_unreachable(
    harness: LuauHarness, tmp_path: Path
) -> None:
    async with live_server(tmp_path) as (server, open_cloud):
        teammate = await server.pair("Teammate")
        await write_entry(server, teammate, "PlayerData", "Player_8", {"coins": 8})
        d = await PluginDriver.open(harness, server)
        await d.pair(universe_label="Main game")
        await d.open_entry("PlayerData", "Player_8")
        assert not d.rendered("CachedBanner")
        await open_cloud.cleanup()  # Open Cloud goes away; the companion server stays
        await d.click("ReloadButton")
        await d.wait_for(
            lambda: d.element("SourceBadge").text.startswith("CACHED"), "no CACHED badge"
        )
        assert d.rendered("CachedBanner")
        banner = harness.find("CachedBanner/Text").text
        assert banner.startswith("CACHED") and "current value may differ" in banner
        assert d.has_text("8")  # the cached value, labelled as such


# -- the other failure screens -------------------------------------------------------------------


def test_http_refused_by_studio_explains_how_to_allow_it(harness: LuauHarness) -> None:
    harness.http_enabled = False
    harness.plugin_settings[PORT_SETTING] = free_port()
    harness.run_scripts()
    harness.step()
    texts = harness.texts()
    assert "Allow HTTP requests" in texts, texts
    assert any("Manage Plugins" in t for t in texts)
    # No retry loop: each try would make Studio ask again.
    harness.run_until_idle(limit=60)
    harness.http_enabled = True
    harness.click(harness.find("TryAgainButton"))
    assert any("not running" in t for t in harness.texts()), harness.texts()


@asynccontextmanager
async def newer_server() -> AsyncIterator[int]:
    """A server speaking the next protocol major: only its hello (built from the real model)."""

    async def hello(request: web.Request) -> web.Response:
        body = Hello(
            server_version="9.0.0",
            protocol_major=PROTOCOL_MAJOR + 1,
            protocol_minor=0,
            capabilities=[],
            schema_hash=schema_hash(),
            instance_id="future",
            backend=Backend.EMULATOR,
            pairing="required",
        )
        return web.Response(text=body.model_dump_json(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/hello", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_protocol_mismatch_names_both_versions(harness: LuauHarness) -> None:
    async with newer_server() as port:
        harness.plugin_settings[PORT_SETTING] = port
        harness.plugin_settings[WIDGET_SETTING] = False
        harness.run_scripts()
        await harness.click_async(harness.toolbar_button(TOOLBAR_BUTTON))
        await harness.wait_until(
            lambda: "Plugin and server versions do not match" in harness.texts()
        )
        texts = harness.texts()
        assert f"Server protocol: {PROTOCOL_MAJOR + 1}.0" in texts
        assert f"Plugin protocol: {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}" in texts
        assert any("Update the DataStore Manager Pro plugin" in t for t in texts)


# -- metadata edits and paging --------------------------------------------------------------------


async def test_editing_attributes_keeps_user_ids_unless_changed(
    harness: LuauHarness, server: Server
) -> None:
    teammate = await server.pair("Teammate")
    await write_entry(
        server,
        teammate,
        "PlayerData",
        "Player_7",
        {"coins": 7},
        attributes={"tier": "gold"},
        user_ids=[7007],
    )
    d = await connected(harness, server)
    await d.open_entry("PlayerData", "Player_7")
    await d.click("MetadataTab")
    await d.wait_for(lambda: d.rendered("AttributesEditor"), "no attributes editor")
    await d.type(harness.find("AttributesEditor/Row1/Value"), "silver", enter=False)
    await d.click(harness.find("AttributesEditor/AddButton"))
    await d.type(harness.find("AttributesEditor/Row2/Key"), "vip", enter=False)
    await d.type(harness.find("AttributesEditor/Row2/Value"), "true", enter=False)
    await d.wait_text("Unsaved changes: attributes")
    await d.click("SaveButton")
    await d.wait_for(lambda: d.rendered("SaveDialog"), "no save dialog")
    assert d.has_text("Attributes: changed · User ids: kept")
    await d.click("ConfirmButton")
    await d.wait_text("Saved Player_7")
    now = await get_entry(server, teammate, "PlayerData", "Player_7")
    assert now["attributes"] == {"tier": "silver", "vip": True}
    assert now["user_ids"] == [7007]
    assert value_of(now) == {"coins": 7}

    # A bad user id is explained before anything is sent.
    await d.click("MetadataTab")
    await d.type(harness.find("UserIdsEditor/Row1/Value"), "12ab", enter=False)
    await d.wait_text("is not a whole positive number")
    assert d.element("SaveButton").get("AutoButtonColor") is False


async def test_keys_page_in_as_the_list_scrolls(harness: LuauHarness, server: Server) -> None:
    # Written straight into the embedded emulator, as a game server would (the companion
    # server's own client paces writes to Open Cloud's budget, which would take minutes).
    emulator = server.upstream.emulator
    assert emulator is not None
    base = f"{emulator.base_url}/cloud/v2/universes/1/data-stores/Many/scopes/global/entries"

    async def put(index: int) -> None:
        url = f"{base}/key_{index:04d}?allowMissing=true"
        headers = {"x-api-key": "game-server"}
        async with server.http.patch(url, json={"value": index}, headers=headers) as resp:
            assert resp.status == 200, await resp.text()

    for start in range(0, 300, 50):
        await asyncio.gather(*(put(i) for i in range(start, start + 50)))
    d = await connected(harness, server)
    await d.open_store("Many")
    await d.wait_text("256 keys in scope global · scroll for more")
    # Scroll to the end: the next page (next_cursor) is requested.
    await harness.scroll_to_async("KeyList", 300 * 22)
    await d.wait_text("300 keys in scope global")
    assert not d.has_text("scroll for more")
    await d.type("PrefixInput", "key_02")
    await d.wait_text("100 keys in scope global starting with key_02")


async def test_status_bar_shows_teammates_and_budget(harness: LuauHarness, server: Server) -> None:
    teammate = await server.pair("Teammate")
    d = await connected(harness, server)
    await d.wait_text("No teammates connected")
    # The event stream pins "now" before it opens its socket: a teammate joining earlier is
    # already in the session list, not an event, so join only once it is listening.
    await d.wait_for(lambda: harness.open_web_streams == 1, "the event stream is not open")
    status, session = await server.call(
        "POST", "/sessions", teammate, json={"client_name": "Alex's Studio"}
    )
    assert status == 200, session
    # session.joined arrives on the event stream; the plugin re-reads the session list.
    await d.wait_text(f"1 teammate: {session['display_name']}")
    # The request budget comes from the server's real counters, once Open Cloud was called.
    assert not any(t.startswith("Budget: ") for t in d.texts())
    await d.click("Universe_1")
    await d.wait_text(" data store")
    await harness.advance_async(15)  # App.STATUS_REFRESH_SECONDS
    await d.wait_for(lambda: any(t.startswith("Budget: ") for t in d.texts()), "no budget")
    status, _ = await server.call("DELETE", f"/sessions/{session['session_id']}", teammate)
    assert status == 204
    await d.wait_text("No teammates connected")


async def test_new_key_is_created_from_the_keys_screen(
    harness: LuauHarness, server: Server
) -> None:
    teammate = await server.pair("Teammate")
    await write_entry(server, teammate, "PlayerData", "Player_1", {"coins": 1})
    d = await connected(harness, server)
    await d.open_store("PlayerData")
    await d.click("NewKeyButton")
    await d.wait_for(lambda: d.rendered("NewKeyDialog"), "no new key dialog")
    await d.type("NewKeyInput", "Player_new", enter=False)
    await d.type("NewValueInput", '{"coins": ', enter=False)
    await d.click("ConfirmButton")
    await d.wait_text("The value is not valid JSON: Line 1, column 11")
    await d.type("NewValueInput", '{"coins": 0}', enter=False)
    await d.click("ConfirmButton")
    await d.wait_text("Created Player_new")
    await d.wait_text("Revision ")
    assert value_of(await get_entry(server, teammate, "PlayerData", "Player_new")) == {"coins": 0}


# -- Studio's playtests ---------------------------------------------------------------------------


@pytest.mark.parametrize("context", ["PlayServer", "PlayClient"])
def test_the_plugin_stays_out_of_playtests(context: str) -> None:
    # Studio runs plugins again in a playtest's server and client; the app belongs to Edit only
    # (a Play client cannot make HTTP requests at all).
    with LuauHarness(PLUGIN_SRC, run_context=context) as h:
        h.plugin_settings[PORT_SETTING] = free_port()
        h.run_scripts()
        h.run_until_idle()
        assert h.widgets() == []
        assert h.errors == []
        assert not [line for line in h.output if line.kind == "warn"]


async def test_an_unrecognised_first_refusal_is_taken_for_a_denied_permission(
    harness: LuauHarness, server: Server
) -> None:
    # Studio's text for a denied permission prompt is not documented: a first request refused
    # with text the plugin does not know shows how to allow HTTP, with Studio's words as they are.
    harness.eval(
        'require("Engine").http = function() return false, "Studio said no to this plugin" end'
    )
    d = await PluginDriver.open(harness, server)
    await d.wait_text("Allow HTTP requests")
    texts = d.texts()
    assert any("does not recognise" in t for t in texts), texts
    assert any("Studio said no to this plugin" in t for t in texts), texts
    assert any("troubleshooting.md" in t for t in texts), texts


# -- the event stream's two transports ------------------------------------------------------------


def _long_polls(h: LuauHarness) -> list[str]:
    return [url for method, url in h.http_in_flight if "/api/v1/events" in url]


@pytest.mark.parametrize("web_streams", [True, False], ids=["websocket", "long-poll-fallback"])
async def test_a_teammates_write_reaches_the_open_entry(
    harness: LuauHarness, server: Server, web_streams: bool
) -> None:
    # Studio's CreateWebStreamClient carries the events when it exists; a Studio without it
    # falls back to long polls, and the user sees the same thing either way.
    harness.web_streams_available = web_streams
    teammate = await server.pair("Teammate")
    await write_entry(server, teammate, "PlayerData", "Player_9", player(9))
    d = await connected(harness, server)
    if web_streams:
        await d.wait_for(lambda: harness.open_web_streams == 1, "no event socket opened")
        assert _long_polls(harness) == []
    else:
        await d.wait_for(lambda: _long_polls(harness) != [], "no long poll in flight")
        assert harness.open_web_streams == 0
    await d.open_entry("PlayerData", "Player_9")
    await write_entry(server, teammate, "PlayerData", "Player_9", player(10))
    await d.wait_text("Updated by Teammate")
