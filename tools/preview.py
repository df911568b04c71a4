"""Render the plugin's widget, as laid out by tools/luau_harness, to a PNG.

    python -m tools.preview SCENARIO -o out.png [--scale 2] [--theme Light] [--size 420x560]
    python -m tools.preview --list

Scenarios (tools/preview_scenarios.py) drive a LuauHarness (start the plugin, click, type, talk to
a real server); the renderer then draws the harness's tree() snapshot: background rectangles
with transparency (turned by Rotation about their centre), borders, UICorner radii, UIStroke
outlines, text (Pillow's bundled font at the element's TextSize, aligned, TextTruncate AtEnd
honoured), TextBox placeholders, image placeholders (a tinted outline with a cross: asset images
cannot be loaded outside Studio), ScrollingFrame/ClipsDescendants clipping and scroll bar thumbs.
It shows layout, colours and text; fonts and anti-aliasing differ from Studio.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import math
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from tools.luau_harness import HarnessError, LuauError, LuauHarness, Node

Box = tuple[float, float, float, float]  # x1, y1, x2, y2
RGBA = tuple[int, int, int, int]

_TEXT_CLASSES = {"TextLabel", "TextButton", "TextBox"}


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(size, 1))


def _rgba(rgb: tuple[int, int, int] | None, transparency: float) -> RGBA | None:
    if rgb is None or transparency >= 1:
        return None
    alpha = round(255 * (1 - max(transparency, 0.0)))
    return (rgb[0], rgb[1], rgb[2], alpha)


def _intersect(a: Box, b: Box) -> Box | None:
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[2] > box[0] and box[3] > box[1] else None


class Renderer:
    def __init__(self, width: float, height: float, scale: float, background: RGBA) -> None:
        self.scale = scale
        self.image = Image.new(
            "RGBA", (max(1, round(width * scale)), max(1, round(height * scale))), background
        )
        self.full: Box = (0, 0, self.image.width, self.image.height)

    def _box(self, node: Node) -> Box:
        s = self.scale
        return (node.x * s, node.y * s, (node.x + node.w) * s, (node.y + node.h) * s)

    def _layer(self, bbox: Box, clip: Box) -> tuple[Image.Image, ImageDraw.ImageDraw, int, int]:
        """A transparent layer covering bbox within clip; primitives are drawn translated."""
        area = _intersect(bbox, clip)
        assert area is not None
        ox, oy = math.floor(area[0]), math.floor(area[1])
        w, h = math.ceil(area[2]) - ox, math.ceil(area[3]) - oy
        layer = Image.new("RGBA", (max(w, 1), max(h, 1)), (0, 0, 0, 0))
        return layer, ImageDraw.Draw(layer), ox, oy

    def _composite(self, layer: Image.Image, ox: int, oy: int) -> None:
        self.image.alpha_composite(layer, dest=(ox, oy))

    def rect(
        self,
        box: Box,
        clip: Box,
        *,
        fill: RGBA | None = None,
        outline: RGBA | None = None,
        width: float = 0,
        radius: float = 0,
    ) -> None:
        if (fill is None and outline is None) or _intersect(box, clip) is None:
            return
        layer, draw, ox, oy = self._layer(box, clip)
        xy = (box[0] - ox, box[1] - oy, box[2] - ox - 1, box[3] - oy - 1)
        if xy[2] < xy[0] or xy[3] < xy[1]:
            return
        w = max(1, round(width)) if outline is not None else 0
        if radius > 0:
            draw.rounded_rectangle(xy, radius=radius, fill=fill, outline=outline, width=w)
        else:
            draw.rectangle(xy, fill=fill, outline=outline, width=w)
        self._composite(layer, ox, oy)

    def rotated(self, box: Box, degrees: float, clip: Box, fill: RGBA) -> None:
        """A filled rectangle turned `degrees` clockwise about its centre (GuiObject.Rotation)."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        hw, hh = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
        cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        corners = [
            (cx + dx * cos - dy * sin, cy + dx * sin + dy * cos)
            for dx, dy in ((-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh))
        ]
        xs, ys = [x for x, _ in corners], [y for _, y in corners]
        bbox = (min(xs), min(ys), max(xs) + 1, max(ys) + 1)
        if _intersect(bbox, clip) is None:
            return
        layer, draw, ox, oy = self._layer(bbox, clip)
        draw.polygon([(x - ox, y - oy) for x, y in corners], fill=fill)
        self._composite(layer, ox, oy)

    def cross(self, box: Box, clip: Box, color: RGBA) -> None:
        if _intersect(box, clip) is None:
            return
        layer, draw, ox, oy = self._layer(box, clip)
        x1, y1, x2, y2 = box[0] - ox, box[1] - oy, box[2] - ox - 1, box[3] - oy - 1
        draw.rectangle((x1, y1, x2, y2), outline=color, width=1)
        draw.line((x1, y1, x2, y2), fill=color, width=1)
        draw.line((x1, y2, x2, y1), fill=color, width=1)
        self._composite(layer, ox, oy)

    def text(self, node: Node, box: Box, clip: Box) -> None:
        lines = list(node.lines)
        color = _rgba(node.text_color, node.text_transparency)
        if node.class_name == "TextBox" and not node.text and node.placeholder:
            lines = node.placeholder.split("\n")
            color = _rgba(node.placeholder_color, node.text_transparency)
        if color is None or not any(lines):
            return
        s = self.scale
        pl, pr, pt, pb = (p * s for p in node.padding)
        content = (box[0] + pl, box[1] + pt, box[2] - pr, box[3] - pb)
        font = _font(round(node.text_size * s))
        line_h = (node.line_height or node.text_size) * s
        cw = content[2] - content[0]
        if node.truncate and node.truncate != "None":
            lines = [_truncate(line, font, cw) for line in lines]
        total_h = line_h * len(lines)
        if node.y_align == "Top":
            y = content[1]
        elif node.y_align == "Bottom":
            y = content[3] - total_h
        else:
            y = content[1] + (content[3] - content[1] - total_h) / 2
        if _intersect(content, clip) is None and _intersect(box, clip) is None:
            return
        # Text may overflow its box like in Roblox; only clipping ancestors cut it.
        bbox = (
            min(content[0], box[0]) - cw,
            min(y, box[1]) - line_h / 2,
            max(content[2], box[2]) + cw,
            max(y + total_h, box[3]) + line_h / 2,
        )
        if _intersect(bbox, clip) is None:
            return
        layer, draw, ox, oy = self._layer(bbox, clip)
        for line in lines:
            width = font.getlength(line)
            if node.x_align == "Left":
                x = content[0]
            elif node.x_align == "Right":
                x = content[2] - width
            else:
                x = content[0] + (cw - width) / 2
            draw.text((x - ox, y - oy + line_h / 2), line, font=font, fill=color, anchor="lm")
            y += line_h
        self._composite(layer, ox, oy)

    def node(self, node: Node, clip: Box) -> None:
        if not node.rendered:
            return
        box = self._box(node)
        s = self.scale
        radius = node.corner_radius * s
        is_root = node.class_name in ("DockWidgetPluginGui", "ScreenGui")
        turned = node.rotation % 360 != 0 and node.class_name not in _TEXT_CLASSES
        if not is_root and turned:
            # Line-chart segments: only the fill is drawn turned (no text, stroke or image).
            fill = _rgba(node.background, node.background_transparency)
            if fill is not None:
                self.rotated(box, node.rotation, clip, fill)
        elif not is_root:
            fill = _rgba(node.background, node.background_transparency)
            self.rect(box, clip, fill=fill, radius=radius)
            # Roblox draws no border on transparent backgrounds or rounded corners.
            if node.border_size > 0 and fill is not None and radius <= 0 and node.border_color:
                b = node.border_size * s
                outer = (box[0] - b, box[1] - b, box[2] + b, box[3] + b)
                self.rect(outer, clip, outline=(*node.border_color, 255), width=b)
            if node.image:
                tint = _rgba(node.image_color, node.image_transparency)
                if tint is not None:
                    self.cross(box, clip, tint)
            stroke = node.stroke
            if stroke and (stroke.mode == "Border" or node.class_name not in _TEXT_CLASSES):
                t = stroke.thickness * s
                outer = (box[0] - t, box[1] - t, box[2] + t, box[3] + t)
                color = _rgba(stroke.color, stroke.transparency)
                if color is not None:
                    self.rect(
                        outer, clip, outline=color, width=t, radius=radius + t if radius else 0
                    )
            if node.class_name in _TEXT_CLASSES:
                self.text(node, box, clip)
        child_clip: Box | None = clip
        if node.scroll is not None:
            window = (
                box[0],
                box[1],
                box[0] + node.scroll.window_w * s,
                box[1] + node.scroll.window_h * s,
            )
            child_clip = _intersect(clip, window)
        elif node.clips or is_root:
            child_clip = _intersect(clip, box)
        if child_clip is not None:
            # ZIndexBehavior.Sibling: children above their parent, ordered by ZIndex then tree order
            for child in sorted(node.children, key=lambda c: c.zindex):
                self.node(child, child_clip)
        if node.scroll is not None and node.scroll.bar:
            self._scroll_bar(node, box, clip)

    def _scroll_bar(self, node: Node, box: Box, clip: Box) -> None:
        sc = node.scroll
        assert sc is not None
        s = self.scale
        color = _rgba(sc.bar_color, sc.bar_transparency)
        if color is None or sc.canvas_h <= 0:
            return
        track_h = box[3] - box[1]
        thumb_h = max(track_h * sc.window_h / sc.canvas_h, 8 * s)
        max_scroll = max(sc.canvas_h - sc.window_h, 1)
        top = box[1] + (track_h - thumb_h) * (sc.canvas_y / max_scroll)
        x2 = box[2]
        thumb = (x2 - sc.bar_thickness * s, top, x2, top + thumb_h)
        self.rect(thumb, clip, fill=color)


def _truncate(line: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float) -> str:
    if font.getlength(line) <= width:
        return line
    while line and font.getlength(line + "…") > width:
        line = line[:-1]
    return line + "…"


def render(
    nodes: Sequence[Node], *, scale: float = 1.0, background: RGBA = (24, 24, 24, 255)
) -> Image.Image:
    """Draw root nodes (widgets/ScreenGuis) into one image as large as the largest root."""
    width = max((n.x + n.w for n in nodes), default=1)
    height = max((n.y + n.h for n in nodes), default=1)
    renderer = Renderer(width, height, scale, background)
    for n in nodes:
        renderer.node(n, renderer.full)
    return renderer.image


def render_harness(h: LuauHarness, *, root: str | None = None, scale: float = 1.0) -> Image.Image:
    """Render the enabled widget (or the root named `root`) of a harness."""
    roots = [n for n in h.tree() if n.class_name in ("DockWidgetPluginGui", "ScreenGui")]
    if root is not None:
        roots = [n for n in roots if n.name == root]
    else:
        roots = [n for n in roots if n.rendered][:1]
    if not roots:
        names = [n.name for n in h.tree()]
        which = f" named {root!r}" if root else ""
        raise HarnessError(f"nothing to render: no enabled widget{which} (roots: {names})")
    return render(roots, scale=scale)


def run_scenario(
    name: str,
    *,
    theme: str = "Dark",
    scale: float = 1.0,
    size: tuple[int, int] | None = None,
    root: str | None = None,
) -> Image.Image:
    from tools.preview_scenarios import SCENARIOS

    if name not in SCENARIOS:
        raise HarnessError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    scenario = SCENARIOS[name]
    with LuauHarness(
        Path(scenario.plugin_root), theme=theme, widget_size=size or scenario.widget_size
    ) as h:
        result = scenario.run(h)
        if inspect.isawaitable(result):
            asyncio.run(_await(result))
        return render_harness(h, root=root, scale=scale)


async def _await(awaitable: object) -> None:
    assert inspect.isawaitable(awaitable)
    await awaitable


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return (int(w), int(h))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.preview", description=__doc__.split("\n")[0]
    )
    parser.add_argument("scenario", nargs="?", help="scenario name (see --list)")
    parser.add_argument("-o", "--output", type=Path, help="PNG file to write")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--theme", default="Dark", choices=["Dark", "Light"])
    parser.add_argument("--size", type=_size, help="widget size WIDTHxHEIGHT")
    parser.add_argument("--root", help="render this widget/ScreenGui (by Name)")
    parser.add_argument("--list", action="store_true", help="list scenarios")
    args = parser.parse_args(argv)
    if args.list or not args.scenario:
        from tools.preview_scenarios import SCENARIOS

        for key in sorted(SCENARIOS):
            print(f"{key}: {SCENARIOS[key].description}")
        return 0
    if args.output is None:
        parser.error("-o/--output is required")
    try:
        image = run_scenario(
            args.scenario, theme=args.theme, scale=args.scale, size=args.size, root=args.root
        )
    except (HarnessError, LuauError) as exc:
        print(f"preview failed: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.output)
    print(f"wrote {args.output} ({image.width}x{image.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
