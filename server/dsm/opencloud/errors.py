"""Typed Open Cloud errors, mapped from every error envelope Roblox uses (opencloud-api.md §7).

Envelopes understood:
  gateway (auth, routing)   {"errors": [{"code": 0, "message": "Invalid API Key"}]}
  ASP.NET validation        {"errors": {"field": ["..."]}, "title": "...", "status": 400}
  v2                        {"code": "INVALID_ARGUMENT", "message": "...", "details": [...]}
  v1 standard data stores   {"error": "...", "message": "...", "errorDetails": [{"datastoreErrorCode"}]}
  v1 ordered / messaging    {"code": "INVALID_ARGUMENT", "message": "..."}
  anything else             plain text, HTML or an empty body

Messages are written for a game developer: they say what the client was doing, which universe,
data store and key were involved and, for 403s, which API-key permission is missing. They never
contain the API key (servers' texts are passed through a redactor before they are quoted).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .ops import Op

__all__ = [
    "AlreadyExists",
    "ChecksumMismatch",
    "Conflict",
    "Envelope",
    "InvalidArgument",
    "NetworkError",
    "NotFound",
    "OpenCloudError",
    "PermissionDenied",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "WriteOutcomeUnknown",
    "error_from_response",
    "parse_envelope",
]

# gRPC numeric codes, in case a body carries `"code": 5` rather than a name.
_GRPC_NAMES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    12: "NOT_IMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    16: "UNAUTHENTICATED",
}
_SNIPPET = 300


class OpenCloudError(Exception):
    """Base of every error the client raises. ``str(error)`` is the developer-facing message."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        server_message: str | None = None,
        datastore_error_code: str | None = None,
        operation: str | None = None,
        universe_id: str | None = None,
        details: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.server_message = server_message
        self.datastore_error_code = datastore_error_code
        self.operation = operation
        self.universe_id = universe_id
        self.details = details or []

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"operation={self.operation!r}, message={self.message!r})"
        )


class Unauthorized(OpenCloudError):
    """401: the API key is missing, wrong, disabled, expired or not allowed from this IP."""


class PermissionDenied(OpenCloudError):
    """403: the key is valid but lacks a scope, the universe or the data store."""

    def __init__(self, message: str, *, required_scopes: tuple[str, ...] = (), **kw: Any) -> None:
        super().__init__(message, **kw)
        self.required_scopes = required_scopes


class NotFound(OpenCloudError):
    """404: the universe, data store, entry, revision or item does not exist."""


class InvalidArgument(OpenCloudError):
    """400: the request was rejected as invalid (also raised before sending, status None)."""


class Conflict(OpenCloudError):
    """The entry is not in the state the write was conditioned on (etag/version mismatch).

    ``current`` is the entry as the server reported it (v1 412 carries it), or as the client
    re-read it; None when neither is known or the entry does not exist.
    """

    def __init__(self, message: str, *, current: Any = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.current = current


class AlreadyExists(Conflict):
    """A create found the entry already there (Open Cloud answers 400 for this)."""


class RateLimited(OpenCloudError):
    """429 after the client's retries; ``retry_after`` is the server's hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(OpenCloudError):
    """5xx (or an unusable success body) after the client's retries."""


class ChecksumMismatch(ServerError):
    """A v1 value's content-md5 header does not match the bytes received."""


class NetworkError(OpenCloudError):
    """No HTTP answer: connection refused or dropped, DNS, TLS, or a timeout."""


class WriteOutcomeUnknown(OpenCloudError):
    """A write's answer was lost and re-reading could not prove whether it was applied.

    ``current`` is what the re-read found (None if the entry is absent or could not be read);
    ``cause`` is the failure that lost the answer.
    """

    def __init__(
        self, message: str, *, current: Any = None, cause: OpenCloudError | None = None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.current = current
        self.cause = cause


@dataclass(frozen=True)
class Envelope:
    """What an error body said, whichever envelope it used."""

    kind: str  # gateway | validation | status | v1 | text | empty
    code: str | None = None
    message: str | None = None
    datastore_error_code: str | None = None
    details: list[Any] = field(default_factory=list)


def _code_name(raw: Any) -> str | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return _GRPC_NAMES.get(raw)  # the gateway's 0 means "no code"
    if isinstance(raw, str) and raw:
        return raw
    return None


def _text(raw: Any) -> str | None:
    return raw if isinstance(raw, str) and raw.strip() else None


def parse_envelope(body: bytes) -> Envelope:
    """Recognise the envelope of an error body; never raises."""
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return Envelope("empty")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        if text.lstrip().lower().startswith(("<!doctype", "<html")):
            return Envelope("text", message="(an HTML error page)")
        return Envelope("text", message=text[:_SNIPPET])
    errors = data.get("errors")
    if isinstance(errors, list):
        first = next((e for e in errors if isinstance(e, dict)), {})
        messages = [m for e in errors if isinstance(e, dict) and (m := _text(e.get("message")))]
        return Envelope(
            "gateway",
            code=_code_name(first.get("code")),
            message="; ".join(messages) or None,
            details=list(errors),
        )
    if isinstance(errors, dict):
        parts = []
        for name, problems in errors.items():
            listed = problems if isinstance(problems, list) else [problems]
            parts.append(f"{name}: {' '.join(str(p) for p in listed)}")
        title = _text(data.get("title")) or "One or more validation errors occurred."
        return Envelope(
            "validation",
            code="INVALID_ARGUMENT",
            message=f"{title} {'; '.join(parts)}".strip(),
            details=[errors],
        )
    if "error" in data and isinstance(data.get("error"), str):
        ds_code = None
        details = data.get("errorDetails")
        if isinstance(details, list):
            for detail in details:
                if isinstance(detail, dict) and _text(detail.get("datastoreErrorCode")):
                    ds_code = detail["datastoreErrorCode"]
                    break
        return Envelope(
            "v1",
            code=_code_name(data["error"]),
            message=_text(data.get("message")),
            datastore_error_code=ds_code,
            details=details if isinstance(details, list) else [],
        )
    if "code" in data or "message" in data:
        details = data.get("details")
        return Envelope(
            "status",
            code=_code_name(data.get("code")),
            message=_text(data.get("message")),
            details=details if isinstance(details, list) else [],
        )
    return Envelope("text", message=text[:_SNIPPET])


@dataclass(frozen=True)
class ErrorContext:
    """What the client knows about the failed call, to make the message specific."""

    op: Op
    universe_id: str | None
    subject: str | None = None  # e.g. "entry 'k' in data store 'ds'"
    service: str = "Roblox"  # or "the local emulator"
    redact: Callable[[str], str] = lambda text: text


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _said(env: Envelope, ctx: ErrorContext) -> str:
    if not env.message:
        return ""
    extra = f" [{env.datastore_error_code}]" if env.datastore_error_code else ""
    return f" {_cap(ctx.service)} said: {ctx.redact(env.message)}{extra}"


def _where(ctx: ErrorContext) -> str:
    return f" in universe {ctx.universe_id}" if ctx.universe_id else ""


def error_from_response(
    status: int,
    env: Envelope,
    ctx: ErrorContext,
    *,
    retry_after: float | None = None,
    current: Any = None,
) -> OpenCloudError:
    """Build the typed error for a non-2xx answer."""
    op = ctx.op
    said = _said(env, ctx)
    subject = ctx.subject or "the resource"
    common: dict[str, Any] = {
        "status": status,
        "code": env.code,
        "server_message": ctx.redact(env.message) if env.message else None,
        "datastore_error_code": env.datastore_error_code,
        "operation": op.name,
        "universe_id": ctx.universe_id,
        "details": env.details,
    }
    if status == 401:
        return Unauthorized(
            f"{_cap(ctx.service)} rejected the API key (HTTP 401) while trying to {op.action}"
            f"{_where(ctx)}. Check that the key was copied in full, is enabled and not expired, "
            f"and that its IP allow-list includes this machine.{said}",
            **common,
        )
    if status == 403:
        universe = ctx.universe_id or "this universe"
        return PermissionDenied(
            f"This API key lacks {op.needed_scopes()} for universe {universe} (needed to "
            f"{op.action}). Add the permission to the key on the Creator Dashboard and make sure "
            f"the key is allowed for this experience and data store.{said}",
            required_scopes=op.scopes,
            **common,
        )
    if status == 404:
        return NotFound(
            f"{subject[0].upper()}{subject[1:]} was not found{_where(ctx)}.{said}", **common
        )
    if env.code == "ALREADY_EXISTS" or (
        status in (400, 409)
        and op.name.endswith("create")
        and "already exists" in (env.message or "").lower()
    ):
        # v2 data stores answer 400 for this; memory store sorted maps 409 (ABORTED, the v2
        # table's conflict code; ALREADY_EXISTS is still recognised should Roblox send it).
        return AlreadyExists(
            f"Could not {op.action}: {subject} already exists.{said}", current=current, **common
        )
    if status in (409, 412):
        return Conflict(
            f"Could not {op.action}: {subject} changed since it was read (its version or etag no "
            f"longer matches). Re-read it and apply the change again.{said}",
            current=current,
            **common,
        )
    if status == 429:
        wait = f" Retry after {retry_after:g} s." if retry_after is not None else ""
        return RateLimited(
            f"{_cap(ctx.service)} is rate limiting requests to {op.action}{_where(ctx)}.{wait} Data "
            f"store budgets are shared with the experience's live game servers, so slow down "
            f"rather than retry harder.{said}",
            retry_after=retry_after,
            **common,
        )
    if status >= 500:
        return ServerError(
            f"{_cap(ctx.service)} failed with HTTP {status}{f' {env.code}' if env.code else ''} while "
            f"trying to {op.action}{_where(ctx)}. This is on the server's side; try again "
            f"later.{said}",
            **common,
        )
    if status == 400:
        return InvalidArgument(
            f"{_cap(ctx.service)} rejected the request to {op.action} ({subject}) as invalid.{said}",
            **common,
        )
    return OpenCloudError(
        f"{_cap(ctx.service)} answered HTTP {status} while trying to {op.action}{_where(ctx)}.{said}",
        **common,
    )
