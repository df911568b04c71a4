"""Python <-> Luau value conversion and HttpService's JSON semantics."""

from __future__ import annotations

import json
import math
from typing import Any

import pluau  # type: ignore[import-untyped]  # ships .pyi but no py.typed

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


def to_lua(lua: pluau.Lua, value: Any) -> Any:
    """Python value -> Luau value: dict -> table, list/tuple -> array table, bytes -> string."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return lua.create_string(value)
    if isinstance(value, dict):
        t = lua.create_table_with_capacity(0, len(value))
        for k, v in value.items():
            t.raw_set(to_lua(lua, k), to_lua(lua, v))
        return t
    if isinstance(value, list | tuple):
        t = lua.create_table_with_capacity(len(value), 0)
        for i, v in enumerate(value, 1):
            t.raw_set(i, to_lua(lua, v))
        return t
    # Luau handles (Table, Function, UserData...) pass through unchanged.
    return value


def lua_str(value: Any) -> str:
    """A Luau string (pluau.String or str) as Python text (invalid UTF-8 replaced)."""
    if isinstance(value, pluau.String):
        return bytes(value.as_bytes()).decode("utf-8", errors="replace")
    return str(value)


def from_lua(value: Any, _seen: set[int] | None = None) -> Any:
    """Luau value -> Python: tables with keys 1..n become lists (an empty table becomes {}),
    other tables dicts; strings str; other handles (functions, userdata) pass through."""
    if isinstance(value, pluau.String):
        return lua_str(value)
    if not isinstance(value, pluau.Table):
        return value
    seen = _seen if _seen is not None else set()
    if value.pointer in seen:
        raise ValueError("cannot convert a cyclic table")
    seen.add(value.pointer)
    items = [(from_lua(k, seen), v) for k, v in value]
    n = value.raw_len()
    result: Any
    if items and n == len(items):
        result = [from_lua(value.raw_get(i), seen) for i in range(1, n + 1)]
    else:
        result = {k: from_lua(v, seen) for k, v in items}
    seen.discard(value.pointer)
    return result


# -- HttpService:JSONEncode / JSONDecode --------------------------------------------------------


class JsonError(Exception):
    pass


_ESCAPES = {
    0x22: b'\\"',
    0x5C: b"\\\\",
    0x08: b"\\b",
    0x0C: b"\\f",
    0x0A: b"\\n",
    0x0D: b"\\r",
    0x09: b"\\t",
}


def _encode_string(raw: bytes, out: list[bytes]) -> None:
    # Roblox writes UTF-8 text as is and escapes quotes, backslashes and control characters.
    buf = bytearray(b'"')
    for byte in raw:
        esc = _ESCAPES.get(byte)
        if esc is not None:
            buf += esc
        elif byte < 0x20:
            buf += b"\\u%04x" % byte
        else:
            buf.append(byte)
    buf += b'"'
    out.append(bytes(buf))


def _encode_number(n: float) -> bytes:
    if math.isnan(n) or math.isinf(n):
        raise JsonError("Cannot encode NaN or infinity as JSON")
    if n == int(n) and abs(n) < 2**63:
        return str(int(n)).encode()
    return repr(float(n)).encode()


def _string_bytes(v: Any) -> bytes:
    if isinstance(v, pluau.String):
        return bytes(v.as_bytes())
    return str(v).encode()


def json_encode(value: Any) -> bytes:
    """Encode a Luau value like HttpService:JSONEncode: an empty table is "[]", a table whose keys
    are exactly 1..n is an array, a table with only string keys an object; anything else (sparse
    or mixed keys, functions, userdata, NaN) is an error."""
    out: list[bytes] = []
    seen: set[int] = set()

    def enc(v: Any) -> None:
        if v is None:
            out.append(b"null")
        elif isinstance(v, bool):
            out.append(b"true" if v else b"false")
        elif isinstance(v, int | float):
            out.append(_encode_number(v))
        elif isinstance(v, str | pluau.String):
            _encode_string(_string_bytes(v), out)
        elif isinstance(v, pluau.Table):
            if v.pointer in seen:
                raise JsonError("tables cannot be cyclic")
            seen.add(v.pointer)
            pairs = list(v)
            n = v.raw_len()
            if not pairs:
                out.append(b"[]")
            elif n == len(pairs):
                out.append(b"[")
                for i in range(1, n + 1):
                    if i > 1:
                        out.append(b",")
                    enc(v.raw_get(i))
                out.append(b"]")
            elif all(isinstance(k, str | pluau.String) for k, _ in pairs):
                out.append(b"{")
                for i, (k, item) in enumerate(pairs):
                    if i:
                        out.append(b",")
                    _encode_string(_string_bytes(k), out)
                    out.append(b":")
                    enc(item)
                out.append(b"}")
            else:
                raise JsonError("Cannot convert mixed or non-array tables: keys must be strings")
            seen.discard(v.pointer)
        else:
            raise JsonError(f"Cannot convert {type(v).__name__} to JSON")

    enc(value)
    return b"".join(out)


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def json_decode(text: bytes) -> JsonValue:
    """Parse like HttpService:JSONDecode: every number becomes a float (a Luau number: integers
    beyond 2^53 lose precision exactly as in Roblox)."""
    try:
        decoded: JsonValue = json.loads(
            text.decode("utf-8"), parse_int=float, parse_constant=_reject_constant
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise JsonError("Can't parse JSON") from exc
    return decoded


def json_to_lua(lua: pluau.Lua, value: JsonValue) -> Any:
    """Decoded JSON -> Luau; null array elements leave holes like Roblox (nil)."""
    if isinstance(value, dict):
        t = lua.create_table_with_capacity(0, len(value))
        for k, v in value.items():
            if v is not None:
                t.raw_set(k, json_to_lua(lua, v))
        return t
    if isinstance(value, list):
        t = lua.create_table_with_capacity(len(value), 0)
        for i, v in enumerate(value, 1):
            if v is not None:
                t.raw_set(i, json_to_lua(lua, v))
        return t
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value) if abs(value) <= 2**53 else value
    return value
