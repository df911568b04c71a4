"""The plugin's screens as preview scenarios, and the driver the end-to-end UI tests share.

Importing this module registers scenarios into tools.preview_scenarios.SCENARIOS:

    python -m tools.preview_plugin_scenarios            # render every plugin screen to docs/screens
    python -m tools.preview plugin-entry -o entry.png

Every scenario starts a real companion server on the embedded emulator (tests.server_harness),
writes the data it shows through the server's API with a second paired token, and drives the
real plugin in the harness: click the toolbar button, pair with the code the server announced,
browse. Nothing on screen is made up by the scenario; it is what the plugin read back.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.server_harness import Server, entry_path, idem, running_server
from tools.luau_harness import HarnessError, LuauHarness, Node
from tools.luau_harness.ui import Element
from tools.preview_scenarios import SCENARIOS, Scenario

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_SRC = ROOT / "plugin" / "src"
SCREENS = ROOT / "docs" / "screens"

SETTING = "DataStoreManagerPro."
PORT_SETTING = SETTING + "serverPort"
WIDGET_SETTING = SETTING + "widgetEnabled"
TOOLBAR_BUTTON = "Data Stores"


class PluginDriver:
    """The plugin running in a harness against a real server, driven like a user would."""

    def __init__(self, h: LuauHarness, server: Server) -> None:
        self.h = h
        self.server = server

    @property
    def port(self) -> int:
        return int(self.server.base_url.rsplit(":", 1)[1])

    @classmethod
    async def open(cls, h: LuauHarness, server: Server) -> PluginDriver:
        """Start the plugin with its widget closed, then open it from the toolbar button (so the
        first HTTP request runs under the async driver, next to the server's event loop)."""
        driver = cls(h, server)
        h.plugin_settings[PORT_SETTING] = driver.port
        h.plugin_settings[WIDGET_SETTING] = False
        h.run_scripts()
        await h.click_async(h.toolbar_button(TOOLBAR_BUTTON))
        return driver

    # -- looking ----------------------------------------------------------------------------

    def texts(self) -> list[str]:
        return self.h.texts()

    def has_text(self, text: str) -> bool:
        return any(text in t for t in self.h.texts())

    async def wait_text(self, text: str, timeout: float = 10.0) -> None:
        """Until some drawn text contains `text` (real time; the virtual clock stays)."""
        try:
            await self.h.wait_until(lambda: self.has_text(text), timeout=timeout)
        except HarnessError as exc:
            raise HarnessError(
                f"{exc}: no drawn text contains {text!r}; texts: {self.texts()}"
            ) from None

    async def wait_for(
        self, predicate: Callable[[], bool], what: str, timeout: float = 10.0
    ) -> None:
        try:
            await self.h.wait_until(predicate, timeout=timeout)
        except HarnessError as exc:
            raise HarnessError(f"{exc}: {what}; texts: {self.texts()}") from None

    def rendered(self, name: str) -> bool:
        """Whether an element with this Name (path suffix) exists and is drawn."""
        found = self.h.find_all(name)
        return any(e.node().rendered for e in found)

    def row_with(self, row_name: str, text: str) -> Element:
        """The drawn row named `row_name` that shows `text` somewhere inside it."""

        def match(n: Node) -> bool:
            return n.name == row_name and n.rendered and any(c.text == text for c in n.walk())

        return self.h.find(match)

    def button_in_row(self, row_name: str, text_part: str, button_name: str) -> Element:
        """The button named `button_name` inside the first drawn row whose texts include
        `text_part` (rows of a list that each carry their own button)."""
        for root in self.h.tree():
            for n in root.walk():
                if n.name != row_name or not n.rendered:
                    continue
                inside = list(n.walk())
                if any(text_part in (c.text or "") for c in inside):
                    for c in inside:
                        if c.name == button_name and c.rendered:
                            return self._by_id(c.id)
        raise HarnessError(f"no {row_name} showing {text_part!r}; texts: {self.texts()}")

    def _by_id(self, node_id: int) -> Element:
        def same(m: Node) -> bool:
            return m.id == node_id

        return self.h.find(same)

    def element(self, name: str) -> Element:
        """The one drawn element with this Name (path suffix)."""
        found = [e for e in self.h.find_all(name) if e.node().rendered]
        if len(found) != 1:
            raise HarnessError(f"{len(found)} drawn elements named {name!r}; texts: {self.texts()}")
        return found[0]

    # -- doing ------------------------------------------------------------------------------

    async def click(self, target: Element | str) -> None:
        await self.h.click_async(self.element(target) if isinstance(target, str) else target)

    async def type(self, target: Element | str, text: str, enter: bool = True) -> None:
        element = self.element(target) if isinstance(target, str) else target
        await self.h.type_text_async(element, text, enter)

    async def pair(self, universe_label: str = "Emulator universe 1") -> None:
        """Pair like a user: Start pairing (unless the code field is already up, as after "Pair
        again"), read the code the server printed, type it."""
        await self.wait_for(
            lambda: self.rendered("StartPairingButton") or self.rendered("PairingCodeInput"),
            "no pairing screen",
        )
        if self.rendered("StartPairingButton"):
            before = len(self.server.announced)
            await self.click("StartPairingButton")
            await self.wait_for(
                lambda: len(self.server.announced) > before, "the server printed no code"
            )
        await self.wait_for(lambda: self.rendered("PairingCodeInput"), "no code field")
        match = re.search(r"(\d{4}) ?(\d{4})", self.server.announced[-1])
        assert match, self.server.announced[-1]
        await self.type("PairingCodeInput", match.group(1) + match.group(2))
        await self.wait_text(universe_label)

    async def open_store(self, datastore: str, universe: int = 1) -> None:
        await self.click(f"Universe_{universe}")
        await self.wait_for(
            lambda: self._has_row("DataStoreRow", datastore), f"no data store row {datastore!r}"
        )
        await self.click(self.row_with("DataStoreRow", datastore))
        await self.wait_text(" in scope ")

    async def open_entry(self, datastore: str, key: str, universe: int = 1) -> None:
        await self.open_store(datastore, universe)
        await self.wait_for(lambda: self._has_row("KeyRow", key), f"no key row {key!r}")
        await self.click(self.row_with("KeyRow", key))
        await self.wait_text("Revision ")

    def _has_row(self, row_name: str, text: str) -> bool:
        try:
            self.row_with(row_name, text)
        except HarnessError:
            return False
        return True


# -- data written through the server, as a game or a teammate would -------------------------------


async def write_entry(
    server: Server,
    token: str,
    datastore: str,
    key: str,
    value: Any,
    *,
    scope: str = "global",
    attributes: dict[str, Any] | None = None,
    user_ids: list[int] | None = None,
) -> dict[str, Any]:
    """Create the entry, or update it at its current revision; returns the EntryView."""
    path = entry_path(1, datastore, key) + f"?scope={scope}"
    value_json = value if isinstance(value, str) else json.dumps(value)
    body: dict[str, Any] = {"value_json": value_json, "idempotency_key": idem()}
    if attributes is not None:
        body["attributes"] = attributes
    if user_ids is not None:
        body["user_ids"] = user_ids
    status, view = await server.call("POST", path, token, json=body)
    if status == 409:
        status, current = await server.call("GET", path, token)
        assert status == 200, current
        body["expected_revision"] = current["revision"]
        status, view = await server.call("PUT", path, token, json=body)
    assert status == 200, view
    result: dict[str, Any] = view
    return result


def player(index: int) -> dict[str, Any]:
    """A plausible player save for the demo data store (deterministic per index)."""
    return {
        "coins": (index * 7919) % 50000,
        "level": 1 + index % 60,
        "inventory": [["sword", "shield", "bow", "potion"][i % 4] for i in range(index % 5)],
        "settings": {"music": index % 2 == 0, "language": ["en", "de", "pt"][index % 3]},
        "lastLogin": f"2024-05-{1 + index % 28:02d}T12:00:00Z",
    }


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
                teammate = await server.pair("Teammate (Alex)")
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
    await d.wait_text("by DataStore Manager Pro")


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
}

for _name, (_description, _body) in PLUGIN_SCENARIOS.items():
    SCENARIOS[_name] = Scenario(_description, _with_server(_body), plugin_root=PLUGIN_SRC)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


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
