"""Tests of tools/luau_harness itself: loading and require, the virtual-clock scheduler, real HTTP,
JSON semantics, Instances and layout, plugin/theme stand-ins, UI helpers, specs and the renderer."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tools.luau_harness import HarnessError, LuauError, LuauHarness, run_spec
from tools.luau_harness.convert import from_lua
from tools.luau_harness.loader import load_tree
from tools.preview import render_harness, run_scenario
from tools.preview_scenarios import FIXTURES


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return write(
        tmp_path / "plugin" / "src",
        {
            "Main.server.luau": 'print("main started", typeof(plugin))\n',
            "Config.luau": "return { port = 8765 }\n",
            "Core/Util.luau": (
                'local Config = require("../Config")\n'
                "return { port = Config.port, name = script.Name, full = script:GetFullName() }\n"
            ),
            "Core/Widget/init.luau": (
                'local Part = require("@self/Part")\n'
                'local Util = require("./Util")  -- init.luau: ./ is the folder holding Widget\n'
                "return { part = Part, util = Util }\n"
            ),
            "Core/Widget/Part.luau": 'return "part of " .. script.Parent.Name\n',
            "Core/CycleA.luau": 'return require("./CycleB")\n',
            "Core/CycleB.luau": 'return require("./CycleA")\n',
            "Core/Broken.luau": 'local x = 1\nerror("broken on purpose")\nreturn x\n',
            "Core/Nothing.luau": "local x = 1\n",
            "Core/Slow.luau": "task.wait(3)\nreturn 'slow'\n",
            "Core/Missing.luau": 'return require("./Nope")\n',
            "Core/Ext.luau": 'return require("./Util.luau")\n',
            "README.md": "not code",
        },
    )


@pytest.fixture
def h(src: Path) -> Iterator[LuauHarness]:
    with LuauHarness(src, epoch=1_700_000_000.0) as harness:
        yield harness


def ev(h: LuauHarness, code: str) -> Any:
    """First return value of a snippet, as Python data."""
    values = h.eval(code)
    return from_lua(values[0]) if values else None


# -- loading and require ----------------------------------------------------------------------


def test_loader_follows_rojo_rules(src: Path) -> None:
    tree = load_tree(src)
    kinds = {c.name: c.class_name for c in tree.children}
    assert kinds == {"Main": "Script", "Config": "ModuleScript", "Core": "Folder"}
    core = next(c for c in tree.children if c.name == "Core")
    widget = next(c for c in core.children if c.name == "Widget")
    assert widget.class_name == "ModuleScript"
    assert widget.path is not None and widget.path.name == "init.luau"
    assert [c.name for c in widget.children] == ["Part"]


def test_string_requires_resolve_relative_to_the_script(h: LuauHarness) -> None:
    util = from_lua(h.require("Core/Util"))
    assert util == {"port": 8765, "name": "Util", "full": "plugin.src.Core.Util"}
    widget = from_lua(h.require("Core/Widget"))
    assert widget["part"] == "part of Widget"
    assert widget["util"]["port"] == 8765


def test_require_caches_module_results(h: LuauHarness) -> None:
    assert ev(h, 'return require("Core/Util") == require("Core/Util")') is True
    assert ev(h, 'return require(root.Core.Util) == require("Core/Util")') is True


def test_recursive_require_names_the_chain(h: LuauHarness) -> None:
    with pytest.raises(LuauError) as err:
        h.require("Core/CycleA")
    assert "required recursively" in str(err.value)
    assert "Core/CycleA.luau -> " in str(err.value) and "CycleB.luau ->" in str(err.value)


def test_module_errors_carry_file_and_line(h: LuauHarness) -> None:
    with pytest.raises(LuauError) as err:
        h.require("Core/Broken")
    assert err.value.location is not None
    file, line = err.value.location
    assert file.endswith("plugin/src/Core/Broken.luau") and line == 2
    with pytest.raises(LuauError, match="experienced an error while loading"):
        h.require("Core/Broken")


def test_module_must_return_one_value(h: LuauHarness) -> None:
    with pytest.raises(LuauError, match="did not return exactly one value"):
        h.require("Core/Nothing")


def test_bad_require_paths_are_explained(h: LuauHarness) -> None:
    with pytest.raises(LuauError, match='Core has no child named "Nope"'):
        h.require("Core/Missing")
    with pytest.raises(LuauError, match="leave out the file extension"):
        h.require("Core/Ext")


def test_a_module_may_yield_while_loading(h: LuauHarness) -> None:
    assert from_lua(h.require("Core/Slow")) == "slow"
    assert h.now == pytest.approx(3.0)


def test_run_scripts_starts_scripts_with_plugin_global(h: LuauHarness) -> None:
    h.run_scripts()
    assert h.printed == ["main started Instance"]


def test_syntax_errors_are_reported_with_location(tmp_path: Path) -> None:
    root = write(tmp_path / "p" / "src", {"Bad.luau": "local x = \n"})
    with LuauHarness(root) as h, pytest.raises(LuauError, match=r"Bad\.luau:\d+: syntax error"):
        h.require("Bad")


# -- scheduler ----------------------------------------------------------------------------------


def test_task_ordering_on_the_virtual_clock(h: LuauHarness) -> None:
    h.eval(
        """
        local function log(s) print(string.format("%s@%.2f", s, os.clock())) end
        task.spawn(function() log("A1"); task.wait(1); log("A2"); task.wait(1); log("A3") end)
        task.defer(function() log("deferred") end)
        task.delay(1.5, function() log("D") end)
        log("main-end")
        """
    )
    h.run_until_idle()
    assert h.printed == [
        "A1@0.00",
        "main-end@0.00",
        "deferred@0.00",
        "A2@1.00",
        "D@1.50",
        "A3@2.00",
    ]


def test_threads_deferred_from_deferred_threads_all_run_in_order(h: LuauHarness) -> None:
    h.eval(
        """
        for i = 1, 5 do
            task.defer(function()
                print("outer", i)
                task.defer(function() print("inner", i) end)
            end)
        end
        """
    )
    h.step()
    assert h.printed == [f"outer {i}" for i in range(1, 6)] + [f"inner {i}" for i in range(1, 6)]
    assert h.now == 0, "deferred threads run at the instant they were deferred"


def test_advance_moves_only_as_far_as_asked(h: LuauHarness) -> None:
    h.eval(
        "task.delay(5, function() print('late') end); task.delay(1, function() print('early') end)"
    )
    h.advance(2)
    assert h.printed == ["early"] and h.now == pytest.approx(2)
    h.advance(3)
    assert h.printed == ["early", "late"]


def test_wait_returns_elapsed_and_cancel_stops_a_thread(h: LuauHarness) -> None:
    assert ev(h, "return task.wait(2.5)") == pytest.approx(2.5)
    assert ev(h, "return task.wait()") == pytest.approx(1 / 60)
    h.eval("local t = task.delay(1, function() print('never') end); task.cancel(t)")
    h.run_until_idle()
    assert h.printed == []


def test_runaway_loops_are_reported_instead_of_hanging(h: LuauHarness) -> None:
    h.eval("task.spawn(function() while true do task.wait(10) end end)")
    with pytest.raises(HarnessError, match="not idle after 60 virtual seconds"):
        h.run_until_idle(limit=60)


def test_errors_in_spawned_threads_surface_with_location(h: LuauHarness) -> None:
    with pytest.raises(LuauError, match=r"^eval:1: handler failed"):
        h.eval("task.delay(1, function() error('handler failed') end)")
        h.advance(2)
    assert len(h.errors) == 1


def test_heartbeat_fires_each_frame_while_connected(h: LuauHarness) -> None:
    h.eval(
        """
        local n = 0
        local c
        c = game:GetService("RunService").Heartbeat:Connect(function(dt)
            n += 1
            if n == 30 then print("30 frames", os.clock() > 0.49); c:Disconnect() end
        end)
        """
    )
    h.advance(1)
    assert h.printed == ["30 frames true"]


@pytest.fixture
def immediate(src: Path) -> Iterator[LuauHarness]:
    with LuauHarness(src, epoch=1_700_000_000.0, signal_behavior="Immediate") as harness:
        yield harness


def test_signals_connect_once_wait_and_disconnect(immediate: LuauHarness) -> None:
    h = immediate
    h.eval(
        """
        local e = Instance.new("BindableEvent")
        local c = e.Event:Connect(function(v) print("conn", v) end)
        e.Event:Once(function(v) print("once", v) end)
        task.spawn(function() print("waited", e.Event:Wait()) end)
        e:Fire(1)
        c:Disconnect()
        e:Fire(2)
        print(c.Connected)
        """
    )
    assert h.printed == ["conn 1", "once 1", "waited 1", "false"]


def test_deferred_signals_run_handlers_and_waiters_after_the_firing_code(h: LuauHarness) -> None:
    """New places default to Workspace.SignalBehavior = Deferred, and so does the harness: handlers
    and :Wait() resume at the next resumption point, in firing order, with the fired values."""
    h.eval(
        """
        local e = Instance.new("BindableEvent")
        e.Event:Connect(function(v) print("conn", v) end)
        e.Event:Once(function(v) print("once", v) end)
        task.spawn(function() print("waited", e.Event:Wait()) end)
        e:Fire(1)
        e:Fire(2)
        print("fired")
        """
    )
    assert h.printed == ["fired", "conn 1", "once 1", "waited 1", "conn 2"]


# -- HTTP -----------------------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str], asyncio.Event]]:
    seen: list[str] = []
    release = asyncio.Event()

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(f"{request.method} {request.path_qs} {body.decode()}")
        return web.json_response(
            {
                "method": request.method,
                "body": body.decode(),
                "auth": request.headers.get("Authorization"),
            },
            status=201 if request.method == "POST" else 200,
            headers={"X-Custom": "yes"},
        )

    async def missing(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "NOT_FOUND"}}, status=404)

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/missing", missing)
    app.router.add_get("/hang", hang)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen, release
    finally:
        release.set()
        await runner.cleanup()


REQUEST = """
local base = ...
local Http = game:GetService("HttpService")
return Http:RequestAsync({
    Url = base .. "/echo?x=1", Method = "POST", Body = '{"a":1}',
    Headers = { ["Content-Type"] = "application/json", Authorization = "Bearer t" },
})
"""


async def test_request_async_does_real_http_and_yields(
    h: LuauHarness, server: tuple[str, list[str], asyncio.Event]
) -> None:
    base, seen, _ = server
    fn = h.lua.load_chunk(REQUEST, name="=req")
    (response,) = await h.call_async(fn, base)
    data = from_lua(response)
    assert data["Success"] is True and data["StatusCode"] == 201
    assert data["StatusMessage"] == "Created"
    assert data["Headers"]["x-custom"] == "yes"
    assert from_lua(
        h.eval(f"return game:GetService('HttpService'):JSONDecode([[{data['Body']}]])")[0]
    ) == {
        "method": "POST",
        "body": '{"a":1}',
        "auth": "Bearer t",
    }
    assert seen == ['POST /echo?x=1 {"a":1}']
    assert h.now == 0  # HTTP takes no virtual time


async def test_concurrent_requests_from_spawned_threads(
    h: LuauHarness, server: tuple[str, list[str], asyncio.Event]
) -> None:
    base, seen, _ = server
    h.lua.globals().set("BASE", base)
    fn = h.lua.load_chunk(
        """
        local Http = game:GetService("HttpService")
        for i = 1, 3 do
            task.spawn(function()
                local ok, r = pcall(function()
                    return Http:RequestAsync({ Url = BASE .. "/echo?i=" .. i })
                end)
                print(i, ok, r.StatusCode)
            end)
        end
        local r = Http:RequestAsync({ Url = BASE .. "/missing" })
        print("missing", r.Success, r.StatusCode)
        """,
        name="=concurrent",
    )
    await h.call_async(fn)
    await h.run_until_idle_async()
    assert sorted(h.printed) == ["1 true 200", "2 true 200", "3 true 200", "missing false 404"]
    assert len(seen) == 3


async def test_refused_connection_raises_connect_fail(h: LuauHarness) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fn = h.lua.load_chunk(
        "local url = ...\n"
        "local ok, e = pcall(function() return game:GetService('HttpService'):RequestAsync({Url = url}) end)\n"
        "return e",
        name="=refused",
    )
    (message,) = await h.call_async(fn, f"http://127.0.0.1:{port}/hello")
    assert str(message) == "HttpError: ConnectFail"


async def test_slow_server_raises_timedout(
    src: Path, server: tuple[str, list[str], asyncio.Event]
) -> None:
    base, _, release = server
    with LuauHarness(src, http_timeout=0.2) as h:
        fn = h.lua.load_chunk(
            "local url = ...\n"
            "local ok, e = pcall(function() return game:GetService('HttpService'):RequestAsync({Url = url}) end)\n"
            "return e",
            name="=slow",
        )
        (message,) = await h.call_async(fn, base + "/hang")
        assert str(message) == "HttpError: Timedout"
    release.set()


def test_disabled_http_raises_roblox_message(h: LuauHarness) -> None:
    h.http_enabled = False
    with pytest.raises(LuauError) as err:
        h.eval("return game:GetService('HttpService'):RequestAsync({Url = 'http://127.0.0.1:1/'})")
    assert err.value.luau_message.endswith(
        "Http requests are not enabled. Enable via game:GetService('HttpService').HttpEnabled = true."
    )


def test_sync_driving_refuses_to_block_a_running_loop(h: LuauHarness) -> None:
    # A listener that accepts and never answers: the request stays in flight, so the sync
    # driver would have to block the running loop (a refused port could fail first).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        async def inner() -> None:
            fn = h.lua.load_chunk(
                "return game:GetService('HttpService'):RequestAsync({Url = ...})", name="=x"
            )
            with pytest.raises(HarnessError, match="use the \\*_async method"):
                h.call(fn, f"http://127.0.0.1:{port}/")

        asyncio.run(inner())


def test_close_aborts_requests_in_flight_and_leaves_no_threads(src: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(5)
        port = listener.getsockname()[1]
        h = LuauHarness(src, http_timeout=30)
        h.eval(
            f"task.spawn(function() pcall(function() "
            f"game:GetService('HttpService'):RequestAsync({{Url = 'http://127.0.0.1:{port}/'}}) "
            f"end) end)"
        )
        accepted, _ = listener.accept()  # the request is connected and will never be answered
        started = time.monotonic()
        h.close()
        accepted.close()
    assert time.monotonic() - started < 5  # not the 30 s HTTP timeout
    assert not [t for t in threading.enumerate() if t.name.startswith("luau-http")]


# -- JSON and GUIDs -------------------------------------------------------------------------------


def test_json_encode_follows_roblox(h: LuauHarness) -> None:
    enc = 'local H = game:GetService("HttpService"); return H:JSONEncode(...)'
    fn = h.lua.load_chunk(enc, name="=enc")

    def encode(code: str) -> str:
        value = h.eval("return " + code)[0]
        return str(h.call(fn, value)[0])

    assert encode("{}") == "[]"
    assert encode("{1, 2, 3}") == "[1,2,3]"
    assert encode("{a = 1}") == '{"a":1}'
    assert encode("{n = 12, f = 0.5}") in ('{"n":12,"f":0.5}', '{"f":0.5,"n":12}')
    assert encode('{s = "quote\\"\\n"}') == '{"s":"quote\\"\\n"}'
    with pytest.raises(LuauError, match="keys must be strings"):
        encode("{1, 2, x = 3}")
    with pytest.raises(LuauError, match="cyclic"):
        h.eval('local t = {}; t.t = t; return game:GetService("HttpService"):JSONEncode(t)')


def test_json_decode_makes_luau_numbers(h: LuauHarness) -> None:
    assert ev(h, 'return game:GetService("HttpService"):JSONDecode("[]")') == {}
    assert ev(h, 'return game:GetService("HttpService"):JSONDecode("{\\"a\\":[1,null,3]}")') == {
        "a": {1: 1, 3: 3}
    }
    # 2^53 + 1 does not survive: it becomes a double, as in Roblox
    assert ev(h, 'return game:GetService("HttpService"):JSONDecode("9007199254740993") == 2^53')
    with pytest.raises(LuauError, match="Can't parse JSON"):
        h.eval('return game:GetService("HttpService"):JSONDecode("{bad")')


def test_generate_guid(h: LuauHarness) -> None:
    wrapped, bare = (
        str(v)
        for v in h.eval(
            "local H = game:GetService('HttpService'); return H:GenerateGUID(), H:GenerateGUID(false)"
        )
    )
    assert wrapped.startswith("{") and wrapped.endswith("}") and len(wrapped) == 38
    assert len(bare) == 36 and bare == bare.upper() and bare[14] == "4"


# -- Instances, datatypes, layout -----------------------------------------------------------------


def test_instance_properties_are_checked(h: LuauHarness) -> None:
    with pytest.raises(
        LuauError, match=re.escape("Unable to assign property Size. UDim2 expected, got number")
    ):
        h.eval('Instance.new("Frame").Size = 5')
    with pytest.raises(LuauError, match='Foo is not a valid member of Frame "Frame"'):
        h.eval('return Instance.new("Frame").Foo')
    with pytest.raises(LuauError, match="read only"):
        h.eval('Instance.new("Frame").AbsoluteSize = Vector2.new()')
    with pytest.raises(LuauError, match=re.escape("Expected ':' not '.'")):
        h.eval('local f = Instance.new("Frame"); return f.FindFirstChild("x")')
    assert (
        ev(
            h,
            'local t = Instance.new("TextLabel"); t.TextXAlignment = "Left"; t.Text = 5;'
            "return tostring(t.TextXAlignment) .. ' ' .. t.Text",
        )
        == "Enum.TextXAlignment.Left 5"
    )


def test_hierarchy_and_change_signals(immediate: LuauHarness) -> None:
    h = immediate
    h.eval(
        """
        local a = Instance.new("Folder"); a.Name = "A"
        local b = Instance.new("Frame"); b.Name = "B"; b.Parent = a
        local c = Instance.new("TextLabel"); c.Name = "C"; c.Parent = b
        b:GetPropertyChangedSignal("Visible"):Connect(function() print("visible", b.Visible) end)
        b.Changed:Connect(function(p) print("changed", p) end)
        b.Visible = true -- no change, no signal
        b.Visible = false
        print(a:FindFirstChild("C", true) == c, #a:GetDescendants(), c:IsA("GuiObject"), c:GetFullName())
        local copy = b:Clone()
        print(copy.C.Name, copy.Parent)
        b:Destroy()
        print(c.Parent, pcall(function() b.Parent = a end))
        """
    )
    assert h.printed[:3] == ["visible false", "changed Visible", "true 2 true A.B.C"]
    assert h.printed[3:5] == ["C nil", "changed Parent"]  # Destroy parents to nil first
    assert h.printed[5].startswith("nil false") and "locked" in h.printed[5]


def test_deferred_property_signals_read_the_value_when_they_run(h: LuauHarness) -> None:
    """A deferred property handler runs after the code that set the property, so it sees the
    value as it is then: a flag set around the assignment is already cleared (RawEditor's bug)."""
    h.eval(
        """
        local box = Instance.new("TextBox")
        local suppress = false
        box:GetPropertyChangedSignal("Text"):Connect(function()
            print("changed", box.Text, suppress)
        end)
        suppress = true
        box.Text = "set by code"
        suppress = false
        box.Text = "typed"
        print("done")
        """
    )
    assert h.printed == ["done", "changed typed false", "changed typed false"]


def test_datatypes(h: LuauHarness) -> None:
    assert ev(h, "return tostring(UDim2.new(0.5, 10, 1, -4))") == "{0.5, 10}, {1, -4}"
    assert ev(h, "return UDim2.fromOffset(1, 2) == UDim2.new(0, 1, 0, 2)") is True
    assert ev(h, "return Color3.fromHex('#FF8000'):ToHex()") == "ff8000"
    assert ev(h, "return Color3.fromRGB(0, 0, 0):Lerp(Color3.new(1, 1, 1), 0.5).R") == 0.5
    assert (
        ev(h, "return typeof(Vector2.new(1, 2) * 2) .. tostring(Vector2.new(1, 2) * 2)")
        == "Vector22, 4"
    )
    assert (
        ev(h, "return Enum.Font.SourceSans == Enum.Font.SourceSans and typeof(Enum.Font.Code)")
        == "EnumItem"
    )
    with pytest.raises(LuauError, match=re.escape('Nope is not a valid member of "Enum.Font"')):
        h.eval("return Enum.Font.Nope")
    assert ev(h, "return DateTime.now().UnixTimestamp") == 1_700_000_000
    h.advance(90)
    assert ev(h, "return os.time() - 1700000000") == 90
    assert ev(h, "return DateTime.fromIsoDate('2024-02-29T12:30:00.250+01:00'):ToIsoDate()") == (
        "2024-02-29T11:30:00.250Z"
    )
    assert ev(h, "return DateTime.fromIsoDate('yesterday')") is None


LAYOUT = """
local gui = Instance.new("ScreenGui")
local panel = Instance.new("Frame")
panel.Size = UDim2.new(0, 200, 0, 100)
panel.Position = UDim2.new(0.5, 0, 0.5, 0)
panel.AnchorPoint = Vector2.new(0.5, 0.5)
panel.Parent = gui
local pad = Instance.new("UIPadding")
pad.PaddingLeft = UDim.new(0, 10); pad.PaddingTop = UDim.new(0, 5)
pad.Parent = panel
local list = Instance.new("UIListLayout")
list.Padding = UDim.new(0, 4)
list.SortOrder = Enum.SortOrder.LayoutOrder
list.Parent = panel
local rows = {}
for i, order in { 3, 1, 2 } do
    local r = Instance.new("Frame")
    r.Name = "R" .. i
    r.LayoutOrder = order
    r.Size = UDim2.new(0.5, 0, 0, 20)
    r.Parent = panel
    rows[i] = r
end
local hidden = Instance.new("Frame"); hidden.Size = UDim2.fromOffset(5, 50); hidden.Visible = false
hidden.LayoutOrder = 0; hidden.Parent = panel
local label = Instance.new("TextLabel")
label.Text = "one two three four"
label.TextSize = 10
label.TextWrapped = true
label.Size = UDim2.new(0, 60, 0, 0)
label.AutomaticSize = Enum.AutomaticSize.Y
label.Parent = gui
local function v(x) return { x.X, x.Y } end
return {
    panel = { v(panel.AbsolutePosition), v(panel.AbsoluteSize) },
    r1 = v(rows[1].AbsolutePosition), r2 = v(rows[2].AbsolutePosition), r3 = v(rows[3].AbsolutePosition),
    size = v(rows[1].AbsoluteSize), content = v(list.AbsoluteContentSize),
    label = v(label.AbsoluteSize), bounds = v(label.TextBounds),
}
"""


def test_layout_maths(h: LuauHarness) -> None:
    r = ev(h, LAYOUT)
    # ScreenGui 1280x720; panel 200x100 centred by AnchorPoint
    assert r["panel"] == [[540, 310], [200, 100]]
    # padding 10/5; rows sorted by LayoutOrder (r2=1, r3=2, r1=3), 20 px + 4 px gaps; hidden skipped
    assert r["r2"] == [550, 315] and r["r3"] == [550, 339] and r["r1"] == [550, 363]
    assert r["size"] == [95, 20]  # 0.5 of the 190 px content width
    assert r["content"] == [95, 68]
    # 10 px text: 5.5 px per character -> 10 characters per 60 px line:
    # "one two" / "three four" -> 2 lines of 10 px
    assert r["bounds"] == [55, 20] and r["label"] == [60, 20]


def test_scrolling_frame_canvas_and_clamping(h: LuauHarness) -> None:
    r = ev(
        h,
        """
        local gui = Instance.new("ScreenGui")
        local s = Instance.new("ScrollingFrame")
        s.Size = UDim2.fromOffset(100, 50); s.CanvasSize = UDim2.new(); s.ScrollBarThickness = 10
        s.AutomaticCanvasSize = Enum.AutomaticSize.Y
        s.VerticalScrollBarInset = Enum.ScrollBarInset.ScrollBar
        s.Parent = gui
        Instance.new("UIListLayout").Parent = s
        for i = 1, 10 do
            local f = Instance.new("Frame"); f.Size = UDim2.new(1, 0, 0, 20); f.Parent = s
        end
        local changed = 0
        s:GetPropertyChangedSignal("CanvasPosition"):Connect(function() changed += 1 end)
        s.CanvasPosition = Vector2.new(0, 1000)
        task.wait()
        local first = s:GetChildren()[2]
        return { s.AbsoluteCanvasSize.Y, s.AbsoluteWindowSize.X, s.CanvasPosition.Y,
                 first.AbsolutePosition.Y, first.AbsoluteSize.X, changed }
        """,
    )
    assert r == [200, 90, 150, 0 - 150, 90, 2]


def test_absolute_size_changed_fires_after_layout(h: LuauHarness) -> None:
    h.eval(
        """
        local gui = Instance.new("ScreenGui")
        local f = Instance.new("Frame"); f.Parent = gui
        f:GetPropertyChangedSignal("AbsoluteSize"):Connect(function() print("size", f.AbsoluteSize) end)
        f.Size = UDim2.fromScale(0.5, 0.5)
        """
    )
    h.step()
    assert h.printed == ["size 640, 360"]


def test_text_service_metrics(h: LuauHarness) -> None:
    assert ev(
        h,
        "local v = game:GetService('TextService'):GetTextSize('abcd', 20, Enum.Font.SourceSans, "
        "Vector2.new(1000, 1000)); return {v.X, v.Y}",
    ) == [44, 20]


# -- plugin, settings, theme ------------------------------------------------------------------------


def test_plugin_toolbar_widget_and_settings(src: Path) -> None:
    settings: dict[str, Any] = {"count": 2}
    with LuauHarness(src, settings=settings) as h:
        h.eval(
            """
            local tb = plugin:CreateToolbar("DSM")
            local b = tb:CreateButton("open", "Open it", "", "Open")
            local info = DockWidgetPluginGuiInfo.new(Enum.InitialDockState.Right, false, true, 320, 200, 100, 100)
            local w = plugin:CreateDockWidgetPluginGuiAsync("Main", info)
            b.Click:Connect(function() w.Enabled = not w.Enabled; b:SetActive(w.Enabled) end)
            plugin:SetSetting("count", plugin:GetSetting("count") + 1)
            plugin:SetSetting("empty", {})
            plugin:SetSetting("nested", { a = { 1, 2 } })
            plugin.Unloading:Connect(function() plugin:SetSetting("unloaded", true) end)
            """
        )
        button = h.toolbar_button("Open")
        assert h.widget("Main").get("Enabled") is False
        h.click(button)
        assert h.widget().get("Enabled") is True and h.toolbar_button_active(button)
        assert h.widget().get("AbsoluteSize") == (320, 200)
        assert settings == {"count": 3, "empty": [], "nested": {"a": [1, 2]}}
        h.close_widget()
        assert h.widget().get("Enabled") is False
        h.eval(
            'plugin:GetSetting("x"); local w = game:GetService("PluginGuiService").Main; '
            'w:BindToClose(function() print("asked to close") end); w.Enabled = true'
        )
        h.close_widget()
        assert h.printed == ["asked to close"] and h.widget().get("Enabled") is True
        h.unload_plugin()
        assert settings["unloaded"] is True and h.widgets() == []


def test_import_file_dialog_waits_for_the_user_and_hands_back_a_file(h: LuauHarness) -> None:
    h.eval(
        """
        _G.picked = {}
        task.spawn(function()
            local studio = game:GetService("StudioService")
            for round = 1, 2 do
                local file = studio:PromptImportFileAsync({ "jsonl", "CSV" })
                if file == nil then
                    table.insert(_G.picked, "cancelled")
                else
                    local bytes = file:GetBinaryContents()
                    table.insert(_G.picked, { file.Name, file.Size, #bytes, bytes, file.ClassName })
                end
            end
        end)
        """
    )
    assert h.import_prompt == ["jsonl", "csv"]
    with pytest.raises(HarnessError, match="cannot be picked"):
        h.pick_import_file("notes.txt", b"x")
    assert h.import_prompt == ["jsonl", "csv"]  # still open after a refused pick
    contents = b'{"key":"a"}\n\xff\x00 binary\n'
    h.pick_import_file("players.JSONL", contents)
    assert h.import_prompt == ["jsonl", "csv"]  # the second round asked again
    h.cancel_import_prompt()
    assert h.import_prompt is None
    picked = from_lua(h.eval("return _G.picked")[0])
    assert picked[0][:3] == ["players.JSONL", len(contents), len(contents)]
    assert picked[0][4] == "File" and picked[1] == "cancelled"
    with pytest.raises(HarnessError, match="no import file dialog is open"):
        h.cancel_import_prompt()
    # Studio's File is not creatable and its Size is read-only for a plugin.
    with pytest.raises(LuauError, match="Unable to create an Instance of type"):
        h.eval('Instance.new("File")')
    h.eval(
        'task.spawn(function() _G.f = game:GetService("StudioService"):PromptImportFileAsync() end)'
    )
    h.pick_import_file("any.bin", b"\x00")
    with pytest.raises(LuauError, match="read only"):
        h.eval("_G.f.Size = 3")


def test_theme_colors_and_switching(h: LuauHarness) -> None:
    h.eval(
        "settings().Studio.ThemeChanged:Connect(function() print('theme', settings().Studio.Theme.Name) end)"
    )
    get = (
        "return settings().Studio.Theme:GetColor(Enum.StudioStyleGuideColor.MainBackground):ToHex()"
    )
    assert ev(h, get) == "2e2e2e"
    h.set_theme("Light")
    assert ev(h, get) == "ffffff"
    assert h.printed == ["theme Light"]
    hover = ev(
        h,
        "local t = settings().Studio.Theme; local C = Enum.StudioStyleGuideColor.Button; "
        "return t:GetColor(C, Enum.StudioStyleGuideModifier.Hover) ~= t:GetColor(C)",
    )
    assert hover is True


# -- UI helpers -------------------------------------------------------------------------------------


@pytest.fixture
def demo() -> Iterator[LuauHarness]:
    with LuauHarness(FIXTURES) as h:
        h.require("demo_widget")
        yield h


def test_find_click_and_type(demo: LuauHarness) -> None:
    save = demo.find("Root/Save")
    demo.click(save)
    demo.click("Save")
    assert save.text == "Saved 2"
    assert demo.find_text("Saved 2") == save
    demo.type_text("Filter", "abc")
    assert demo.find("Badge").text == "filter: abc"
    demo.type_text("Filter", "zzz", enter=False)
    assert demo.find("Badge").text == "filter: abc"
    with pytest.raises(HarnessError, match="no GUI element matches 'Nope'"):
        demo.find("Nope")
    with pytest.raises(HarnessError, match="12 GUI elements match"):
        demo.find(lambda n: n.name.startswith("Row"))


def test_clicks_respect_visibility_and_clipping(demo: LuauHarness) -> None:
    demo.click("Keys/Row1")
    with pytest.raises(HarnessError, match="scrolled or clipped out of view"):
        demo.click("Keys/Row12")
    demo.scroll_to("Keys", 1000)
    assert demo.find("Keys").get("CanvasPosition") == (0, 150)
    demo.click("Keys/Row12")
    with pytest.raises(HarnessError, match="scrolled or clipped out of view"):
        demo.click("Keys/Row1")
    demo.find("Save").set("Visible", False)
    with pytest.raises(HarnessError, match="its Visible is false"):
        demo.click("Save")
    demo.find("Root").set("Visible", False)
    with pytest.raises(
        HarnessError,
        match=re.escape('ancestor "PluginGuiService.HarnessDemo.Root" has Visible = false'),
    ):
        demo.click("Keys/Row12")


def test_tree_snapshot(demo: LuauHarness) -> None:
    (root,) = demo.tree()
    assert (root.class_name, root.w, root.h, root.title) == (
        "DockWidgetPluginGui",
        300,
        240,
        "Harness demo",
    )
    header = next(n for n in root.walk() if n.name == "Header")
    assert (header.x, header.y, header.w, header.h) == (0, 0, 300, 30)
    assert header.background == (0, 120, 215) and header.text == "DataStores"
    badge = next(n for n in root.walk() if n.name == "Badge")
    assert (badge.x, badge.y) == (300 - 6 - 70, 6) and badge.corner_radius == 4


# -- specs ----------------------------------------------------------------------------------------


def test_spec_runner_reports_each_case(tmp_path: Path) -> None:
    write(
        tmp_path / "plugin" / "src", {"Core/Add.luau": "return function(a, b) return a + b end\n"}
    )
    spec = (
        write(
            tmp_path / "plugin" / "specs",
            {
                "Core/Add.spec.luau": (
                    'local add = require("../../src/Core/Add")\n'
                    'describe("add", function()\n'
                    '    it("adds", function() expect(add(1, 2)).toBe(3) end)\n'
                    '    it("waits", function() expect(task.wait(5)).toBe(5) end)\n'
                    '    it("fails", function() expect({a = {1}}).toEqual({a = {2}}) end)\n'
                    '    skip("later", function() end)\n'
                    "end)\n"
                )
            },
        )
        / "Core"
        / "Add.spec.luau"
    )
    results = {r.name: r for r in run_spec(spec)}
    assert [r.status for r in results.values()] == ["passed", "passed", "failed", "skipped"]
    failed = results["add > fails"]
    assert "Add.spec.luau:5: expected {a = {1}} to equal {a = {2}}" in failed.message
    assert ".a[1]: expected 2, got 1" in failed.message


# -- renderer ------------------------------------------------------------------------------------------


def test_renderer_draws_the_demo_widget() -> None:
    image = run_scenario("harness-demo").convert("RGB")
    assert image.size == (300, 240)
    px = image.getpixel
    assert px((5, 5)) == (0, 120, 215)  # header background
    assert px((150, 60)) == (46, 46, 46)  # root background between paragraph lines
    assert px((20, 94)) == (0, 162, 255)  # Save button fill
    assert px((9, 80)) == (255, 200, 0)  # its 2 px UIStroke outside the button
    assert px((130, 84)) == (37, 37, 37)  # text box fill
    # list scrolled to 60: row i starts at y = 116 + 4 + (i-1)*22 - 60; even rows 60 grey, odd 52
    assert px((14, 130)) == (60, 60, 60)  # row 4
    assert px((14, 155)) == (52, 52, 52)  # row 5
    assert px((14, 235)) == (46, 46, 46)  # below the list: clipped rows are not drawn
    assert px((288, 160)) == (120, 120, 120) or px((289, 140)) == (120, 120, 120)  # scroll thumb


def test_renderer_turns_rotated_frames_about_their_centre(h: LuauHarness) -> None:
    # A line-chart segment: 80 x 4 centred at (50, 50), turned 90 degrees -> a vertical bar.
    h.eval(
        "local gui = Instance.new('ScreenGui') gui.Name = 'Probe' gui.Parent = game:GetService('CoreGui')\n"
        "local f = Instance.new('Frame') f.AnchorPoint = Vector2.new(0.5, 0.5)\n"
        "f.Position = UDim2.fromOffset(50, 50) f.Size = UDim2.fromOffset(80, 4)\n"
        "f.BorderSizePixel = 0 f.BackgroundColor3 = Color3.fromRGB(255, 0, 0) f.Rotation = 90\n"
        "local g = Instance.new('Frame') g.Size = UDim2.fromOffset(100, 100)\n"
        "g.BackgroundTransparency = 1 g.Parent = gui f.Parent = g"
    )
    node = next(n for n in h.tree() if n.name == "Probe")
    assert next(c for c in node.walk() if c.rotation == 90)
    image = render_harness(h, root="Probe").convert("RGB")
    assert image.getpixel((50, 15)) == (255, 0, 0)
    assert image.getpixel((50, 85)) == (255, 0, 0)
    assert image.getpixel((15, 50)) != (255, 0, 0)  # where the unturned frame would be


def test_render_harness_needs_an_enabled_widget(h: LuauHarness) -> None:
    with pytest.raises(HarnessError, match="nothing to render"):
        render_harness(h)


def test_run_context_models_studios_playtests(src: Path) -> None:
    probe = (
        "local rs = game:GetService('RunService') return rs:IsEdit(), rs:IsServer(), rs:IsClient()"
    )
    with LuauHarness(src) as h:
        assert h.eval(probe) == [True, True, False]
    with LuauHarness(src, run_context="PlayServer") as h:
        assert h.eval(probe) == [False, True, False]
    with LuauHarness(src, run_context="PlayClient") as h:
        assert h.eval(probe) == [False, False, True]
        # A client may not make HTTP requests (RobloxAPI/doc, class HttpService, "Limits").
        with pytest.raises(LuauError, match="Http requests can only be executed by game server"):
            h.eval("game:GetService('HttpService'):RequestAsync({Url = 'http://127.0.0.1:9/'})")
    with pytest.raises(LuauError, match="unknown run context"):
        LuauHarness(src, run_context="Team")


def test_web_stream_client_models_studios_websocket(src: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    with LuauHarness(src) as h:
        seen = h.eval(
            f"""
            local seen = {{}}
            local client = game:GetService('HttpService'):CreateWebStreamClient(
                Enum.WebStreamClientType.WebSocket, {{ Url = 'ws://127.0.0.1:{port}/' }})
            client.Error:Connect(function(status, message)
                table.insert(seen, 'error ' .. status .. ' ' .. message)
            end)
            client.Closed:Connect(function()
                table.insert(seen, 'closed ' .. client.ConnectionState.Name)
            end)
            return function() return seen end
            """
        )[0]
        deadline = time.monotonic() + 10
        while len(from_lua(h.call(seen)[0]) or []) < 2 and time.monotonic() < deadline:
            h.step()
            time.sleep(0.02)
        assert from_lua(h.call(seen)[0]) == ["error 400 HttpError: ConnectFail", "closed Closed"]
        assert h.open_web_streams == 0
        # A Studio from before web streams has no such member.
        h.web_streams_available = False
        with pytest.raises(LuauError, match="CreateWebStreamClient is not a valid member"):
            h.eval(
                "game:GetService('HttpService'):CreateWebStreamClient("
                "Enum.WebStreamClientType.WebSocket, { Url = 'ws://127.0.0.1:9/' })"
            )
    with (
        LuauHarness(src, run_context="PlayClient") as h,
        pytest.raises(LuauError, match="Http requests can only be executed by game server"),
    ):
        h.eval(
            "game:GetService('HttpService'):CreateWebStreamClient("
            "Enum.WebStreamClientType.WebSocket, { Url = 'ws://127.0.0.1:9/' })"
        )
