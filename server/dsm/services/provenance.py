"""Where a value came from, and Open Cloud failures in words a game developer understands."""

from __future__ import annotations

from datetime import UTC, datetime

from shared_schema.common import Backend, Source, SourceKind
from shared_schema.errors import ErrorCode

from ..opencloud import errors as oc
from .errors import ServiceError


def fresh(backend: Backend, fetched_at: datetime | None = None) -> Source:
    """A value just read from Open Cloud (LIVE) or the embedded emulator (EMULATOR)."""
    kind = SourceKind.EMULATOR if backend is Backend.EMULATOR else SourceKind.LIVE
    return Source(kind=kind, backend=backend, fetched_at=fetched_at or datetime.now(UTC))


def cached(backend: Backend, fetched_at: float, age_seconds: float, reason: str) -> Source:
    return Source(
        kind=SourceKind.CACHED,
        backend=backend,
        fetched_at=datetime.fromtimestamp(fetched_at, UTC),
        age_seconds=round(age_seconds, 3),
        reason=reason,
    )


def is_unreachable(exc: BaseException) -> bool:
    """Failures after which a cached copy may be shown instead (labelled CACHED)."""
    return isinstance(exc, oc.NetworkError | oc.ServerError | oc.RateLimited)


def upstream_error(exc: oc.OpenCloudError, backend: Backend) -> ServiceError:
    """Map a client error to the protocol's closed list of codes."""
    where = "the embedded emulator" if backend is Backend.EMULATOR else "Roblox Open Cloud"
    message = str(exc)
    if isinstance(exc, oc.AlreadyExists):
        return ServiceError(ErrorCode.ALREADY_EXISTS, message)
    if isinstance(exc, oc.Conflict):
        return ServiceError(ErrorCode.CONFLICT, message)
    if isinstance(exc, oc.NotFound):
        return ServiceError(ErrorCode.NOT_FOUND, message)
    if isinstance(exc, oc.Unauthorized | oc.PermissionDenied):
        return ServiceError(ErrorCode.UPSTREAM_PERMISSION, message)
    if isinstance(exc, oc.RateLimited):
        return ServiceError(
            ErrorCode.UPSTREAM_THROTTLED,
            f"{where} is throttling requests for this universe: {message}",
            retry_after=exc.retry_after,
        )
    if isinstance(exc, oc.WriteOutcomeUnknown):
        return ServiceError(ErrorCode.WRITE_OUTCOME_UNKNOWN, message)
    if isinstance(exc, oc.NetworkError | oc.ServerError):
        return ServiceError(ErrorCode.UPSTREAM_UNAVAILABLE, f"{where} is unreachable: {message}")
    if isinstance(exc, oc.InvalidArgument):
        return ServiceError(ErrorCode.UPSTREAM_REJECTED, f"{where} refused the request: {message}")
    return ServiceError(ErrorCode.UPSTREAM_REJECTED, message)
