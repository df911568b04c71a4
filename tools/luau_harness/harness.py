"""LuauHarness: one Luau VM running the plugin source tree on a virtual clock."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pluau  # type: ignore[import-untyped]  # ships .pyi but no py.typed

from .convert import JsonError, from_lua, json_decode, json_encode, json_to_lua, lua_str, to_lua
from .errors import HarnessError, LuauError, clean_runtime_error
from .http import HttpClient, HttpFailure, HttpRequest, HttpResponse
from .loader import SourceNode, chunk_label, load_tree
from .roblox_api import RobloxApi
from .roblox_api import load as load_roblox_api
from .web_stream import WebStreamHub

HERE = Path(__file__).resolve().parent
# Order matters: each chunk uses what the previous ones put on H.
_CHUNKS = (
    "runtime.luau",
    "roblox.luau",
    "roblox_types.luau",
    "gui.luau",
    "services.luau",
    "ui.luau",
    "testkit.luau",
    "globals.luau",
)

HttpPredicate = Callable[[str, str], bool]


def _ints(value: Any) -> Any:
    """Decoded JSON with integral numbers as int (plugin settings are easier to assert on)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, list):
        return [_ints(v) for v in value]
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    return value


def long_poll_requests(method: str, url: str) -> bool:
    """Default `background_http`: the plugin's event long-poll (GET .../api/v1/events)."""
    return method == "GET" and urllib.parse.urlsplit(url).path.endswith("/api/v1/events")


@dataclass
class OutputLine:
    kind: str  # "print" | "warn"
    text: str


@dataclass
class _PendingHttp:
    future: concurrent.futures.Future[HttpResponse | HttpFailure]
    background: bool
    method: str
    url: str


_Wait = list[concurrent.futures.Future[Any]]


class HarnessCore:
    """The VM, source tree, scheduler driving and bridge; ui.LuauHarness adds the UI helpers."""

    def __init__(
        self,
        plugin_root: Path | str = "plugin/src",
        *,
        settings: dict[str, Any] | None = None,
        http_enabled: bool = True,
        http_timeout: float = 10.0,
        background_http: HttpPredicate | None = long_poll_requests,
        seed: int = 0,
        epoch: float | None = None,
        strict: bool = True,
        echo: bool = False,
        idle_limit: float = 600.0,
        theme: str = "Dark",
        widget_size: tuple[int, int] | None = None,
        studio_user_id: int = 0,
        user_names: dict[int, str] | None = None,
        place_id: int = 0,
        signal_behavior: str = "Deferred",
        run_context: str = "Edit",
    ) -> None:
        self.plugin_root = Path(plugin_root).resolve()
        self.plugin_settings: dict[str, Any] = settings if settings is not None else {}
        self.http_timeout = http_timeout
        self.background_http = background_http
        self.strict = strict
        self.echo = echo
        self.idle_limit = idle_limit
        self.epoch = time.time() if epoch is None else epoch
        self.output: list[OutputLine] = []
        self.errors: list[LuauError] = []
        self._unraised: list[LuauError] = []
        self._rng = random.Random(seed)
        self._sources: list[Path] = []
        self._source_cache: dict[int, str] = {}
        self._http = HttpClient(http_timeout)
        self._web_streams = WebStreamHub(http_timeout)
        self._next_web_stream_id = 0
        self._pending: dict[int, _PendingHttp] = {}
        self._next_http_id = 0
        self._closed = False
        self.api: RobloxApi = load_roblox_api()

        self.lua = pluau.Lua()
        self._H = self.lua.create_table()
        self._H.set("G", self.lua.globals())
        self._py = self._make_bridge()
        for chunk in _CHUNKS:
            path = HERE / chunk
            fn = self.lua.load_chunk(path.read_text(encoding="utf-8"), name="@" + chunk_label(path))
            self._lua_call(fn, self._H, self._py)
        self._sched: pluau.Table = self._H.get("sched")
        self.http_enabled = http_enabled
        self._lua_call(self._H.get("setTheme"), theme)
        self._lua_call(self._H.get("setStudioUserId"), studio_user_id)
        # What Players:GetNameFromUserIdAsync answers (Roblox's web lookup in Studio).
        for user_id, name in (user_names or {}).items():
            self._lua_call(self._H.get("setUserName"), user_id, name)
        self._lua_call(self._H.get("setPlaceId"), place_id)
        if signal_behavior not in ("Immediate", "Deferred"):
            raise ValueError("signal_behavior must be 'Immediate' or 'Deferred'")
        self._H.set("signalBehavior", signal_behavior)
        # "Edit", "PlayServer" or "PlayClient": where Studio is running this copy of the plugin.
        self._lua_call(self._H.get("setRunContext"), run_context)
        if widget_size is not None:
            size = self._lua_call(self.lua.globals().get("Vector2").get("new"), *widget_size)[0]
            self._H.set("defaultWidgetSize", size)

        # The plugin tree lives in a Folder named after plugin_root's parent (usually "plugin"), so
        # sibling trees such as plugin/specs can be mounted next to it and reached with "../".
        self.container: pluau.UserData = self._lua_call(
            self._H.get("makeSourceInstance"),
            "Folder",
            self.plugin_root.parent.name or "root",
            None,
            None,
            None,
        )[0]
        self.root: pluau.UserData = self.mount(self.plugin_root)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Abort HTTP still in flight and stop the worker threads. Idempotent."""
        if not self._closed:
            self._closed = True
            self._http.close()
            self._web_streams.shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- source tree --------------------------------------------------------------------------

    def mount(self, path: Path | str, parent: pluau.UserData | None = None) -> pluau.UserData:
        """Add a source directory (Rojo rules) under `parent` (default: the container Folder)."""
        node = load_tree(Path(path))
        return self._build(node, parent if parent is not None else self.container)

    def _build(self, node: SourceNode, parent: pluau.UserData | None) -> pluau.UserData:
        key = label = None
        if node.path is not None:
            key = len(self._sources)
            self._sources.append(node.path)
            label = chunk_label(node.path)
            if node.text is not None:
                self._source_cache[key] = node.text
        inst: pluau.UserData = self._lua_call(
            self._H.get("makeSourceInstance"), node.class_name, node.name, parent, key, label
        )[0]
        for child in node.children:
            self._build(child, inst)
        return inst

    def get(self, path: str, root: pluau.UserData | None = None) -> pluau.UserData:
        """The instance at a "/"-separated Name path below `root` (default: the plugin root)."""
        cur = root if root is not None else self.root
        for part in [p for p in path.split("/") if p and p != "."]:
            nxt = self._lua_call(self._H.get("findChildByName"), cur, part)[0]
            if nxt is None:
                full = self._lua_call(self._H.get("fullName"), cur)[0]
                raise HarnessError(f"{full} has no child named {part!r} (path {path!r})")
            cur = nxt
        return cur

    # -- running code -------------------------------------------------------------------------

    def require(self, target: str | pluau.UserData) -> Any:
        """require() a ModuleScript (an instance, or a path relative to the plugin root such as
        "Core/Json") in a scheduler thread, driving the clock until it finishes loading."""
        inst = self.get(target) if isinstance(target, str) else target
        return self.call(self._H.get("require"), inst, None)[0]

    def call(self, fn: Any, *args: Any) -> list[Any]:
        """Call a Luau function in a new scheduler thread and drive the scheduler (HTTP, virtual
        time) until it returns; its return values, or LuauError when it errors."""
        return self._drive_sync(self._call_gen(fn, args))

    async def call_async(self, fn: Any, *args: Any) -> list[Any]:
        return await self._drive_async(self._call_gen(fn, args))

    def eval(self, code: str, name: str = "eval") -> list[Any]:
        """Run a Luau snippet like `call`. `require("Core/Json")` inside it resolves relative to
        the plugin root."""
        return self.call(self._compile_snippet(code, name))

    async def eval_async(self, code: str, name: str = "eval") -> list[Any]:
        return await self.call_async(self._compile_snippet(code, name))

    def _compile_snippet(self, code: str, name: str) -> pluau.Function:
        env = self._lua_call(self._H.get("snippetEnv"), self.root)[0]
        try:
            return self.lua.load_chunk(code, name="=" + name, env=env)
        except RuntimeError as exc:
            raise LuauError(clean_runtime_error(str(exc))) from None

    def run_scripts(self, *, step: bool = True) -> None:
        """Start every Script in the plugin tree like Studio starts a plugin (each in its own
        thread, `plugin` global available), then run what is due now (unless step=False: a
        test can then act while the scripts wait on their first yield)."""
        self._lua_call(self._H.get("runScripts"), self.root)
        if step:
            self.step()

    # -- clock ----------------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Virtual seconds since the harness started."""
        value: float = self._lua_call(self._sched.get("now"))[0]
        return value

    def step(self) -> None:
        """Run what is due now (deferred threads, finished HTTP, layout) without moving time."""
        self._drive_sync(self._loop(until=self.now))

    async def step_async(self) -> None:
        await self._drive_async(self._loop(until=self.now))

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward, resuming timers in order. HTTP requests take zero
        virtual time: time does not move on while a (non-background) request is in flight."""
        self._drive_sync(self._loop(until=self.now + seconds))

    async def advance_async(self, seconds: float) -> None:
        await self._drive_async(self._loop(until=self.now + seconds))

    def run_until_idle(self, limit: float | None = None) -> None:
        """Advance until no timer is pending and no foreground HTTP is in flight; HarnessError
        if that takes more than `limit` virtual seconds (default `idle_limit`)."""
        self._drive_sync(self._loop(limit=limit))

    async def run_until_idle_async(self, limit: float | None = None) -> None:
        await self._drive_async(self._loop(limit=limit))

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 10.0, poll: float = 0.01
    ) -> None:
        """Process finished HTTP (background long-polls included) and what is due now, in real
        time, until predicate() holds; the virtual clock does not move."""
        deadline = time.monotonic() + timeout
        while True:
            await self.step_async()
            if predicate():
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"condition not met within {timeout} s of real time")
            await asyncio.sleep(poll)

    # -- output ---------------------------------------------------------------------------------

    @property
    def printed(self) -> list[str]:
        """Text of every print() so far (warn() lines are in `output` with kind "warn")."""
        return [line.text for line in self.output if line.kind == "print"]

    # -- HTTP switch ----------------------------------------------------------------------------

    @property
    def http_enabled(self) -> bool:
        return bool(self._lua_call(self._H.get("getHttpEnabled"))[0])

    @http_enabled.setter
    def http_enabled(self, value: bool) -> None:
        self._lua_call(self._H.get("setHttpEnabled"), bool(value))

    @property
    def web_streams_available(self) -> bool:
        """Whether HttpService:CreateWebStreamClient exists (False: an older Studio)."""
        return bool(self._H.get("webStreamsAvailable"))

    @web_streams_available.setter
    def web_streams_available(self, value: bool) -> None:
        self._H.set("webStreamsAvailable", bool(value))

    @property
    def http_in_flight(self) -> list[tuple[str, str]]:
        """(method, url) of every HttpService request not answered yet."""
        return [(p.method, p.url) for p in self._pending.values()]

    @property
    def open_web_streams(self) -> int:
        """WebStreamClients created and not yet closed."""
        count: int = self._lua_call(self._H.get("webStreamCount"))[0]
        return count

    # -- Studio's file dialog (StudioService:PromptImportFileAsync) ----------------------------

    @property
    def import_prompt(self) -> list[str] | None:
        """The open import dialog's extension filter ([] = any file), or None when none is open."""
        found = self._lua_call(self._H.get("importPromptFilter"))[0]
        return None if found is None else [lua_str(x) for x in from_lua(found)]

    def pick_import_file(self, name: str, contents: bytes) -> None:
        """The user picks a file named `name` holding `contents` in the open dialog (the plugin
        gets a File); HarnessError if no dialog is open or its filter leaves the file out."""
        self._answer_import(name, contents)
        self.step()

    async def pick_import_file_async(self, name: str, contents: bytes) -> None:
        self._answer_import(name, contents)
        await self.step_async()

    def cancel_import_prompt(self) -> None:
        """The user closes the open dialog without picking (the plugin gets nil)."""
        self._answer_import(None, None)
        self.step()

    def _answer_import(self, name: str | None, contents: bytes | None) -> None:
        try:
            self._lua_call(
                self._H.get("answerImportPrompt"),
                name,
                None if contents is None else self.lua.create_string(contents),
            )
        except LuauError as exc:
            raise HarnessError(str(exc)) from None

    # -- internals: driving -------------------------------------------------------------------

    def _call_gen(self, fn: Any, args: Sequence[Any]) -> Generator[_Wait, None, list[Any]]:
        box: dict[str, Any] = {}

        def on_done(lua: pluau.Lua, a: Sequence[Any]) -> None:
            box["ok"], box["value"], box["tb"] = a[0], a[1], a[2] if len(a) > 2 else None

        callback = self.lua.create_function(on_done)
        lua_args = [to_lua(self.lua, a) for a in args]
        thread = self._lua_call(self._sched.get("spawnTracked"), fn, callback, *lua_args)[0]
        yield from self._loop(stop=lambda: "ok" in box, waiter=thread)
        if not box["ok"]:
            raise LuauError(self._describe(box["value"]), lua_str(box["tb"]) if box["tb"] else None)
        packed = box["value"]
        n = int(packed.raw_get("n"))
        return [packed.raw_get(i) for i in range(1, n + 1)]

    def _loop(
        self,
        *,
        until: float | None = None,
        stop: Callable[[], bool] | None = None,
        limit: float | None = None,
        waiter: pluau.Thread | None = None,
    ) -> Generator[_Wait, None, None]:
        start = self.now
        limit = self.idle_limit if limit is None else limit
        while True:
            self._pump_http()
            self._lua_call(self._sched.get("step"))
            self._raise_reported()
            if stop is not None and stop():
                return
            foreground = [p.future for p in self._pending.values() if not p.background]
            if foreground:
                yield foreground
                continue
            if until is not None:
                nxt = self._lua_call(self._sched.get("nextWake"))[0]
                if nxt is None or nxt > until:
                    if until > self.now:
                        self._lua_call(self._sched.get("setNow"), until)
                        continue
                    return
                self._lua_call(self._sched.get("setNow"), max(nxt, self.now))
                continue
            has_timers = self._lua_call(self._sched.get("hasTimers"))[0]
            if not has_timers:
                if stop is None:
                    return
                background = [p.future for p in self._pending.values()]
                if background:
                    yield background
                    continue
                raise HarnessError(
                    "the Luau thread is still suspended but nothing is scheduled to resume it "
                    "(waiting for a signal that never fires?)"
                )
            nxt = self._lua_call(self._sched.get("nextWake"))[0]
            # The limit catches threads that never settle; a long task.wait in the called
            # thread itself (a spec waiting 1000 s) is not that.
            own_wake = self._lua_call(self._sched.get("wakeTime"), waiter)[0] if waiter else None
            if nxt - start > limit and not (own_wake is not None and nxt <= own_wake):
                pending = "\n".join(
                    lua_str(s) for s in from_lua(self._lua_call(self._sched.get("pending"))[0])
                )
                raise HarnessError(
                    f"not idle after {limit:g} virtual seconds; still scheduled:\n{pending}"
                )
            self._lua_call(self._sched.get("setNow"), max(nxt, self.now))

    def _drive_sync[T](self, gen: Generator[_Wait, None, T]) -> T:
        try:
            waiting = next(gen)
            while True:
                try:
                    asyncio.get_running_loop()
                except RuntimeError:
                    pass
                else:
                    raise HarnessError(
                        "Luau is waiting for HTTP while this thread runs an asyncio event loop "
                        "(a server in the same loop could never answer): use the *_async method"
                    )
                done, _ = concurrent.futures.wait(
                    waiting,
                    timeout=self.http_timeout + 5,
                    return_when=concurrent.futures.FIRST_COMPLETED,
                )
                if not done:
                    raise HarnessError("HTTP requests did not finish within the HTTP timeout")
                waiting = gen.send(None)
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def _drive_async[T](self, gen: Generator[_Wait, None, T]) -> T:
        try:
            waiting = next(gen)
            while True:
                wrapped = [asyncio.wrap_future(f) for f in waiting]
                done, _ = await asyncio.wait(
                    wrapped, timeout=self.http_timeout + 5, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    raise HarnessError("HTTP requests did not finish within the HTTP timeout")
                waiting = gen.send(None)
        except StopIteration as stop:
            result: T = stop.value
            return result

    def _pump_http(self) -> None:
        for client_id, kind, args in self._web_streams.drain():
            lua_args = [self.lua.create_string(a) if isinstance(a, str) else a for a in args]
            self._lua_call(self._H.get("webStreamEvent"), client_id, kind, *lua_args)
        for rid in sorted(rid for rid, p in self._pending.items() if p.future.done()):
            pending = self._pending.pop(rid)
            result = pending.future.result()
            if isinstance(result, HttpFailure):
                self._lua_call(self._sched.get("completeExternal"), rid, False, result.message)
                continue
            response = self.lua.create_table()
            response.set("Success", 200 <= result.status <= 299)
            response.set("StatusCode", result.status)
            response.set("StatusMessage", result.reason)
            response.set("Headers", to_lua(self.lua, result.headers))
            response.set("Body", self.lua.create_string(result.body))
            self._lua_call(self._sched.get("completeExternal"), rid, True, response)

    def _raise_reported(self) -> None:
        if self.strict and self._unraised:
            first = self._unraised[0]
            self._unraised.clear()
            raise first

    def _lua_call(self, fn: Any, *args: Any) -> list[Any]:
        try:
            result: list[Any] = fn(*args)
        except RuntimeError as exc:
            raise LuauError(clean_runtime_error(str(exc))) from None
        return result

    @staticmethod
    def _describe(value: Any) -> str:
        if isinstance(value, pluau.String | str):
            return lua_str(value)
        return repr(value)

    # -- internals: the PY bridge -------------------------------------------------------------

    def _make_bridge(self) -> pluau.Table:
        py = self.lua.create_table()
        fns: dict[str, Callable[[pluau.Lua, Sequence[Any]], Any]] = {
            "out": self._py_out,
            "report_error": self._py_report_error,
            "load_module": self._py_load_module,
            "http_start": self._py_http_start,
            "web_stream_open": self._py_web_stream_open,
            "web_stream_send": lambda lua, a: self._web_streams.send(int(a[0]), lua_str(a[1])),
            "web_stream_close": lambda lua, a: self._web_streams.close(int(a[0])),
            "json_encode": self._py_json_encode,
            "json_decode": self._py_json_decode,
            "guid": self._py_guid,
            "get_setting": self._py_get_setting,
            "set_setting": self._py_set_setting,
            "api_member": self._py_api_member,
            "api_class": self._py_api_class,
            "api_enum": self._py_api_enum,
            "api_enum_names": lambda lua, a: to_lua(lua, self.api.enum_names()),
            "epoch": lambda lua, a: self.epoch,
            "random": lambda lua, a: self._rng.random(),
        }
        for name, fn in fns.items():
            py.set(name, self.lua.create_function(fn))
        return py

    # The API dump subset (roblox_api.py): what the stand-in may offer a plugin.

    def _py_api_member(self, lua: pluau.Lua, a: Sequence[Any]) -> Any:
        """The member code ("P", "Pr", "Fy", "Fd:Replacement"...) or false when a plugin has no
        such member on that class."""
        found = self.api.member_code(lua_str(a[0]), lua_str(a[1]))
        return lua.create_string(found[1]) if found else False

    def _py_api_class(self, lua: pluau.Lua, a: Sequence[Any]) -> Any:
        """The class's tags ("NotCreatable Service", "" for none), or false when it does not exist."""
        name = lua_str(a[0])
        if not self.api.has_class(name):
            return False
        return lua.create_string(" ".join(sorted(self.api.class_tags(name))))

    def _py_api_enum(self, lua: pluau.Lua, a: Sequence[Any]) -> Any:
        """{items = {Name = value}, deprecated = {Name = true}} or false."""
        found = self.api.enum(lua_str(a[0]))
        if found is None:
            return False
        items, deprecated = found
        return to_lua(lua, {"items": items, "deprecated": dict.fromkeys(deprecated, True)})

    def _py_out(self, lua: pluau.Lua, a: Sequence[Any]) -> None:
        line = OutputLine(lua_str(a[0]), lua_str(a[1]))
        self.output.append(line)
        if self.echo:
            print(("[warn] " if line.kind == "warn" else "") + line.text)

    def _py_report_error(self, lua: pluau.Lua, a: Sequence[Any]) -> None:
        err = LuauError(lua_str(a[0]), lua_str(a[1]) if len(a) > 1 and a[1] is not None else None)
        self.errors.append(err)
        self._unraised.append(err)
        if self.echo:
            print(f"[error] {err}")

    def _py_load_module(self, lua: pluau.Lua, a: Sequence[Any]) -> pluau.Function:
        key = int(a[0])
        path = self._sources[key]
        source = self._source_cache.get(key)
        if source is None:
            source = path.read_text(encoding="utf-8")
            self._source_cache[key] = source
        label = chunk_label(path)
        try:
            return lua.load_chunk(source, name="@" + label, env=a[1])
        except RuntimeError as exc:
            text = str(exc)
            if text.startswith("syntax error: "):
                loc, _, rest = text[len("syntax error: ") :].partition(": ")
                raise pluau.RawError(f"{loc}: syntax error: {rest}") from None
            raise pluau.RawError(clean_runtime_error(text)) from None

    def _py_http_start(self, lua: pluau.Lua, a: Sequence[Any]) -> int:
        url, method = lua_str(a[0]), lua_str(a[1]).upper()
        headers = {lua_str(k): lua_str(v) for k, v in a[2]} if a[2] is not None else {}
        body = bytes(a[3].as_bytes()) if isinstance(a[3], pluau.String) else None
        if isinstance(a[3], str):
            body = a[3].encode()
        self._next_http_id += 1
        rid = self._next_http_id
        future = self._http.submit(HttpRequest(url, method, headers, body))
        background = bool(self.background_http and self.background_http(method, url))
        self._pending[rid] = _PendingHttp(future, background, method, url)
        return rid

    def _py_web_stream_open(self, lua: pluau.Lua, a: Sequence[Any]) -> int:
        url = lua_str(a[0])
        headers = {lua_str(k): lua_str(v) for k, v in a[1]} if a[1] is not None else {}
        self._next_web_stream_id += 1
        self._web_streams.open(self._next_web_stream_id, url, headers)
        return self._next_web_stream_id

    def _py_json_encode(self, lua: pluau.Lua, a: Sequence[Any]) -> pluau.String:
        try:
            return lua.create_string(json_encode(a[0] if a else None))
        except JsonError as exc:
            raise pluau.RawError(str(exc)) from None

    def _py_json_decode(self, lua: pluau.Lua, a: Sequence[Any]) -> Any:
        raw = a[0] if a else None
        if not isinstance(raw, pluau.String | str):
            raise pluau.RawError("Can't parse JSON")
        data = bytes(raw.as_bytes()) if isinstance(raw, pluau.String) else raw.encode()
        try:
            value = json_to_lua(lua, json_decode(data))
            return lua.create_string(value) if isinstance(value, str) else value
        except JsonError as exc:
            raise pluau.RawError(str(exc)) from None

    def _py_guid(self, lua: pluau.Lua, a: Sequence[Any]) -> pluau.String:
        text = str(uuid.UUID(int=self._rng.getrandbits(128), version=4)).upper()
        wrap = a[0] if a else True
        # a bare str return would be read as a sequence of return values
        return lua.create_string("{" + text + "}" if wrap is not False else text)

    def _py_get_setting(self, lua: pluau.Lua, a: Sequence[Any]) -> Any:
        value = to_lua(lua, self.plugin_settings.get(lua_str(a[0])))
        # a bare str return would be read as a sequence of return values
        return lua.create_string(value) if isinstance(value, str) else value

    def _py_set_setting(self, lua: pluau.Lua, a: Sequence[Any]) -> None:
        key = lua_str(a[0])
        value = a[1] if len(a) > 1 else None
        if value is None:
            self.plugin_settings.pop(key, None)
            return
        # Studio stores plugin settings as JSON: keep exactly what survives that round trip.
        try:
            self.plugin_settings[key] = _ints(json_decode(json_encode(value)))
        except JsonError as exc:
            raise pluau.RawError(f"SetSetting({key!r}): value cannot be stored: {exc}") from None
