"""Issue 11 in the plugin, end to end: its real Luau in the harness (pluau) against a real
companion server on the emulator, driven through the widget like a user.

- The Backups view lists the universe's archives with their manifest facts and its schedules;
  a schedule is set from it (every / keep).
- Back up now plans a backup job (its dry run in the Jobs view), starts it, and the archive it
  makes is listed, opened (the manifest's facts), verified and compared with another.
- A portable archive made on another machine is imported (file, upload, passphrase), listed and
  verified; not an archive or a wrong passphrase say why and leave nothing behind.
- A restore and an erasure are asked for from their forms; what the server answers is shown as it
  says it (the server branch plans them as jobs once those kinds land).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dsm.emulator.context import EMULATOR
from shared_schema.common import Role
from tests.test_plugin_jobs_ui import JOB_SERVER, connected, opencloud_server, seed
from tests.test_plugin_layout_ui import cut_off_sideways
from tools.luau_harness import LuauHarness
from tools.luau_harness.errors import HarnessError
from tools.luau_harness.ui import Element, Node
from tools.testing import jobs
from tools.testing.plugin import PluginDriver, make_admin, player, write_entry
from tools.testing.server import Server, entry_path, idem, running_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path, budget_rpm=6000, job_plan_wait_seconds=2) as s:
        yield s


def game_writes(server: Server, values: dict[str, Any]) -> None:
    """Players saved straight into Open Cloud (the embedded emulator), as a game server does."""
    assert server.upstream.emulator is not None
    opencloud = server.upstream.emulator.runner.app[EMULATOR].standard
    for key, value in values.items():
        text = json.dumps(value, separators=(",", ":"))
        opencloud.write("1", "PlayerData", "global", key, text, attributes=None, user_ids=[])


def archive_row(d: PluginDriver, note: str) -> Element | None:
    """The drawn archive row whose title carries `note`."""

    def match(n: Node) -> bool:
        return (
            n.name == "ArchiveRow" and n.rendered and any(note in (c.text or "") for c in n.walk())
        )

    try:
        return d.h.find(match)
    except HarnessError:
        return None


async def open_backups(harness: LuauHarness, server: Server) -> PluginDriver:
    d = await PluginDriver.open(harness, server)
    await d.pair("Emulator universe 1")
    make_admin(server)  # schedules and restores need admin
    await d.click("Universe_1")
    await d.wait_for(lambda: d._has_row("DataStoreRow", "PlayerData"), "no data store row")
    await d.click("BackupsButton")
    await d.wait_for(lambda: d.rendered("BackupsView"), "no Backups view")
    return d


async def back_up_now(
    d: PluginDriver, note: str, entries: int, passphrase: str | None = None
) -> None:
    """Back up now…: the form, its dry run in the Jobs view, Start, until it succeeds."""
    await d.click("BackupNowButton")
    await d.wait_for(lambda: d.rendered("BackupFormDialog"), "no backup form")
    await d.type("BackupNoteInput", note)
    if passphrase is not None:
        await d.type("PassphraseInput", passphrase)
    await d.click("ConfirmButton")  # Plan (dry run)
    await d.wait_text(f"{entries} entries selected.", timeout=20)
    assert d.has_text("Planned (dry run)")
    assert d.has_text("Backup ")  # the job's kind in words
    await d.click("StartButton")
    await d.wait_text("Succeeded", timeout=30)


async def test_a_backup_is_made_listed_opened_verified_and_compared(
    harness: LuauHarness, server: Server, tmp_path: Path
) -> None:
    game_writes(server, {f"Player_{i}": player(i) for i in range(1, 6)})
    teammate = await server.pair("Teammate", role=Role.ADMIN)
    d = await open_backups(harness, server)
    await d.wait_text("No archives of Emulator universe 1 in ")

    # A schedule, set from the plugin, listed with its period and retention.
    await d.click("ScheduleButton")
    await d.wait_for(lambda: d.rendered("ScheduleFormDialog"), "no schedule form")
    await d.type("EveryInput", "12h")
    await d.type("KeepInput", "7")
    await d.click("ConfirmButton")
    await d.wait_text("Scheduled: nightly · every 12h, keep 7 · next ")
    status, schedules = await server.call("GET", "/backup-schedules", teammate)
    assert status == 200, schedules
    assert [(s["name"], s["every_seconds"], s["keep"]) for s in schedules["schedules"]] == [
        ("nightly", 43200, 7)
    ]

    await back_up_now(d, "before v42", 5)
    await d.wait_for(lambda: d.rendered("OpenArchiveButton"), "no link to the archive made")
    assert d.has_text("· Manifest: 5 entries")
    await d.click(await d.reveal("OpenBackupsButton"))
    await d.wait_for(lambda: archive_row(d, "before v42") is not None, "no archive row")
    status, listed = await server.call("GET", "/backups", teammate)
    assert status == 200, listed
    (archive,) = listed["archives"]
    row = archive_row(d, "before v42")
    assert row is not None
    facts = next(c for c in row.children() if c.name == "ArchiveFacts")
    assert facts.text.startswith("Manifest: 5 entries")
    assert "EMULATOR data" in facts.text and "universe 1" in facts.text

    # The archive: its manifest's facts, then verify reads every entry.
    await d.click(row)
    await d.wait_text("From the archive's manifest, as the backup wrote it:")
    assert d.has_text(f"Archive: {archive['archive_id']}")
    assert d.has_text("Entries: 5 entries")
    assert d.has_text("Data: EMULATOR data")
    assert d.has_text("Note: before v42")
    await d.click("VerifyButton")
    await d.wait_text("Verified: 5 of 5 entries intact, every checksum matches")

    # A second archive after a game server changed one player and added one; compare them.
    game_writes(server, {"Player_2": {**player(2), "coins": 1}, "Player_9": player(9)})
    await d.click("Crumb3")  # Universes › universe › backups
    await d.wait_for(lambda: d.rendered("BackupsView"), "no Backups view")
    await back_up_now(d, "after the patch", 6, passphrase="correct horse battery")
    await d.click(await d.reveal("OpenBackupsButton"))
    await d.wait_for(lambda: archive_row(d, "after the patch") is not None, "no second archive")
    await d.click(archive_row(d, "after the patch") or "no row")
    await d.wait_text("Protection: opens with this server's vault or a passphrase")
    await d.click("Crumb3")
    await d.wait_for(lambda: archive_row(d, "before v42") is not None, "no first archive")
    await d.click(archive_row(d, "before v42") or "no row")
    await d.wait_text("From the archive's manifest")
    await d.click("DiffButton")
    await d.wait_for(lambda: d.rendered("DiffDialog"), "no compare dialog")
    await d.click("ConfirmButton")
    await d.wait_text("1 new · 1 changed · 0 gone · 4 the same")
    assert d.has_text("changed PlayerData / global / Player_2: 1 value operation")
    assert d.has_text("new PlayerData / global / Player_9")


async def test_the_restore_and_erasure_forms_check_what_is_typed_before_asking(
    harness: LuauHarness, server: Server
) -> None:
    game_writes(server, {"Player_12": player(12)})
    teammate = await server.pair("Teammate", role=Role.ADMIN)
    d = await open_backups(harness, server)
    assert cut_off_sideways(harness, "WaysIn") == []  # both ways in fit the default widget

    # As at a moment: the zone must be written (Studio's clock zone is not the server's).
    await d.click("RestoreAtButton")
    await d.wait_for(lambda: d.rendered("RestoreView"), "no restore form")
    await d.type("TimeText", "2026-12-01 14:00")
    await d.click("PlanButton")
    await d.wait_text("time zone")
    await d.type("TimeText", "2026-12-01T14:00Z")
    await d.wait_text("= 2026-12-01 14:00:00 UTC")
    await d.click("PlanButton")  # a moment's restore names its data stores
    await d.wait_text("Name at least one data store, or choose every data store.")

    # Erasure: one user id, and the server's patterns shown with where they are kept.
    await d.click("Crumb3")
    await d.wait_for(lambda: d.rendered("BackupsView"), "no Backups view")
    await d.click("EraseButton")
    await d.wait_for(lambda: d.rendered("ErasureView"), "no erasure form")
    await d.wait_text("on the server's machine.")

    # The patterns edited from the plugin, kept by the server, shown as saved.
    await d.click("EditPatternsButton")
    await d.wait_for(lambda: d.rendered("PatternsDialog"), "no patterns editor")
    await d.type("PatternsInput", "*: Player_{userId}\nInventory {userId}", enter=False)
    await d.click("ConfirmButton")
    await d.wait_text("Line 2: write the data store, a colon, then its key patterns")
    await d.type(
        "PatternsInput",
        "*: Player_{userId}\nInventory: {userId}_inventory\nordered Wins (global): {userId}",
        enter=False,
    )
    await d.click("ConfirmButton")
    await d.wait_for(lambda: not d.rendered("PatternsDialog"), "the editor stayed open")
    assert d.has_text("Inventory: {userId}_inventory")
    status, saved = await server.call("GET", "/erasure-patterns", teammate)
    assert status == 200, saved
    assert saved["standard"] == {"*": ["Player_{userId}"], "Inventory": ["{userId}_inventory"]}
    assert saved["ordered"] == {"Wins": {"scopes": ["global"], "ids": ["{userId}"]}}

    await d.type("UserIdInput", "Player_12")
    await d.click("FindButton")
    await d.wait_text('"Player_12" is not a user id (a whole number).')


async def stored_value(server: Server, token: str, key: str) -> Any:
    status, view = await server.call(
        "GET", entry_path(1, "PlayerData", key) + "?scope=global", token
    )
    return json.loads(view["value_json"]) if status == 200 else None


async def test_a_restore_from_an_archive_is_planned_key_by_key_run_and_rolled_back(
    harness: LuauHarness, server: Server
) -> None:
    game_writes(server, {f"Player_{i}": player(i) for i in range(1, 5)})
    teammate = await server.pair("Teammate", role=Role.ADMIN)
    d = await open_backups(harness, server)
    await back_up_now(d, "before the release", 4)
    before = {f"Player_{i}": await stored_value(server, teammate, f"Player_{i}") for i in (1, 2)}

    # A bad release: a game server breaks two players and saves a new one.
    game_writes(
        server,
        {
            "Player_1": {**player(1), "coins": -1},
            "Player_2": {**player(2), "coins": -1},
            "Player_7": player(7),
        },
    )
    await d.click(await d.reveal("OpenBackupsButton"))
    await d.wait_for(lambda: archive_row(d, "before the release") is not None, "no archive")
    await d.click(archive_row(d, "before the release") or "no row")
    await d.click("RestoreButton")
    await d.wait_for(lambda: d.rendered("RestoreView"), "no restore form")
    await d.click("PlanButton")

    # The dry run in the Jobs view: counts, then every key with its source; nothing written.
    await d.wait_text("The restore, key by key")
    await d.wait_text("2 replace · 2 already so", timeout=20)
    assert d.has_text("Planned (dry run)")
    assert d.has_text("Keys by source: archive 4")
    await d.wait_text("replace PlayerData / global / Player_1 · archive, ")
    assert (await stored_value(server, teammate, "Player_1"))["coins"] == -1
    await d.click(await d.reveal("RestoreKey1"))
    await d.wait_for(lambda: d.rendered("RestoreKeyDialog"), "no key dialog")
    assert "/coins" in d.element("KeyPatch").text
    await d.click("ConfirmButton")  # Close
    await d.click("Option_update")  # only the keys it replaces
    await d.wait_for(
        lambda: not d.has_text("already so PlayerData / global / Player_3"), "filter not applied"
    )
    assert d.has_text("replace PlayerData / global / Player_2")

    await d.click("StartButton")
    await d.wait_text("Succeeded", timeout=30)
    # The filter chosen stays through the job's state changes; each key now says what happened.
    await d.wait_text("replace PlayerData / global / Player_2 · archive, exact · applied")
    assert not d.has_text("already so PlayerData / global / Player_3")
    for key, value in before.items():
        assert await stored_value(server, teammate, key) == value
    assert await stored_value(server, teammate, "Player_7") == player(7)  # left alone

    # Rolled back: the restore's own writes undone, conditionally, as a job planned first.
    await d.click("RollbackButton")
    await d.wait_for(lambda: d.rendered("RollbackDialog"), "no rollback dialog")
    await d.click("ConfirmButton")
    await d.wait_text("Rolls back ")
    await d.wait_text("2 entries selected.", timeout=20)
    await d.click("StartButton")
    await d.wait_text("Succeeded", timeout=30)
    assert (await stored_value(server, teammate, "Player_1"))["coins"] == -1


async def test_a_restore_as_at_a_moment_names_each_keys_source_and_puts_it_back(
    harness: LuauHarness, server: Server
) -> None:
    teammate = await server.pair("Teammate", role=Role.ADMIN)
    for index in (1, 2):
        await write_entry(server, teammate, "PlayerData", f"Player_{index}", player(index))
    await asyncio.sleep(0.05)
    moment = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    await asyncio.sleep(0.05)
    await write_entry(server, teammate, "PlayerData", "Player_1", {**player(1), "coins": -1})

    d = await open_backups(harness, server)
    # The plugin's clock (virtual, from the harness's start) catches up with the moment typed:
    # a moment later than the plugin's now is refused as in the future.
    await harness.advance_async(time.time() - (harness.epoch + harness.now) + 1)
    await d.click("RestoreAtButton")
    await d.wait_for(lambda: d.rendered("RestoreView"), "no restore form")
    await d.type("TimeText", moment)
    await d.type("StoresInput", "PlayerData")
    await d.click("PlanButton")
    await d.wait_text("The restore, key by key")
    await d.wait_text("1 replace · 1 already so", timeout=20)
    assert d.has_text("Keys by source: journal 2")
    assert d.has_text("replace PlayerData / global / Player_1 · journal, exact")
    await d.click("StartButton")
    await d.wait_text("Succeeded", timeout=30)
    assert await stored_value(server, teammate, "Player_1") == player(1)


async def test_a_players_data_is_found_erased_on_confirmation_and_reported(
    harness: LuauHarness, server: Server
) -> None:
    uid = 900_000_000_123
    teammate = await server.pair("Teammate", role=Role.ADMIN)
    await write_entry(server, teammate, "PlayerData", f"Player_{uid}", {"coins": 5}, user_ids=[uid])
    await write_entry(server, teammate, "Guilds", "g1", {"name": "shared"}, user_ids=[7, uid])
    await write_entry(server, teammate, "PlayerData", "Player_7", player(7), user_ids=[7])

    d = await open_backups(harness, server)
    await d.click("EraseButton")
    await d.wait_for(lambda: d.rendered("ErasureView"), "no erasure form")
    await d.type("UserIdInput", str(uid))
    await d.click("FindButton")

    # What was found where, before anything is erased.
    await d.wait_text("What the search found")
    await d.wait_text("places hold the player's data", timeout=20)
    await d.wait_text(f"delete PlayerData / global / Player_{uid} (key pattern Player_{{userId}})")
    assert d.has_text("take the id out of Guilds / global / g1 (user ids")
    assert d.has_text("Then scrubs this server's: ")
    assert (await stored_value(server, teammate, f"Player_{uid}")) == {"coins": 5}

    # A typed confirmation, then the job; the report for the studio's records, then forgotten.
    await d.click("StartButton")
    await d.wait_for(lambda: d.rendered("StartDialog"), "no typed confirmation")
    assert d.has_text("Erase this player's data?")
    assert d.has_text(f"Type erase {uid} to confirm.")
    await d.type("ConfirmationInput", f"erase {uid}", enter=False)
    await d.click("ConfirmButton")
    await d.wait_text("Succeeded", timeout=30)
    assert await stored_value(server, teammate, f"Player_{uid}") is None
    assert await stored_value(server, teammate, "Player_7") == player(7)
    await d.wait_text("This job's own record no longer names the player.")
    await d.click(await d.reveal("ShowReportButton"))
    await d.wait_for(lambda: d.rendered("ReportDialog"), "no report")
    report = d.element("ReportText").text
    assert str(uid) in report and "Still kept by Roblox" in report
    job_id = next(t for t in d.texts() if t.startswith("job_"))
    await d.click("ConfirmButton")  # Forget it on the server
    await d.wait_for(lambda: not d.rendered("ReportDialog"), "the report stayed open")
    status, _ = await server.call("GET", f"/erasures/{job_id}/report", teammate)
    assert status >= 400


async def test_a_schedule_is_run_now_and_removed_and_an_archive_deleted(
    harness: LuauHarness, server: Server
) -> None:
    game_writes(server, {f"Player_{i}": player(i) for i in range(1, 4)})
    teammate = await server.pair("Teammate", role=Role.ADMIN)
    d = await open_backups(harness, server)
    await d.click("ScheduleButton")
    await d.wait_for(lambda: d.rendered("ScheduleFormDialog"), "no schedule form")
    await d.click("ConfirmButton")
    await d.wait_text("Scheduled: nightly · every 24h, keep 14")

    # Run now: the schedule's backup job opens and runs; its archive is the schedule's.
    await d.click("Schedule_nightly")
    await d.wait_for(lambda: d.rendered("ScheduleDialog"), "no schedule dialog")
    assert d.has_text("every data store · every scope")
    await d.click("ConfirmButton")  # Run it now
    await d.wait_text("Succeeded", timeout=30)
    await d.click(await d.reveal("OpenBackupsButton"))
    await d.wait_for(lambda: archive_row(d, "schedule nightly") is not None, "no scheduled archive")
    await d.wait_text("1 archive kept")

    # Removed: the schedule goes, its archive stays; then the archive is deleted.
    await d.click("Schedule_nightly")
    await d.wait_for(lambda: d.rendered("ScheduleDialog"), "no schedule dialog")
    await d.click("RemoveScheduleButton")
    await d.wait_text("No scheduled backups of this universe")
    assert archive_row(d, "schedule nightly") is not None
    await d.click(archive_row(d, "schedule nightly") or "no row")
    await d.wait_text("From the archive's manifest")
    await d.click("DeleteArchiveButton")
    await d.wait_for(lambda: d.rendered("DeleteArchiveDialog"), "no delete dialog")
    await d.click("ConfirmButton")
    await d.wait_text("No archives of Emulator universe 1 in ")
    status, listed = await server.call("GET", "/backups", teammate)
    assert status == 200 and listed["archives"] == [], listed


async def plan_set_metadata(d: PluginDriver, attributes: str) -> None:
    await d.tick("Player_1", "Player_2")
    await d.plan_job("set_metadata")
    await d.type("SetAttributesInput", attributes, enter=False)
    await d.click("ConfirmButton")
    await d.wait_text("2 entries selected.")


async def start_on_production(d: PluginDriver, backup: str) -> None:
    """Start, choose whether the server backs up first, type the label, until it succeeds."""
    await d.click("StartButton")
    await d.wait_for(lambda: d.rendered("StartDialog"), "no typed confirmation")
    assert d.has_text("Before writing, the server backs up the 2 entries it writes: 2 Open Cloud")
    await d.click(f"PreJobBackupChoice/Options/Option_{backup}")
    await d.type("ConfirmationInput", "Main game", enter=False)
    await d.click("ConfirmButton")
    await d.wait_text("Succeeded", timeout=30)


async def test_a_production_job_is_backed_up_first_unless_the_start_skips_it(
    harness: LuauHarness, tmp_path: Path
) -> None:
    async with opencloud_server(tmp_path, "production", **JOB_SERVER) as server:
        teammate = await server.pair("Teammate", role=Role.ADMIN)
        await seed(server, teammate, 2)
        d = await connected(harness, server, "Main game")
        await d.open_store("PlayerData")
        await plan_set_metadata(d, '{"schema": 4}')
        assert d.has_text("Before writing, the server backs up the 2 entries it writes")
        await start_on_production(d, "skip")
        status, listed = await server.call("GET", "/backups", teammate)
        assert status == 200 and listed["archives"] == [], listed

        await d.click("Crumb1")  # Universes
        await d.open_store("PlayerData")
        await plan_set_metadata(d, '{"schema": 5}')
        await start_on_production(d, "backup")
        status, listed = await server.call("GET", "/backups", teammate)
        (archive,) = listed["archives"]
        assert archive["entries"] == 2  # as they were before the job: schema 4


async def test_an_archive_is_restored_into_another_universe_and_scope(
    harness: LuauHarness, tmp_path: Path
) -> None:
    async with running_server(
        tmp_path, budget_rpm=6000, job_plan_wait_seconds=2, emulator_universes=[1, 2]
    ) as server:
        game_writes(server, {f"Player_{i}": player(i) for i in range(1, 4)})
        teammate = await server.pair("Teammate", role=Role.ADMIN)
        d = await open_backups(harness, server)
        await back_up_now(d, "production copy", 3)
        await d.click(await d.reveal("OpenArchiveButton"))
        await d.wait_text("From the archive's manifest")
        await d.click("RestoreButton")
        await d.wait_for(lambda: d.rendered("RestoreView"), "no restore form")
        await d.click(await d.reveal("TargetUniverseChoice/Options/Option_2"))
        await d.type("TargetScopeInput", "staging", enter=False)
        await d.click("PlanButton")
        await d.wait_text("3 create", timeout=20)
        assert d.has_text("create PlayerData / global / Player_1 → PlayerData / staging")
        await d.click("StartButton")
        await d.wait_text("Succeeded", timeout=30)
        status, view = await server.call(
            "GET", entry_path(2, "PlayerData", "Player_1") + "?scope=staging", teammate
        )
        assert status == 200 and json.loads(view["value_json"]) == player(1)
        status, _ = await server.call(
            "GET", entry_path(2, "PlayerData", "Player_1") + "?scope=global", teammate
        )
        assert status == 404


PASSPHRASE = "correct horse battery"


async def portable_archive(data_dir: Path) -> tuple[str, bytes]:
    """An archive made with a passphrase by another machine's server (its own vault key): the
    file's name and bytes, as the user would carry them over."""
    async with running_server(data_dir, budget_rpm=6000, job_plan_wait_seconds=2) as elsewhere:
        game_writes(elsewhere, {f"Player_{i}": player(i) for i in range(1, 4)})
        admin = await elsewhere.pair("Old laptop", role=Role.ADMIN)
        status, job = await elsewhere.call(
            "POST",
            "/backups",
            admin,
            json={
                "universe_id": 1,
                "dry_run": False,
                "idempotency_key": idem(),
                "passphrase": PASSPHRASE,
                "note": "from the old laptop",
            },
        )
        assert status == 200, job
        assert (await jobs.wait(elsewhere.call, admin, job["id"]))["state"] == "succeeded"
    (path,) = (data_dir / "backups").glob("*.dsmbak")
    return path.name, path.read_bytes()


async def pick_archive(d: PluginDriver, name: str, contents: bytes) -> None:
    await d.click("PickFileButton")
    await d.wait_for(lambda: d.h.import_prompt is not None, "no file dialog")
    assert d.h.import_prompt == ["dsmbak"]  # what the server writes
    await d.h.pick_import_file_async(name, contents)
    await d.wait_for(
        lambda: any(
            t.startswith(f"{name} · ") and t.endswith(" · sent to the server") for t in d.texts()
        ),
        "the file was not sent",
    )


def archives_and_uploads(data_dir: Path) -> tuple[list[str], list[str]]:
    return (
        sorted(p.name for p in (data_dir / "backups").glob("*.dsmbak")),
        sorted(p.name for p in (data_dir / "uploads").glob("*")),
    )


async def test_a_portable_archive_from_another_machine_is_imported_listed_and_verified(
    harness: LuauHarness, server: Server, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    name, contents = await portable_archive(tmp_path_factory.mktemp("elsewhere"))
    d = await PluginDriver.open(harness, server)
    await d.pair("Emulator universe 1")
    await d.click("Universe_1")
    await d.wait_text("0 data stores")  # this machine holds none of it yet
    await d.click("BackupsButton")
    await d.wait_for(lambda: d.rendered("BackupsView"), "no Backups view")
    assert cut_off_sideways(harness, "BackupsView") == []  # three actions and the badge fit

    # An editor's token is told what it needs before any file dialog opens.
    await d.click("ImportArchiveButton")
    await d.wait_text("Importing an archive needs an admin token; this plugin's token ")
    assert d.h.import_prompt is None
    await d.click("ConfirmButton")  # Close
    make_admin(server)

    # Not an archive, then the wrong passphrase: the server's reason, and nothing in the folder.
    await d.click("ImportArchiveButton")
    await d.wait_for(lambda: d.rendered("ImportArchiveDialog"), "no import form")
    assert cut_off_sideways(harness, "ImportArchiveDialog") == []
    await pick_archive(d, "notes.dsmbak", b"not an archive at all")
    await d.click("ConfirmButton")  # Import
    await d.wait_text("notes.dsmbak is not a DataStore Manager Pro backup archive")
    await pick_archive(d, name, contents)  # the first upload is deleted, this one replaces it
    await d.type("ImportPassphraseInput", "not the passphrase", enter=False)
    await d.click("ConfirmButton")
    await d.wait_text("the passphrase does not open this archive")
    archives, uploads = archives_and_uploads(tmp_path)
    assert archives == [] and len(uploads) == 1, uploads
    await d.click("CancelButton")  # given up: the upload goes too
    await d.wait_for(lambda: archives_and_uploads(tmp_path) == ([], []), "the upload stayed")

    # Again with its passphrase: the summary, then listed, opened and verified here.
    await d.click("ImportArchiveButton")
    await d.wait_for(lambda: d.rendered("ImportArchiveDialog"), "no import form")
    await pick_archive(d, name, contents)
    await d.type("ImportPassphraseInput", PASSPHRASE, enter=False)
    await d.click("ConfirmButton")
    await d.wait_for(lambda: d.rendered("ImportedDialog"), "no import result")
    await d.wait_text("from the old laptop")
    assert d.has_text("Manifest: 3 entries")
    archives, uploads = archives_and_uploads(tmp_path)
    assert len(archives) == 1 and uploads == [], (archives, uploads)  # named by this server
    await d.click("CancelButton")  # Close
    # Listed by its file name: only its passphrase opens it here, so the list cannot read it.
    await d.wait_for(lambda: archive_row(d, archives[0]) is not None, "not listed")
    await d.click(archive_row(d, archives[0]) or "no row")
    await d.click(await d.reveal("OpenWithPassphraseButton"))  # this vault cannot open it
    await d.wait_for(lambda: d.rendered("PassphraseDialog"), "no passphrase dialog")
    await d.type("PassphraseInput", PASSPHRASE, enter=False)
    await d.click("ConfirmButton")
    await d.wait_text("Note: from the old laptop")
    await d.click("VerifyButton")
    await d.wait_text("Verified: 3 of 3 entries intact, every checksum matches")
