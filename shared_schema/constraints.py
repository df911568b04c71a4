"""Reusable field types that enforce Open Cloud's limits at the edge of the protocol.

Each constraint adds a JSON Schema keyword (standard where one exists, `x-...` where the standard
has none, e.g. JSON Schema's `maxLength` counts characters while Roblox counts UTF-8 bytes).
`tools/codegen.py` turns exactly these keywords into the Luau validators, and refuses keywords it
does not know, so a new constraint here cannot silently go unchecked on the plugin side.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

MAX_NAME_BYTES = 50
MAX_VALUE_BYTES = 4 * 1024 * 1024  # 4194304: Open Cloud's per-entry value limit
ATTRIBUTES_BYTES_BELOW = 300  # attributes must serialize to *under* 300 bytes
MAX_USER_IDS = 4
# Luau numbers are IEEE doubles, so integers beyond 2**53 cannot survive the plugin unchanged.
MAX_SAFE_INT = 2**53 - 1
# How deeply arrays and objects may nest in an entry value. Open Cloud documents no limit; the
# server and the emulator share this one (docs/limits.md) so a value that could not be checked,
# diffed or undone is refused up front instead of failing after the write was journaled. Real
# game data sits far below it; serde_json's default recursion limit is the same 128.
MAX_JSON_DEPTH = 128


def utf8_size(text: str) -> int:
    """Bytes of `text` in UTF-8; a lone surrogate cannot be encoded and raises ValueError."""
    return len(text.encode("utf-8"))


def compact_json(value: Any) -> str:
    """The serialization Open Cloud limits are measured on: no spaces, UTF-8 left unescaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class Utf8Bytes:
    """String length limits counted in UTF-8 bytes, as Roblox counts names, keys and scopes."""

    min_bytes: int
    max_bytes: int

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        result = handler(schema)
        result["x-min-bytes"] = self.min_bytes
        result["x-max-bytes"] = self.max_bytes
        return result

    def _check(self, value: str) -> str:
        size = utf8_size(value)
        if size < self.min_bytes:
            raise ValueError(f"must be at least {self.min_bytes} byte(s) of UTF-8, got {size}")
        if size > self.max_bytes:
            raise ValueError(
                f"must be at most {self.max_bytes} bytes of UTF-8, got {size} "
                "(characters outside ASCII take 2-4 bytes each)"
            )
        return value


@dataclass(frozen=True)
class JsonTextOf:
    """A string holding one well-formed JSON value (RFC 8259) of at most `max_bytes` bytes.

    NaN, Infinity and numbers too large for a double are refused: JSON cannot carry them and
    Open Cloud rejects them (ContentNotJson).
    """

    max_bytes: int

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        result = handler(schema)
        result["contentMediaType"] = "application/json"
        result["x-max-bytes"] = self.max_bytes
        return result

    def _check(self, value: str) -> str:
        size = utf8_size(value)
        if size > self.max_bytes:
            raise ValueError(f"is {size} bytes; the limit is {self.max_bytes} bytes")
        try:
            parsed = json.loads(value, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not valid JSON text: {exc.msg} at character {exc.pos}") from None
        except RecursionError:
            raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels (the limit)") from None
        problem = json_value_problem(parsed, may_hold_surrogates="\\u" in value)
        if problem is not None:
            raise ValueError(problem)
        return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_SURROGATE = re.compile("[\ud800-\udfff]")


def json_value_problem(
    value: Any,
    *,
    max_depth: int = MAX_JSON_DEPTH,
    finite: bool = True,
    may_hold_surrogates: bool = True,
) -> str | None:
    """Why a parsed JSON value cannot be stored, or None: too deep, not finite, lone surrogates.

    A lone surrogate (`"\\ud800"` escaped in the text) is no character at all: it cannot be
    encoded as UTF-8, so no data store can hold it. Iterative, so any depth json.loads allows
    is checked without recursion. `finite=False` lets NaN and Infinity pass (a caller that
    reports them itself); `may_hold_surrogates=False` skips the string scan when the text has
    no `\\u` escape (a parsed string can only get a surrogate from one).
    """
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if may_hold_surrogates and _SURROGATE.search(item):
                return "holds a lone UTF-16 surrogate escape (such as \\ud800), which is not text"
        elif isinstance(item, float):
            if finite and not math.isfinite(item):
                return "holds a number too large for a double (JSON cannot carry it)"
        elif isinstance(item, list | dict):
            if depth >= max_depth:
                return f"nests deeper than {MAX_JSON_DEPTH} levels (the limit)"
            if isinstance(item, dict):
                pending.extend((key, depth + 1) for key in item)
                pending.extend((child, depth + 1) for child in item.values())
            else:
                pending.extend((child, depth + 1) for child in item)
    return None


@dataclass(frozen=True)
class EncodedBytesBelow:
    """A JSON value whose compact serialization is under `limit` bytes (attributes: 300)."""

    limit: int

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        result = handler(schema)
        result["x-max-encoded-bytes"] = self.limit - 1
        return result

    def _check(self, value: Any) -> Any:
        try:
            size = utf8_size(compact_json(value))
        except ValueError:
            raise ValueError("cannot be serialized as JSON (NaN, Infinity or bad text)") from None
        if size >= self.limit:
            raise ValueError(
                f"serializes to {size} bytes of JSON; it must be under {self.limit} bytes"
            )
        return value


@dataclass(frozen=True)
class LuauPattern:
    """The Luau string pattern equivalent to a field's regex.

    JSON Schema's `pattern` is an ECMA regex that Luau cannot run; the codegen requires this
    companion next to every `pattern`.
    """

    pattern: str

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        result = handler(schema)
        result["x-luau-pattern"] = self.pattern
        return result


def _integral_number(value: Any) -> Any:
    """Accept 5 and 5.0 alike: Luau has only doubles and cannot tell them apart.

    Strings and booleans stay refused (the model is strict); a float with a fraction is left as is
    so that the strict int check reports it.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _empty_list_as_object(value: Any) -> Any:
    """Luau's JSONEncode turns an empty table into `[]`, so `[]` is read as the empty object."""
    if isinstance(value, list) and not value:
        return {}
    return value


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+14:00 is a valid RFC 3339 text whose UTC time is before year 1.
        raise ValueError("is outside the range of dates that can be converted to UTC") from None


class _AcceptsEmptyArray:
    """Marks an object field that also takes `[]` (see `_empty_list_as_object`) in the schema."""

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        result = handler(schema)
        result["x-accepts-empty-array"] = True
        return result


# -- Field types -----------------------------------------------------------------------------

WireInt = Annotated[int, BeforeValidator(_integral_number)]
"""An integer as JSON carries it from Luau: 5 or 5.0, never "5" or true."""

# Bounds go before the BeforeValidator so that they constrain the int itself (and show up as
# `minimum`/`maximum` in the JSON Schema) rather than the wrapped validator.
SafeInt = Annotated[
    int, Field(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT), BeforeValidator(_integral_number)
]
"""An integer a Luau double holds exactly (|n| <= 2**53 - 1)."""

NonNegativeInt = Annotated[int, Field(ge=0, le=MAX_SAFE_INT), BeforeValidator(_integral_number)]
PositiveInt = Annotated[int, Field(ge=1, le=MAX_SAFE_INT), BeforeValidator(_integral_number)]

UtcDateTime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""An RFC 3339 time with an offset; normalized to UTC (serialized with `Z`)."""

Name = Annotated[str, Utf8Bytes(1, MAX_NAME_BYTES)]
"""Data store names, entry keys and scopes: 1-50 bytes of UTF-8 (Open Cloud's limit)."""

JsonText = Annotated[str, JsonTextOf(MAX_VALUE_BYTES)]
"""An entry value as raw JSON text, at most 4 MiB, so Luau never reshapes it."""

Attributes = Annotated[
    dict[str, Any],
    BeforeValidator(_empty_list_as_object),
    EncodedBytesBelow(ATTRIBUTES_BYTES_BELOW),
    _AcceptsEmptyArray(),
]
"""Entry attributes: a JSON object serializing to under 300 bytes."""

UserIds = Annotated[list[NonNegativeInt], Field(max_length=MAX_USER_IDS)]
"""Roblox user ids attached to an entry: at most 4 non-negative integers."""

IdempotencyKey = Annotated[
    str,
    StringConstraints(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_-]+$"),
    LuauPattern("^[%w_%-]+$"),
    Field(
        description=(
            "Client-generated key, 8-128 characters of A-Z a-z 0-9 _ -; a retried write with "
            "the same key is applied at most once."
        )
    ),
]

Cursor = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
"""An opaque page cursor exactly as the previous page returned it."""

Label = Annotated[str, StringConstraints(min_length=1, max_length=100)]
"""A short human-readable name (client names, labels)."""

Sha256Hex = Annotated[
    str,
    StringConstraints(min_length=64, max_length=64, pattern=r"^[0-9a-f]+$"),
    LuauPattern("^[0-9a-f]+$"),
]
"""A SHA-256 digest as 64 lowercase hex digits."""
