"""The plugin in the Luau harness, driven like a user against a real companion server.

Shared by the end-to-end UI tests and the screen previews (tools.preview_plugin_scenarios).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from dsm.http.appkeys import TOKEN_STORE
from shared_schema.common import Role
from tools.luau_harness import HarnessError, LuauHarness, Node
from tools.luau_harness.ui import Element

from .server import Server, entry_path, idem

ROOT = Path(__file__).resolve().parent.parent.parent
PLUGIN_SRC = ROOT / "plugin" / "src"

SETTING = "DataStoreManagerPro."
PORT_SETTING = SETTING + "serverPort"
WIDGET_SETTING = SETTING + "widgetEnabled"
TOOLBAR_BUTTON = "Data Stores"
# plugin/src/Core/ClientName.luau: each install pairs as "DataStore Manager Pro (Studio · 7KQ2)",
# its suffix drawn once and kept in this setting.
NAME_SUFFIX_SETTING = SETTING + "pairingNameSuffix"
CLIENT_NAME_START = "DataStore Manager Pro (Studio · "


def client_name(settings: dict[str, Any]) -> str:
    """The name the plugin with these plugin settings pairs under."""
    return f"{CLIENT_NAME_START}{settings[NAME_SUFFIX_SETTING]})"


class PluginDriver:
    """The plugin running in a harness against a real server, driven like a user would."""

    def __init__(self, h: LuauHarness, server: Server) -> None:
        self.h = h
        self.server = server

    @property
    def port(self) -> int:
        return int(self.server.base_url.rsplit(":", 1)[1])

    @property
    def client_name(self) -> str:
        """The name this plugin install pairs under (drawn when the plugin first started)."""
        return client_name(self.h.plugin_settings)

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

    async def reveal(self, name: str) -> Element:
        """The one element with this Name, scrolled into view inside its scrolling frame (as a
        user scrolls to something below the fold)."""
        for root in self.h.tree():
            path = _path_to(root, name)
            if path is None:
                continue
            target = path[-1]
            scrollers = [n for n in path[:-1] if n.scroll is not None]
            if scrollers:
                frame = scrollers[-1]
                assert frame.scroll is not None
                y = frame.scroll.canvas_y + (target.y - frame.y) - 8
                await self.h.scroll_to_async(self._by_id(frame.id), max(0.0, y))
            return self._by_id(target.id)
        raise HarnessError(f"no element named {name!r}; texts: {self.texts()}")

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
        await self.type("PairingCodeInput", self.server.pairing_code(self.client_name))
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

    async def tick(self, *keys: str) -> None:
        """Tick keys in the open key list (the box at the start of each row)."""
        for key in keys:
            await self.wait_for(partial(self._has_row, "KeyRow", key), f"no key row {key!r}")
            row = self.row_with("KeyRow", key)
            await self.click(next(c for c in row.children() if c.name == "Tick"))

    async def plan_job(self, job: str, what: str = "keys") -> None:
        """From the key list: Act on… `what` ("keys" ticked, "prefix", "scope"), choose the job
        (its Keys.ACTIONS id, e.g. "delete"), Next: its form opens."""
        await self.click("ActOnButton")
        await self.wait_for(lambda: self.rendered("ActOnDialog"), "no Act on dialog")
        await self.click(f"WhatChoice/Options/Option_{what}")
        await self.click(f"Option_{job}")
        await self.click("ConfirmButton")
        await self.wait_for(lambda: self.rendered("JobFormDialog"), "no job form")

    def _has_row(self, row_name: str, text: str) -> bool:
        try:
            self.row_with(row_name, text)
        except HarnessError:
            return False
        return True


def _path_to(node: Node, name: str) -> list[Node] | None:
    """The nodes from `node` down to the first one named `name` (a Name path suffix)."""
    if node.path == name or node.path.endswith("/" + name):
        return [node]
    for child in node.children:
        found = _path_to(child, name)
        if found is not None:
            return [node, *found]
    return None


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


def make_admin(server: Server) -> None:
    """What `dsm tokens role ID admin` does to the plugin's token (pairing gives editor; delete,
    move, import and transform jobs need admin)."""
    store = server.app[TOKEN_STORE]
    mine = [t for t in store.list_tokens() if t.name.startswith(CLIENT_NAME_START)]
    assert len(mine) == 1, [t.name for t in store.list_tokens()]
    store.set_role(mine[0].token_id, Role.ADMIN)


def player(index: int) -> dict[str, Any]:
    """A plausible player save for the demo data store (deterministic per index)."""
    return {
        "coins": (index * 7919) % 50000,
        "level": 1 + index % 60,
        "inventory": [["sword", "shield", "bow", "potion"][i % 4] for i in range(index % 5)],
        "settings": {"music": index % 2 == 0, "language": ["en", "de", "pt"][index % 3]},
        "lastLogin": f"2024-05-{1 + index % 28:02d}T12:00:00Z",
    }


def profile_save(job: str, loads: int, coins: int, saved_ago: float, *, now: float) -> str:
    """A ProfileStore save as the library writes it, its session held by server `job` of place
    1818 for the `loads`-th time, last saved `saved_ago` seconds before `now` (Unix seconds)."""
    return json.dumps(
        {
            "Data": {"Coins": coins, "Inventory": ["sword"]},
            "MetaData": {
                "ProfileCreateTime": 1_700_000_000,
                "SessionLoadCount": loads,
                "ActiveSession": [1818, job, f"{{G-{loads}}}"],
                "LastUpdate": int(now - saved_ago),
                "MetaTags": {},
            },
            "RobloxMetaData": {},
            "UserIds": [42],
            "GlobalUpdates": [0, []],
        }
    )


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
