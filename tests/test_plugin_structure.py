"""Static checks of the plugin's structure that keep one way of doing each thing.

- Routes are made only by the constructors in plugin/src/Routes.luau (no route table literals in
  the views), so a route's fields are written down once.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "plugin" / "src"
ROUTE_NAMES = re.findall(
    r'^\t"(\w+)",$',
    (SRC / "Routes.luau")
    .read_text(encoding="utf-8")
    .split("Routes.NAMES = table.freeze({")[1]
    .split("})")[0],
    re.MULTILINE,
)


def test_route_names_are_read() -> None:
    assert {"universes", "keys", "entry", "history"} <= set(ROUTE_NAMES)


def test_no_route_table_literals_outside_routes() -> None:
    literal = re.compile(r'name\s*=\s*"(' + "|".join(ROUTE_NAMES) + r')"')
    offenders = []
    for path in SRC.rglob("*.luau"):
        if path.name in ("Routes.luau", "Protocol.luau"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if literal.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == [], "build routes with Routes.<name>(...):\n" + "\n".join(offenders)
