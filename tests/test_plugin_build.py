"""`dsm plugin build | install | preview`: the .rbxmx builder and its command line.

The real plugin/src tree is built and read back with ElementTree: what Studio would load must
hold exactly the bytes of every source file, under the instance classes the file rules give,
except that each static string require has become the `script.Parent` chain it names (and the
built file is run through the Luau harness with those requires).
"""

from __future__ import annotations

import argparse
import io
import queue
import re
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pluau  # type: ignore[import-untyped]
import pytest

from dsm import cli_plugin
from dsm.plugin_build import (
    PLUGIN_FILE_NAME,
    RUN_CONTEXT_PLUGIN,
    BuildError,
    BuildResult,
    build,
)
from dsm.plugin_requires import SHADOWING_MEMBERS
from tools.luau_harness import LuauHarness, to_python
from tools.luau_harness.roblox_api import load as load_roblox_api
from tools.preview_plugin_scenarios import free_port

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_SRC = ROOT / "plugin" / "src"

TRICKY_SOURCE = (
    '--!strict\r\nlocal s = "]]>" .. "]]]]>" .. [[ a ]] .. "<tag> & &amp;"\r\n'
    'local t = "ünïcødé 日本語 🎉 — «»"\r\n\r\n'
    "return { s = s, t = t, cr = '\\r' }\n"
)


@dataclass
class Parsed:
    class_name: str
    name: str
    referent: str
    props: dict[str, ET.Element]
    children: list[Parsed]

    @property
    def source(self) -> str | None:
        element = self.props.get("Source")
        return None if element is None else (element.text or "")

    def child(self, name: str) -> Parsed:
        matches = [c for c in self.children if c.name == name]
        assert len(matches) == 1, f"{self.name} has {len(matches)} children named {name!r}"
        return matches[0]

    def walk(self) -> list[Parsed]:
        found = [self]
        for c in self.children:
            found.extend(c.walk())
        return found


def parse_rbxmx(path: Path) -> Parsed:
    document = ET.parse(path).getroot()
    assert document.tag == "roblox" and document.get("version") == "4"
    items = document.findall("Item")
    assert len(items) == 1, "a plugin file has one root instance"
    return _parse_item(items[0])


def _parse_item(item: ET.Element) -> Parsed:
    properties = item.findall("Properties")
    assert len(properties) == 1
    props = {p.get("name", ""): p for p in properties[0]}
    children = [_parse_item(c) for c in item.findall("Item")]
    assert {c.tag for c in item} <= {"Properties", "Item"}
    return Parsed(
        class_name=item.get("class", ""),
        name=props["Name"].text or "",
        referent=item.get("referent", ""),
        props=props,
        children=children,
    )


def expected_files(src: Path) -> dict[tuple[str, ...], tuple[str, Path]]:
    """Instance path (names from the root's children down) -> (class, source file), per the rules."""
    found: dict[tuple[str, ...], tuple[str, Path]] = {}
    for path in sorted(src.rglob("*.luau")):
        rel = path.relative_to(src)
        if any(part.startswith(".") for part in rel.parts):
            continue
        parent = rel.parts[:-1]
        if path.name == "init.luau":
            found[parent] = ("ModuleScript", path)
        elif path.name == "init.server.luau":
            found[parent] = ("Script", path)
        elif path.name.endswith(".server.luau"):
            found[(*parent, path.name.removesuffix(".server.luau"))] = ("Script", path)
        else:
            found[(*parent, path.name.removesuffix(".luau"))] = ("ModuleScript", path)
    return found


def instance_paths(root: Parsed) -> dict[tuple[str, ...], Parsed]:
    paths: dict[tuple[str, ...], Parsed] = {}

    def visit(item: Parsed, prefix: tuple[str, ...]) -> None:
        paths[prefix] = item
        for c in item.children:
            visit(c, (*prefix, c.name))

    visit(root, ())
    return paths


_STRING_REQUIRE_ARG = re.compile(r"""require(\s*\(\s*"[^"\\]*"\s*\)|\s*"[^"\\]*")""")
_CHAIN_REQUIRE_ARG = re.compile(
    r"""require(\s*)\(script(?:\.Parent)*(?:\.[A-Za-z_]\w*|:FindFirstChild\("[^"]*"\))*\)"""
)


def without_require_arguments(text: str, built: bool) -> str:
    """The text with the argument of each static require blanked (string path in a source file,
    instance chain in the built file), to compare everything else byte for byte."""
    if built:
        return _CHAIN_REQUIRE_ARG.sub(lambda m: "require" + m.group(1) + "(?)", text)
    return _STRING_REQUIRE_ARG.sub(
        lambda m: "require" + m.group(1)[: len(m.group(1)) - len(m.group(1).lstrip())] + "(?)",
        text,
    )


def assert_matches_tree(src: Path, root: Parsed) -> None:
    """Every Luau file is one instance of the right class holding its exact bytes (but for the
    arguments of its static requires, now instance chains); nothing else."""
    expected = expected_files(src)
    built = instance_paths(root)
    for where, (class_name, path) in expected.items():
        item = built.get(where)
        assert item is not None, f"{path} is missing from the plugin file"
        assert item.class_name == class_name, f"{path}: {item.class_name}, expected {class_name}"
        assert item.source is not None
        original = path.read_bytes().decode("utf-8")
        assert not _STRING_REQUIRE_ARG.search(item.source), f"{path}: a string require is left"
        assert without_require_arguments(item.source, built=True) == without_require_arguments(
            original, built=False
        ), f"{path} changed in the build beyond its requires"
    for where, item in built.items():
        if where not in expected:
            assert item.class_name == "Folder", f"{'/'.join(where)}: unexpected {item.class_name}"
            assert item.source is None
            assert (src.joinpath(*where)).is_dir()


# -- the real plugin tree ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[BuildResult, Parsed]:
    out = tmp_path_factory.mktemp("plugin") / PLUGIN_FILE_NAME
    result = build(PLUGIN_SRC, out)
    return result, parse_rbxmx(out)


def test_real_tree_builds_to_a_folder_with_an_entry_script(
    real_build: tuple[BuildResult, Parsed],
) -> None:
    result, root = real_build
    assert root.class_name == "Folder" and root.name == "DataStoreManagerPro"
    scripts = [item for item in root.walk() if item.class_name == "Script"]
    assert scripts, "the plugin has no entry Script"
    for script in scripts:
        assert script.props["Disabled"].tag == "bool" and script.props["Disabled"].text == "false"
        run_context = script.props["RunContext"]
        assert run_context.tag == "token" and run_context.text == str(RUN_CONTEXT_PLUGIN)
    assert result.scripts == len(scripts)
    assert result.size == result.path.stat().st_size


def test_real_tree_referents_are_unique_and_roblox_shaped(
    real_build: tuple[BuildResult, Parsed],
) -> None:
    _, root = real_build
    referents = [item.referent for item in root.walk()]
    assert len(referents) == len(set(referents))
    for ref in referents:
        assert ref.startswith("RBX") and len(ref) == 35 and ref != "null"
        int(ref[3:], 16)


def test_real_tree_sources_round_trip_byte_identically(
    real_build: tuple[BuildResult, Parsed],
) -> None:
    _, root = real_build
    assert_matches_tree(PLUGIN_SRC, root)


def test_real_tree_includes_the_generated_protocol_module(
    real_build: tuple[BuildResult, Parsed],
) -> None:
    _, root = real_build
    protocol = root.child("Protocol")
    assert protocol.class_name == "ModuleScript"
    assert "generated by tools/codegen.py" in (protocol.source or "")
    assert protocol.source == (PLUGIN_SRC / "Protocol.luau").read_text(encoding="utf-8")


def test_every_built_source_compiles(real_build: tuple[BuildResult, Parsed]) -> None:
    _, root = real_build
    compiler = pluau.Compiler(1, 1, 0, 0)
    sources = [item for item in root.walk() if item.source is not None]
    assert sources
    for item in sources:
        try:
            compiler.compile(item.source)
        except RuntimeError as exc:
            pytest.fail(f"{item.name} ({item.class_name}) does not compile: {exc}")


_REQUIRE = re.compile(r'require\(\s*"([^"]+)"\s*\)')


def test_every_string_require_resolves_in_the_built_file(
    real_build: tuple[BuildResult, Parsed],
) -> None:
    """What Studio resolves: `./` and `../` from the script's parent, `@self/` from the script."""
    _, root = real_build
    paths = instance_paths(root)
    sources = {
        where: file.read_text("utf-8") for where, (_, file) in expected_files(PLUGIN_SRC).items()
    }
    problems = []
    for where, text in sources.items():
        for line in text.splitlines():
            for match in _REQUIRE.finditer(line):
                if "--" in line[: match.start()]:
                    continue  # commented out
                target = _resolve(where, match.group(1))
                if target is None or paths.get(target) is None:
                    problems.append(f"{'/'.join(where)}: require({match.group(1)!r})")
                elif paths[target].class_name != "ModuleScript":
                    problems.append(f"{'/'.join(where)}: {match.group(1)!r} is not a ModuleScript")
    assert not problems, "requires that Studio could not resolve:\n" + "\n".join(problems)


_CHAIN = re.compile(
    r"""require\(script((?:\.Parent)*)((?:\.[A-Za-z_]\w*|:FindFirstChild\("[^"]*"\))*)\)"""
)
_CHAIN_STEP = re.compile(r"""\.([A-Za-z_]\w*)|:FindFirstChild\("([^"]*)"\)""")


def _resolve_chain(where: tuple[str, ...], parents: str, steps: str) -> tuple[str, ...] | None:
    base = list(where)
    for _ in range(parents.count(".Parent")):
        if not base:
            return None
        base.pop()
    for step in _CHAIN_STEP.finditer(steps):
        base.append(step.group(1) or step.group(2))
    return tuple(base)


def test_built_requires_are_instance_chains_to_the_same_modules(
    real_build: tuple[BuildResult, Parsed],
) -> None:
    """Each string require became a `script.Parent...` chain naming the very module it named."""
    _, root = real_build
    paths = instance_paths(root)
    checked = 0
    for where, (_, file) in expected_files(PLUGIN_SRC).items():
        built = paths[where].source or ""
        wanted = [_resolve(where, m.group(1)) for m in _REQUIRE.finditer(file.read_text("utf-8"))]
        got = [_resolve_chain(where, m.group(1), m.group(2)) for m in _CHAIN.finditer(built)]
        assert got == wanted, f"{'/'.join(where)}: the requires changed targets"
        assert all(paths[t].class_name == "ModuleScript" for t in got if t is not None)
        checked += len(got)
    assert checked > 100, "the plugin's modules require each other by string"


def _resolve(where: tuple[str, ...], spec: str) -> tuple[str, ...] | None:
    parts = spec.split("/")
    if parts[0] == "@self":
        base = list(where)
    elif parts[0] in (".", ".."):
        base = list(where[:-1])
    else:
        return None  # aliases other than @self are not configured for this plugin
    for part in parts[1:] if parts[0] != ".." else parts:
        if part == "..":
            if not base:
                return None
            base.pop()
        elif part not in (".", ""):
            base.append(part)
    return tuple(base)


# -- file rules on a small tree ------------------------------------------------------------------


def make_tree(src: Path) -> Path:
    files = {
        "Main.server.luau": 'local App = require("./App")\nApp.start(plugin)\n',
        "App.luau": "return { start = function(_p) end }\n",
        "Net/Client.luau": "return {}\n",
        "Net/Tricky.luau": TRICKY_SOURCE,
        "Widget/init.luau": 'local Button = require("@self/Button")\nreturn { Button = Button }\n',
        "Widget/Button.luau": "return {}\n",
        "Widget/Parts/Icon.luau": "",
        "README.md": "not plugin code\n",
        ".hidden.luau": "error('never bundled')\n",
    }
    for rel, text in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    (src / "Empty").mkdir()
    return src


def test_file_rules(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    result = build(src, tmp_path / "out" / "Plugin.rbxmx")
    root = parse_rbxmx(result.path)
    assert root.class_name == "Folder" and root.source is None
    assert sorted(c.name for c in root.children) == ["App", "Empty", "Main", "Net", "Widget"]
    main = root.child("Main")
    assert main.class_name == "Script" and main.props["RunContext"].text == "3"
    assert root.child("App").class_name == "ModuleScript"
    net = root.child("Net")
    assert net.class_name == "Folder" and "Source" not in net.props
    assert [c.name for c in net.children] == ["Client", "Tricky"]
    widget = root.child("Widget")
    assert widget.class_name == "ModuleScript"
    # its string require became the instance path it names (see the require tests below)
    assert widget.source == "local Button = require(script.Button)\nreturn { Button = Button }\n"
    assert sorted(c.name for c in widget.children) == ["Button", "Parts"]
    assert widget.child("Parts").child("Icon").source == ""
    assert root.child("Empty").class_name == "Folder" and root.child("Empty").children == []
    assert (result.scripts, result.modules, result.folders) == (1, 6, 4)
    assert_matches_tree(src, root)


def test_cdata_terminators_cr_and_non_ascii_survive(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    out = build(src, tmp_path / "Plugin.rbxmx").path
    tricky = parse_rbxmx(out).child("Net").child("Tricky")
    assert tricky.source is not None
    assert tricky.source.encode("utf-8") == TRICKY_SOURCE.encode("utf-8")
    assert "\r\n" in tricky.source and "]]>" in tricky.source and "🎉" in tricky.source
    pluau.Compiler(1, 1, 0, 0).compile(tricky.source)


def test_init_server_luau_makes_the_directory_a_script(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "Lib").mkdir(parents=True)
    (src / "init.server.luau").write_text('require("@self/Lib/Util")\n', encoding="utf-8")
    (src / "Lib" / "Util.luau").write_text("return 1\n", encoding="utf-8")
    root = parse_rbxmx(build(src, tmp_path / "P.rbxmx").path)
    assert root.class_name == "Script" and root.name == "DataStoreManagerPro"
    assert root.props["RunContext"].text == "3"
    assert root.child("Lib").child("Util").class_name == "ModuleScript"


def test_rebuilding_an_unchanged_tree_gives_identical_bytes(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    first = build(src, tmp_path / "a.rbxmx").path.read_bytes()
    second = build(src, tmp_path / "b.rbxmx").path.read_bytes()
    assert first == second
    assert not list(tmp_path.glob("*.partial")), "the temporary file is left behind"


@pytest.mark.parametrize(
    ("rel", "content", "message"),
    [
        ("Old.lua", b"return 1\n", "rename it"),
        ("Gui.client.luau", b"return 1\n", "LocalScripts"),
        ("Net.luau", b"return 1\n", "both become an instance named 'Net'"),
        ("Latin1.luau", "-- café\n".encode("latin-1"), "not UTF-8"),
        ("Ctrl.luau", b'local s = "\x01"\n', "Ctrl.luau:1:12: character U+0001"),
        ("Widget/init.server.luau", b"\n", "both init.luau and init.server.luau"),
    ],
)
def test_refuses_trees_studio_would_load_wrongly(
    tmp_path: Path, rel: str, content: bytes, message: str
) -> None:
    src = make_tree(tmp_path / "src")
    (src / rel).write_bytes(content)
    with pytest.raises(BuildError, match=message.replace("(", r"\(").replace("+", r"\+")):
        build(src, tmp_path / "P.rbxmx")
    assert not (tmp_path / "P.rbxmx").exists()


def test_refuses_a_tree_without_an_entry_script(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    (src / "Main.server.luau").unlink()
    with pytest.raises(BuildError, match="no entry script"):
        build(src, tmp_path / "P.rbxmx")


def test_refuses_output_inside_the_source_tree(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    with pytest.raises(BuildError, match="must not be inside the source tree"):
        build(src, src / "P.rbxmx")


# -- static string requires become instance chains ----------------------------------------------

REQUIRE_FORMS = """--!strict
local A = require("./Lib/A")
local B = require "../Shared"
local C = require ( './Lib/Odd name' )
local D = require("@self/Inner")
local E = require("./Lib/Name") -- a child named like a member: FindFirstChild
-- require("./Missing") in a comment stays as it is
--[==[ require("./Missing") ]==]
local s = "require('./Missing')"
local long = [[require("./Missing")]]
local path = "./Lib/A"
local dynamic = require(path)
local t = {}
t.require = function(x) return x end
local notGlobal = t.require("./Missing")
local z = `{require("./Lib/A")}`
return { A, B, C, D, E, s, long, dynamic, notGlobal, z }
"""


def require_tree(src: Path) -> Path:
    files = {
        "Main.server.luau": 'require("./Pkg/Mod")\n',
        "Shared.luau": "return 'shared'\n",
        "Pkg/Mod/init.luau": REQUIRE_FORMS,
        "Pkg/Mod/Inner.luau": "return 'inner'\n",
        "Pkg/Lib/A.luau": "return 'a'\n",
        "Pkg/Lib/Odd name.luau": "return 'odd'\n",
        "Pkg/Lib/Name.luau": "return 'name'\n",
    }
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text, encoding="utf-8")
    return src


def test_static_string_requires_become_script_parent_chains(tmp_path: Path) -> None:
    src = require_tree(tmp_path / "src")
    root = parse_rbxmx(build(src, tmp_path / "P.rbxmx").path)
    module = root.child("Pkg").child("Mod").source or ""
    # init.luau (the Mod ModuleScript): "./" is the folder holding Mod, as the harness resolves it
    assert "local A = require(script.Parent.Lib.A)" in module
    assert "local B = require (script.Parent.Parent.Shared)" in module
    assert """local C = require ( script.Parent.Lib:FindFirstChild("Odd name") )""" not in module
    assert """local C = require (script.Parent.Lib:FindFirstChild("Odd name"))""" in module
    assert "local D = require(script.Inner)" in module
    assert """local E = require(script.Parent.Lib:FindFirstChild("Name"))""" in module
    # comments, strings, dynamic and non-global requires are untouched
    assert module.count('"./Missing"') == 4 and "'./Missing'" in module
    assert "require(path)" in module
    assert 'require("./Lib/A")}`' in module
    assert root.child("Main").source == "require(script.Parent.Pkg.Mod)\n"
    pluau.Compiler(1, 1, 0, 0).compile(module)


@pytest.mark.parametrize(
    ("require", "message"),
    [
        (
            'require("./Nope")',
            r'Main\.server\.luau: line 2: require\("\./Nope"\): .* no child named "Nope"',
        ),
        ('require("./Shared")', "Shared is a Folder"),
        ('require("Shared")', 'must start with "./", "../" or "@self/"'),
        ('require("../../../x")', "leaves the plugin"),
    ],
)
def test_a_require_that_leads_nowhere_stops_the_build(
    tmp_path: Path, require: str, message: str
) -> None:
    src = tmp_path / "src"
    (src / "Shared").mkdir(parents=True)
    (src / "Main.server.luau").write_text("--!strict\n" + require + "\n", encoding="utf-8")
    with pytest.raises(BuildError, match=message):
        build(src, tmp_path / "P.rbxmx")
    assert not (tmp_path / "P.rbxmx").exists()


def test_the_shadowing_names_are_the_members_roblox_gives_scripts_and_folders() -> None:
    api = load_roblox_api()
    members = set().union(*(api.member_names(c) for c in ("Folder", "ModuleScript", "Script")))
    assert members == SHADOWING_MEMBERS


def test_the_built_plugin_runs_in_the_harness_with_instance_requires(
    real_build: tuple[BuildResult, Parsed],
) -> None:
    """Load the .rbxmx itself (not plugin/src) into the Luau harness and start it as Studio
    would: every module is reached through the rewritten `script.Parent` requires."""
    result, root = real_build
    assert not any(_STRING_REQUIRE_ARG.search(item.source or "") for item in root.walk()), (
        "the built file still has string requires"
    )
    with LuauHarness(result.path, settings={"DataStoreManagerPro.serverPort": free_port()}) as h:
        h.run_scripts()
        assert h.widget("DataStoreManagerPro").get("Enabled") is True  # opens by default
        assert any("The server is not running" in t for t in h.texts()), h.texts()
        json = h.require("Core/Json")
        assert to_python(h.call(json.get("minify"), "[ 1 , 2 ]")[0]) == "[1,2]"
        h.unload_plugin()
        h.run_until_idle(limit=30)
        assert h.errors == []


# -- command line --------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="dsm")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_plugin.register(sub)
    args = parser.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    code = cli_plugin.run(args, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_build_command_writes_the_file(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    code, out, err = run_cli(
        ["plugin", "build", "--src", str(src), "-o", str(tmp_path / "x.rbxmx")]
    )
    assert code == 0, err
    assert "Built" in out and "1 script" in out
    parse_rbxmx(tmp_path / "x.rbxmx")


def test_build_command_reports_errors_plainly(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    (src / "Old.lua").write_text("return 1\n", encoding="utf-8")
    code, _, err = run_cli(["plugin", "build", "--src", str(src), "-o", str(tmp_path / "x.rbxmx")])
    assert code == 1
    assert err.startswith("error: plugin not built:") and "Old.lua" in err


@pytest.fixture
def built_to_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`dsm plugin install` builds to DEFAULT_OUT first; keep that in tmp."""
    monkeypatch.setattr(cli_plugin, "DEFAULT_OUT", tmp_path / "build" / PLUGIN_FILE_NAME)
    return make_tree(tmp_path / "src")


def test_install_on_windows_uses_localappdata(
    built_to_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    local = tmp_path / "AppData" / "Local"
    (local / "Roblox").mkdir(parents=True)
    monkeypatch.setenv("LOCALAPPDATA", str(local))
    assert cli_plugin.plugins_dir() == local / "Roblox" / "Plugins"
    code, out, err = run_cli(["plugin", "install", "--src", str(built_to_tmp)])
    assert code == 0, err
    installed = local / "Roblox" / "Plugins" / PLUGIN_FILE_NAME
    assert installed.read_bytes() == cli_plugin.DEFAULT_OUT.read_bytes()
    assert f"Installed {installed}" in out and "does not seem to be installed" not in out


def test_install_on_windows_without_localappdata_uses_the_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.delenv("LOCALAPPDATA", raising=False)
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path))
    assert cli_plugin.plugins_dir() == tmp_path / "AppData" / "Local" / "Roblox" / "Plugins"


def test_install_on_macos_uses_documents(
    built_to_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    assert cli_plugin.plugins_dir() == home / "Documents" / "Roblox" / "Plugins"
    code, out, err = run_cli(["plugin", "install", "--src", str(built_to_tmp)])
    assert code == 0, err
    assert (home / "Documents" / "Roblox" / "Plugins" / PLUGIN_FILE_NAME).is_file()
    # No ~/Documents/Roblox yet: Studio was never run for this user, and the output says so.
    assert "does not seem to be installed" in out


@pytest.mark.parametrize("platform", ["linux", "freebsd14"])
def test_install_elsewhere_explains_and_points_at_the_built_file(
    built_to_tmp: Path, monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    assert cli_plugin.plugins_dir() is None
    code, out, err = run_cli(["plugin", "install", "--src", str(built_to_tmp)])
    assert code == 1
    assert "Built" in out and cli_plugin.DEFAULT_OUT.is_file()
    assert f"Roblox Studio does not run on this OS ({platform})" in err
    assert str(cli_plugin.DEFAULT_OUT) in err


def test_preview_without_the_renderer_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_plugin, "CHECKOUT", tmp_path)
    code, _, err = run_cli(["plugin", "preview", "connect", "-o", str(tmp_path / "x.png")])
    assert code == 1
    assert "tools/preview.py" in err and "not in this checkout" in err


def test_preview_delegates_to_tools_preview(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "tools").mkdir(parents=True)
    (checkout / "tools" / "__init__.py").write_text("", encoding="utf-8")
    # A stand-in renderer that records how it was called, so the delegation itself is tested.
    (checkout / "tools" / "preview.py").write_text(
        "import sys\nfrom pathlib import Path\n"
        "args = sys.argv[1:]\n"
        "Path(args[2]).write_text(' '.join([args[0], args[1]]))\n"
        "raise SystemExit(3)\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(cli_plugin, "CHECKOUT", checkout)
    monkeypatch.chdir(tmp_path)
    code, _, _ = run_cli(["plugin", "preview", "explorer", "-o", "shot.png", "--theme", "Light"])
    assert code == 3
    assert (tmp_path / "shot.png").read_text() == "explorer -o"
    (checkout / "tools" / "preview.py").write_text(
        "import sys\nfrom pathlib import Path\n"
        "Path(sys.argv[0]).with_name('argv.txt').write_text(' '.join(sys.argv[1:]))\n",
        encoding="utf-8",
    )
    assert run_cli(["plugin", "preview", "explorer", "-o", "shot.png", "--theme", "Light"])[0] == 0
    argv = (checkout / "tools" / "argv.txt").read_text()
    assert argv == f"explorer -o {tmp_path / 'shot.png'} --theme Light"
    assert run_cli(["plugin", "preview", "--list"])[0] == 0
    assert (checkout / "tools" / "argv.txt").read_text() == "--list"
    code, _, err = run_cli(["plugin", "preview", "explorer"])
    assert code == 2 and "-o PNG" in err


def test_preview_renders_a_real_scenario(tmp_path: Path) -> None:
    """The real renderer in this checkout, driven through `dsm plugin preview`."""
    if not (ROOT / "tools" / "preview.py").is_file():
        pytest.skip("tools/preview.py is not in this checkout")
    listing = subprocess.run(
        [sys.executable, "-m", "tools.preview", "--list"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    scenario = listing.stdout.splitlines()[0].split(":", 1)[0]
    out = tmp_path / "shot.png"
    code, _, err = run_cli(["plugin", "preview", scenario, "-o", str(out)])
    assert code == 0, err
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


# -- --watch -------------------------------------------------------------------------------------


def test_watch_rebuilds_on_change_and_stops(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    out = tmp_path / "out" / PLUGIN_FILE_NAME
    results: queue.Queue[tuple[BuildResult | Exception, list[str]]] = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(
        target=cli_plugin.watch_and_build,
        args=(src, out),
        kwargs={
            "on_result": lambda r, changed: results.put((r, changed)),
            "debounce_ms": 50,
            "stop_event": stop,
        },
        daemon=True,
    )
    thread.start()
    try:
        first, changed = results.get(timeout=10)
        assert isinstance(first, BuildResult) and changed == []

        def change_until(
            rel: str, content: str | None, wanted: type[BuildResult] | type[BuildError]
        ) -> tuple[BuildResult | Exception, list[str]]:
            """Write (or delete) `rel` until a build of kind `wanted` that saw it arrives.

            The watcher starts just after the first build, so the first write may go unseen;
            repeated writes may queue extra builds, which are skipped.
            """
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if content is None:
                    (src / rel).unlink(missing_ok=True)
                else:
                    (src / rel).write_text(content, encoding="utf-8")
                try:
                    result, changed = results.get(timeout=0.5)
                except queue.Empty:
                    continue
                if isinstance(result, wanted) and rel in changed:
                    return result, changed
            pytest.fail(f"no {wanted.__name__} after changing {rel}")

        change_until("App.luau", "return { version = 2 }\n", BuildResult)
        assert parse_rbxmx(out).child("App").source == "return { version = 2 }\n"

        # A broken tree is reported and watching goes on; the last good file stays in place.
        result, _ = change_until("Broken.lua", "return 1\n", BuildError)
        assert "Broken.lua" in str(result) and "rename it" in str(result)
        assert parse_rbxmx(out).child("App").source == "return { version = 2 }\n"
        change_until("Broken.lua", None, BuildResult)
        assert parse_rbxmx(out).child("App").source == "return { version = 2 }\n"
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive(), "the watcher did not stop"
