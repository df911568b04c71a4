"""Every `it` of plugin/specs/**/*.spec.luau as its own pytest item (tools/luau_harness)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.luau_harness.specs import iter_spec_cases, run_spec_case

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "plugin" / "specs"

# UI specs run under both of Studio's signal behaviours (Deferred is the harness's default and new
# places'); Core specs do not touch engine signals and run once.
BOTH_MODES = ("Deferred", "Immediate")
Case = tuple[Path, str | None, str | None, str]
CASES: list[Case] = [
    (spec, name, error, mode)
    for spec, name, error in (iter_spec_cases(SPECS) if SPECS.is_dir() else [])
    for mode in (BOTH_MODES if spec.relative_to(SPECS).parts[0] == "UI" else BOTH_MODES[:1])
]


def _case_id(case: Case) -> str:
    spec, name, _, mode = case
    rel = spec.relative_to(SPECS).as_posix()
    suffix = f" [{mode}]" if rel.startswith("UI/") else ""
    return f"{rel}::{name if name is not None else '<load>'}{suffix}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_spec(case: Case) -> None:
    spec, name, load_error, mode = case
    if name is None:
        pytest.fail(f"{spec.relative_to(ROOT)} failed to load:\n{load_error}", pytrace=False)
    result = run_spec_case(spec, name, signal_behavior=mode)
    if result.status == "skipped":
        pytest.skip(f"skipped in {spec.name}")
    if not result.ok:
        pytest.fail(result.report(), pytrace=False)
