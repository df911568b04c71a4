"""Issue 10 in the plugin, end to end: its real Luau in the harness (pluau) against a real
companion server on the emulator, driven through the widget like a user.

- Session-locked saves (ProfileStore, ProfileService, Lapis): the entry view says who holds the
  player's session and since when (read back through the revision history), edits only the
  data part and keeps every other byte of the wrapper, and warns before a write to a held entry.
- The Open Cloud budget and the CCU it assumes in the status bar, and the CCU set per universe.
- Bulk jobs started from the explorer's ticked keys (or a prefix or a scope): the dry-run plan
  first (counts, requests and time, budget and CCU, sample diffs), then start, live progress,
  pause, resume, cancel, rollback, an import file with bad lines, a production universe's typed
  confirmation and an export's file on the server's machine.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from dsm.emulator.clock import ManualClock
from dsm.emulator.context import EMULATOR, EmulatorConfig
from dsm.emulator.throttle import LimitsConfig
from dsm.services.jobs.session_locks import detect
from dsm.storage.vault import ApiKeyRecord
from tools.luau_harness import LuauHarness
from tools.testing.emulator import start_emulator
from tools.testing.plugin import (
    PluginDriver,
    make_admin,
    player,
    profile_save,
    write_entry,
)
from tools.testing.server import Server, entry_path, idem, running_server
from tools.testing.upstream import server_on_emulator

from .test_plugin_layout_ui import cut_off_sideways


@asynccontextmanager
async def opencloud_server(
    tmp_path: Path, environment: str, **config: Any
) -> AsyncIterator[Server]:
    """The server on its LIVE code path (a key for universe 1, labelled "Main game" and tagged
    `environment`) against a separate emulator standing in for apis.roblox.com."""
    emulator = EmulatorConfig(data_dir=tmp_path / "opencloud", limits=LimitsConfig(mode="off"))
    runner, open_cloud_url, _ = await start_emulator(emulator)
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
            tmp_path / "server", keys=[record], open_cloud_base_url=open_cloud_url, **config
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
    # 40 s before the test wrote it, by the plugin's clock (which started a little earlier).
    detail = d.element("SessionDetail").text
    assert re.fullmatch(r"Last saved [1-4]\d s ago; loaded 2 times so far", detail), detail
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


# -- bulk jobs from the explorer --------------------------------------------------------------------
#
# The server's own pacing is what it is in production (its share of the budget, here raised with
# budget_rpm so a test takes seconds); the plugin sees real plans, real progress events and real
# outcomes. POST /jobs waits a little for the plan, then the plan completes on the event stream.

JOB_SERVER = {"budget_rpm": 6000, "job_plan_wait_seconds": 2}


@pytest.fixture
async def job_server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path, **JOB_SERVER) as s:
        yield s


async def seed(server: Server, token: str, count: int, datastore: str = "PlayerData") -> None:
    for index in range(1, count + 1):
        await write_entry(server, token, datastore, f"Player_{index}", player(index))


def game_writes(server: Server, count: int, datastore: str = "PlayerData") -> None:
    """Players saved straight into Open Cloud (the embedded emulator), as a game server does:
    not through this server, so not paced by its budget share."""
    assert server.upstream.emulator is not None
    opencloud = server.upstream.emulator.runner.app[EMULATOR].standard
    for index in range(1, count + 1):
        value = json.dumps(player(index), separators=(",", ":"))  # Open Cloud stores it compact
        opencloud.write(
            "1", datastore, "global", f"Player_{index}", value, attributes=None, user_ids=[]
        )


async def job_state(server: Server, token: str, job_id: str) -> dict[str, Any]:
    status, job = await server.call("GET", f"/jobs/{job_id}", token)
    assert status == 200, job
    result: dict[str, Any] = job
    return result


def shown_done(d: PluginDriver) -> int:
    """How many items the job on screen has done, as its progress line says ("12 of 40 · ...")."""
    text = d.element("JobProgressText").text
    return int(text.split(" of ", 1)[0].replace(",", "")) if " of " in text else -1


def shown_job_id(d: PluginDriver) -> str:
    """The id of the job on screen (its breadcrumb)."""
    ids = [t for t in d.texts() if t.startswith("job_")]
    assert ids, d.texts()
    return ids[-1]


async def open_as_admin(harness: LuauHarness, server: Server, universe_label: str) -> PluginDriver:
    d = await connected(harness, server, universe_label)
    make_admin(server)  # delete, import and transform jobs need admin
    return d


async def test_a_delete_is_planned_first_then_run_then_rolled_back_exactly(
    harness: LuauHarness, job_server: Server
) -> None:
    server = job_server
    teammate = await server.pair("Teammate")
    game_writes(server, 5)
    before = {k: await stored(server, teammate, "PlayerData", k) for k in ("Player_1", "Player_2")}
    d = await open_as_admin(harness, server, "Emulator universe 1")
    await d.open_store("PlayerData")
    await d.wait_text("5 keys")
    await d.tick("Player_1", "Player_2", "Player_3")
    await d.wait_text("3 ticked")
    await d.plan_job("delete")
    await d.click("ConfirmButton")  # Plan (dry run)

    # The dry run: counts, requests and time at the budget share, the budget and CCU, samples.
    await d.wait_text("3 entries selected.")
    assert d.has_text("Planned (dry run)")
    assert any(
        t.startswith("Open Cloud: ") and "at this server's budget share" in t for t in d.texts()
    )
    assert d.has_text("Assumes CCU 0 (server default) · 50% kept for game servers.")
    await d.wait_text("What it would do (3 of 3)")
    await d.click(await d.reveal("Sample1"))
    await d.wait_for(lambda: d.rendered("SampleDiff"), "no sample diff")
    assert d.has_text('"coins": 7919,')  # Player_1's value before; nothing after a delete
    await d.click("ConfirmButton")
    job_id = shown_job_id(d)
    assert (await job_state(server, teammate, job_id))["state"] == "planned"
    assert await stored(server, teammate, "PlayerData", "Player_1")  # nothing written yet

    await d.click("StartButton")
    await d.wait_text("Succeeded", timeout=30)
    assert d.has_text("3 of 3")
    for key in ("Player_1", "Player_2", "Player_3"):
        status, _ = await server.call(
            "GET", entry_path(1, "PlayerData", key) + "?scope=global", teammate
        )
        assert status == 404
    await d.click("ItemsTab")
    await d.wait_text("3 items")
    assert d.has_text("applied")

    # Roll back: a job of its own, planned first, restoring each entry conditionally.
    await d.click("RollbackButton")
    await d.wait_for(lambda: d.rendered("RollbackDialog"), "no rollback dialog")
    await d.click("ConfirmButton")
    await d.wait_for(lambda: shown_job_id(d) != job_id, "the rollback job did not open")
    await d.wait_text("3 entries selected.")
    assert d.has_text(f"Rolls back {job_id}.")
    await d.click("StartButton")
    await d.wait_text("Succeeded", timeout=30)
    for key, view in before.items():
        now = await stored(server, teammate, "PlayerData", key)
        assert now["value_json"] == view["value_json"]
    assert (await job_state(server, teammate, job_id))["state"] == "rolled_back"
    await d.click("AllJobsButton")
    await d.wait_for(
        lambda: d._has_row("JobRow", "Rolled back"), "the list shows no rolled-back job"
    )


async def test_a_rollback_that_leaves_a_game_write_alone_does_not_claim_the_job_back(
    harness: LuauHarness, job_server: Server
) -> None:
    server = job_server
    teammate = await server.pair("Teammate")
    game_writes(server, 2)
    d = await open_as_admin(harness, server, "Emulator universe 1")
    await d.open_store("PlayerData")
    await d.wait_text("2 keys")
    await d.tick("Player_1", "Player_2")
    await d.wait_text("2 ticked")
    await d.plan_job("delete")
    await d.click("ConfirmButton")
    await d.wait_text("2 entries selected.")
    job_id = shown_job_id(d)
    await d.click("StartButton")
    await d.wait_text("Succeeded", timeout=30)
    game_writes(server, 1)  # a game server saves Player_1 again after the delete

    await d.click("RollbackButton")
    await d.wait_for(lambda: d.rendered("RollbackDialog"), "no rollback dialog")
    await d.click("ConfirmButton")
    await d.wait_for(lambda: shown_job_id(d) != job_id, "the rollback job did not open")
    rollback_id = shown_job_id(d)
    await d.wait_text("2 entries selected.")
    await d.click("StartButton")
    note = (
        f"Job {job_id} is not fully rolled back: 1 of its writes was left alone (1 changed "
        f"since); see the skipped items of {rollback_id}."
    )
    await d.wait_text(f"Rolls back {job_id}. {note}", timeout=30)
    assert d.has_text("Succeeded") and d.has_text("2 of 2 · 1 skipped")

    # The job it undoes is not shown as rolled back: it says what is left, and offers to retry.
    original = await job_state(server, teammate, job_id)
    assert original["state"] == "succeeded" and original["rollback_note"] == note
    await d.click("AllJobsButton")
    await d.wait_for(
        lambda: d._has_row("JobRow", original["description"]), "the list shows no delete job"
    )
    assert not d._has_row("JobRow", "Rolled back")
    # The list says so too, within the widget: the state in the warning colour, and why first
    # on its progress line.
    row = d.row_with("JobRow", original["description"])
    await d.wait_for(
        lambda: any(t.startswith("Not fully rolled back · 2 of 2") for t in d.texts()),
        "the list row does not say the rollback left a write",
    )
    assert harness.tree()[0].w == 420
    assert cut_off_sideways(harness, "JobList") == []
    await d.click(row)
    await d.wait_text(note)
    assert d.rendered("RollbackButton")


async def test_a_running_job_is_paused_resumed_and_cancelled(
    harness: LuauHarness, tmp_path: Path
) -> None:
    # Slow enough to catch it running: 40 reads and writes at 2 a second each.
    async with running_server(tmp_path, budget_rpm=240, job_plan_wait_seconds=2) as server:
        teammate = await server.pair("Teammate")
        game_writes(server, 40)  # server-side writes are paced too: 40 would take 15 s
        d = await open_as_admin(harness, server, "Emulator universe 1")
        await d.open_store("PlayerData")
        await d.wait_text("40 keys")
        await d.plan_job("transform", what="scope")
        await d.type("ProgramInput", ".coins += 1", enter=False)
        await d.click("ConfirmButton")
        await d.wait_text("40 entries selected.", timeout=20)
        job_id = shown_job_id(d)
        await d.click("StartButton")
        await d.wait_for(lambda: 1 <= shown_done(d) <= 30, "no live progress", timeout=20)
        assert d.rendered("JobProgressBar/Fill")

        await d.click("PauseButton")
        await d.wait_text("Paused ·", timeout=20)
        paused = (await job_state(server, teammate, job_id))["progress"]["done"]
        await asyncio.sleep(1.0)
        assert (await job_state(server, teammate, job_id))["progress"]["done"] == paused
        # The jobs list shows it paused too.
        await d.click("AllJobsButton")
        await d.wait_for(lambda: d._has_row("JobRow", "Paused"), "the list shows no paused job")
        await d.click(d.row_with("JobRow", "Paused"))
        await d.wait_for(lambda: d.rendered("ResumeButton"), "no Resume")

        await d.click("ResumeButton")
        await d.wait_for(
            lambda: d.has_text("Running ·") and shown_done(d) > paused,
            "it did not go on after Resume",
            timeout=20,
        )
        await d.click("CancelButton")
        await d.wait_text("Cancelled ·", timeout=20)
        job = await job_state(server, teammate, job_id)
        assert job["state"] == "cancelled"
        # Items in flight at the cancel land and are recorded a moment later; then the job's
        # items say exactly which entries it wrote (reads are paced too, so only two are read).
        deadline = time.monotonic() + 10
        last: Any = None
        while True:
            status, page = await server.call(
                "GET", f"/jobs/{job_id}/items", teammate, params={"limit": 100}
            )
            assert status == 200, page
            outcomes = [(i["key"], i["state"]) for i in page["items"]]
            if outcomes == last or time.monotonic() > deadline:
                break
            last = outcomes
            await asyncio.sleep(0.5)
        applied = [key for key, state in outcomes if state == "applied"]
        job = await job_state(server, teammate, job_id)
        assert len(applied) == job["progress"]["applied"]
        assert paused < len(applied) < 40
        pending = [key for key, state in outcomes if state == "pending"]
        for key, bump in ((applied[-1], 1), (pending[0], 0)):
            index = int(key.removeprefix("Player_"))
            view = await stored(server, teammate, "PlayerData", key)
            assert json.loads(view["value_json"])["coins"] == player(index)["coins"] + bump


IMPORT_FILE = (
    b'{"key": "New_1", "value": {"coins": 1}}\n'
    b'{"key": "New_2", "value": {"coins": 2}, "user_ids": [77]}\n'
    b'{"key": "New_3", "value": {"coins": 3}\n'
    b'{"key": "' + b"k" * 60 + b'", "value": 1}\n'
    b'{"key": "New_5", "scope": "beta", "value": {"coins": 5}}\n'
)


async def test_an_import_file_with_bad_lines_lists_them_by_line_number(
    harness: LuauHarness, job_server: Server
) -> None:
    server = job_server
    teammate = await server.pair("Teammate")
    game_writes(server, 1)
    d = await open_as_admin(harness, server, "Emulator universe 1")
    await d.open_store("PlayerData")
    await d.click("ImportButton")
    await d.wait_for(lambda: d.rendered("JobFormDialog"), "no import form")
    # The user closes Studio's file dialog once, then picks the file.
    await d.click("PickFileButton")
    await d.wait_for(lambda: harness.import_prompt is not None, "no file dialog")
    assert harness.import_prompt == ["jsonl", "ndjson", "json", "csv"]
    harness.cancel_import_prompt()
    await d.wait_text("No file chosen.")
    await d.click("PickFileButton")
    await d.wait_for(lambda: harness.import_prompt is not None, "no file dialog")
    await harness.pick_import_file_async("players.jsonl", IMPORT_FILE)
    await d.wait_text(f"players.jsonl · {len(IMPORT_FILE)} B · sent to the server")
    await d.click("ConfirmButton")

    await d.wait_text("2 bad lines")
    assert any(t.startswith("Line 3: ") for t in d.texts()), d.texts()
    assert any("Line 4: " in t and "key" in t for t in d.texts()), d.texts()
    assert any(t.startswith("Cannot start: ") for t in d.texts())
    assert not d.rendered("StartButton") or d.element("StartButton").get("AutoButtonColor") is False

    # Again, importing the good lines only.
    await d.click(harness.find_text("Emulator universe 1"))  # the crumb, then PlayerData
    await d.wait_for(lambda: d._has_row("DataStoreRow", "PlayerData"), "no data store list")
    await d.click(d.row_with("DataStoreRow", "PlayerData"))
    await d.click("ImportButton")
    await d.wait_for(lambda: d.rendered("JobFormDialog"), "no import form")
    await d.click("PickFileButton")
    await d.wait_for(lambda: harness.import_prompt is not None, "no file dialog")
    await harness.pick_import_file_async("players.jsonl", IMPORT_FILE)
    await d.wait_text("sent to the server")
    await d.click(await d.reveal("Option_skip"))  # BadLinesChoice: import its good lines
    await d.click("ConfirmButton")
    await d.wait_text("3 entries selected.")
    await d.click("StartButton")
    await d.wait_text("Succeeded", timeout=30)
    assert json.loads((await stored(server, teammate, "PlayerData", "New_2"))["value_json"]) == {
        "coins": 2
    }
    status, beta = await server.call(
        "GET", entry_path(1, "PlayerData", "New_5") + "?scope=beta", teammate
    )
    assert status == 200 and json.loads(beta["value_json"]) == {"coins": 5}


async def test_a_production_universe_needs_its_label_typed_to_start(
    harness: LuauHarness, tmp_path: Path
) -> None:
    async with opencloud_server(tmp_path, "production", **JOB_SERVER) as server:
        teammate = await server.pair("Teammate")
        await seed(server, teammate, 2)
        d = await connected(harness, server, "Main game")
        await d.open_store("PlayerData")
        await d.tick("Player_1", "Player_2")
        await d.plan_job("set_metadata")
        await d.type("SetAttributesInput", '{"schema": 4}', enter=False)
        await d.click("ConfirmButton")
        await d.wait_text("2 entries selected.")
        assert any("production universe" in t and "Main game" in t for t in d.texts())
        await d.click("StartButton")
        await d.wait_for(lambda: d.rendered("StartDialog"), "no typed confirmation")
        assert d.has_text("Type Main game to confirm.")
        assert d.element("ConfirmButton").get("AutoButtonColor") is False
        await d.type("ConfirmationInput", "main game", enter=False)
        assert d.element("ConfirmButton").get("AutoButtonColor") is False
        await d.type("ConfirmationInput", "Main game", enter=False)
        await d.click("ConfirmButton")
        await d.wait_text("Succeeded", timeout=30)
        for key in ("Player_1", "Player_2"):
            assert (await stored(server, teammate, "PlayerData", key))["attributes"] == {
                "schema": 4
            }


async def test_an_export_says_where_the_server_wrote_the_file(
    harness: LuauHarness, job_server: Server
) -> None:
    server = job_server
    game_writes(server, 4)
    d = await connected(harness, server)
    await d.open_store("PlayerData")
    await d.plan_job("export", what="scope")
    await d.type("FileNameInput", "before-update.jsonl", enter=False)
    await d.click("ConfirmButton")
    await d.wait_text("4 entries selected.")
    await d.click("StartButton")
    await d.wait_text("Succeeded", timeout=30)
    assert d.has_text("The server wrote the file on its own machine")
    path = Path(d.element("ExportPath").text)
    assert path.name == "before-update.jsonl" and path.is_file()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert sorted(line["key"] for line in lines) == [f"Player_{i}" for i in range(1, 5)]


async def test_item_outcomes_page_in_and_filter_to_the_failures(
    harness: LuauHarness, job_server: Server
) -> None:
    server = job_server
    teammate = await server.pair("Teammate")
    game_writes(server, 130)  # more than one page of items (JobItems.PAGE_SIZE = 100)
    d = await open_as_admin(harness, server, "Emulator universe 1")
    await d.open_store("PlayerData")
    await d.plan_job("transform", what="scope")
    program = 'if .level > 50 then error("level \\(.level) is too high") else .coins += 1 end'
    await d.type("ProgramInput", program, enter=False)
    await d.click("ConfirmButton")
    await d.wait_text("130 entries selected.", timeout=30)
    await d.click("StartButton")
    await d.wait_text("Succeeded", timeout=60)
    failing = [i for i in range(1, 131) if player(i)["level"] > 50]
    assert d.has_text(f"130 of 130 · {len(failing)} failed")

    await d.click("ItemsTab")
    await d.wait_text("100 items · scroll for more")
    await harness.scroll_to_async(d.element("JobItemList"), 100 * 38)
    await d.wait_text("130 items")
    await d.click("Option_failed")
    await d.wait_text(f"{len(failing)} failed items")
    outcomes = [t for t in d.texts() if t.startswith("failed")]
    assert outcomes and all("is too high" in t for t in outcomes), outcomes
    # Failed entries were left as they were.
    view = await stored(server, teammate, "PlayerData", f"Player_{failing[0]}")
    assert json.loads(view["value_json"]) == player(failing[0])
