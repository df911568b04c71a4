"""Run plugin/specs/**/*.spec.luau files written with testkit.luau (describe/it/expect).

Every `it` runs in a fresh LuauHarness (fresh module cache, clock at 0) inside its own scheduler
thread, so it may yield: task.wait moves the virtual clock, HTTP really happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pluau  # type: ignore[import-untyped]  # ships .pyi but no py.typed

from .convert import from_lua, lua_str
from .errors import HarnessError, LuauError
from .ui import LuauHarness

SPEC_SUFFIX = ".spec.luau"


@dataclass
class SpecResult:
    file: Path
    name: str  # "describe > nested describe > it name"
    status: Literal["passed", "failed", "skipped"]
    message: str = ""
    traceback: str = ""
    output: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def report(self) -> str:
        """A readable failure text: message, Luau traceback, captured output."""
        parts = [f"{self.file.name} :: {self.name}", self.message]
        frames = [
            line
            for line in self.traceback.strip().splitlines()
            if line.strip() and "luau_harness/" not in line  # the harness's own frames
        ]
        if frames:
            parts.append("Luau traceback:\n" + "\n".join(frames))
        if self.output:
            parts.append("output:\n" + "\n".join(self.output))
        return "\n".join(parts)


def find_specs(root: Path) -> list[Path]:
    return sorted(root.rglob("*" + SPEC_SUFFIX))


def specs_root_of(spec: Path) -> Path:
    """The nearest ancestor directory named "specs" (mounted next to the plugin's src)."""
    for parent in spec.resolve().parents:
        if parent.name == "specs":
            return parent
    return spec.resolve().parent


def default_plugin_root(spec: Path) -> Path:
    return specs_root_of(spec).parent / "src"


class SpecSession:
    """A harness with one spec file loaded and its tests collected."""

    def __init__(self, spec: Path, plugin_root: Path | None = None, **harness_kwargs: Any):
        self.spec = spec.resolve()
        root = plugin_root if plugin_root is not None else default_plugin_root(self.spec)
        self.harness = LuauHarness(root, **harness_kwargs)
        try:
            specs_root = specs_root_of(self.spec)
            specs_inst = self.harness.mount(specs_root)
            rel = self.spec.relative_to(specs_root)
            path = "/".join([*rel.parts[:-1], rel.name[: -len(".luau")]])
            inst = self.harness.get(path, root=specs_inst)
            H = self.harness._H
            self.suite: pluau.Table = self.harness._lua_call(H.get("prepareSpec"), inst)[0]
            self.harness.call(H.get("require"), inst, None)
        except BaseException:
            self.harness.close()
            raise

    def names(self) -> list[str]:
        names: list[str] = from_lua(self.harness._lua_call(self.suite.get("names"))[0]) or []
        return [lua_str(n) for n in names]

    def run(self, name: str) -> SpecResult:
        h = self.harness
        if h._lua_call(self.suite.get("isSkipped"), name)[0]:
            return SpecResult(self.spec, name, "skipped")
        try:
            ok, err, tb = [*h.call(self.suite.get("run"), name), None, None, None][:3]
        except (LuauError, HarnessError) as exc:
            tb_text = exc.luau_traceback if isinstance(exc, LuauError) else ""
            msg = exc.luau_message if isinstance(exc, LuauError) else str(exc)
            return SpecResult(self.spec, name, "failed", msg, tb_text, self._output())
        if ok:
            return SpecResult(self.spec, name, "passed", output=self._output())
        return SpecResult(
            self.spec,
            name,
            "failed",
            lua_str(err) if err is not None else "error",
            lua_str(tb) if tb is not None else "",
            self._output(),
        )

    def _output(self) -> list[str]:
        return [
            ("warn: " if line.kind == "warn" else "") + line.text for line in self.harness.output
        ]

    def close(self) -> None:
        self.harness.close()

    def __enter__(self) -> SpecSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def collect_spec(spec: Path, plugin_root: Path | None = None) -> list[str]:
    """The full names of the tests in a spec file (LuauError if the file fails to load)."""
    with SpecSession(spec, plugin_root) as session:
        return session.names()


def run_spec_case(
    spec: Path, name: str, plugin_root: Path | None = None, **harness_kwargs: Any
) -> SpecResult:
    """Run one test of a spec file in a fresh harness."""
    try:
        session = SpecSession(spec, plugin_root, **harness_kwargs)
    except (LuauError, HarnessError) as exc:
        return SpecResult(spec, name, "failed", f"spec file failed to load: {exc}")
    with session:
        return session.run(name)


def run_spec(spec: Path | str, plugin_root: Path | None = None) -> list[SpecResult]:
    """Run every test of a spec file, each in a fresh harness."""
    path = Path(spec)
    return [run_spec_case(path, name, plugin_root) for name in collect_spec(path, plugin_root)]


def iter_spec_cases(root: Path) -> Iterator[tuple[Path, str | None, str | None]]:
    """(spec file, test name, load error) for every test below root; a file that fails to load
    yields one entry with name None and the error text."""
    for spec in find_specs(root):
        try:
            names = collect_spec(spec)
        except (LuauError, HarnessError, OSError, ValueError) as exc:
            yield spec, None, str(exc)
            continue
        for name in names:
            yield spec, name, None
