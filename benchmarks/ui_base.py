"""The plugin's UI base: one real screen (Universes) written three ways, measured side by side.

- imperative: the screen as it was (benchmarks/ui_base/UniversesImperative.luau)
- own layer:  plugin/src/Views/Universes.luau on UI/State.luau (Value, derive, bind)
- vide:       benchmarks/ui_base/UniversesVide.luau on Vide (npm @rbxts/vide, pinned in
              package.json, run from node_modules as it would be vendored into the build)

Each runs in the Luau harness with the real Page, Kit and Theme against a stand-in Api that
answers from a generated list of universes (benchmark input, never shown to anyone). Measured
with the wall clock around Luau only, medians of repeated runs, and reported as ratios to the
imperative screen in the same run (the machine is shared and noisy):

- lines: non-blank, non-comment lines of the screen's file;
- mount: building the screen with N universes (then destroying it);
- update: a Refresh that replaces the N universes with N others (every row changes);
- idle frame: Luau time of one frame with the screen shown and nothing changing. Vide connects
  RunService.Heartbeat when it is loaded and defers a step every frame from then on.

    .venv/bin/python -m benchmarks.ui_base [--universes 50] [--repeat 30] [--frames 600]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.luau_harness import LuauHarness

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_SRC = ROOT / "plugin" / "src"
PORTS = ROOT / "benchmarks" / "ui_base"
VIDE_SRC = ROOT / "node_modules" / "@rbxts" / "vide" / "src"

STAND_IN_LACKS = ("Enum.Material.SmoothPlastic", "Enum.SurfaceGuiSizingMode.PixelsPerStud")

SCREENS = {
    "imperative": ("ui_base/UniversesImperative", PORTS / "UniversesImperative.luau"),
    "own layer": ("src/Views/Universes", PLUGIN_SRC / "Views" / "Universes.luau"),
    "vide": ("ui_base/UniversesVide", PORTS / "UniversesVide.luau"),
}

# A stand-in context: the real palette, store and signals; an Api whose listUniverses answers at
# once from one of two generated lists, alternating (so every Refresh changes every row).
SETUP = """
local AppState = require("AppState")
local Kit = require("UI/Kit")
local Theme = require("UI/Theme")
local count = ...
local lists = {}
for list = 1, 2 do
    local universes = {}
    for i = 1, count do
        universes[i] = {
            universe_id = list * 100000 + i,
            label = "Universe " .. list .. "/" .. i,
            environment = if i % 3 == 0 then "production" elseif i % 3 == 1 then "staging" else "development",
            backend = "EMULATOR",
            source = { kind = "EMULATOR", backend = "EMULATOR" },
        }
    end
    lists[list] = universes
end
local turn = 0
local api = {}
function api:listUniverses()
    turn += 1
    return { ok = true, value = { universes = lists[turn % 2 + 1], source = { kind = "EMULATOR", backend = "EMULATOR" } } }
end
local gui = Instance.new("ScreenGui")
local host = Kit.frame({ Name = "Host", Size = UDim2.fromOffset(420, 560), Parent = gui })
local ctx = {
    palette = Theme.get(), store = AppState.newStore(), api = api, host = host,
    navigate = function() end, replace = function() end, back = function() end,
    notify = function() end, drafts = {}, now = function() return os.time() end,
    request = function(scope, call, done) if not scope.destroyed then done(call(api)) end end,
    onEvent = function() return function() end end,
    -- The screens reload on a resync: the benchmark's Refresh.
    onResync = function(fn) _G.bench.refresh = fn return function() end end,
    lastWriter = function() return nil end,
}
_G.bench = { ctx = ctx, host = host }
"""

RUN = """
local screen = require(...)
local bench = _G.bench
local route = { name = "universes" }
local function now() return realClock() end
local repeats = select(2, ...)
-- Warm up (first calls of every function the screen uses) before measuring.
for _ = 1, 3 do
    screen.mount(bench.ctx, bench.host, route).destroy()
end
local mounts = {}
for _ = 1, repeats do
    local started = now()
    local view = screen.mount(bench.ctx, bench.host, route)
    mounts[#mounts + 1] = now() - started
    view.destroy()
end
local view = screen.mount(bench.ctx, bench.host, route)
local updates = {}
for _ = 1, repeats do
    local started = now()
    bench.refresh()
    updates[#updates + 1] = now() - started
end
bench.view = view
local rows = 0
for _, item in bench.host:GetDescendants() do
    if string.sub(item.Name, 1, 9) == "Universe_" then
        rows += 1
    end
end
return mounts, updates, rows
"""


def luau_lines(path: Path) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("--"))


def new_harness(with_vide: bool, vide_copy: Path) -> LuauHarness:
    h = LuauHarness(PLUGIN_SRC)
    h.lua.globals().set("realClock", h.lua.create_function(lambda lua, args: time.perf_counter()))
    h.mount(PORTS)
    if with_vide:
        # Shims for what the stand-in lacks and Vide touches at load: ReflectionService (to map
        # lower-case JSX tags; the dump has it) and debug.profilebegin/profileend.
        spec = h.lua.load_chunk(
            "return { methods = { GetClasses = function() return {} end } }", name="=shim"
        )()[0]
        h._lua_call(h._H.get("defineService"), "ReflectionService", spec)
        h.eval("debug.profilebegin = function() end debug.profileend = function() end")
        h.mount(vide_copy)
        vide = h.require(h.get("vide", root=h.container))
        vide.set("strict", False)  # production behaviour (strict re-runs effects to check them)
    return h


def measure(
    name: str, universes: int, repeats: int, frames: int, vide_copy: Path
) -> dict[str, Any]:
    module, path = SCREENS[name]
    h = new_harness(name == "vide", vide_copy)
    try:
        snippet = h._compile_snippet(SETUP, "setup")
        h.call(snippet, universes)
        run = h._compile_snippet(RUN, "run")
        mounts, updates, shown = h.call(run, h.get(module, root=h.container), repeats)
        mount_times = [float(v) for _, v in mounts]
        update_times = [float(v) for _, v in updates]
        # Idle frames: advance the virtual clock frame by frame with nothing changing and time
        # the Luau work of each (harness layout pass included, the same for every variant).
        frame_times = []
        for _ in range(frames):
            started = time.perf_counter()
            h.advance(1 / 60)
            frame_times.append(time.perf_counter() - started)
        step_us = None
        if name == "vide":
            # Vide's own per-frame work (springs and timeouts, here none), timed in Luau.
            step_us = h.eval(
                "local vide = require(root.Parent.vide) local started = realClock() "
                "for _ = 1, 10000 do vide.step(1 / 60) end return (realClock() - started) * 100"
            )[0]
    finally:
        h.close()
    return {
        "screen": name,
        "lines": luau_lines(path),
        "rows_shown": int(shown),
        "mount_ms": statistics.median(mount_times) * 1000,
        "update_ms": statistics.median(update_times) * 1000,
        "idle_frame_ms": statistics.median(frame_times) * 1000,
        "per_frame_step_us": step_us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--universes", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--frames", type=int, default=600)
    args = parser.parse_args()
    if not VIDE_SRC.is_dir():
        raise SystemExit("node_modules/@rbxts/vide is missing: run `npm ci` first")
    with tempfile.TemporaryDirectory() as tmp:
        vide_copy = Path(tmp) / "vide"
        shutil.copytree(VIDE_SRC, vide_copy)
        # Vide's defaults for 3D parts and SurfaceGuis name enums the stand-in does not model
        # (it models the GUI the plugin uses); they play no part in a 2D screen.
        defaults = vide_copy / "defaults.luau"
        text = defaults.read_text(encoding="utf-8")
        for missing in STAND_IN_LACKS:
            text = text.replace(missing, "nil")
        defaults.write_text(text, encoding="utf-8")
        results = [
            measure(name, args.universes, args.repeat, args.frames, vide_copy) for name in SCREENS
        ]
    base = results[0]
    for row in results:
        for key in ("lines", "mount_ms", "update_ms", "idle_frame_ms"):
            row[key.removesuffix("_ms") + "_ratio"] = round(row[key] / base[key], 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
