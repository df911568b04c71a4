"""Where a value came from; Open Cloud failures are mapped in upstream_errors (re-exported)."""

from __future__ import annotations

from datetime import UTC, datetime

from shared_schema.common import Backend, Source, SourceKind

from ..opencloud import errors as oc
from .upstream_errors import upstream_error


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


__all__ = ["cached", "fresh", "is_unreachable", "upstream_error"]
