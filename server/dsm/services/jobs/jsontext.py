"""JSON text handled without reshaping: member spans of an object, exact parse and dump.

Entry values must survive a round trip byte for byte where they are not edited: re-serialising
parsed JSON would turn 12345678901234567890 into a double and reorder nothing but still change
spacing and escapes. These helpers let callers cut and splice the exact text instead.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

_DECODER = json.JSONDecoder(parse_float=Decimal)
_WHITESPACE = " \t\n\r"


class JsonTextError(ValueError):
    """The text is not the JSON expected (message says where and why)."""


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def object_members(text: str) -> list[tuple[str, int, int]]:
    """``(name, start, end)`` for each member of the top-level object in ``text``.

    ``text[start:end]`` is the member's value exactly as written. Raises JsonTextError when the
    text is not one JSON object. Duplicate names are all returned, in order.
    """
    pos = _skip(text, 0)
    if pos >= len(text) or text[pos] != "{":
        raise JsonTextError("the value is not a JSON object")
    pos = _skip(text, pos + 1)
    members: list[tuple[str, int, int]] = []
    if pos < len(text) and text[pos] == "}":
        return _end(text, pos + 1, members)
    while True:
        if pos >= len(text) or text[pos] != '"':
            raise JsonTextError(f"expected a member name at character {pos}")
        try:
            name, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise JsonTextError(f"{exc.msg} at character {exc.pos}") from None
        pos = _skip(text, pos)
        if pos >= len(text) or text[pos] != ":":
            raise JsonTextError(f"expected ':' at character {pos}")
        start = _skip(text, pos + 1)
        try:
            _, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            raise JsonTextError(f"{exc.msg} at character {exc.pos}") from None
        except RecursionError:
            raise JsonTextError("the value is nested too deeply") from None
        members.append((name, start, end))
        pos = _skip(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "}":
            return _end(text, pos + 1, members)
        raise JsonTextError(f"expected ',' or '}}' at character {pos}")


def _end(text: str, pos: int, members: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    if _skip(text, pos) != len(text):
        raise JsonTextError(f"unexpected text after the object at character {pos}")
    return members


def _int(literal: str) -> int | Decimal:
    # int("-0") is 0; Decimal keeps the sign so the literal comes back as written.
    return Decimal(literal) if literal == "-0" else int(literal)


def loads_exact(text: str) -> Any:
    """Parse JSON keeping every number exact (int, or Decimal of its literal); no NaN."""

    def refuse(name: str) -> Any:
        raise JsonTextError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_float=Decimal, parse_int=_int, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise JsonTextError(f"{exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise JsonTextError("the value is nested too deeply") from None
    except ValueError as exc:  # an integer literal longer than Python converts
        raise JsonTextError(str(exc)) from None


def dumps_exact(value: Any) -> str:
    """Compact JSON of a ``loads_exact`` value; numbers come out as their exact literal."""
    parts: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Raw):
            parts.append(item.text)
        elif isinstance(item, bool) or item is None or isinstance(item, str | int | float):
            parts.append(json.dumps(item, ensure_ascii=False, allow_nan=False))
        elif isinstance(item, Decimal):
            if not item.is_finite():
                raise JsonTextError("NaN and Infinity are not JSON")
            parts.append(str(item))
        elif isinstance(item, list):
            pending: list[Any] = [_Raw("[")]
            for i, child in enumerate(item):
                if i:
                    pending.append(_Raw(","))
                pending.append(child)
            pending.append(_Raw("]"))
            stack.extend(reversed(pending))
        elif isinstance(item, dict):
            pending = [_Raw("{")]
            for i, (name, child) in enumerate(item.items()):
                prefix = "," if i else ""
                pending.append(_Raw(prefix + json.dumps(name, ensure_ascii=False) + ":"))
                pending.append(child)
            pending.append(_Raw("}"))
            stack.extend(reversed(pending))
        else:
            raise TypeError(f"not a JSON value: {type(item).__name__}")
    return "".join(parts)


class _Raw:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text
