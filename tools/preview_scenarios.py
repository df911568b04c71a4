"""Scenarios for `python -m tools.preview NAME -o out.png`.

A scenario drives a fresh LuauHarness (created with its plugin_root, the requested theme and
widget size) into the state to show; `run` may be a coroutine function (for scenarios that start
a real server with tools.testing.server and use the harness's *_async methods). The renderer then
draws the enabled widget.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from tools.luau_harness import LuauHarness

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tools" / "luau_harness" / "fixtures"


@dataclass(frozen=True)
class Scenario:
    description: str
    run: Callable[[LuauHarness], Awaitable[None] | None]
    plugin_root: Path = ROOT / "plugin" / "src"
    widget_size: tuple[int, int] | None = None


def _harness_demo(h: LuauHarness) -> None:
    h.require("demo_widget")
    h.type_text("Filter", "player_")
    h.click("Save")
    h.scroll_to("Keys", 60)


SCENARIOS: dict[str, Scenario] = {
    "harness-demo": Scenario(
        "the harness's own hand-made widget (header, badge, wrapped text, button, text box, "
        "scrolled list)",
        _harness_demo,
        plugin_root=FIXTURES,
    ),
}

# The plugin's own screens register themselves here; imported last because that module
# imports SCENARIOS from this one.
import tools.preview_plugin_scenarios  # noqa: E402, F401
