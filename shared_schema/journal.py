"""The local write journal: every write the server makes on a user's behalf, and undo."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .base import QueryParams, RequestBody, ResponseBody
from .constraints import IdempotencyKey, Name, PositiveInt, Sha256Hex, UtcDateTime
from .entries import EntryOperation, StoreKind
from .errors import ErrorCode
from .identity import Person


class JournalStatus(StrEnum):
    PENDING = "pending"  # recorded before the call; the outcome is not known yet
    APPLIED = "applied"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the response was lost and re-reading could not settle it


class JournalQuery(QueryParams):
    universe: PositiveInt | None = Field(default=None, description="Only this universe.")
    datastore: Name | None = Field(default=None, description="Only this data store.")
    key: Name | None = Field(default=None, description="Only this key.")
    limit: int = Field(default=50, ge=1, le=200, description="Page size (1-200).")
    before: PositiveInt | None = Field(
        default=None, description="Only items older than this id (from next_before)."
    )


class JournalItem(ResponseBody):
    id: PositiveInt = Field(description="Rises with every write; newest first in a page.")
    at: UtcDateTime
    actor: str = Field(description="Who wrote: the token's name.")
    person: Person | None = Field(
        default=None, description="The Studio user who wrote, as their plugin reported."
    )
    universe_id: PositiveInt
    store_kind: StoreKind = Field(description="Standard or ordered data store.")
    datastore: str = Field(min_length=1)
    scope: str
    key: str = Field(min_length=1, description="The entry key (or the ordered entry id).")
    operation: EntryOperation
    status: JournalStatus
    before_sha256: Sha256Hex | None = Field(
        default=None, description="Hash of the value before the write; absent if it did not exist."
    )
    after_sha256: Sha256Hex | None = Field(
        default=None, description="Hash of the value after the write; absent after a delete."
    )
    revision_after: str | None = Field(default=None, description="The revision written.")
    error_code: ErrorCode | None = Field(default=None, description="Why a FAILED write failed.")


class JournalPage(ResponseBody):
    items: list[JournalItem]
    next_before: PositiveInt | None = Field(
        default=None, description="Pass as `before` for older items; absent at the start."
    )


class UndoRequest(RequestBody):
    """Write back the value a journal item replaced (or delete what it created)."""

    idempotency_key: IdempotencyKey
