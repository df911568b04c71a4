"""Run the Studio plugin's Luau under pytest: pluau VM + Roblox API stand-ins + virtual clock.

    from tools.luau_harness import LuauHarness, to_python
    with LuauHarness("plugin/src", settings={}) as h:
        Json = h.require("Core/Json")              # ModuleScript by path below the plugin root
        to_python(h.eval('return require("Core/Json").minify("[ 1 ]")')[0])
        h.run_scripts()                            # start Main.server.luau like Studio does
        h.click(h.find_text("Try now")); h.advance(5); h.run_until_idle()

Source tree (Rojo rules, loader.py): a directory is a Folder, a directory with init.luau a
ModuleScript with children, X.luau a ModuleScript, X.server.luau a Script. plugin_root is mounted
as an instance inside a Folder named after its parent directory ("plugin"); `h.mount(dir)` adds a
sibling tree (the spec runner mounts plugin/specs so specs can `require("../src/Core/Json")`).

Inside Luau:
- `require(instance)` and string requires relative to the calling script: "./X" (script.Parent.X),
  "../X" (script.Parent.Parent.X), "@self/X" (script.X). Results are cached per ModuleScript;
  recursive requires fail with the chain ("A -> B -> A"); a module must return exactly one value.
- `script`, `task` (wait/spawn/defer/delay/cancel) on the virtual clock (wait(t) resumes after
  max(t, 1/60) s and returns the exact elapsed virtual time); os.clock/os.time/tick/time/
  DateTime.now follow it (wall time = `epoch` + virtual seconds); math.random and Random.new()
  are seeded by `seed`. `print`/`warn` are captured in `h.output` / `h.printed`.
- `typeof`, `Instance.new` (Frame, TextLabel, TextButton, TextBox, ImageLabel, ImageButton,
  ScrollingFrame, ScreenGui, UIListLayout, UIPadding, UICorner, UIStroke, UISizeConstraint,
  Folder, BindableEvent, value objects...), UDim/UDim2/Vector2/Color3/Rect/Font/TweenInfo/
  Random/DateTime, `Enum`, `game:GetService` (HttpService, TextService, RunService, TweenService,
  UserInputService, StudioService, CoreGui...), `settings().Studio.Theme`, `plugin`
  (CreateDockWidgetPluginGuiAsync yields), DockWidgetPluginGuiInfo. Layout and text-metric
  approximations are listed in gui.luau.
- No more than Roblox offers a plugin: roblox_api.json (derived from Roblox's API dump by
  roblox_api.py) decides. A member, service, class or enum item the dump lacks raises Studio's
  "X is not a valid member of Y" (or "... is not a valid Service name", "Unable to create an
  Instance..."); one it marks Deprecated, or keeps from plugins, is refused; read-only follows the
  dump; enums and their values come from it. One Roblox has but the stand-in does not model says
  so. tests/test_roblox_api.py checks the stand-in's own class tables against the dump.
- `HttpService:RequestAsync` does real HTTP on worker threads and suspends the calling thread;
  failures raise Roblox's strings ("HttpError: ConnectFail", "HttpError: Timedout", "Http requests
  are not enabled. ..." when `h.http_enabled = False`); response header names are lower-cased.
  JSONEncode/JSONDecode follow Roblox (an empty table encodes as "[]"; decoded numbers are doubles).

Python API (LuauHarness):
- `require(path|instance)`, `call(fn, *args)`, `eval(code)` -> list of Luau values (`to_python`
  converts); each runs in a new scheduler thread and drives the clock until it finishes.
  LuauError carries the Luau message (starting with file:line) and traceback; HarnessError
  reports misuse and things that never settle.
- `step()`, `advance(seconds)`, `run_until_idle(limit)`, `now`; `*_async` twins (also for click,
  type_text, scroll_to) for tests whose server runs in the same asyncio loop - the sync versions
  refuse to block such a loop - and `await wait_until(predicate)` for background long-polls.
  HTTP takes zero virtual time: the clock does not move while a foreground request is in
  flight; requests matching `background_http` (default: GET .../api/v1/events) do not hold it.
- An error in any scheduler thread (a signal handler, a task.spawn'ed loop) is appended to
  `h.errors` and, with strict=True (default), raised by the driving call.
- Environment: `plugin_settings` (dict shared with plugin:Get/SetSetting, JSON round-tripped
  like Studio), `http_enabled`, `set_theme("Light")`, `set_studio_user(id, name)`,
  `resize_widget(w, h)`, `unload_plugin()`;
  constructor options theme, widget_size, studio_user_id, user_names (what
  Players:GetNameFromUserIdAsync answers), place_id, seed, epoch, http_timeout,
  signal_behavior ("Deferred", the default of new places, or "Immediate": Deferred runs signal
  handlers and :Wait() resumptions after the firing code, at the next step), strict, echo.
- GUI: `tree()` -> [Node] (class, name, path, absolute x/y/w/h, rendered, colours, text lines,
  corner, stroke, scroll state, children), `widgets()`, `widget(name)`, `toolbar_button(text)`,
  `find(path_suffix | predicate)`, `find_all`, `find_text(text, exact=True)`, `texts()`;
  Element handles: `get/set` properties (datatypes as tuples), `.text`, `.node()`, `.children()`;
  input: `click(el|path)` (checks visibility/clipping, fires InputBegan, MouseButton1Down/Up,
  MouseButton1Click, Activated), `type_text(box, text, enter=True)` (focus, Text, FocusLost),
  `scroll_to(frame, y)`.
- `close()` aborts HTTP in flight and joins the worker threads; also a context manager.

Specs (specs.py, testkit.luau): `run_spec(path) -> [SpecResult]`, `collect_spec`, `run_spec_case`;
tests/test_plugin_specs.py runs every `it` of plugin/specs/**/*.spec.luau as a pytest item.
Preview: tools/preview.py renders `tree()` to PNG (`python -m tools.preview SCENARIO -o out.png`).
"""

from .convert import from_lua as to_python
from .errors import HarnessError, LuauError
from .harness import OutputLine, long_poll_requests
from .specs import SpecResult, collect_spec, find_specs, run_spec, run_spec_case
from .ui import Element, LuauHarness, Node

__all__ = [
    "Element",
    "HarnessError",
    "LuauError",
    "LuauHarness",
    "Node",
    "OutputLine",
    "SpecResult",
    "collect_spec",
    "find_specs",
    "long_poll_requests",
    "run_spec",
    "run_spec_case",
    "to_python",
]
