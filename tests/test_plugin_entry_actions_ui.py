"""Entry actions a user reaches for in an incident, end to end: the plugin's real Luau in the
harness (pluau) against a real companion server on the emulator, clicked through like a user.

- A deleted key, reached from the key list's "Show deleted", says when it was deleted and
  restores its newest value in one click (after a preview of what will be written), through the
  server's journaled revert; the restore is in the journal and undone from there.
- A game server that wrote the key again meanwhile wins: nothing is written, the server's
  conflict answer is shown in the dialog.
- Comparing a revision of a deleted key with now compares it with the deletion (nothing), and
  says so, instead of failing on the missing current value.
"""

from __future__ import annotations

import json
from typing import Any

from dsm.emulator.context import EMULATOR
from tests.test_plugin_layout_ui import cut_off_sideways
from tests.test_plugin_ui import open_by_name
from tools.luau_harness import LuauHarness
from tools.luau_harness.ui import Element, Node
from tools.testing.plugin import PluginDriver, write_entry
from tools.testing.server import Server, entry_path, idem


async def deleted_key(server: Server, token: str, key: str, value: Any) -> dict[str, Any]:
    """Write `value`, then delete the key through the server; returns the written view."""
    written = await write_entry(server, token, "PlayerData", key, value, attributes={"v": 3})
    status, body = await server.call(
        "DELETE",
        entry_path(1, "PlayerData", key),
        token,
        params={"expected_revision": written["revision"], "idempotency_key": idem()},
    )
    assert status == 200, body
    return written


async def stored(server: Server, token: str, key: str) -> tuple[int, Any]:
    return await server.call("GET", entry_path(1, "PlayerData", key), token)


async def journal(server: Server, token: str, key: str) -> list[dict[str, Any]]:
    status, page = await server.call("GET", "/journal", token, params={"key": key})
    assert status == 200, page
    items: list[dict[str, Any]] = page["items"]
    return items


def crumb(d: PluginDriver, text: str) -> Element:
    """The breadcrumb link showing `text`."""

    def match(n: Node) -> bool:
        return n.name.startswith("Crumb") and n.rendered and n.text == text

    return d.h.find(match)


async def open_deleted(d: PluginDriver, key: str) -> None:
    """Key list › Show deleted › the deleted key: its entry screen says it is deleted."""
    await d.pair()
    await d.open_store("PlayerData")
    await d.click("ShowDeletedButton")
    await d.wait_for(lambda: d._has_row("KeyRow", f"{key}  (deleted)"), "no deleted key row")
    await d.click(d.row_with("KeyRow", f"{key}  (deleted)"))
    await d.wait_text(f"{key} was deleted")


async def test_a_deleted_key_is_restored_in_one_click_and_the_restore_undone(
    harness: LuauHarness, server: Server
) -> None:
    teammate = await server.pair("Teammate")
    written = await deleted_key(server, teammate, "Player_7", {"coins": 7})
    d = await PluginDriver.open(harness, server)
    await open_deleted(d, "Player_7")
    notice = d.element("DeletedNotice").text
    assert "Restore puts back the newest that held a value, revision " in notice
    assert written["revision"][:8] in notice
    assert cut_off_sideways(harness, "DeletedBody") == []

    await d.click("RestoreButton")
    await d.wait_for(lambda: d.rendered("RestoreDialog"), "no restore dialog")
    assert d.rendered("RestoreDiff")
    assert d.has_text("Only if the key is still deleted as of revision")
    assert d.has_text('"coins"')  # the value that will be written, in the preview
    assert cut_off_sideways(harness, "RestoreDialog") == []
    await d.click("ConfirmButton")
    await d.wait_text("Restored Player_7")

    status, view = await stored(server, teammate, "Player_7")
    assert status == 200 and json.loads(view["value_json"]) == {"coins": 7}
    assert view["attributes"] == {"v": 3}  # metadata came back with the value
    record = (await journal(server, teammate, "Player_7"))[0]
    assert record["operation"] == "revert" and record["status"] == "applied"
    assert record["actor"] == d.client_name and record["revision_after"] == view["revision"]
    await d.wait_text("Revision ")  # the entry screen shows the restored value

    # The restore is one journaled write: undo it from History › Journal, the key is gone again.
    await d.click("HistoryButton")
    await d.click("JournalTab")
    await d.wait_text("revert by")
    await d.click(d.button_in_row("JournalRow", "revert by", "UndoButton"))
    await d.wait_for(lambda: d.rendered("UndoDialog"), "no undo dialog")
    await d.click("ConfirmButton")
    await d.wait_text("Undone: Player_7")
    assert (await stored(server, teammate, "Player_7"))[0] == 404


async def test_restoring_a_key_the_game_wrote_again_shows_the_conflict_and_keeps_the_game_write(
    harness: LuauHarness, server: Server
) -> None:
    teammate = await server.pair("Teammate")
    await deleted_key(server, teammate, "Player_8", {"coins": 8})
    d = await PluginDriver.open(harness, server)
    await open_deleted(d, "Player_8")
    await d.click("HistoryButton")
    await d.wait_text("the key is deleted")
    assert d.element("RevertButton").text == "Restore newest…"
    assert cut_off_sideways(harness, "HistoryView") == []
    await d.click("RevertButton")
    await d.wait_for(lambda: d.rendered("RestoreDialog"), "no restore dialog")

    # The game saved the player straight into Open Cloud while the dialog was open.
    assert server.upstream.emulator is not None
    opencloud = server.upstream.emulator.runner.app[EMULATOR].standard
    opencloud.write(
        "1", "PlayerData", "global", "Player_8", '{"coins":99}', attributes=None, user_ids=[]
    )

    await d.click("ConfirmButton")
    await d.wait_text("Nothing was written")
    assert d.rendered("RestoreDialog")  # the answer is shown where the user acted
    status, view = await stored(server, teammate, "Player_8")
    assert status == 200 and json.loads(view["value_json"]) == {"coins": 99}
    assert [r["operation"] for r in await journal(server, teammate, "Player_8")] == [
        "delete",
        "create",
    ]


async def test_comparing_a_revision_of_a_deleted_key_with_now_shows_everything_removed(
    harness: LuauHarness, server: Server
) -> None:
    teammate = await server.pair("Teammate")
    written = await deleted_key(server, teammate, "Player_9", {"coins": 9})
    status, page = await server.call(
        "GET", entry_path(1, "PlayerData", "Player_9") + "/revisions", teammate
    )
    assert status == 200, page
    tombstone = page["items"][0]
    assert tombstone["state"] == "DELETED"
    d = await PluginDriver.open(harness, server)
    await open_deleted(d, "Player_9")
    await d.click("HistoryButton")
    await d.wait_text("the key is deleted")
    await d.click(d.row_with("RevisionRow", written["revision"]))
    assert d.element("CompareButton").text == "Compare with now (deleted)"
    await d.click("CompareButton")
    # It used to stop here on the missing current value ("... does not exist").
    await d.wait_for(lambda: d.rendered("CompareDialog"), "no compare dialog")
    assert d.has_text("Player_9 is deleted now, so the right side is empty")
    # The deletion it compares with, by its revision; the revision's value on the left.
    assert d.has_text(f"Now: deleted ({tombstone['revision'][:8]}")
    assert d.has_text(f"Revision {written['revision'][:8]}")
    assert d.has_text('"coins"')
    assert cut_off_sideways(harness, "CompareDialog") == []


async def test_history_shows_the_value_as_of_a_typed_moment_with_its_revision_and_source(
    harness: LuauHarness, server: Server
) -> None:
    teammate = await server.pair("Teammate")
    first = await write_entry(server, teammate, "PlayerData", "Player_9", {"coins": 1})
    await write_entry(server, teammate, "PlayerData", "Player_9", {"coins": 2})
    d = await PluginDriver.open(harness, server)
    await d.pair()
    await d.open_entry("PlayerData", "Player_9")
    await d.click("HistoryButton")
    await d.wait_text("2 revisions")
    await d.click("AsofTab")
    await d.wait_for(lambda: d.rendered("ShowAsOfButton"), "no As of tab")
    assert d.has_text("RFC 3339 with a time zone, e.g. 2026-12-01T14:00Z")  # the format hint

    # Bad input: said under the field and again on Show; nothing is read.
    await d.type("AsOfTime/TimeText", "yesterday at noon")
    assert "Write the date as year-month-day" in d.element("AsOfTime/TimeShown").text
    await d.click("ShowAsOfButton")
    assert "Write the date as year-month-day" in d.element("AsOfResult").text
    assert not d.rendered("AsOfText")

    # The moment of the first write: its revision, time and source, and its value. (The
    # plugin's clock is the harness's virtual one: let it pass that moment first.)
    await harness.advance_async(2)
    await d.type("AsOfTime/TimeText", first["updated_at"])
    await d.click("ShowAsOfButton")
    await d.wait_text("revision " + first["revision"][:8])
    result = d.element("AsOfResult").text
    assert result.endswith("· EMULATOR") and "written " in result
    assert json.loads(d.element("AsOfText/RawScroll/RawText").text) == {"coins": 1}
    assert cut_off_sideways(harness, "HistoryView") == []

    # Before the key existed: nothing, in the server's words, and no value shown.
    await d.type("AsOfTime/TimeText", "2001-01-01T00:00Z")
    await d.click("ShowAsOfButton")
    await d.wait_text("Nothing at 2001-01-01 00:00:00 UTC")
    assert not d.rendered("AsOfText")


async def test_a_whole_number_entry_is_incremented_by_a_typed_amount(
    harness: LuauHarness, server: Server
) -> None:
    teammate = await server.pair("Teammate")
    await write_entry(server, teammate, "PlayerData", "Visits", 41, attributes={"kind": "counter"})
    await write_entry(server, teammate, "PlayerData", "Player_1", {"coins": 1})
    d = await PluginDriver.open(harness, server)
    await d.pair()

    # Only a whole number is offered an increment.
    await d.open_entry("PlayerData", "Player_1")
    assert not d.rendered("IncrementButton")
    await d.click(crumb(d, "global"))  # back to the key list
    await d.wait_for(lambda: d._has_row("KeyRow", "Visits"), "no key row")
    await d.click(d.row_with("KeyRow", "Visits"))
    await d.wait_for(lambda: d.rendered("IncrementButton"), "no Add button on a number")
    assert cut_off_sideways(harness, "Footer") == []

    await d.click("IncrementButton")
    await d.wait_for(lambda: d.rendered("IncrementDialog"), "no increment dialog")
    assert d.has_text("Now 41 (revision ")
    assert cut_off_sideways(harness, "IncrementDialog") == []
    await d.type("AmountInput", "2.5", enter=False)
    await d.click("ConfirmButton")
    await d.wait_text("The amount must be a whole number")
    assert json.loads((await stored(server, teammate, "Visits"))[1]["value_json"]) == 41

    await d.type("AmountInput", "5", enter=False)
    await d.click("ConfirmButton")
    await d.wait_text("Added 5 to Visits: now 46")
    status, view = await stored(server, teammate, "Visits")
    assert status == 200 and view["value_json"] == "46"
    assert view["attributes"] == {"kind": "counter"}  # carried over
    record = (await journal(server, teammate, "Visits"))[0]
    assert record["operation"] == "increment" and record["status"] == "applied"
    assert record["actor"] == d.client_name and record["revision_after"] == view["revision"]
    # The entry screen now shows the revision the increment wrote.
    short = view["revision"][:8] + "…" + view["revision"][-6:]
    await d.wait_text(f"Revision {short} · ACTIVE")


async def test_an_ordered_entry_is_incremented_from_its_row(
    harness: LuauHarness, server: Server
) -> None:
    teammate = await server.pair("Teammate")
    entries = "/universes/1/ordered/Wins/scopes/global/entries"
    for entry_id, value in {"ann": 5, "bo": 42}.items():
        status, body = await server.call(
            "POST",
            entries,
            teammate,
            json={"id": entry_id, "value": value, "idempotency_key": idem()},
        )
        assert status == 200, body
    d = await PluginDriver.open(harness, server)
    await d.pair()
    await open_by_name(d, None, "Wins")
    await d.wait_text("2 entries · click one to add to it")
    await d.click(d.row_with("OrderedRow", "ann"))
    await d.wait_for(lambda: d.rendered("IncrementDialog"), "no increment dialog")
    assert d.has_text("Now 5.")
    await d.type("AmountInput", "-", enter=False)
    await d.click("ConfirmButton")
    await d.wait_text("The amount must be a whole number")
    await d.type("AmountInput", "40", enter=False)
    await d.click("ConfirmButton")
    await d.wait_text("Added 40 to ann: now 45, journal #")

    status, view = await server.call("GET", entries + "?descending=true", teammate)
    assert status == 200 and {i["id"]: i["value"] for i in view["items"]} == {"ann": 45, "bo": 42}
    record = (await journal(server, teammate, "ann"))[0]
    assert record["operation"] == "increment" and record["status"] == "applied"
    assert record["store_kind"] == "ordered" and record["actor"] == d.client_name
    # The list is read again: ann now ranks first.
    await d.wait_for(
        lambda: (
            [
                c.text
                for n in sorted(
                    (e.node() for e in harness.find_all("OrderedRow") if e.node().rendered),
                    key=lambda n: n.y,
                )
                for c in n.children
                if c.name == "Id"
            ][:1]
            == ["ann"]
        ),
        "the list was not read again",
    )
