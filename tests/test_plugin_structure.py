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


# -- the Api wrappers return the generated Protocol types of their route ------------------------

API = SRC / "Core" / "Api.luau"
# Routes without a response model answer these Luau types.
UNMODELLED = {
    "metrics": "string",
    "openapi": "{ [string]: any }",
    "close_session": "nil",
    "delete_upload": "nil",
}


def _wrapper_returns() -> dict[str, str]:
    text = API.read_text(encoding="utf-8")
    return dict(re.findall(r"^function Api\.(\w+)\(\s*self: Api[^)]*\): Result<(.+)>$", text, re.M))


def _wrapper_names() -> dict[str, str]:
    text = API.read_text(encoding="utf-8").split("Api.WRAPPERS = {")[1].split("}")[0]
    return dict(re.findall(r"^\t(\w+) = \"(\w+)\",$", text, re.M))


def test_every_api_wrapper_returns_its_routes_protocol_types() -> None:
    from shared_schema.registry import ROUTES

    returns = _wrapper_returns()
    names = _wrapper_names()
    # WebSocket routes have no request/response wrapper: Core/EventStream opens them.
    plain = [route for route in ROUTES if not route.websocket]
    assert set(names) == {route.operation_id for route in plain}
    for route in plain:
        wrapper = names[route.operation_id]
        declared = returns.get(wrapper)
        assert declared is not None, f"Api.{wrapper} has no Result<...> return type"
        if route.responses:
            expected = {f"Protocol.{model.__name__}" for model in route.responses}
            assert set(part.strip() for part in declared.split("|")) == expected, (
                f"Api.{wrapper} returns Result<{declared}>; the route answers {sorted(expected)}"
            )
        else:
            assert declared == UNMODELLED[route.operation_id], (wrapper, declared)


# -- docs/troubleshooting.md covers every failure screen and error code --------------------------

TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"


def _headings() -> set[str]:
    text = TROUBLESHOOTING.read_text(encoding="utf-8")
    return {line[4:].strip() for line in text.splitlines() if line.startswith("### ")}


def test_every_failure_screen_links_to_a_troubleshooting_section() -> None:
    sections = re.findall(
        r'help = "([^"]+)"', (SRC / "Views" / "FailureScreens.luau").read_text(encoding="utf-8")
    )
    sections += re.findall(
        r'screen\.help\("([^"]+)"\)', (SRC / "Views" / "Pairing.luau").read_text(encoding="utf-8")
    )
    assert len(sections) >= 7
    missing = [s for s in sections if s not in _headings()]
    assert missing == [], f"no section in docs/troubleshooting.md for {missing}"


def test_every_error_code_is_explained() -> None:
    from shared_schema.errors import ErrorCode

    text = TROUBLESHOOTING.read_text(encoding="utf-8")
    missing = [code.value for code in ErrorCode if f"| `{code.value}` |" not in text]
    assert missing == []
