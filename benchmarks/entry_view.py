"""Luau time to show and work with a 4 MiB entry, this plugin against a baseline (one run).

Two values just under Open Cloud's 4 MiB limit, compact as Open Cloud keeps them:
- wide:    an array of ~73,000 small objects (the tree's root row has them all as children);
- profile: a session-locked save, `{"Data": {"Inventory": [...], ...}, "MetaData": {...}}`, the
           bulk one level down (the first screen shows `Data` collapsed).

Each is written through a real companion server (embedded emulator) and read back with GET entry;
the exact response body is what the plugin is handed, through its real Api (the send function
answers that body at once). The entry screen, its tabs, tree and raw editor are the plugin's own
modules, in the Luau harness (pluau) with signals Immediate, so each step's Luau work runs inside
the step. Times are Luau wall-clock time (`realClock`, the harness's virtual clock does not move
while Luau runs), medians of `--repeat` runs, each on a freshly mounted screen:

- response:     from the response body in hand to the decoded, protocol-checked EntryView (the
                stand-in's HttpService:JSONDecode is Python; Studio's is native);
- first screen: from that EntryView to the entry screen drawn with the tree's first rows;
- background:   Luau time of the frames after the first screen until the tree has nothing left to
                parse (the incremental parse of the root level, when there is one), and how many;
- expand:       open the first collapsed container row (click);
- edit:         open the first scalar row below it and type a new value (Enter): the splice,
                the draft check and the size meter;
- raw tab:      switch to the Raw tab (pretty-printed text, validation line);
- keystroke:    one character typed in the raw text (after "Edit anyway"): the Text handler;
- pause:        what runs once typing pauses (validation, draft check, size meter).

The baseline is the plugin source at a git revision (`--baseline`, default: the commit before the
entry view read values lazily), extracted to a temporary folder and measured in the same run, the
two taking turns; ratios are baseline / current.

    .venv/bin/python -m benchmarks.entry_view [--repeat 5] [--baseline REV]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared_schema.common import Role
from tools.luau_harness import LuauHarness, to_python
from tools.testing.server import entry_path, idem, running_server

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 4 * 1024 * 1024
UNIVERSE = 4242
DATASTORE = "Big"
# The commit before the entry view read values lazily.
BEFORE_SPEED_WORK = "698f92c"


def wide_value() -> str:
    """An array of small objects filling 4 MiB (the plugin UI test's shape)."""
    items: list[str] = []
    size = 2
    while True:
        item = json.dumps(
            {"id": len(items), "name": f"item_{len(items)}", "tags": ["a", "b"], "n": 1.5},
            separators=(",", ":"),
        )
        if size + len(item) + 1 > LIMIT - 16:
            break
        items.append(item)
        size += len(item) + 1
    return "[" + ",".join(items) + "]"


def profile_value() -> str:
    """A ProfileStore-style save whose inventory fills 4 MiB (big integer, 1.0, {} and [])."""
    head = '{"Data":{"Coins":12345678901234567890,"Level":1.0,"Flags":{},"Quests":[],"Inventory":['
    tail = (
        '],"Settings":{"Volume":0.5,"Name":"élève"}},"MetaData":{"ProfileCreateTime":'
        '1700000000,"SessionLoadCount":3,"ActiveSession":[1234,"4a8f"],"MetaTags":{}},'
        '"GlobalUpdates":[0,[]],"UserIds":[1234]}'
    )
    items: list[str] = []
    size = len(head) + len(tail)
    while True:
        n = len(items)
        item = f'{{"Id":"sword_{n}","Count":{n % 7},"Enchant":{{"Fire":{n % 3}}},"Tags":[]}}'
        if size + len(item) + 1 > LIMIT - 16:
            break
        items.append(item)
        size += len(item) + 1
    return head + ",".join(items) + tail


VALUES: dict[str, Callable[[], str]] = {"wide": wide_value, "profile": profile_value}


async def fetch_responses(values: dict[str, str], data_dir: Path) -> dict[str, str]:
    """Write each value through a real server and return the exact GET entry response bodies."""
    bodies: dict[str, str] = {}
    async with running_server(data_dir) as server:
        token = await server.pair("bench", Role.EDITOR)
        for key, value in values.items():
            path = entry_path(UNIVERSE, DATASTORE, key)
            status, body = await server.call(
                "POST", path, token, json={"value_json": value, "idempotency_key": idem()}
            )
            assert status == 200, body
            async with server.http.get(
                server.url("/api/v1" + path), headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                assert resp.status == 200
                bodies[key] = await resp.text()
            assert json.loads(bodies[key])["value_json"] == value
    return bodies


# Mounts the entry screen in a floating widget with a context made of the plugin's own pieces
# (palette, store, Api) and returns the step functions the benchmark times.
SETUP = """
local H, body, key = ...
local Api = require("Core/Api")
local AppState = require("AppState")
local HttpService = game:GetService("HttpService")
local Routes = require("Routes")
local Theme = require("UI/Theme")
local EntryScreen = require("Views/Entry/EntryScreen")
local palette = Theme.get()
local widget = plugin:CreateDockWidgetPluginGuiAsync("EntryBench" .. key,
    DockWidgetPluginGuiInfo.new(Enum.InitialDockState.Float, true, true, 480, 720, 300, 300))
local api = Api.new({
    baseUrl = "http://127.0.0.1:1",
    send = function() return true, { Success = true, StatusCode = 200, Headers = {}, Body = body } end,
    jsonEncode = function(v) return HttpService:JSONEncode(v) end,
    jsonDecode = function(t) return HttpService:JSONDecode(t) end,
    guid = function() return HttpService:GenerateGUID(false) end,
    token = "bench",
})
local times = {}
local ctx = {
    palette = palette, store = AppState.newStore(), api = api, host = widget,
    navigate = function() end, replace = function() end, back = function() end,
    notify = function() end, drafts = {}, now = function() return os.time() end,
    request = function(scope, call, done)
        local started = realClock()
        local result = call(api)
        local decoded = realClock()
        done(result)
        times.response = decoded - started
        times.first = realClock() - decoded
    end,
    onEvent = function() return function() end end,
    onResync = function() return function() end end,
    lastWriter = function() return nil end,
    codec = { encode = function(v) return HttpService:JSONEncode(v) end,
              decode = function(t) return HttpService:JSONDecode(t) end },
}
local universe = { universe_id = 4242, label = "Bench", environment = "development" }
local route = Routes.entry({ universe = universe, datastore = "Big", scope = "global", key = key })

local function find(root, test)
    for _, item in root:GetDescendants() do
        if test(item) then return item end
    end
    return nil
end
local function rowWhere(test)
    return find(widget, function(item)
        return item.Name == "TreeRow" and item.Visible and test(item)
    end)
end
local function timed(fn)
    local started = realClock()
    fn()
    return realClock() - started
end
local function act(problem)
    if problem ~= nil then error(problem, 2) end
end

local steps = {}
local view
function steps.mount()
    view = EntryScreen.mount(ctx, widget, route)
    return times.response, times.first
end
function steps.rootText()
    local row = rowWhere(function(r) return r.Toggle.Text == "-" and r.Key.Text == "" end)
    return if row then row.Value.Text else "(no root row)"
end
function steps.expand()
    local row = assert(rowWhere(function(r) return r.Toggle.Text == "+" end), "no collapsed row")
    local label = row.Key.Text
    return timed(function() act(H.click(row)) end), label
end
function steps.edit()
    local row = assert(rowWhere(function(r)
        return r.Toggle.Text == "" and r.Key.Text ~= "" and string.match(r.Value.Text, "^%d+$") ~= nil
    end), "no number row")
    local label = row.Key.Text
    act(H.click(row))
    local editor = row.Editor
    local took = timed(function() act(H.typeText(editor, "777", true)) end)
    local size = find(widget, function(item) return item.Name == "SizeText" end)
    return took, label, size.Text
end
function steps.raw()
    local tab = assert(find(widget, function(item) return item.Name == "RawTab" end))
    return timed(function() act(H.click(tab)) end)
end
function steps.keystroke()
    local unlock = find(widget, function(item) return item.Name == "EditLargeButton" end)
    if unlock ~= nil and unlock.Visible then act(H.click(unlock)) end
    local box = assert(find(widget, function(item) return item.Name == "RawText" end))
    local text = box.Text
    -- One character typed before the last closing bracket (still valid JSON).
    local typed = string.sub(text, 1, #text - 1) .. " " .. string.sub(text, #text)
    return timed(function() box.Text = typed end)
end
function steps.status()
    local problems = find(widget, function(item) return item.Name == "Problems" end)
    local validation = find(widget, function(item) return item.Name == "Validation" end)
    local size = find(widget, function(item) return item.Name == "SizeText" end)
    return (if validation then validation.Text else "") .. " | " .. size.Text
        .. " | " .. (if problems then problems.Text else "")
end
function steps.destroy()
    view.destroy()
    widget:Destroy()
end
return steps
"""


def plugin_tree(revision: str, into: Path) -> Path:
    """plugin/src as of `revision`, extracted from git into `into`."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "plugin/src"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "plugin" / "src"


def frames_until_settled(h: LuauHarness, steps: Any, limit: int = 2000) -> tuple[float, int]:
    """Advance frame by frame until the root row shows its final size ("[ 72698 items ]", not
    "[ 2527+ items ]"): Luau time and number of frames that did work.

    A frame's time includes the harness's own per-frame work (layout); an idle frame measured
    afterwards is subtracted from each."""
    times: list[float] = []
    for _ in range(limit):
        if "+" not in to_python(h.call(steps.get("rootText"))[0]):
            break
        started = time.perf_counter()
        h.advance(1 / 60)
        times.append(time.perf_counter() - started)
    idle = []
    for _ in range(10):
        started = time.perf_counter()
        h.advance(1 / 60)
        idle.append(time.perf_counter() - started)
    floor = statistics.median(idle)
    busy = [max(t - floor, 0.0) for t in times]
    return sum(busy), len(busy)


def run_once(src: Path, body: str, key: str) -> dict[str, Any]:
    h = LuauHarness(src, signal_behavior="Immediate", idle_limit=3600)
    h.lua.globals().set("realClock", h.lua.create_function(lambda lua, args: time.perf_counter()))
    try:
        steps = h.call(h._compile_snippet(SETUP, "bench"), h._H, body, key)[0]
        result: dict[str, Any] = {}
        response, first = h.call(steps.get("mount"))
        result["response"] = float(response)
        result["first_screen"] = float(first)
        result["first_root"] = to_python(h.call(steps.get("rootText"))[0])
        result["background"], result["background_frames"] = frames_until_settled(h, steps)
        result["root"] = to_python(h.call(steps.get("rootText"))[0])
        took, label = h.call(steps.get("expand"))
        result["expand"], result["expanded"] = float(took), to_python(label)
        took, label, size = h.call(steps.get("edit"))
        result["edit"], result["edited"], result["size_after_edit"] = (
            float(took),
            to_python(label),
            to_python(size),
        )
        result["raw_tab"] = float(h.call(steps.get("raw"))[0])
        result["keystroke"] = float(h.call(steps.get("keystroke"))[0])
        started = time.perf_counter()
        h.advance(1.0)  # the raw editor checks large text once typing pauses
        result["pause"] = time.perf_counter() - started
        result["status"] = to_python(h.call(steps.get("status"))[0])
        h.call(steps.get("destroy"))
    finally:
        h.close()
    return result


TIMED = (
    "response",
    "first_screen",
    "background",
    "expand",
    "edit",
    "raw_tab",
    "keystroke",
    "pause",
)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {name: statistics.median(r[name] for r in runs) for name in TIMED}
    for name in ("background_frames", "first_root", "root", "expanded", "edited", "status"):
        summary[name] = runs[-1][name]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--baseline", default=BEFORE_SPEED_WORK, help="git revision to compare")
    parser.add_argument("--only", choices=sorted(VALUES), help="measure one value shape")
    args = parser.parse_args()
    values = {k: make() for k, make in VALUES.items() if args.only in (None, k)}
    with tempfile.TemporaryDirectory(prefix="dsm-entry-bench-") as tmp:
        bodies = asyncio.run(fetch_responses(values, Path(tmp) / "server"))
        baseline_src = plugin_tree(args.baseline, Path(tmp) / "baseline")
        print(f"Entry view, Luau time (median of {args.repeat}); baseline = {args.baseline}")
        for key, value in values.items():
            print(f"\n{key}: {len(value):,} bytes of JSON")
            trees = {"baseline": baseline_src, "current": ROOT / "plugin" / "src"}
            runs: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
            for _ in range(args.repeat):  # the trees take turns: the machine's drift hits both
                for label, src in trees.items():
                    runs[label].append(run_once(src, bodies[key], key))
            results = {label: summarise(found) for label, found in runs.items()}
            print(f"  {'':<14}{'baseline':>14}{'current':>14}{'ratio':>10}")
            for name in TIMED:
                before, after = results["baseline"][name], results["current"][name]
                ratio = f"x{before / after:,.1f}" if after > 0 else "-"
                print(f"  {name:<14}{before * 1000:>11.1f} ms{after * 1000:>11.1f} ms{ratio:>10}")
            for label, result in results.items():
                print(
                    f"  {label}: first root row {result['first_root']!r}, settled "
                    f"{result['root']!r} after {result['background_frames']} busy frames; "
                    f"expanded {result['expanded']!r}, edited {result['edited']!r}; "
                    f"after the pause: {result['status']!r}"
                )


if __name__ == "__main__":
    main()
