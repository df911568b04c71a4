"""Opaque page tokens bound to the query that produced them.

Open Cloud requires every other parameter of a follow-up page request to match the first
call and answers 400 otherwise; binding a fingerprint of the query into the token lets the
emulator detect a changed filter or order the same way.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from .errors import invalid

_IGNORED = {"pageToken", "page_token", "cursor", "maxPageSize", "max_page_size", "limit"}


def fingerprint(route: str, query: Mapping[str, str]) -> str:
    relevant = sorted((k, v) for k, v in query.items() if k not in _IGNORED)
    digest = hashlib.sha256(json.dumps([route, relevant]).encode()).hexdigest()
    return digest[:16]


def encode_token(position: Any, bound_to: str) -> str:
    raw = json.dumps({"p": position, "q": bound_to}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str | None, bound_to: str, *, v1_code: str = "InvalidCursor") -> Any:
    """Return the stored position, None for no token, or raise 400 for a bad token."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        position, query = data["p"], data["q"]
    except (ValueError, KeyError, TypeError):
        raise invalid("Invalid page token.", v1_code) from None
    if query != bound_to:
        raise invalid(
            "The page token does not match this request: every parameter except the page "
            "size must be the same as in the call that returned it.",
            v1_code,
        )
    return position
