"""Read a Luau source directory with Rojo's file rules, or a built plugin file (.rbxmx).

- a directory is a Folder; a directory containing init.luau is a ModuleScript (the init file's
  source) whose children are the directory's other entries (init.server.luau: a Script);
- X.luau is a ModuleScript "X", X.server.luau a Script "X", X.client.luau a LocalScript "X";
- other files are ignored (README, .json...), as are hidden entries.
- a .rbxmx model file (what `dsm plugin build` writes) gives its Folder/ModuleScript/Script items
  with their Source text, so tests can run exactly what Studio would load.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

_SUFFIXES = (
    (".server.luau", "Script"),
    (".client.luau", "LocalScript"),
    (".luau", "ModuleScript"),
    (".server.lua", "Script"),
    (".client.lua", "LocalScript"),
    (".lua", "ModuleScript"),
)
_INIT_NAMES = {
    "init.luau": "ModuleScript",
    "init.lua": "ModuleScript",
    "init.server.luau": "Script",
    "init.client.luau": "LocalScript",
}


@dataclass
class SourceNode:
    class_name: str  # Folder, ModuleScript, Script, LocalScript
    name: str
    path: (
        Path | None
    )  # the source file (for a .rbxmx item: file path + instance path); None for a Folder
    children: list[SourceNode] = field(default_factory=list)
    text: str | None = None  # the source itself when it does not come from `path` (.rbxmx)


def classify(file_name: str) -> tuple[str, str] | None:
    """(class, instance name) for a source file name, None when it is not Luau source."""
    for suffix, class_name in _SUFFIXES:
        if file_name.endswith(suffix) and len(file_name) > len(suffix):
            return class_name, file_name[: -len(suffix)]
    return None


_SCRIPT_CLASSES = {"Folder", "ModuleScript", "Script", "LocalScript"}


def load_rbxmx(path: Path) -> SourceNode:
    """The instance tree of a Roblox XML model file with one root item of script classes."""
    items = ET.parse(path).getroot().findall("Item")
    if len(items) != 1:
        raise ValueError(f"{path}: expected one root item, found {len(items)}")

    def node(item: ET.Element, where: Path) -> SourceNode:
        class_name = item.get("class", "")
        if class_name not in _SCRIPT_CLASSES:
            raise ValueError(f"{where}: {class_name} items are not supported by the harness")
        props = {p.get("name"): p for p in item.findall("Properties/*")}
        name = props["Name"].text or ""
        here = where / name
        source = props.get("Source")
        text = None if class_name == "Folder" else (source.text or "" if source is not None else "")
        result = SourceNode(class_name, name, here if text is not None else None, text=text)
        result.children = [node(child, here) for child in item.findall("Item")]
        return result

    return node(items[0], path)


def load_tree(path: Path, name: str | None = None) -> SourceNode:
    """The instance tree for a directory, a single source file or a .rbxmx model file."""
    path = path.resolve()
    if path.is_file() and path.suffix == ".rbxmx":
        return load_rbxmx(path)
    if path.is_file():
        kind = classify(path.name)
        if kind is None:
            raise ValueError(f"{path} is not a Luau source file (.luau/.lua)")
        return SourceNode(kind[0], name or kind[1], path)
    if not path.is_dir():
        raise FileNotFoundError(f"Luau source directory not found: {path}")
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    init = next((p for p in entries if p.name in _INIT_NAMES), None)
    node = SourceNode(
        _INIT_NAMES[init.name] if init else "Folder", name or path.name, init if init else None
    )
    seen: dict[str, Path] = {}
    for entry in entries:
        if entry == init:
            continue
        child: SourceNode | None
        if entry.is_dir():
            child = load_tree(entry)
        else:
            kind = classify(entry.name)
            child = SourceNode(kind[0], kind[1], entry) if kind else None
        if child is None:
            continue
        if child.name in seen:
            raise ValueError(
                f"two entries map to the instance name {child.name!r}: {seen[child.name]} and {entry}"
            )
        seen[child.name] = entry
        node.children.append(child)
    return node


def chunk_label(path: Path) -> str:
    """The name Luau error messages show for a file: relative to the working directory when the
    file is below it (plugin/src/Core/Json.luau), absolute otherwise."""
    try:
        return os.path.relpath(path, Path.cwd()) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)
