"""Build the Studio plugin file (.rbxmx) from the Luau source tree, without Rojo.

File rules (Rojo's conventions; the Luau test harness loads the tree by the same rules):

    directory                        -> Folder
    directory with init.luau         -> ModuleScript (source: init.luau), the other entries its children
    directory with init.server.luau  -> Script (as below), the other entries its children
    X.luau                           -> ModuleScript "X"
    X.server.luau                    -> Script "X", RunContext Plugin (token 3), Disabled false

Files meant for another runtime are refused rather than silently left out of the plugin: `.lua`
(rename to `.luau`), `*.client.luau` and `init.client.luau` (LocalScripts never run in a plugin).
Other files (README.md, editor droppings) and hidden entries are skipped.

What Studio expects of a local plugin file, and the layout chosen:
- Studio loads each model file (.rbxm / .rbxmx) in its Plugins folder as one plugin: it searches
  the model for Script objects that are not disabled and runs each with the `plugin` global set;
  LocalScripts are not run (Roblox's notes introducing model-file plugins; "Save as Local
  Plugin" writes the same kind of file). Rojo's own plugin ships the same way: a Folder root
  holding the entry Script and its modules (rojo's plugin.project.json).
- So the root is plugin/src itself, a Folder named `DataStoreManagerPro`: Main.server.luau
  becomes the entry Script and its sibling modules stay its siblings, which is what
  `require("./App")` in the entry resolves against (a string require resolves relative to the
  requiring script's parent; `@self` to the script itself). A root with init.luau or
  init.server.luau would make the root itself the script, following the rules above.
- RunContext Plugin states the Script's purpose instead of relying on Legacy container rules.
- A tree without any Script would load as a plugin that silently does nothing, so it is an error.
- Static string requires (`require("./App")`) become `script.Parent` chains in the file
  (plugin_requires.py): no first-party plugin is known to rely on require-by-string inside a plugin
  model, and the paths are static. A require that leads nowhere stops the build.

The XML follows the Roblox XML model format version 4 as Rojo/rbx_xml write it: `<roblox
version="4">`, `<Item class referent>` with one `<Properties>` then child Items; Source is a
`ProtectedString` in CDATA (`]]>` split across two sections). XML parsers turn CR into LF even
inside CDATA, so each CR is written as the character reference `&#13;` between CDATA sections,
which keeps sources byte-identical. Referents are "RBX" + a UUID derived from the file's path,
so rebuilding an unchanged tree gives the same bytes.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from .plugin_requires import Node, RequireError, rewrite_requires

ROOT_NAME = "DataStoreManagerPro"
PLUGIN_FILE_NAME = f"{ROOT_NAME}.rbxmx"
RUN_CONTEXT_PLUGIN = 3  # Enum.RunContext.Plugin

_MODULE_SUFFIX = ".luau"
_SCRIPT_SUFFIX = ".server.luau"
_LOCAL_SCRIPT_SUFFIX = ".client.luau"
_REFERENT_NAMESPACE = uuid.UUID("6f1c2b1e-8a51-4d7e-9a55-0c3f0d1b2a7e")
# Characters XML 1.0 cannot carry at all (not even as character references).
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class BuildError(Exception):
    """The source tree cannot become a plugin file; the message names the file and the fix."""


@dataclass(frozen=True)
class Instance:
    """One Roblox instance of the plugin model; `rel` is its source path relative to the root."""

    class_name: str
    name: str
    rel: str
    source: str | None = None
    children: tuple[Instance, ...] = field(default=())

    def walk(self) -> list[Instance]:
        """This instance and all its descendants, depth first."""
        found = [self]
        for child in self.children:
            found.extend(child.walk())
        return found


@dataclass(frozen=True)
class BuildResult:
    path: Path
    scripts: int
    modules: int
    folders: int
    size: int

    def summary(self) -> str:
        return (
            f"{self.path} ({_count(self.scripts, 'script')}, {_count(self.modules, 'module')}, "
            f"{_count(self.folders, 'folder')}, {self.size / 1024:.1f} KiB)"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# -- source tree -> instance tree -----------------------------------------------------------------


def read_tree(src: Path, root_name: str = ROOT_NAME) -> Instance:
    """Read `src` into an instance tree following the file rules; raises BuildError."""
    if not src.is_dir():
        raise BuildError(f"plugin source directory {src} does not exist")
    root = _read_dir(src, src, root_name)
    if not any(item.class_name == "Script" for item in root.walk()):
        raise BuildError(
            f"{src} has no entry script (a *.server.luau file); Studio would load a plugin that "
            "never runs"
        )
    return root


def _read_dir(src: Path, directory: Path, name: str) -> Instance:
    rel = directory.relative_to(src).as_posix()
    entries = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    init: Path | None = None
    children: list[Instance] = []
    for path in entries:
        if path.is_dir():
            children.append(_read_dir(src, path, path.name))
            continue
        if path.name in ("init.luau", "init.server.luau"):
            if init is not None:
                raise BuildError(f"{directory}: both {init.name} and {path.name}; keep one of them")
            init = path
            continue
        child = _read_file(src, path)
        if child is not None:
            children.append(child)
    _refuse_duplicates(directory, children)
    if init is None:
        return Instance("Folder", name, rel, children=tuple(children))
    class_name = "Script" if init.name == "init.server.luau" else "ModuleScript"
    return Instance(class_name, name, rel, _read_source(src, init), tuple(children))


def _read_file(src: Path, path: Path) -> Instance | None:
    file_name = path.name
    if file_name == "init.client.luau" or file_name.endswith(_LOCAL_SCRIPT_SUFFIX):
        raise BuildError(
            f"{path}: LocalScripts (*.client.luau) never run in a Studio plugin; use a "
            "ModuleScript (X.luau) or the entry Script (X.server.luau)"
        )
    if file_name.endswith(".lua"):
        raise BuildError(f"{path}: plugin sources use the .luau extension; rename it")
    rel = path.relative_to(src).as_posix()
    if file_name.endswith(_SCRIPT_SUFFIX):
        stem = file_name.removesuffix(_SCRIPT_SUFFIX)
        return Instance("Script", stem, rel, _read_source(src, path))
    if file_name.endswith(_MODULE_SUFFIX):
        stem = file_name.removesuffix(_MODULE_SUFFIX)
        return Instance("ModuleScript", stem, rel, _read_source(src, path))
    return None  # not plugin code (README.md, .DS_Store ...)


def _refuse_duplicates(directory: Path, children: list[Instance]) -> None:
    seen: dict[str, Instance] = {}
    for child in children:
        other = seen.get(child.name)
        if other is not None:
            raise BuildError(
                f"{directory}: {other.rel} and {child.rel} both become an instance named "
                f"{child.name!r}; a require could only ever reach one of them"
            )
        seen[child.name] = child


def _read_source(src: Path, path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BuildError(
            f"{path}: not UTF-8 text (invalid byte at offset {exc.start}); save it as UTF-8"
        ) from None
    _refuse_xml_illegal(path, text)
    return text


def _refuse_xml_illegal(path: Path | str, text: str) -> None:
    bad = _XML_ILLEGAL.search(text)
    if bad is None:
        return
    line = text.count("\n", 0, bad.start()) + 1
    column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
    raise BuildError(
        f"{path}:{line}:{column}: character U+{ord(bad.group()):04X} cannot be stored in an "
        "rbxmx file; write it as an escape in the string (e.g. \\x01 or \\u{1})"
    )


def with_instance_requires(root: Instance) -> Instance:
    """The tree with every static string require rewritten into a `script.Parent` chain."""

    def index(item: Instance, parent: Node | None) -> Node:
        node = Node(item.class_name, item.name, parent, {})
        for child in item.children:
            node.children[child.name] = index(child, node)
        return node

    def rewrite(item: Instance, node: Node) -> Instance:
        source = item.source
        if source is not None:
            try:
                source = rewrite_requires(source, node)
            except RequireError as exc:
                raise BuildError(f"{item.rel or item.name}: {exc}") from None
        children = tuple(rewrite(c, node.children[c.name]) for c in item.children)
        return Instance(item.class_name, item.name, item.rel, source, children)

    return rewrite(root, index(root, None))


# -- instance tree -> XML -------------------------------------------------------------------------


def referent(rel: str) -> str:
    """Roblox-style referent ("RBX" + 32 hex digits), stable for a given source path."""
    return "RBX" + uuid.uuid5(_REFERENT_NAMESPACE, rel).hex.upper()


def _cdata(text: str) -> str:
    pieces: list[str] = []
    for index, chunk in enumerate(text.split("\r")):
        if index:
            pieces.append("&#13;")
        if chunk:
            pieces.append("<![CDATA[" + chunk.replace("]]>", "]]]]><![CDATA[>") + "]]>")
    return "".join(pieces)


def _write_item(item: Instance, depth: int, out: list[str]) -> None:
    pad = "\t" * depth
    _refuse_xml_illegal(item.rel or item.name, item.name)
    out.append(f'{pad}<Item class={quoteattr(item.class_name)} referent="{referent(item.rel)}">')
    out.append(f"{pad}\t<Properties>")
    out.append(f'{pad}\t\t<string name="Name">{escape(item.name)}</string>')
    if item.class_name == "Script":
        out.append(f'{pad}\t\t<bool name="Disabled">false</bool>')
        out.append(f'{pad}\t\t<token name="RunContext">{RUN_CONTEXT_PLUGIN}</token>')
    if item.source is not None:
        out.append(
            f'{pad}\t\t<ProtectedString name="Source">{_cdata(item.source)}</ProtectedString>'
        )
    out.append(f"{pad}\t</Properties>")
    for child in item.children:
        _write_item(child, depth + 1, out)
    out.append(f"{pad}</Item>")


def to_rbxmx(root: Instance) -> str:
    """The .rbxmx document for the instance tree rooted at `root`."""
    out = ['<roblox version="4">']
    _write_item(root, 1, out)
    out.append("</roblox>")
    return "\n".join(out) + "\n"


def build(src: Path, out: Path, root_name: str = ROOT_NAME) -> BuildResult:
    """Build `src` into the plugin file `out`, replacing it atomically.

    Atomic because Studio may be watching its Plugins folder: it must never read half a file.
    """
    src = src.resolve()
    out = out.resolve()
    if out.is_relative_to(src):
        raise BuildError(f"the output {out} must not be inside the source tree {src}")
    root = with_instance_requires(read_tree(src, root_name))
    data = to_rbxmx(root).encode("utf-8")
    write_atomic(out, data)
    kinds = [item.class_name for item in root.walk()]
    return BuildResult(
        path=out,
        scripts=kinds.count("Script"),
        modules=kinds.count("ModuleScript"),
        folders=kinds.count("Folder"),
        size=len(data),
    )


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary sibling and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temp_name, 0o644)  # mkstemp makes it owner-only; a plugin file is not secret
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
