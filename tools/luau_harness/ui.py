"""LuauHarness = HarnessCore + GUI helpers: snapshots, finding elements, simulated input."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pluau  # type: ignore[import-untyped]  # ships .pyi but no py.typed

from .convert import from_lua, lua_str, to_lua
from .errors import HarnessError
from .harness import HarnessCore

RGB = tuple[int, int, int]


@dataclass
class Stroke:
    color: RGB
    thickness: float
    transparency: float
    mode: str  # "Contextual" | "Border"


@dataclass
class Scroll:
    canvas_x: float
    canvas_y: float
    canvas_w: float
    canvas_h: float
    window_w: float
    window_h: float
    bar: bool  # a vertical scroll bar is shown
    bar_color: RGB
    bar_transparency: float
    bar_thickness: int
    enabled: bool


@dataclass
class Node:
    """One GUI instance as laid out: absolute rectangle in pixels, colours 0-255."""

    id: int
    class_name: str
    name: str
    path: str  # Names from the root widget/ScreenGui, "/"-separated
    x: float
    y: float
    w: float
    h: float
    visible: bool  # its own Visible (Enabled for a widget)
    rendered: bool  # it and all ancestors are visible and the root is enabled
    padding: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # UIPadding l, r, t, b
    zindex: int = 0
    layout_order: int = 0
    background: RGB | None = None
    background_transparency: float = 1.0
    border_color: RGB | None = None
    border_size: int = 0
    clips: bool = False
    rotation: float = 0.0  # degrees about the centre (Roblox rotates GUI objects there)
    corner_radius: float = 0.0
    stroke: Stroke | None = None
    title: str | None = None
    text: str | None = None
    text_color: RGB | None = None
    text_size: float = 0.0
    text_transparency: float = 0.0
    font: str | None = None
    x_align: str | None = None
    y_align: str | None = None
    wrapped: bool = False
    truncate: str | None = None
    lines: list[str] = field(default_factory=list)
    line_height: float = 0.0
    placeholder: str | None = None
    placeholder_color: RGB | None = None
    focused: bool = False
    image: str | None = None
    image_color: RGB | None = None
    image_transparency: float = 0.0
    scroll: Scroll | None = None
    children: list[Node] = field(default_factory=list)

    def walk(self) -> Iterator[Node]:
        """This node and all its descendants, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y + self.h / 2)

    def describe(self) -> str:
        text = f" text={self.text!r}" if self.text is not None else ""
        state = "" if self.rendered else " (not rendered)"
        return (
            f"{self.class_name} {self.path} at ({self.x:g},{self.y:g}) "
            f"size {self.w:g}x{self.h:g}{text}{state}"
        )


def _rgb(value: Any) -> RGB | None:
    if value is None:
        return None
    r, g, b = value
    return (int(r), int(g), int(b))


def _padding(value: Any) -> tuple[float, float, float, float]:
    if not value:
        return (0.0, 0.0, 0.0, 0.0)
    left, right, top, bottom = (float(v) for v in value)
    return (left, right, top, bottom)


def _node(data: dict[str, Any]) -> Node:
    stroke = data.get("stroke")
    scroll = data.get("scroll")
    return Node(
        id=int(data["id"]),
        class_name=data["class"],
        name=data["name"],
        path=data["path"],
        x=float(data["x"]),
        y=float(data["y"]),
        w=float(data["w"]),
        h=float(data["h"]),
        visible=bool(data["visible"]),
        rendered=bool(data["rendered"]),
        padding=_padding(data.get("padding")),
        zindex=int(data.get("zindex", 0)),
        layout_order=int(data.get("layout_order", 0)),
        background=_rgb(data.get("background")),
        background_transparency=float(data.get("background_transparency", 1.0)),
        border_color=_rgb(data.get("border_color")),
        border_size=int(data.get("border_size", 0)),
        clips=bool(data.get("clips", False)),
        rotation=float(data.get("rotation", 0.0)),
        corner_radius=float(data.get("corner_radius", 0.0)),
        stroke=Stroke(
            _rgb(stroke["color"]) or (0, 0, 0),
            float(stroke["thickness"]),
            float(stroke["transparency"]),
            str(stroke["mode"]),
        )
        if stroke
        else None,
        title=data.get("title"),
        text=data.get("text"),
        text_color=_rgb(data.get("text_color")),
        text_size=float(data.get("text_size", 0.0)),
        text_transparency=float(data.get("text_transparency", 0.0)),
        font=data.get("font"),
        x_align=data.get("x_align"),
        y_align=data.get("y_align"),
        wrapped=bool(data.get("wrapped", False)),
        truncate=data.get("truncate"),
        lines=[str(line) for line in (data.get("lines") or [])],
        line_height=float(data.get("line_height", 0.0)),
        placeholder=data.get("placeholder"),
        placeholder_color=_rgb(data.get("placeholder_color")),
        focused=bool(data.get("focused", False)),
        image=data.get("image"),
        image_color=_rgb(data.get("image_color")),
        image_transparency=float(data.get("image_transparency", 0.0)),
        scroll=Scroll(
            canvas_x=float(scroll["canvas_x"]),
            canvas_y=float(scroll["canvas_y"]),
            canvas_w=float(scroll["canvas_w"]),
            canvas_h=float(scroll["canvas_h"]),
            window_w=float(scroll["window_w"]),
            window_h=float(scroll["window_h"]),
            bar=bool(scroll["bar"]),
            bar_color=_rgb(scroll["bar_color"]) or (0, 0, 0),
            bar_transparency=float(scroll["bar_transparency"]),
            bar_thickness=int(scroll["bar_thickness"]),
            enabled=bool(scroll["enabled"]),
        )
        if scroll
        else None,
        children=[_node(c) for c in (data.get("children") or [])],
    )


class Element:
    """A handle on one Instance: read/write properties, and the UI actions of the harness."""

    def __init__(self, harness: LuauHarness, instance: pluau.UserData) -> None:
        self.harness = harness
        self.instance = instance

    @property
    def id(self) -> int:
        return int(self.harness._lua_call(self.harness._H.get("idOf"), self.instance)[0])

    def get(self, prop: str) -> Any:
        """A property as Python data: Vector2 -> (x, y), Color3 -> (r, g, b) 0-255, UDim2 ->
        ((xs, xo), (ys, yo)), UDim -> (scale, offset), EnumItem -> "Enum.X.Y", Instance ->
        Element, strings/numbers/bools as they are."""
        h = self.harness
        value = h._lua_call(h._H.get("getProperty"), self.instance, prop)[0]
        return h._plain(value)

    def set(self, prop: str, value: Any) -> None:
        """Set a string/number/boolean property (use harness.eval for datatypes)."""
        h = self.harness
        h._lua_call(h._H.get("setProperty"), self.instance, prop, to_lua(h.lua, value))

    def __getitem__(self, prop: str) -> Any:
        return self.get(prop)

    def __setitem__(self, prop: str, value: Any) -> None:
        self.set(prop, value)

    @property
    def name(self) -> str:
        return str(self.get("Name"))

    @property
    def class_name(self) -> str:
        return str(self.get("ClassName"))

    @property
    def text(self) -> str:
        return str(self.get("Text"))

    def full_name(self) -> str:
        h = self.harness
        return lua_str(h._lua_call(h._H.get("fullName"), self.instance)[0])

    def node(self) -> Node:
        """Snapshot of this element's subtree (searched in the current tree)."""
        wanted = self.id
        for root in self.harness.tree():
            for n in root.walk():
                if n.id == wanted:
                    return n
        raise HarnessError(f"{self.full_name()} is not part of any GUI tree")

    def children(self) -> list[Element]:
        h = self.harness
        kids = from_lua(h._lua_call(h._H.get("childrenOf"), self.instance)[0]) or []
        return [Element(h, c) for c in kids]

    def __repr__(self) -> str:
        return f"<Element {self.full_name()}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Element) and other.id == self.id

    def __hash__(self) -> int:
        return self.id


Target = Element | str


class LuauHarness(HarnessCore):
    """See the package docstring for the API overview."""

    # -- snapshots ------------------------------------------------------------------------------

    def tree(self) -> list[Node]:
        """Every widget / ScreenGui (and detached GUI tree) as laid-out Nodes."""
        data = from_lua(self._lua_call(self._H.get("snapshot"))[0]) or []
        return [_node(d) for d in data]

    def widgets(self) -> list[Element]:
        """The plugin's dock widgets in creation order."""
        items = from_lua(self._lua_call(self._H.get("widgets"))[0]) or []
        return [Element(self, w) for w in items]

    def widget(self, name: str | None = None) -> Element:
        """The dock widget with this id (Name), or the only one."""
        widgets = self.widgets()
        if name is not None:
            widgets = [w for w in widgets if w.name == name]
        if len(widgets) != 1:
            raise HarnessError(
                f"expected one widget{f' named {name!r}' if name else ''}, found "
                f"{[w.name for w in self.widgets()]}"
            )
        return widgets[0]

    def toolbar_button(self, text_or_id: str) -> Element:
        for b in from_lua(self._lua_call(self._H.get("toolbarButtons"))[0]) or []:
            info = from_lua(self._lua_call(self._H.get("toolbarButtonInfo"), b)[0])
            el = Element(self, b)
            if text_or_id in (info["text"], el.name):
                return el
        raise HarnessError(f"no toolbar button with text or id {text_or_id!r}")

    def toolbar_button_active(self, button: Element) -> bool:
        info = from_lua(self._lua_call(self._H.get("toolbarButtonInfo"), button.instance)[0])
        return bool(info["active"])

    # -- finding ----------------------------------------------------------------------------------

    def find_all(
        self, query: str | Callable[[Node], bool], *, rendered_only: bool = False
    ) -> list[Element]:
        """Elements matching a Name path suffix ("Explorer/Keys/Row3": the last names of the
        path from the root) or a predicate over Nodes, in tree order."""
        matches: list[Node] = []
        for root in self.tree():
            for n in root.walk():
                if rendered_only and not n.rendered:
                    continue
                if callable(query):
                    ok = query(n)
                else:
                    ok = n.path == query or n.path.endswith("/" + query.strip("/"))
                if ok:
                    matches.append(n)
        return [self._element(n.id) for n in matches]

    def find(self, query: str | Callable[[Node], bool], *, rendered_only: bool = False) -> Element:
        """Exactly one element matching `query` (see find_all); HarnessError naming the
        candidates otherwise."""
        found = self.find_all(query, rendered_only=rendered_only)
        if len(found) == 1:
            return found[0]
        what = query if isinstance(query, str) else "the predicate"
        if not found:
            raise HarnessError(f"no GUI element matches {what!r}\n{self._outline()}")
        listing = "\n".join("  " + e.node().describe() for e in found)
        raise HarnessError(f"{len(found)} GUI elements match {what!r}:\n{listing}")

    def find_text(self, text: str, *, exact: bool = True, rendered_only: bool = True) -> Element:
        """The one text element whose (ContentText) text equals `text` (or contains it with
        exact=False); by default only elements actually drawn count."""

        def matches(n: Node) -> bool:
            if n.text is None:
                return False
            return n.text == text if exact else text in n.text

        return self.find(matches, rendered_only=rendered_only)

    def texts(self, *, rendered_only: bool = True) -> list[str]:
        """All non-empty texts in tree order (handy in assertion messages)."""
        out: list[str] = []
        for root in self.tree():
            for n in root.walk():
                if n.text and (n.rendered or not rendered_only):
                    out.append(n.text)
        return out

    # -- input --------------------------------------------------------------------------------

    def click(self, target: Target) -> None:
        """Left-click a visible, unclipped GuiButton (or a toolbar button) and run what is due:
        InputBegan, MouseButton1Down, InputEnded, MouseButton1Up, MouseButton1Click, Activated."""
        self._act("click", self._resolve(target).instance)
        self.step()

    async def click_async(self, target: Target) -> None:
        self._act("click", self._resolve(target).instance)
        await self.step_async()

    def type_text(self, target: Target, text: str, enter: bool = True) -> None:
        """Focus a TextBox (clearing it when ClearTextOnFocus), set its Text, release focus:
        FocusLost(enterPressed=enter)."""
        self._act("typeText", self._resolve(target).instance, text, enter)
        self.step()

    async def type_text_async(self, target: Target, text: str, enter: bool = True) -> None:
        self._act("typeText", self._resolve(target).instance, text, enter)
        await self.step_async()

    def scroll_to(self, target: Target, y: float, x: float | None = None) -> None:
        """Set a ScrollingFrame's CanvasPosition (clamped to the canvas) and run what is due."""
        self._act("scrollTo", self._resolve(target).instance, x, y)
        self.step()

    async def scroll_to_async(self, target: Target, y: float, x: float | None = None) -> None:
        self._act("scrollTo", self._resolve(target).instance, x, y)
        await self.step_async()

    # -- environment --------------------------------------------------------------------------

    def set_theme(self, name: str) -> None:
        """Switch settings().Studio.Theme ("Dark"/"Light"), firing ThemeChanged."""
        self._lua_call(self._H.get("setTheme"), name)
        self.step()

    def set_studio_user(self, user_id: int, name: str | None = None) -> None:
        """Who is logged in to Studio (StudioService:GetUserId) and, when given, the name
        Players:GetNameFromUserIdAsync answers for them; set before run_scripts()."""
        self._lua_call(self._H.get("setStudioUserId"), user_id)
        if name is not None:
            self._lua_call(self._H.get("setUserName"), user_id, name)

    def resize_widget(self, width: float, height: float, widget: Target | None = None) -> None:
        el = self.widget() if widget is None else self._resolve(widget)
        self._lua_call(self._H.get("resizeWidget"), el.instance, width, height)
        self.step()

    def close_widget(self, widget: Target | None = None) -> None:
        """The user closing a dock widget: its BindToClose callback, else Enabled = false."""
        el = self.widget() if widget is None else self._resolve(widget)
        self._lua_call(self._H.get("closeWidget"), el.instance)
        self.step()

    def unload_plugin(self) -> None:
        """What Studio does when the plugin unloads: Unloading fires, widgets are destroyed."""
        self._lua_call(self._H.get("unloadPlugin"))
        self.step()

    # -- internals ----------------------------------------------------------------------------

    def _element(self, node_id: int) -> Element:
        inst = self._lua_call(self._H.get("instanceById"), node_id)[0]
        if inst is None:
            raise HarnessError(f"instance #{node_id} no longer exists")
        return Element(self, inst)

    def _resolve(self, target: Target) -> Element:
        return self.find(target) if isinstance(target, str) else target

    def _act(self, action: str, *args: Any) -> None:
        problem = self._lua_call(self._H.get(action), *args)[0]
        if problem is not None:
            raise HarnessError(lua_str(problem))
        self._raise_reported()

    def _outline(self) -> str:
        lines = ["GUI tree:"]
        for root in self.tree():
            for n in root.walk():
                indent = "  " * (n.path.count("/") + 1)
                text = f" {n.text!r}" if n.text else ""
                hidden = "" if n.rendered else " (not rendered)"
                lines.append(f"{indent}{n.class_name} {n.name}{text}{hidden}")
        return "\n".join(lines[:200])

    def _plain(self, value: Any) -> Any:
        data = from_lua(self._lua_call(self._H.get("plainValue"), value)[0])
        kind = data["type"]
        if kind == "Vector2":
            return (data["x"], data["y"])
        if kind == "Color3":
            return tuple(data["rgb"])
        if kind == "UDim":
            return (data["scale"], data["offset"])
        if kind == "UDim2":
            return (tuple(data["x"]), tuple(data["y"]))
        if kind == "EnumItem":
            return data["name"]
        if kind == "Instance":
            return self._element(int(data["id"]))
        return data.get("value")
