"""Every `it` of plugin/specs/**/*.spec.luau as its own pytest item (tools/luau_harness)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.luau_harness.specs import iter_spec_cases, run_spec_case

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "plugin" / "specs"

CASES = list(iter_spec_cases(SPECS)) if SPECS.is_dir() else []


def _case_id(case: tuple[Path, str | None, str | None]) -> str:
    spec, name, _ = case
    rel = spec.relative_to(SPECS).as_posix()
    return f"{rel}::{name if name is not None else '<load>'}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_spec(case: tuple[Path, str | None, str | None]) -> None:
    spec, name, load_error = case
    if name is None:
        pytest.fail(f"{spec.relative_to(ROOT)} failed to load:\n{load_error}", pytrace=False)
    result = run_spec_case(spec, name)
    if result.status == "skipped":
        pytest.skip(f"skipped in {spec.name}")
    if not result.ok:
        pytest.fail(result.report(), pytrace=False)
