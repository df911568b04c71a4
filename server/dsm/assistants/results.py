"""What a tool hands an assistant: the API's answer labelled with where it came from, large
values summarised rather than returned whole, and no secret in it.

Labels: an answer with a `source` (entries, listings) keeps it (LIVE, EMULATOR, CACHED with
its age, UNAVAILABLE with its reason); an index answer (search, analytics) is CACHED as of its
oldest indexed read, with its coverage; the server's own records (jobs, budget) carry the
backend they concern. A failed call is UNAVAILABLE with the server's message.
"""

from __future__ import annotations

import json
import re
from typing import Any

DEFAULT_MAX_VALUE_CHARS = 4000
MAX_SHAPE_FIELDS = 40
REDACTED = "[redacted]"
# Our bearer tokens, and anything shaped like them, whatever field it hides in.
_TOKEN = re.compile(r"dsm_[A-Za-z0-9_\-]{16,}")
_SECRET_FIELDS = frozenset({"token", "api_key", "secret", "authorization", "key_material"})


def label_of(answer: Any, backend: str) -> dict[str, Any]:
    """The source label (and coverage, for index answers) of one API answer."""
    if isinstance(answer, dict):
        source = answer.get("source")
        if isinstance(source, dict) and "kind" in source:
            return {"source": source["kind"], **_without(source, "kind")}
        basis = answer.get("basis")
        if isinstance(basis, dict):
            return {
                "source": "CACHED",
                "backend": basis.get("backend"),
                "from": "the search index (a snapshot; an entry may have changed since)",
                "as_of": basis.get("as_of"),
                "sample_data": basis.get("sample_data", False),
                "coverage": basis.get("coverage"),
                "note": basis.get("note"),
            }
        backend = str(answer.get("backend", backend))
    return {"source": backend, "from": "the companion server's own records"}


def unavailable(code: str, message: str) -> dict[str, Any]:
    return {"source": "UNAVAILABLE", "reason": message, "code": code}


def summarise(value: Any, max_chars: int) -> Any:
    """`value` with every string longer than `max_chars` replaced by a description of it."""
    if isinstance(value, dict):
        return {k: summarise(v, max_chars) for k, v in value.items()}
    if isinstance(value, list):
        return [summarise(v, max_chars) for v in value]
    if isinstance(value, str) and len(value) > max_chars:
        return _summary(value, max_chars)
    return value


def _summary(text: str, max_chars: int) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "summarised": True,
        "chars": len(text),
        "why": f"longer than {max_chars} characters; read a field with search or analytics, "
        "or ask the person to open it in the plugin",
    }
    try:
        parsed = json.loads(text)
    except ValueError:
        summary["start"] = text[: max_chars // 4]
        return summary
    summary["shape"] = shape(parsed)
    return summary


def shape(value: Any, depth: int = 2) -> Any:
    """The types of a JSON value's fields, a couple of levels down: enough to plan a query."""
    if isinstance(value, dict):
        if depth == 0:
            return f"object with {len(value)} fields"
        fields = dict(list(value.items())[:MAX_SHAPE_FIELDS])
        described = {k: shape(v, depth - 1) for k, v in fields.items()}
        if len(value) > MAX_SHAPE_FIELDS:
            described["..."] = f"{len(value) - MAX_SHAPE_FIELDS} more fields"
        return described
    if isinstance(value, list):
        first = shape(value[0], depth - 1) if value and depth > 0 else None
        return (
            {"array": len(value), "first": first} if first is not None else f"array of {len(value)}"
        )
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return f"string ({len(value)} chars)"
    return "null"


def scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """`value` with the given secrets, token-shaped text and secret-named fields removed."""
    if isinstance(value, dict):
        return {
            k: REDACTED if k.lower() in _SECRET_FIELDS and v else scrub(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            if secret:
                value = value.replace(secret, REDACTED)
        return _TOKEN.sub(REDACTED, value)
    return value


def _without(mapping: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in names and v is not None}
