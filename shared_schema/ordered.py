"""Ordered data stores: integer values sorted by value (leaderboards)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from .base import QueryParams, RequestBody, ResponseBody
from .common import Source
from .constraints import Cursor, IdempotencyKey, PositiveInt, SafeInt, WireInt

OrderedEntryId = Annotated[str, StringConstraints(min_length=1, max_length=63)]
"""Ordered entry ids: 1-63 characters (Open Cloud v2)."""


class OrderedListQuery(QueryParams):
    descending: bool = Field(default=False, description="Highest values first.")
    min: SafeInt | None = Field(default=None, description="Only values >= min.")
    max: SafeInt | None = Field(default=None, description="Only values <= max.")
    cursor: Cursor | None = None
    limit: int = Field(default=50, ge=1, le=100, description="Page size (1-100).")


class OrderedEntry(ResponseBody):
    id: str = Field(min_length=1)
    value: WireInt = Field(description="May exceed 2^53 in Open Cloud; Luau shows it rounded.")


class OrderedPage(ResponseBody):
    items: list[OrderedEntry]
    next_cursor: str | None = Field(default=None, description="Absent on the last page.")
    source: Source


class OrderedEntryView(ResponseBody):
    universe_id: PositiveInt
    ordered_store: str = Field(min_length=1)
    scope: str
    id: str = Field(min_length=1)
    value: WireInt
    journal_id: PositiveInt = Field(description="The journal item recording the write.")
    source: Source


class OrderedCreateRequest(RequestBody):
    id: OrderedEntryId
    value: SafeInt
    idempotency_key: IdempotencyKey


class OrderedUpdateRequest(RequestBody):
    value: SafeInt
    allow_missing: bool = Field(default=False, description="Create the entry if it is missing.")
    idempotency_key: IdempotencyKey


class OrderedIncrementRequest(RequestBody):
    amount: SafeInt
    idempotency_key: IdempotencyKey


class IdempotencyQuery(QueryParams):
    """For writes without a body (deletes)."""

    idempotency_key: IdempotencyKey
