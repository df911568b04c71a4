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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

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
    player,
    write_entry,
)
from tools.testing.server import Server, running_server

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


def _with_server(body: Callable[[PluginDriver, str], Awaitable[None]]) -> Run:
    """A scenario body run against a fresh server (a temporary data dir) with a teammate token."""

    async def run(h: LuauHarness) -> None:
        data_dir = Path(tempfile.mkdtemp(prefix="dsm-preview-"))
        try:
            async with running_server(data_dir) as server:
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
    await d.click("ActivityButton")
    await d.wait_text("SamTests · update PlayerData / global / Player_1")


async def _monitor(d: PluginDriver, teammate: str) -> None:
    await seed_players(d.server, teammate, count=12)
    await d.pair()
    await d.open_store("PlayerData")
    await d.click("CrumbFolded" if d.rendered("CrumbFolded") else "Crumb1")
    await d.wait_for(lambda: d.rendered("MonitorButton"), "no Monitor button")
    await d.click("MonitorButton")
    await d.wait_text("Requests per second")
    await d.wait_text("AVAILABLE · Standard data stores")

    def hour_bars() -> bool:
        chart = d.element("HourChart")
        return any(n.name == "Bar" and n.rendered for n in chart.node().walk())

    # The 10 s chart fills in when the current ten seconds are over (a monitor.tick event).
    await d.wait_for(hour_bars, "no 10-second bucket yet", timeout=15)


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
    "plugin-team": (
        "team sync: a teammate on another server, what they view and edit, shared bookmarks",
        _team,
    ),
    "plugin-activity": ("the team's shared, hash-chained audit log with filters", _activity),
    "plugin-monitor": (
        "live Open Cloud traffic of this server, and which features are available",
        _monitor,
    ),
}

# Screens that show more than the default widget height holds.
TALL = {"plugin-monitor": (420, 860), "plugin-team": (420, 640)}

for _name, (_description, _body) in PLUGIN_SCENARIOS.items():
    SCENARIOS[_name] = Scenario(
        _description, _with_server(_body), plugin_root=PLUGIN_SRC, widget_size=TALL.get(_name)
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
PLUGIN_SCENARIO_NAMES = ["plugin-server-down", *PLUGIN_SCENARIOS]


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
