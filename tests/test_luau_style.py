"""Every Luau file under plugin/ parses with the real Luau compiler, and StyLua finds nothing to change.

The compile check always runs (pluau is a dev dependency). The StyLua check needs the npm dev
dependency (`npm ci` installs @johnnymorganz/stylua-bin, pinned in package-lock.json); it is skipped
only when node_modules is absent, and CI installs it so it runs there.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pluau  # type: ignore[import-untyped]
import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "plugin"
LUAU_FILES = sorted(PLUGIN.rglob("*.luau"))
STYLUA_DIRS = ["plugin/src", "plugin/specs"]
NODE_MODULES = ROOT / "node_modules"


def test_plugin_tree_has_luau_sources() -> None:
    assert (PLUGIN / "src" / "Protocol.luau") in LUAU_FILES


@pytest.mark.parametrize("path", LUAU_FILES, ids=lambda p: p.relative_to(PLUGIN).as_posix())
def test_luau_file_compiles(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    try:
        pluau.Compiler(1, 1, 0, 0).compile(source)
    except RuntimeError as exc:
        # pluau reports "syntax error: <line>: <message>"; name the file so it can be found.
        pytest.fail(f"{path.relative_to(ROOT)}: {exc}")


def _stylua() -> Path:
    bin_dir = NODE_MODULES / ".bin"
    for name in ("stylua", "stylua.cmd"):
        if (bin_dir / name).exists():
            return bin_dir / name
    pytest.fail(f"{NODE_MODULES} exists but has no StyLua in .bin; run `npm ci`")


def test_stylua_check() -> None:
    if not NODE_MODULES.is_dir():
        pytest.skip("node_modules is absent: run `npm ci` to install StyLua 2.5.2 (CI does)")
    stylua = _stylua()
    dirs = [d for d in STYLUA_DIRS if (ROOT / d).is_dir()]
    assert "plugin/src" in dirs
    result = subprocess.run(
        [os.fspath(stylua), "--check", *dirs],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    # Exit 1 = some file would be reformatted (run `npx stylua plugin/src plugin/specs`),
    # exit 2 = StyLua could not parse a file or its config.
    assert result.returncode == 0, (
        f"stylua --check {' '.join(dirs)} exited {result.returncode}; "
        f"run `npx stylua {' '.join(dirs)}` to format:\n{result.stdout}{result.stderr}"
    )
