"""`dsm plugin build | install | preview`: turn plugin/src into a Studio plugin file.

The plugin's sources live in the checkout (plugin/src), next to server/; these commands run from
a checkout, or take `--src` pointing at a plugin source tree.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import watchfiles

from .plugin_build import PLUGIN_FILE_NAME, BuildError, BuildResult, build, write_atomic

CHECKOUT = Path(__file__).resolve().parents[2]
DEFAULT_SRC = CHECKOUT / "plugin" / "src"
DEFAULT_OUT = CHECKOUT / "build" / PLUGIN_FILE_NAME
# Editors save in bursts (temp file, rename, format-on-save); one rebuild per burst is enough.
DEBOUNCE_MS = 300


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `plugin` command to the top-level `dsm` parser."""
    parser = subparsers.add_parser(
        "plugin",
        help="build, install or preview the Studio plugin",
        description="Build the DataStore Manager Pro Studio plugin (.rbxmx) from its Luau "
        "sources, install it into Roblox Studio's Plugins folder, or render a preview.",
    )
    actions = parser.add_subparsers(dest="plugin_command", required=True, metavar="ACTION")

    build_p = actions.add_parser(
        "build",
        help="write the plugin file (.rbxmx)",
        description=f"Build the plugin into one .rbxmx file (default {DEFAULT_OUT}).",
    )
    _src_argument(build_p)
    build_p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=DEFAULT_OUT,
        metavar="PATH",
        help="where to write the plugin file (default %(default)s)",
    )
    build_p.add_argument(
        "--watch", action="store_true", help="rebuild whenever a source file changes (Ctrl+C stops)"
    )

    install_p = actions.add_parser(
        "install",
        help="build the plugin and copy it into Roblox Studio's Plugins folder",
        description="Build the plugin and put it in Studio's local Plugins folder "
        r"(Windows: %LOCALAPPDATA%\Roblox\Plugins, macOS: ~/Documents/Roblox/Plugins).",
    )
    _src_argument(install_p)

    preview_p = actions.add_parser(
        "preview",
        help="render the plugin's widget for a scenario to a PNG, without Studio",
        description="Run the widget in the Luau test harness through a scripted scenario and "
        "render it to a PNG (delegates to tools/preview.py in the checkout).",
    )
    preview_p.add_argument(
        "scenario", nargs="?", metavar="SCENARIO", help="the scenario to render (see --list)"
    )
    preview_p.add_argument("-o", "--output", type=Path, metavar="PNG", help="image to write")
    preview_p.add_argument("--theme", choices=["Dark", "Light"], help="Studio theme (default Dark)")
    preview_p.add_argument("--list", action="store_true", help="list the scenarios")


def _src_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--src",
        type=Path,
        default=DEFAULT_SRC,
        metavar="DIR",
        help="plugin source tree (default %(default)s)",
    )


def run(
    args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Execute a parsed `dsm plugin ...` command; returns the process exit code."""
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    if args.plugin_command == "build":
        if args.watch:
            return _watch_command(args.src, args.output, out, err)
        return _build_command(args.src, args.output, out, err)
    if args.plugin_command == "install":
        return install(args.src, out, err)
    if args.plugin_command == "preview":
        if args.list or args.scenario is None:
            return preview(["--list"], out, err)
        if args.output is None:
            print("error: name the image to write with -o PNG", file=err)
            return 2
        theme = ["--theme", args.theme] if args.theme else []
        return preview([args.scenario, "-o", str(args.output.resolve()), *theme], out, err)
    print(f"error: unknown plugin action {args.plugin_command}", file=err)
    return 2


def _build_command(src: Path, output: Path, out: TextIO, err: TextIO) -> int:
    try:
        result = build(src, output)
    except (BuildError, OSError) as exc:
        print(f"error: plugin not built: {exc}", file=err)
        return 1
    print(f"Built {result.summary()}", file=out)
    return 0


# -- watch ----------------------------------------------------------------------------------------


def watch_and_build(
    src: Path,
    output: Path,
    *,
    on_result: Callable[[BuildResult | Exception, list[str]], None],
    debounce_ms: int = DEBOUNCE_MS,
    stop_event: threading.Event | None = None,
) -> None:
    """Build now, then again after every burst of changes under `src`, until `stop_event` is set.

    A failed build is reported and watching goes on: the next save usually fixes it. Ctrl+C
    raises KeyboardInterrupt out of here (watchfiles re-raises it).
    """
    src = src.resolve()
    on_result(_try_build(src, output), [])
    for changes in watchfiles.watch(
        src, debounce=debounce_ms, step=min(50, debounce_ms), stop_event=stop_event
    ):
        changed = sorted({_display(Path(path), src) for _, path in changes})
        on_result(_try_build(src, output), changed)


def _display(path: Path, src: Path) -> str:
    try:
        return path.resolve().relative_to(src).as_posix()
    except ValueError:  # reported through another route to the same files
        return str(path)


def _try_build(src: Path, output: Path) -> BuildResult | Exception:
    try:
        return build(src, output)
    except (BuildError, OSError) as exc:
        return exc


def _watch_command(src: Path, output: Path, out: TextIO, err: TextIO) -> int:
    src = src.resolve()
    if not src.is_dir():
        print(f"error: plugin source directory {src} does not exist", file=err)
        return 1

    def report(result: BuildResult | Exception, changed: list[str]) -> None:
        stamp = time.strftime("%H:%M:%S")
        why = f" after changes to {', '.join(changed[:5])}" if changed else ""
        if len(changed) > 5:
            why += f" and {len(changed) - 5} more"
        if isinstance(result, Exception):
            print(f"[{stamp}] build failed{why}: {result}", file=err, flush=True)
        else:
            print(f"[{stamp}] built{why}: {result.summary()}", file=out, flush=True)

    print(f"Watching {src} for changes (Ctrl+C stops)", file=out, flush=True)
    try:
        watch_and_build(src, output, on_result=report)
    except KeyboardInterrupt:
        print("Stopped watching.", file=out)
    return 0


# -- install --------------------------------------------------------------------------------------


def plugins_dir() -> Path | None:
    """Roblox Studio's local Plugins folder on this OS, or None where Studio does not run."""
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA", "").strip()
        base = Path(local) if local else Path.home() / "AppData" / "Local"
        return base / "Roblox" / "Plugins"
    if sys.platform == "darwin":
        return Path.home() / "Documents" / "Roblox" / "Plugins"
    return None


def install(src: Path, out: TextIO, err: TextIO) -> int:
    try:
        result = build(src, DEFAULT_OUT)
    except (BuildError, OSError) as exc:
        print(f"error: plugin not built: {exc}", file=err)
        return 1
    print(f"Built {result.summary()}", file=out)
    target_dir = plugins_dir()
    if target_dir is None:
        print(
            f"error: Roblox Studio does not run on this OS ({sys.platform}), so there is no "
            f"Plugins folder to install into. The built plugin is {result.path}: copy it into "
            r"Studio's Plugins folder on Windows (%LOCALAPPDATA%\Roblox\Plugins) or macOS "
            "(~/Documents/Roblox/Plugins); in Studio, Plugins tab > Plugins Folder opens it.",
            file=err,
        )
        return 1
    if not target_dir.parent.is_dir():
        print(
            f"note: {target_dir.parent} does not exist, so Roblox Studio does not seem to be "
            "installed for this user; the plugin is put in place for when it is.",
            file=out,
        )
    target = target_dir / PLUGIN_FILE_NAME
    try:
        write_atomic(target, result.path.read_bytes())
    except OSError as exc:
        print(f"error: could not write {target}: {exc}", file=err)
        return 1
    print(
        f"Installed {target}. Restart Roblox Studio if it is open to load this version.", file=out
    )
    return 0


# -- preview --------------------------------------------------------------------------------------


def preview(arguments: list[str], out: TextIO, err: TextIO) -> int:
    """Run `python -m tools.preview ARGUMENTS` from the checkout; its exit code."""
    tool = CHECKOUT / "tools" / "preview.py"
    if not tool.is_file():
        print(
            f"error: the preview renderer ({tool}) is not in this checkout; previews "
            "need a full checkout of DataStore Manager Pro with tools/preview.py",
            file=err,
        )
        return 1
    command = [sys.executable, "-m", "tools.preview", *arguments]
    out.flush()
    # cwd = the checkout, so `-m tools.preview` imports the checkout's tools package.
    completed = subprocess.run(command, cwd=CHECKOUT, check=False)
    return completed.returncode
