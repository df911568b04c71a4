"""The one error envelope `{error: {code, message, retryable, details?}}` and its closed codes."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict


class ErrorCode(StrEnum):
    BAD_REQUEST = "BAD_REQUEST"  # the request is malformed or fails validation
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"  # the path exists, not with this method
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"  # headers or body arrived too slowly
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"  # body is not application/json
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    FORBIDDEN_HOST = "FORBIDDEN_HOST"  # Host not loopback with our port (DNS rebinding guard)
    FORBIDDEN_ORIGIN = "FORBIDDEN_ORIGIN"  # a browser-originated request
    UNAUTHENTICATED = "UNAUTHENTICATED"  # missing, unknown or revoked token
    FORBIDDEN = "FORBIDDEN"  # the token's role does not allow this
    PAIRING_FAILED = "PAIRING_FAILED"  # wrong, expired or used pairing code
    RATE_LIMITED = "RATE_LIMITED"  # our own limits (e.g. pairing attempts)
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"  # the entry changed since the revision the user saw
    ALREADY_EXISTS = "ALREADY_EXISTS"
    UPSTREAM_THROTTLED = "UPSTREAM_THROTTLED"  # Open Cloud answered 429
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"  # Open Cloud unreachable or 5xx
    UPSTREAM_PERMISSION = "UPSTREAM_PERMISSION"  # the API key lacks a scope or universe (403)
    # Open Cloud answered in a shape no documented answer has (its refusals are BAD_REQUEST)
    UPSTREAM_REJECTED = "UPSTREAM_REJECTED"
    # a lost response that re-reading could not settle
    WRITE_OUTCOME_UNKNOWN = "WRITE_OUTCOME_UNKNOWN"
    NO_API_KEY = "NO_API_KEY"  # no key in the vault serves this universe
    SERVER_BUSY = "SERVER_BUSY"  # too many open connections or event streams right now
    INTERNAL = "INTERNAL"


RETRYABLE = {
    ErrorCode.RATE_LIMITED,
    ErrorCode.SERVER_BUSY,
    ErrorCode.UPSTREAM_THROTTLED,
    ErrorCode.UPSTREAM_UNAVAILABLE,
}


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: ErrorCode
    message: str
    retryable: bool
    details: dict[str, Any] | None = None


class ErrorEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: ErrorBody
