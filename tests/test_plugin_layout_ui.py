"""Screens as a user sees them in Studio's default dock size (420 x 560): the real plugin in the
harness against a real server. Nothing may run off the widget's right edge or out of its own
box (under a neighbouring button) uncut: text that does not fit wraps, or ends in "…".
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared_schema.common import Role
from tools.luau_harness import LuauHarness, Node
from tools.testing.plugin import (
    PORT_SETTING,
    TOOLBAR_BUTTON,
    WIDGET_SETTING,
    PluginDriver,
    free_port,
    write_entry,
)
from tools.testing.server import Server

Box = tuple[float, float, float, float]  # left, top, right, bottom


@pytest.fixture
def signal_behavior() -> str:
    """One mode is enough here: what is checked does not depend on when handlers run."""
    return "Deferred"


def visible_area(node: Node) -> Box:
    """What is on screen of a node's own rectangle (a scrolling frame's window, without its bar)."""
    if node.scroll is not None:
        return (node.x, node.y, node.x + node.scroll.window_w, node.y + node.scroll.window_h)
    return (node.x, node.y, node.x + node.w, node.y + node.h)


def with_clips(node: Node, clip: Box) -> Iterator[tuple[Node, Box]]:
    """Every node under `node` with the area its clipping ancestors (widget, scrolling frames,
    ClipsDescendants) leave visible."""
    yield node, clip
    if node.scroll is not None or node.clips:
        left, top, right, bottom = visible_area(node)
        clip = (max(clip[0], left), max(clip[1], top), min(clip[2], right), min(clip[3], bottom))
    for child in node.children:
        yield from with_clips(child, clip)


def text_overflows(h: LuauHarness, node: Node) -> bool:
    """Its text is wider than its box and neither wraps nor ends in "…": it is drawn past the
    box, over or under whatever is next to it, or cut off mid-word by a clipping parent."""
    if not node.text or node.wrapped or node.truncate != "None":
        return False
    width, _height = h.find(lambda n: n.id == node.id).get("TextBounds")
    left, right, _top, _bottom = node.padding
    return bool(width > node.w - left - right + 0.5)


def cut_off_sideways(h: LuauHarness, under: str) -> list[str]:
    """Rendered elements under `under` that stick out left or right of what is visible of them,
    or whose text runs out of their own box (below the fold is fine: that is what scrolling is
    for)."""
    out: list[str] = []
    for root in h.tree():
        for node, clip in with_clips(root, visible_area(root)):
            if f"/{under}/" not in node.path or not node.rendered:
                continue
            if node.x < clip[0] - 0.5 or node.x + node.w > clip[2] + 0.5:
                out.append(f"{node.describe()} outside x {clip[0]:g}..{clip[2]:g}")
            elif text_overflows(h, node):
                out.append(f"{node.describe()}: its text is wider than its box")
    return out


async def test_a_long_bookmark_stays_inside_the_team_screen(
    harness: LuauHarness, server: Server
) -> None:
    teammate = await server.pair("Teammate (Alex)", role=Role.ADMIN)
    status, _ = await server.call("POST", "/team/1/enable", teammate)
    assert status == 200
    label = "refund case for the player who lost a sword in the trade on Tuesday"
    status, answer = await server.call(
        "POST",
        "/team/1/bookmarks",
        teammate,
        json={"datastore": "PlayerData", "key": "Player_3", "label": label},
    )
    assert status < 300, answer
    d = await PluginDriver.open(harness, server)
    await d.pair()
    await d.click("Universe_1")
    await d.wait_text(" data store")
    await d.click("TeamButton")
    await d.wait_text(label)

    widget = harness.tree()[0]
    assert (widget.w, widget.h) == (420, 560)
    bookmark = d.element("BookmarkButton").node()
    assert bookmark.text is not None and bookmark.text.startswith(
        f"Bookmark: {label} · PlayerData / Player_3 (by "
    )
    assert cut_off_sideways(harness, "TeamPage") == []
    assert len(bookmark.lines) > 1  # wrapped, whole
    # And it still opens the bookmarked entry.
    await d.click("BookmarkButton")
    await d.wait_text("Player_3")


async def test_revision_and_journal_rows_keep_their_text_inside(
    harness: LuauHarness, server: Server
) -> None:
    teammate = await server.pair("Teammate (Alex)", role=Role.ADMIN)
    for level in (1, 2, 3):
        await write_entry(server, teammate, "PlayerData", "Player_1", {"level": level})
    d = await PluginDriver.open(harness, server)
    await d.pair()
    await d.open_entry("PlayerData", "Player_1")
    await d.click("HistoryButton")
    await d.wait_text(" revisions · ")
    assert cut_off_sideways(harness, "RevisionList") == []
    rows = sorted((e.node() for e in harness.find_all("RevisionRow")), key=lambda n: n.y)
    top = next(n for n in rows if n.rendered)
    assert any((c.text or "").endswith(" · newest") for c in top.walk())
    await d.click("JournalTab")
    await d.wait_text("update by Teammate (Alex)")
    assert cut_off_sideways(harness, "JournalList") == []


async def test_the_status_bar_keeps_a_long_error_inside(harness: LuauHarness) -> None:
    harness.plugin_settings[PORT_SETTING] = free_port()  # no server there
    harness.plugin_settings[WIDGET_SETTING] = False
    harness.run_scripts()
    await harness.click_async(harness.toolbar_button(TOOLBAR_BUTTON))
    await harness.wait_until(
        lambda: any(t.startswith("Last error just now: ") for t in harness.texts()), timeout=10
    )
    assert cut_off_sideways(harness, "StatusBar") == []
    error = harness.find("LastErrorStatus", rendered_only=True).node()
    assert error.truncate == "AtEnd"  # a long message ends in "…" at the widget's edge


async def test_the_pairing_screen_keeps_the_install_name_inside(
    harness: LuauHarness, server: Server
) -> None:
    d = await PluginDriver.open(harness, server)
    await d.wait_text("Start pairing")
    short = d.client_name.removeprefix("DataStore Manager Pro (").removesuffix(")")
    assert f"This Studio pairs as “{short}”" in d.element("PairingName").text
    assert cut_off_sideways(harness, "PairingScreen") == []
    await d.click("StartPairingButton")
    await d.wait_for(lambda: d.rendered("PairingCodeInput"), "no code field")
    name = d.element("PairingName").node()
    assert name.text is not None and name.text.startswith(f"The console shows a code for “{short}”")
    assert cut_off_sideways(harness, "PairingScreen") == []
    assert len(name.lines) > 1  # wrapped, whole
