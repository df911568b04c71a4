"""The plugin's screens as preview scenarios.

Importing this module registers scenarios into tools.preview_scenarios.SCENARIOS:

    python -m tools.preview_plugin_scenarios            # render every plugin screen to docs/screens
    python -m tools.preview plugin-entry -o entry.png

Every scenario starts a real companion server on the embedded emulator (tools.testing.server),
writes the data it shows through the server's API with a second paired token, and drives the
real plugin in the harness: click the toolbar button, pair with the code the server announced,
browse. Nothing on screen is made up by the scenario; it is what the plugin read back.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dsm.emulator.clock import ManualClock
from shared_schema.common import Role
from tools.luau_harness import LuauHarness
from tools.preview_scenarios import SCENARIOS, Scenario
from tools.testing.plugin import (
    PLUGIN_SRC,
    PORT_SETTING,
    ROOT,
    TOOLBAR_BUTTON,
    WIDGET_SETTING,
    PluginDriver,
    free_port,
    make_admin,
    player,
    profile_save,
    write_entry,
)
from tools.testing.server import Server, entry_path, idem, running_server
from tools.testing.upstream import server_on_emulator

SCREENS = ROOT / "docs" / "screens"


async def seed_players(server: Server, token: str, count: int = 30) -> None:
    for index in range(1, count + 1):
        await write_entry(
            server,
            token,
            "PlayerData",
            f"Player_{index}",
            player(index),
            attributes={"schema": 3},
            user_ids=[1000 + index],
        )
    await write_entry(server, token, "Leaderboards", "weekly", {"season": 12, "top": [1, 2, 3]})
    await write_entry(server, token, "Settings", "shop", {"discount": 0.1, "featured": ["bow"]})


# -- scenarios ----------------------------------------------------------------------------------

Run = Callable[[LuauHarness], Awaitable[None]]


def _with_server(body: Callable[[PluginDriver, str], Awaitable[None]], **config: Any) -> Run:
    """A scenario body run against a fresh server (a temporary data dir) with a teammate token;
    `config` goes to the server's ServerConfig."""

    async def run(h: LuauHarness) -> None:
        data_dir = Path(tempfile.mkdtemp(prefix="dsm-preview-"))
        try:
            async with running_server(data_dir, **config) as server:
                teammate = await server.pair("Teammate (Alex)", role=Role.ADMIN)
                h.set_studio_user(2002, "SamTests")
                driver = await PluginDriver.open(h, server)
                await body(driver, teammate)
                # Let the last answers arrive and the layout settle before the snapshot.
                await h.step_async()
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)

    return run


async def _pairing(d: PluginDriver, teammate: str) -> None:
    await d.wait_text("Start pairing")
    await d.click("StartPairingButton")
    await d.wait_for(lambda: d.rendered("PairingCodeInput"), "no code field")


async def _keys(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate)
    await d.pair()
    await d.open_store("PlayerData")
    await d.wait_text("30 keys")


async def _entry(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate, count=3)
    await d.pair()
    await d.open_entry("PlayerData", "Player_2")
    await d.click(d.row_with("TreeRow", "inventory:"))
    await d.click(d.row_with("TreeRow", "settings:"))


async def _conflict(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate, count=3)
    await d.pair()
    await d.open_entry("PlayerData", "Player_2")
    await d.click(d.row_with("TreeRow", "coins:"))
    await d.type(d.element("Editor"), "25000")
    # A teammate saves the same key meanwhile.
    changed = player(2) | {"coins": 99, "level": 40}
    await write_entry(d.server, teammate, "PlayerData", "Player_2", changed)
    await d.wait_text("Changed on the server")
    await d.click("SaveButton")
    await d.wait_for(lambda: d.rendered("SaveDialog"), "no save dialog")
    await d.click("ConfirmButton")
    await d.wait_text("Someone else saved")


async def _edit_and_save(d: PluginDriver, key: str, label: str, value: str) -> None:
    await d.click(d.row_with("TreeRow", label))
    await d.type(d.element("Editor"), value)
    await d.click("SaveButton")
    await d.wait_for(lambda: d.rendered("SaveDialog"), "no save dialog")
    await d.click("ConfirmButton")
    await d.wait_text(f"Saved {key}")


async def _save_preview(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate, count=3)
    await d.pair()
    await d.open_entry("PlayerData", "Player_1")
    await d.click(d.row_with("TreeRow", "level:"))
    await d.type(d.element("Editor"), "12")
    await d.click("SaveButton")
    await d.wait_for(lambda: d.rendered("SaveDialog"), "no save dialog")


async def _history(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate, count=3)
    await d.pair()
    await d.open_entry("PlayerData", "Player_3")
    await _edit_and_save(d, "Player_3", "level:", "7")
    await d.click("HistoryButton")
    await d.wait_text("2 revisions")
    rows = [e for e in d.h.find_all("RevisionRow") if e.node().rendered]
    await d.click(rows[-1])


async def _journal(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate, count=3)
    await d.pair()
    await d.open_entry("PlayerData", "Player_3")
    await _edit_and_save(d, "Player_3", "level:", "7")
    await _edit_and_save(d, "Player_3", "coins:", "100")
    await d.click("HistoryButton")
    await d.wait_text("revisions")
    await d.click("JournalTab")
    await d.wait_text("by SamTests")


async def _restore_deleted(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate, count=3)
    status, current = await d.server.call("GET", entry_path(1, "PlayerData", "Player_2"), teammate)
    assert status == 200, current
    status, body = await d.server.call(
        "DELETE",
        entry_path(1, "PlayerData", "Player_2"),
        teammate,
        params={"expected_revision": current["revision"], "idempotency_key": idem()},
    )
    assert status == 200, body
    await d.pair()
    await d.open_store("PlayerData")
    await d.click("ShowDeletedButton")
    await d.wait_for(lambda: d._has_row("KeyRow", "Player_2  (deleted)"), "no deleted key row")
    await d.click(d.row_with("KeyRow", "Player_2  (deleted)"))
    await d.click("RestoreButton")
    await d.wait_for(lambda: d.rendered("RestoreDialog"), "no restore dialog")


async def _as_of(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate, count=3)
    await d.pair()
    await d.open_entry("PlayerData", "Player_3")
    status, first = await d.server.call("GET", entry_path(1, "PlayerData", "Player_3"), teammate)
    assert status == 200, first
    await _edit_and_save(d, "Player_3", "level:", "7")
    await d.click("HistoryButton")
    await d.click("AsofTab")
    await d.h.advance_async(2)  # the plugin's clock past the first write
    await d.type("AsOfTime/TimeText", first["updated_at"])
    await d.click("ShowAsOfButton")
    await d.wait_text("written ")


@asynccontextmanager
async def _teammate_server(d: PluginDriver, admin: str) -> AsyncIterator[tuple[Server, str]]:
    """A teammate's server on the same emulator, in this server's team, with Alex's Studio
    connected to it (team sync on universe 1)."""
    emulator = d.server.upstream.emulator
    assert emulator is not None
    status, _ = await d.server.call("POST", "/team/1/enable", admin)
    assert status == 200
    _, invite = await d.server.call("POST", "/team/1/invites", admin, json={"role": "editor"})
    data_dir = Path(tempfile.mkdtemp(prefix="dsm-preview-teammate-"))
    try:
        async with running_server(data_dir, upstream_url=emulator.base_url) as other:
            token = await other.pair("Alex's Studio", role=Role.ADMIN)
            await other.call("POST", "/team/join", token, json={"code": invite["code"]})
            status, opened = await other.call(
                "POST",
                "/sessions",
                token,
                json={
                    "client_name": "Studio",
                    "studio_user_id": 1001,
                    "studio_user_name": "AlexBuilds",
                },
            )
            assert status == 200, opened
            await other.call(
                "PUT",
                f"/sessions/{opened['session_id']}/viewing",
                token,
                json={"universe_id": 1, "datastore": "PlayerData", "key": "Player_2"},
            )
            yield other, token
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def _team(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate, count=3)
    async with _teammate_server(d, teammate) as (other, token):
        lock = {"datastore": "PlayerData", "scope": "global", "key": "Player_2"}
        await other.call("POST", "/team/1/locks", token, json=lock)
        await other.call(
            "POST",
            "/team/1/bookmarks",
            token,
            json={"datastore": "PlayerData", "key": "Player_3", "label": "refund case"},
        )
        await d.pair()
        await d.click("Universe_1")
        await d.wait_text("data stores")
        await d.click("TeamButton")
        await d.wait_text("AlexBuilds (teammate's server")
        await d.wait_text("AlexBuilds is editing PlayerData / global / Player_2")
        await d.wait_text("refund case")


async def _activity(d: PluginDriver, teammate: str) -> None:
    await d.server.call("POST", "/team/1/enable", teammate)
    await seed_players(d.server, teammate, count=3)
    await d.pair()
    await d.open_entry("PlayerData", "Player_1")
    await _edit_and_save(d, "Player_1", "level:", "12")
    await d.click("CrumbFolded")
    await d.wait_text("data stores")
    await d.click("TeamButton")
    await d.click("ActivityButton")
    await d.wait_text("SamTests · update PlayerData / global / Player_1")


async def _assistants(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate, count=3)
    bot = await d.server.pair("claude", role=Role.ASSISTANT)
    for key in ("Player_1", "Player_2", "Player_9"):  # an assistant reading, as `dsm mcp` does
        await d.server.call("GET", f"/universes/1/datastores/PlayerData/entries/{key}", bot)
    await d.pair()
    make_admin(d.server)  # listing tokens is an admin's
    await d.click("Universe_1")
    await d.click("JobsButton")
    await d.wait_for(lambda: d.rendered("AssistantsButton"), "no Jobs screen")
    await d.click("AssistantsButton")
    await d.wait_text("claude, in the last minute")


async def _monitor(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate, count=12)
    await d.pair()
    await d.open_store("PlayerData")
    await d.click("CrumbFolded" if d.rendered("CrumbFolded") else "Crumb1")
    await d.wait_for(lambda: d.rendered("MonitorButton"), "no Monitor button")
    await d.click("MonitorButton")
    await d.wait_text("Requests per second")
    await d.wait_text("AVAILABLE · Standard data stores")

    def hour_line() -> bool:
        chart = d.element("HourChart")
        return any(n.name == "Segment" and n.rendered for n in chart.node().walk())

    # The 10 s chart fills in with the first ten seconds counted whole (a monitor.tick event):
    # up to 20 s after the server started counting.
    await d.wait_for(hour_line, "no 10-second bucket yet", timeout=30)


async def _plan_transform(d: PluginDriver, teammate: str, what: str = "keys") -> None:
    """Tick three players and plan `.coins *= 2` on them (or on `what`), as an admin."""
    await d.pair()
    make_admin(d.server)
    await d.open_store("PlayerData")
    await d.wait_text("30 keys")
    if what == "keys":
        await d.tick("Player_1", "Player_12", "Player_2")
    await d.plan_job("transform", what=what)
    await d.type("ProgramInput", ".coins *= 2 | del(.lastLogin)", enter=False)
    await d.click("ConfirmButton")
    await d.wait_text("entries selected.", timeout=30)


async def _jobs_act_on(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate)
    await d.pair()
    await d.open_store("PlayerData")
    await d.wait_text("30 keys")
    await d.tick("Player_1", "Player_12", "Player_2")
    await d.click("ActOnButton")
    await d.wait_for(lambda: d.rendered("ActOnDialog"), "no Act on dialog")
    await d.click("Option_transform")


async def _jobs_plan(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate)
    await _plan_transform(d, teammate)
    await d.wait_text("What it would do")


async def _jobs_running(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate)
    await _plan_transform(d, teammate, what="scope")
    await d.click("StartButton")
    # Paced to the budget share: a snapshot while it is part way through.
    await d.wait_for(
        lambda: any(" of 30 · " in t and "/s" in t for t in d.texts()), "not running", 60
    )


async def _jobs_rolled_back(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate)
    await _plan_transform(d, teammate)
    await d.click("StartButton")
    await d.wait_text("Succeeded", timeout=60)
    await d.click("RollbackButton")
    await d.wait_for(lambda: d.rendered("RollbackDialog"), "no rollback dialog")
    await d.click("ConfirmButton")
    await d.wait_text("Rolls back ")
    await d.wait_text("entries selected.", timeout=30)
    await d.click("StartButton")
    await d.wait_text("Succeeded", timeout=60)
    await d.click("AllJobsButton")
    await d.wait_for(lambda: d.has_text("Rolled back"), "the list shows no rolled-back job")


PLUGIN_SCENARIOS: dict[str, tuple[str, Callable[[PluginDriver, str], Awaitable[None]]]] = {
    "plugin-pairing": ("the pairing screen waiting for the code `dsm serve` printed", _pairing),
    "plugin-keys": ("the explorer: a data store's keys, virtualised, with the source badge", _keys),
    "plugin-entry": ("an entry: JSON tree, size meter, revision and times, source badge", _entry),
    "plugin-conflict": ("a teammate saved first: yours and theirs side by side", _conflict),
    "plugin-save-preview": (
        "the diff shown before a save, conditional on the revision",
        _save_preview,
    ),
    "plugin-history": ("an entry's revisions: select one to compare or revert", _history),
    "plugin-journal": ("the journal of writes made through the server, each with Undo", _journal),
    "plugin-restore-deleted": (
        "a deleted key restored in one click: what will be written, conditional on the deletion",
        _restore_deleted,
    ),
    "plugin-as-of": ("an entry as it was at a typed moment, with its revision and source", _as_of),
    "plugin-team": (
        "team sync: a teammate on another server, what they view and edit, shared bookmarks",
        _team,
    ),
    "plugin-activity": ("the team's shared, hash-chained audit log with filters", _activity),
    "plugin-monitor": (
        "live Open Cloud traffic of this server, and which features are available",
        _monitor,
    ),
    "plugin-assistants": (
        "each AI assistant token's use of its caps, from the Jobs view",
        _assistants,
    ),
}

# Screens that show more than the default widget height holds.
TALL = {"plugin-monitor": (420, 860), "plugin-team": (420, 640)}

for _name, (_description, _body) in PLUGIN_SCENARIOS.items():
    SCENARIOS[_name] = Scenario(
        _description, _with_server(_body), plugin_root=PLUGIN_SRC, widget_size=TALL.get(_name)
    )

# Jobs, paced by the server as in production, at a share that takes seconds rather than minutes
# (the running one slow enough to be caught part way).
JOB_SCENARIOS: dict[str, tuple[str, Callable[[PluginDriver, str], Awaitable[None]], float]] = {
    "plugin-jobs-act-on": (
        "keys ticked in the explorer, and the job to plan on them (or on a prefix or scope)",
        _jobs_act_on,
        6000,
    ),
    "plugin-jobs-plan": (
        "a job's dry run: counts, requests and time at the budget share, samples",
        _jobs_plan,
        6000,
    ),
    "plugin-jobs-running": (
        "a running job: live progress, rate and time left, Pause and Cancel",
        _jobs_running,
        120,
    ),
    "plugin-jobs-rolled-back": (
        "the jobs list: a transform rolled back by its rollback job",
        _jobs_rolled_back,
        6000,
    ),
}


async def _open_backups(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate)
    await d.pair()
    make_admin(d.server)  # schedules need admin
    await d.click("Universe_1")
    await d.wait_text("PlayerData")
    await d.click("BackupsButton")
    await d.wait_for(lambda: d.rendered("BackupsView"), "no Backups view")


async def _back_up(d: PluginDriver, note: str, passphrase: str | None = None) -> None:
    await d.click("BackupNowButton")
    await d.wait_for(lambda: d.rendered("BackupFormDialog"), "no backup form")
    await d.type("BackupNoteInput", note)
    if passphrase is not None:
        await d.type("PassphraseInput", passphrase)
    await d.click("ConfirmButton")
    await d.wait_text("entries selected.", timeout=30)
    await d.click("StartButton")
    await d.wait_text("Succeeded", timeout=60)
    await d.click(await d.reveal("OpenBackupsButton"))
    await d.wait_for(lambda: d.has_text(note), "the archive is not listed")


async def _backups(d: PluginDriver, teammate: str) -> None:
    await _open_backups(d, teammate)
    await d.click("ScheduleButton")
    await d.wait_for(lambda: d.rendered("ScheduleFormDialog"), "no schedule form")
    await d.click("ConfirmButton")
    await d.wait_text("Scheduled: nightly")
    await _back_up(d, "before v42")


async def _backup_verified(d: PluginDriver, teammate: str) -> None:
    await _open_backups(d, teammate)
    await _back_up(d, "before v42")
    await d.click(d.row_with("ArchiveRow", next(t for t in d.texts() if "before v42" in t)))
    await d.wait_text("From the archive's manifest")
    await d.click("VerifyButton")
    await d.wait_text("Verified: ")


async def _restore_plan(d: PluginDriver, teammate: str) -> None:
    await _open_backups(d, teammate)
    await _back_up(d, "before v42")
    for index in (3, 7, 12):  # a bad release breaks three players
        await write_entry(
            d.server, teammate, "PlayerData", f"Player_{index}", {**player(index), "coins": -1}
        )
    await d.click(d.row_with("ArchiveRow", next(t for t in d.texts() if "before v42" in t)))
    await d.wait_text("From the archive's manifest")
    await d.click("RestoreButton")
    await d.wait_for(lambda: d.rendered("RestoreView"), "no restore form")
    await d.click("StoresChoice/Options/Option_named")
    await d.type("StoresInput", "PlayerData")
    await d.click("PlanButton")
    await d.wait_text("The restore, key by key")
    await d.wait_text("3 replace", timeout=30)
    await d.click(await d.reveal("Option_update"))
    await d.wait_for(lambda: not d.has_text("already so "), "the filter did not apply")


async def _erasure_found(d: PluginDriver, teammate: str) -> None:
    uid = 1012  # seed_players gives Player_12 the user id 1012
    await write_entry(d.server, teammate, "Guilds", "g1", {"name": "shared"}, user_ids=[7, uid])
    await _open_backups(d, teammate)
    await d.click("EraseButton")
    await d.wait_for(lambda: d.rendered("ErasureView"), "no erasure form")
    await d.type("UserIdInput", str(uid))
    await d.click("FindButton")
    await d.wait_text("places hold the player's data", timeout=30)
    await d.reveal("ErasureFound")


async def _archive_import(d: PluginDriver, teammate: str) -> None:
    """A portable archive carried over: taken out of the folder, then picked and sent again."""
    await _open_backups(d, teammate)
    await _back_up(d, "portable", passphrase="correct horse battery")
    status, listed = await d.server.call("GET", "/backups", teammate)
    assert status == 200, listed
    (archive,) = listed["archives"]
    contents = (Path(listed["folder"]) / archive["file_name"]).read_bytes()
    status, _ = await d.server.call("DELETE", f"/backups/{archive['archive_id']}", teammate)
    assert status == 204
    await d.click("ImportArchiveButton")
    await d.wait_for(lambda: d.rendered("ImportArchiveDialog"), "no import form")
    await d.click("PickFileButton")
    await d.wait_for(lambda: d.h.import_prompt is not None, "no file dialog")
    await d.h.pick_import_file_async("prod-2026-12-01.dsmbak", contents)
    await d.wait_for(lambda: any("sent to the server" in t for t in d.texts()), "not sent")
    await d.type("ImportPassphraseInput", "correct horse battery", enter=False)


JOB_SCENARIOS["plugin-backups"] = (
    "the Backups view: archives with their manifest facts, a schedule, back up now",
    _backups,
    6000,
)
JOB_SCENARIOS["plugin-restore-plan"] = (
    "a restore's dry run, key by key: what it replaces, from which source, how exactly",
    _restore_plan,
    6000,
)
JOB_SCENARIOS["plugin-erasure-found"] = (
    "an erasure's dry run: where the player's data was found, what the server scrubs",
    _erasure_found,
    6000,
)
JOB_SCENARIOS["plugin-archive-import"] = (
    "importing an archive file from another machine: picked, sent, its passphrase typed",
    _archive_import,
    6000,
)
JOB_SCENARIOS["plugin-backup-verified"] = (
    "an archive: its manifest's facts, verified entry by entry",
    _backup_verified,
    6000,
)
for _name, (_description, _body, _rpm) in JOB_SCENARIOS.items():
    SCENARIOS[_name] = Scenario(
        _description,
        _with_server(_body, budget_rpm=_rpm, job_plan_wait_seconds=5),
        plugin_root=PLUGIN_SRC,
    )


async def _session_lock(h: LuauHarness) -> None:
    """A ProfileStore save held by a game server: three hourly saves by the holder after an
    earlier session elsewhere (Open Cloud's clock is the emulator's, moved an hour a save)."""
    data_dir = Path(tempfile.mkdtemp(prefix="dsm-preview-"))
    now = time.time()
    clock = ManualClock(datetime.fromtimestamp(now - 3 * 3600 - 40, UTC).replace(microsecond=0))
    try:
        async with server_on_emulator(data_dir, clock) as server:
            game = await server.pair("Game server")
            saves = [("job-7f3a", 1, 120, 4000), ("job-9c21", 2, 340, 7300)]
            saves += [("job-9c21", 2, 410, 3700), ("job-9c21", 2, 455, 40)]
            for index, (job, loads, coins, ago) in enumerate(saves):
                if index:
                    clock.advance(hours=1)
                value = profile_save(job, loads, coins, ago, now=now)
                await write_entry(server, game, "PlayerData", "Player_1", value)
            d = await PluginDriver.open(h, server)
            await d.pair("Universe 1 at ")
            await d.open_entry("PlayerData", "Player_1")
            await d.wait_text("Held since ")
            await h.step_async()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


SCENARIOS["plugin-session-lock"] = Scenario(
    "a ProfileStore save held by a game server: who holds it, since when; only Data is edited",
    _session_lock,
    plugin_root=PLUGIN_SRC,
)


# -- search and analytics over the sample game ----------------------------------------------------


async def _sample_game_indexed(d: PluginDriver) -> None:
    """Like a new user: the empty emulator offers the sample game; load it, then open Search
    (the plugin indexes it) and wait for the index to hold it."""
    await d.pair()
    await d.click("Universe_1")
    await d.wait_for(lambda: d.rendered("LoadSampleGameButton"), "no sample game offer")
    await d.click("LoadSampleGameButton")
    await d.wait_text("PlayerData")
    await d.click("SearchButton")
    await d.wait_text("Index: sample game", timeout=30)
    await d.wait_text("matches")


async def _search_error(d: PluginDriver, teammate: str) -> None:
    await _sample_game_indexed(d)
    await d.type("QueryInput", 'coins > > 5 and inventory has "sword"', enter=False)
    await d.h.advance_async(1)
    await d.wait_text("Column 9:")


async def _search_verified(d: PluginDriver, teammate: str) -> None:
    await _sample_game_indexed(d)
    await d.type("QueryInput", 'coins > 20000 and inventory has "sword"', enter=False)
    await d.type("SortInput", "-coins", enter=True)
    await d.wait_text("coins = ")
    await d.click("VerifyLiveButton")
    await d.wait_text("verified")


async def _analytics(d: PluginDriver, tab: str, ready: str) -> None:
    await _sample_game_indexed(d)
    await d.click("AnalyticsButton")
    await d.wait_text("PlayerData ·", timeout=30)
    if tab != "SchemaTab":
        await d.click(tab)
    await d.wait_text(ready, timeout=30)


async def _analytics_schema(d: PluginDriver, teammate: str) -> None:
    await _analytics(d, "SchemaTab", "integer")


async def _analytics_field(d: PluginDriver, teammate: str) -> None:
    await _analytics(d, "SchemaTab", "integer")
    row = d.row_with("FieldRow", "xp")
    pane = d.element("SchemaPane").node()
    await d.h.scroll_to_async("SchemaPane", row.node().y - pane.y - 40)
    await d.click(d.row_with("FieldRow", "xp"))
    await d.wait_text("Distribution of xp", timeout=30)


async def _analytics_economy(d: PluginDriver, teammate: str) -> None:
    await _analytics(d, "EconomyTab", "total supply")


async def _analytics_anomalies(d: PluginDriver, teammate: str) -> None:
    await _analytics(d, "AnomaliesTab", "Each anomaly")


SAMPLE_GAME_SCENARIOS: dict[str, tuple[str, Callable[[PluginDriver, str], Awaitable[None]]]] = {
    "plugin-search-error": (
        "a value query checked as it is typed: the problem marked where the server says",
        _search_error,
    ),
    "plugin-search": (
        "search results over the sample game, sorted, verified live against Open Cloud",
        _search_verified,
    ),
    "plugin-analytics-schema": (
        "the schema: every field's types and shares, presence, examples, drift",
        _analytics_schema,
    ),
    "plugin-analytics-field": (
        "one field's histogram and percentiles, captioned with source, coverage and age",
        _analytics_field,
    ),
    "plugin-analytics-economy": (
        "a currency: supply, holders, Gini, richest 1%, holdings on log10 bins",
        _analytics_economy,
    ),
    "plugin-analytics-anomalies": (
        "anomalies by kind, each with its reason and a link to the entry",
        _analytics_anomalies,
    ),
}

for _name, (_description, _body) in SAMPLE_GAME_SCENARIOS.items():
    # A generous request budget so the crawl is not paced for minutes.
    SCENARIOS[_name] = Scenario(
        _description, _with_server(_body, budget_rpm=1_000_000), plugin_root=PLUGIN_SRC
    )


async def _server_down(h: LuauHarness) -> None:
    h.plugin_settings[PORT_SETTING] = free_port()
    h.plugin_settings[WIDGET_SETTING] = False
    h.run_scripts()
    await h.click_async(h.toolbar_button(TOOLBAR_BUTTON))
    await h.wait_until(lambda: any("not running" in t for t in h.texts()), timeout=10)


SCENARIOS["plugin-server-down"] = Scenario(
    "first start without a server: how to start it, retrying with back-off",
    _server_down,
    plugin_root=PLUGIN_SRC,
)
PLUGIN_SCENARIO_NAMES = [
    "plugin-server-down",
    *PLUGIN_SCENARIOS,
    *SAMPLE_GAME_SCENARIOS,
    "plugin-session-lock",
    *JOB_SCENARIOS,
]


def render_all(names: list[str], out_dir: Path, theme: str = "Dark") -> list[Path]:
    from tools.preview import run_scenario

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        image = run_scenario(name, theme=theme)
        suffix = "" if theme == "Dark" else "-" + theme.lower()
        path = out_dir / f"{name.removeprefix('plugin-')}{suffix}.png"
        image.save(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the plugin's screens to PNG files.")
    parser.add_argument("names", nargs="*", help="scenario names (default: all plugin-*)")
    parser.add_argument("-o", "--out", type=Path, default=SCREENS)
    parser.add_argument("--theme", default="Dark", choices=["Dark", "Light"])
    args = parser.parse_args(argv)
    names = args.names or PLUGIN_SCENARIO_NAMES
    for path in render_all(names, args.out, args.theme):
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
