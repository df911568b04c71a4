"""Small wire-format helpers shared by the client modules.

Entry values travel as raw JSON text. Re-encoding a parsed value would change what the user
stored (number spelling, escapes, key order), so values are cut out of response bodies as the
exact text the server sent, and embedded into request bodies as the exact text the caller gave.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

_DECODER = json.JSONDecoder()
_WS = " \t\n\r"


class WireFormatError(ValueError):
    """A response body does not have the shape the Open Cloud documentation describes."""


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def raw_object_fields(text: str) -> dict[str, str]:
    """Map each top-level key of a JSON object to the exact source text of its value."""
    return {key: raw for key, (_, raw) in object_fields(text).items()}


def object_fields(text: str) -> dict[str, tuple[Any, str]]:
    """Map each top-level key of a JSON object to its decoded value and its exact source text
    (one pass: a caller that needs some fields decoded does not parse them twice)."""
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "{":
        raise WireFormatError("expected a JSON object")
    fields: dict[str, tuple[Any, str]] = {}
    pos = _skip_ws(text, pos + 1)
    if pos < len(text) and text[pos] == "}":
        return fields
    while True:
        if pos >= len(text) or text[pos] != '"':
            raise WireFormatError("expected a quoted key")
        try:
            key, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise WireFormatError(f"bad key: {exc.msg}") from None
        pos = _skip_ws(text, pos)
        if pos >= len(text) or text[pos] != ":":
            raise WireFormatError("expected ':' after a key")
        start = _skip_ws(text, pos + 1)
        value, end = _decode_value(text, start, key)
        fields[key] = (value, text[start:end])
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "}":
            return fields
        raise WireFormatError("expected ',' or '}' in an object")


def _decode_value(text: str, start: int, key: str) -> tuple[Any, int]:
    """The JSON value starting at `start`, decoded, and where it ends. Python's decoder recurses
    per level, so a value nested deeper than the stack allows (Open Cloud sets no limit) is
    scanned for its end instead and not decoded (None): only its exact text is of use."""
    try:
        return _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise WireFormatError(f"bad JSON value for {key!r}: {exc.msg}") from None
    except RecursionError:
        return None, _scan_nested_end(text, start, key)


def _scan_nested_end(text: str, start: int, key: str) -> int:
    depth = 0
    pos = start
    while pos < len(text):
        char = text[pos]
        if char == '"':
            try:
                _, pos = _DECODER.raw_decode(text, pos)  # a string: no recursion
            except json.JSONDecodeError as exc:
                raise WireFormatError(f"bad JSON string in {key!r}: {exc.msg}") from None
            continue
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    raise WireFormatError(f"unterminated JSON value for {key!r}")


def raw_array_items(text: str) -> list[str]:
    """The exact source text of each element of a JSON array."""
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "[":
        raise WireFormatError("expected a JSON array")
    items: list[str] = []
    pos = _skip_ws(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        return items
    while True:
        try:
            _, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise WireFormatError(f"bad JSON array element: {exc.msg}") from None
        items.append(text[pos:end])
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            return items
        raise WireFormatError("expected ',' or ']' in an array")


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON (Open Cloud cannot store NaN or Infinity)")


def parse_json_text(text: str) -> Any:
    """Parse strict JSON: NaN and Infinity are refused, as Open Cloud refuses them."""
    return json.loads(text, parse_constant=_reject_constant)


def check_json_text(text: str, what: str = "value") -> None:
    """Raise ValueError with a readable message if ``text`` is not a single JSON value."""
    try:
        parse_json_text(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"The {what} is not valid JSON: {exc.msg} at position {exc.pos}."
        ) from None
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"The {what} is not valid JSON: {exc}.") from None


def _canonical(value: Any) -> Any:
    # Servers may re-encode a number (1.0 -> 1); a JSON number's meaning is what counts.
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else value
    if isinstance(value, int):
        return value
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


def _typed(value: Any) -> Any:
    # Keep bools apart from numbers (True == 1 in Python, but not in JSON).
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    return value


def json_equal(a: str | None, b: str | None) -> bool:
    """Whether two JSON texts hold the same value (ignoring spelling and whitespace)."""
    if a is None or b is None:
        return a is b
    try:
        return bool(
            _typed(_canonical(parse_json_text(a))) == _typed(_canonical(parse_json_text(b)))
        )
    except ValueError:
        return a == b


def attributes_equal(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """None and {} both mean "no attributes"."""
    return bool(_typed(_canonical(dict(a or {}))) == _typed(_canonical(dict(b or {}))))


def parse_time(text: Any) -> datetime | None:
    """RFC 3339 with any offset and up to 9 fractional digits, as UTC; None if absent."""
    if not isinstance(text, str) or not text:
        return None
    cleaned = text.strip()
    if cleaned[-1] in "zZ":
        cleaned = cleaned[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        raise WireFormatError(f"bad timestamp {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC with a Z, as Open Cloud filters and `@latest:` selectors expect."""
    if when.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (use datetime.now(UTC))")
    text = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text.rstrip("0").rstrip(".") + "Z"


def user_paths(user_ids: Sequence[int]) -> list[str]:
    return [f"users/{int(uid)}" for uid in user_ids]


def parse_user_paths(raw: Any) -> list[int]:
    """v2 `users` are `users/{id}` resource paths."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise WireFormatError("users must be a list")
    ids: list[int] = []
    for item in raw:
        text = str(item)
        tail = text.rsplit("/", 1)[-1]
        if not tail.isdigit():
            raise WireFormatError(f"bad user path {text!r}")
        ids.append(int(tail))
    return ids


def parse_user_ids_header(raw: str | None) -> list[int]:
    """v1 `roblox-entry-userids`: a JSON array in every example; a bare comma list tolerated."""
    if raw is None or not raw.strip():
        return []
    text = raw.strip()
    if text.startswith("["):
        parsed = json.loads(text)
        if not isinstance(parsed, list):
            raise WireFormatError(f"bad user ids header {raw!r}")
        return [int(v) for v in parsed]
    return [int(part) for part in text.split(",") if part.strip()]


def parse_attributes_header(raw: str | None) -> dict[str, Any] | None:
    if raw is None or not raw.strip():
        return None
    parsed = json.loads(raw)
    if not isinstance(parsed, dict):
        raise WireFormatError(f"bad attributes header {raw!r}")
    return parsed or None


def seg(text: str) -> str:
    """Percent-encode one path segment (keys may contain '/', ':', '@', '?', '#', spaces).

    A segment of only dots is encoded too: `.` and `..` would otherwise be read as "this" and
    "parent" directory by any URL normalisation on the way (the plugin does the same).
    """
    encoded = quote(text, safe="")
    return encoded.replace(".", "%2E") if encoded.strip(".") == "" else encoded


def cel_string(text: str) -> str:
    """A CEL string literal (used inside `id.startsWith("...")`)."""
    return json.dumps(text, ensure_ascii=False)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
