"""Documented Open Cloud limits (opencloud-api.md §8) checked at the emulator's edge."""

from __future__ import annotations

import json
from typing import Any

from shared_schema.constraints import MAX_JSON_DEPTH, json_value_problem

from .errors import invalid

MAX_NAME_BYTES = 50
MAX_VALUE_BYTES = 4 * 1024 * 1024
MAX_ATTRIBUTE_BYTES = 300  # "under 300 bytes" as serialized JSON
MAX_USER_IDS = 4
MAX_ORDERED_ID_CHARS = 63
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
V2_NUMBER_LIMIT = 2**53


def check_name(kind: str, value: str | None, v1_code: str) -> str:
    """Data store names, keys and scopes: 1-50 bytes of UTF-8."""
    if value is None or value == "":
        raise invalid(f"{kind} is required and cannot be empty.", v1_code)
    if len(value.encode("utf-8")) > MAX_NAME_BYTES:
        raise invalid(f"{kind} must be {MAX_NAME_BYTES} bytes or less.", v1_code)
    return value


def check_value_text(text: str) -> str:
    """Values are JSON text of at most 4 MiB; returns the text unchanged."""
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_VALUE_BYTES:
        raise invalid(
            f"The value is larger than the {MAX_VALUE_BYTES} byte limit.", "ContentTooBig"
        )
    try:
        parsed = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise invalid("The value is not valid JSON.", "ContentNotJson") from None
    check_json_value(parsed, "The value")
    return text


def check_json_value(parsed: Any, what: str) -> None:
    """Refuse what no data store can hold: NaN, lone surrogates, nesting past MAX_JSON_DEPTH.

    Open Cloud documents no nesting limit; the emulator shares the companion server's
    (MAX_JSON_DEPTH) so neither accepts a value the other refuses.
    """
    problem = json_value_problem(parsed)
    if problem is not None:
        raise invalid(f"{what} {problem}.", "ContentNotJson")


def parse_json_body(raw: bytes) -> Any:
    """A request body as JSON: UTF-8, well formed, real text, values within MAX_JSON_DEPTH.

    Every route that reads a JSON body goes through here, so a hostile body is an
    INVALID_ARGUMENT answer, never an emulator error. The body object itself is one level
    above the values it carries; NaN is left for the routes to report in their own words.
    """
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise invalid("The request body is not valid UTF-8.") from None
    except (json.JSONDecodeError, RecursionError):
        raise invalid("The request body is not valid JSON.") from None
    problem = json_value_problem(parsed, max_depth=MAX_JSON_DEPTH + 1, finite=False)
    if problem is not None:
        raise invalid(f"The request body {problem}.")
    return parsed


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def check_attributes_text(text: str | None) -> str | None:
    """Attributes: a JSON object whose serialized form is under 300 bytes."""
    if text is None or text.strip() == "":
        return None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        raise invalid("Attributes must be a JSON object.", "InvalidAttributes") from None
    return check_attributes(parsed)


def check_attributes(parsed: Any) -> str | None:
    if parsed is None:
        return None
    if not isinstance(parsed, dict):
        raise invalid("Attributes must be a JSON object.", "InvalidAttributes")
    if not parsed:
        return None
    text = compact_json(parsed)
    if len(text.encode("utf-8")) >= MAX_ATTRIBUTE_BYTES:
        raise invalid(
            f"Attributes must serialize to under {MAX_ATTRIBUTE_BYTES} bytes.", "InvalidAttributes"
        )
    return text


def check_user_ids_text(text: str | None) -> list[int]:
    """User ids arrive as a JSON array (`[1, 2]`); a bare comma list is tolerated too."""
    if text is None or text.strip() == "":
        return []
    stripped = text.strip()
    try:
        parsed = (
            json.loads(stripped)
            if stripped.startswith("[")
            else [int(part) for part in stripped.split(",") if part.strip()]
        )
    except (ValueError, json.JSONDecodeError):
        raise invalid("User ids must be a JSON array of numbers.", "InvalidUserIds") from None
    return check_user_ids(parsed)


def check_user_ids(parsed: Any) -> list[int]:
    if not isinstance(parsed, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in parsed
    ):
        raise invalid("User ids must be a JSON array of non-negative integers.", "InvalidUserIds")
    if len(parsed) > MAX_USER_IDS:
        raise invalid(f"At most {MAX_USER_IDS} user ids can be attached.", "InvalidUserIds")
    return list(parsed)


def v2_users_to_ids(users: Any) -> list[int]:
    """v2 carries users as resource paths `users/{id}`, never bare ids."""
    if users is None:
        return []
    if not isinstance(users, list):
        raise invalid("users must be a list of 'users/{id}' paths.")
    ids: list[int] = []
    for item in users:
        if not isinstance(item, str) or not item.startswith("users/") or not item[6:].isdigit():
            raise invalid(f"Invalid user {item!r}: expected a path like 'users/123'.")
        ids.append(int(item[6:]))
    return check_user_ids(ids)


def clamp_page_size(raw: str | None, *, default: int, maximum: int, name: str) -> int:
    """Page sizes above the documented maximum are coerced down, as Roblox does."""
    if raw is None or raw == "":
        return default
    try:
        size = int(raw)
    except ValueError:
        raise invalid(f"{name} must be an integer.") from None
    if size < 0:
        raise invalid(f"{name} must not be negative.")
    if size == 0:
        return default
    return min(size, maximum)


def parse_bool(raw: str | None, name: str, default: bool = False) -> bool:
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise invalid(f"{name} must be true or false.")
