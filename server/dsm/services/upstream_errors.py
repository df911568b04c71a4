"""Open Cloud's failures as the protocol's typed errors, in words a game developer acts on.

The status says whose move it is. Open Cloud's 4xx answers mean the request could not be served
as asked (an unknown revision, a stale cursor, undeleting a live store, a key without the
scope), so they become our own 4xx codes with what Open Cloud said and what to do about it.
Only an upstream that failed (unreachable, 5xx, an answer the client cannot read, a write
whose outcome was lost) is a 5xx, and throttling stays retryable.
"""

from __future__ import annotations

from shared_schema.common import Backend
from shared_schema.errors import ErrorCode

from ..opencloud import errors as oc
from .errors import ServiceError

__all__ = ["upstream_error"]

# Operation names (opencloud.ops) whose refusals need their own explanation.
_UNDELETE = "datastores.undelete"
_REVISION_READS = {"entries.get", "entries.list_revisions"}


def _where(backend: Backend) -> str:
    return "the embedded emulator" if backend is Backend.EMULATOR else "Roblox Open Cloud"


def _said(exc: oc.OpenCloudError) -> str:
    return (exc.server_message or "").lower()


def _refusal_hint(exc: oc.OpenCloudError) -> str:
    """What the developer can do about a request Open Cloud refused as invalid."""
    said = _said(exc)
    if "page token" in said or "cursor" in said or "pagetoken" in said:
        return (
            " A cursor must be the next_cursor of the previous page, unchanged, with the same "
            "filters and page size; start again from the first page."
        )
    if exc.operation in _REVISION_READS and ("version" in said or "revision" in said):
        return " Revision ids come from the entry's revision list; copy one from there."
    if "filter" in said:
        return " Check the filter's bounds: whole numbers, min no greater than max."
    return ""


def upstream_error(exc: oc.OpenCloudError, backend: Backend) -> ServiceError:
    """Map a client error to the protocol's closed list of codes."""
    where = _where(backend)
    message = str(exc)
    if isinstance(exc, oc.AlreadyExists):
        return ServiceError(ErrorCode.ALREADY_EXISTS, message)
    if exc.operation == _UNDELETE and isinstance(exc, oc.InvalidArgument | oc.Conflict):
        # Open Cloud refuses to undelete a store that is not deleted (or already purged).
        return ServiceError(
            ErrorCode.CONFLICT,
            f"This data store is not waiting to be purged, so there is nothing to undelete: it "
            f"is live, or was never deleted. {message}",
        )
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
    if exc.status == 413:
        return ServiceError(ErrorCode.PAYLOAD_TOO_LARGE, f"{where} refused the size: {message}")
    if isinstance(exc, oc.InvalidArgument) or (exc.status is not None and exc.status < 500):
        # Refused as asked (or refused by the client before sending): the caller's to fix.
        return ServiceError(ErrorCode.BAD_REQUEST, message + _refusal_hint(exc))
    # Anything else came back in a shape no documented answer has: the upstream's fault.
    return ServiceError(ErrorCode.UPSTREAM_REJECTED, f"{where} answered unexpectedly: {message}")
