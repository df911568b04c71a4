"""Field paths: how search and analytics name a place inside an entry's value.

`coins`, `settings.music`, `inventory[0]`, `stats["kills per hour"]`. A path is a list of
segments (object keys as str, array indexes as int) and becomes an RFC 6901 JSON Pointer for
DuckDB, which escapes every key, so no text a user types is ever spliced into SQL or a JSON path.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_DEPTH = 32


class FieldPathError(ValueError):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


@dataclass(frozen=True)
class FieldPath:
    segments: tuple[str | int, ...]

    @property
    def pointer(self) -> str:
        """RFC 6901 JSON Pointer, e.g. /settings/music."""
        return "".join(
            "/" + (str(s) if isinstance(s, int) else s.replace("~", "~0").replace("/", "~1"))
            for s in self.segments
        )

    @property
    def text(self) -> str:
        """The canonical spelling, e.g. settings.music or stats["a b"]."""
        out = ""
        for s in self.segments:
            if isinstance(s, int):
                out += f"[{s}]"
            elif _NAME.fullmatch(s):
                out += ("." if out else "") + s
            else:
                out += f"[{json.dumps(s, ensure_ascii=False)}]"
        return out

    @property
    def has_index(self) -> bool:
        return any(isinstance(s, int) for s in self.segments)


def parse_path(text: str, offset: int = 0) -> FieldPath:
    """Parse `text` (a whole path); errors carry the position (plus `offset`)."""
    segments: list[str | int] = []
    i = 0
    n = len(text)
    while i < n:
        if text[i] == "[":
            close = _bracket(text, i, offset)
            inner = text[i + 1 : close].strip()
            if inner.isdigit():
                segments.append(int(inner))
            else:
                try:
                    name = json.loads(inner)
                except json.JSONDecodeError:
                    name = None
                if not isinstance(name, str):
                    raise FieldPathError(
                        'expected a number or a "quoted name" inside [ ]', offset + i + 1
                    )
                segments.append(name)
            i = close + 1
        else:
            if segments:
                if text[i] != ".":
                    raise FieldPathError("expected '.' or '[' after a field name", offset + i)
                i += 1
            match = _NAME.match(text, i)
            if match is None:
                raise FieldPathError(
                    'expected a field name (letters, digits, _) or ["quoted name"]', offset + i
                )
            segments.append(match.group())
            i = match.end()
        if len(segments) > MAX_DEPTH:
            raise FieldPathError(f"a path has at most {MAX_DEPTH} parts", offset + i)
    if not segments:
        raise FieldPathError("expected a field path", offset)
    return FieldPath(tuple(segments))


def _bracket(text: str, start: int, offset: int) -> int:
    """Index of the `]` closing the `[` at `start`, skipping a quoted name."""
    i = start + 1
    in_string = False
    while i < len(text):
        char = text[i]
        if in_string:
            if char == "\\":
                i += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "]":
            return i
        i += 1
    raise FieldPathError("'[' is never closed", offset + start)
