"""Standard data store entries: reading, writing, history and diffs.

Values travel as raw JSON text (`value_json`) so Luau never decodes and re-encodes them (which
would turn `{}` into `[]` and round big integers).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, model_validator

from .base import QueryParams, RequestBody, ResponseBody
from .common import Source
from .constraints import (
    MAX_VALUE_BYTES,
    Attributes,
    Cursor,
    IdempotencyKey,
    JsonText,
    Name,
    NonNegativeInt,
    PositiveInt,
    SafeInt,
    UserIds,
    UtcDateTime,
)


class EntryState(StrEnum):
    ACTIVE = "ACTIVE"
    DELETED = "DELETED"  # the revision is a deletion tombstone: it has no value


class StoreKind(StrEnum):
    STANDARD = "standard"
    ORDERED = "ordered"


class EntryOperation(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    INCREMENT = "increment"
    REVERT = "revert"
    UNDO = "undo"


class EntryView(ResponseBody):
    """One revision of an entry, with everything the editor shows."""

    universe_id: PositiveInt
    datastore: str = Field(min_length=1)
    scope: str
    key: str = Field(min_length=1)
    value_json: str | None = Field(
        default=None,
        description="The value as raw JSON text; absent only when state is DELETED.",
    )
    size_bytes: NonNegativeInt = Field(description="UTF-8 size of value_json.")
    size_limit_bytes: PositiveInt = Field(
        description=f"Open Cloud's per-entry limit ({MAX_VALUE_BYTES} bytes)."
    )
    revision: str = Field(min_length=1, description="Open Cloud's version id of this revision.")
    etag: str = Field(description="Changes with every write; used for conditional requests.")
    created_at: UtcDateTime = Field(description="When the entry (key) was first created.")
    updated_at: UtcDateTime = Field(description="When this revision was written.")
    state: EntryState
    attributes: dict[str, Any] | None = Field(
        default=None, description="User metadata (a JSON object); absent when there is none."
    )
    user_ids: list[NonNegativeInt] = Field(description="Roblox user ids tagged on the entry.")
    source: Source


class EntryQuery(QueryParams):
    scope: Name = Field(default="global", description="The entry's scope.")


class EntryCreateRequest(RequestBody):
    """Create a key that must not exist yet (409 ALREADY_EXISTS otherwise)."""

    value_json: JsonText = Field(description="The new value as JSON text, at most 4 MiB.")
    attributes: Attributes | None = Field(
        default=None, description="A JSON object serializing to under 300 bytes."
    )
    user_ids: UserIds = Field(default_factory=list, description="At most 4 Roblox user ids.")
    idempotency_key: IdempotencyKey


class EntryUpdateRequest(RequestBody):
    """Replace an entry's value if it is still at `expected_revision`.

    Open Cloud clears metadata a write leaves out; this protocol does not: an omitted
    `attributes` or `user_ids` keeps the entry's current ones. To remove attributes send `{}`
    (Luau's JSONEncode sends it as `[]`, which is accepted) or null; to remove user ids send `[]`.
    """

    # Omitted and sent-empty are told apart with `model_fields_set`: read the fields through
    # `attributes_for` / `user_ids_for`, never directly, and re-serialize with exclude_unset.

    value_json: JsonText = Field(description="The new value as JSON text, at most 4 MiB.")
    expected_revision: str = Field(
        min_length=1,
        max_length=256,
        description="The revision the user edited; 409 CONFLICT if the entry has moved on.",
    )
    attributes: Attributes | None = Field(
        default=None,
        description="Omit to keep the current attributes; {} or null removes them.",
    )
    user_ids: UserIds = Field(
        default_factory=list, description="Omit to keep the current user ids; [] removes them."
    )
    idempotency_key: IdempotencyKey

    def attributes_for(self, current: dict[str, Any] | None) -> dict[str, Any] | None:
        """The attributes to write, given the entry's `current` ones (None or {} = none)."""
        if "attributes" not in self.model_fields_set:
            return current
        return self.attributes or None

    def user_ids_for(self, current: list[int]) -> list[int]:
        """The user ids to write, given the entry's `current` ones."""
        if "user_ids" not in self.model_fields_set:
            return list(current)
        return list(self.user_ids)


class EntryDeleteQuery(QueryParams):
    scope: Name = Field(default="global")
    expected_revision: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Delete only if the entry is still at this revision (409 CONFLICT otherwise).",
    )
    idempotency_key: IdempotencyKey


class IncrementRequest(RequestBody):
    amount: SafeInt = Field(description="Added to the entry's integer value (may be negative).")
    idempotency_key: IdempotencyKey


class RevertRequest(RequestBody):
    """Write an old revision's value, attributes and user ids as a new revision."""

    revision: str = Field(min_length=1, max_length=256, description="The revision to restore.")
    expected_revision: str = Field(
        min_length=1, max_length=256, description="The entry's current revision, as seen."
    )
    idempotency_key: IdempotencyKey


class DeleteResult(ResponseBody):
    journal_id: PositiveInt = Field(description="The journal item recording the deletion.")
    source: Source


class RevisionListQuery(QueryParams):
    scope: Name = Field(default="global")
    cursor: Cursor | None = None
    limit: int = Field(default=25, ge=1, le=100, description="Page size (1-100).")
    start: UtcDateTime | None = Field(default=None, description="Only revisions from this time.")
    end: UtcDateTime | None = Field(default=None, description="Only revisions up to this time.")

    @model_validator(mode="after")
    def _start_before_end(self) -> RevisionListQuery:
        # Checked here rather than left for Open Cloud to refuse (or to answer empty).
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError("start is after end, so no revision can match")
        return self


class RevisionInfo(ResponseBody):
    revision: str = Field(min_length=1)
    created_at: UtcDateTime
    state: EntryState


class RevisionPage(ResponseBody):
    """Open Cloud keeps superseded revisions for 30 days."""

    items: list[RevisionInfo]
    next_cursor: str | None = Field(default=None, description="Absent on the last page.")
    source: Source


class EntryAtQuery(QueryParams):
    scope: Name = Field(default="global")
    time: UtcDateTime = Field(description="RFC 3339 time; the revision current at that moment.")


class EntryDiffQuery(QueryParams):
    scope: Name = Field(default="global")
    from_revision: str = Field(
        alias="from", min_length=1, max_length=256, description="The older revision."
    )
    to_revision: str = Field(
        alias="to", min_length=1, max_length=256, description="The newer revision."
    )


class PatchOp(StrEnum):
    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"
    MOVE = "move"
    COPY = "copy"
    TEST = "test"


class JsonPatchOperation(ResponseBody):
    """One RFC 6902 operation, with `value` carried as JSON text like every value here.

    A Luau table cannot hold JSON null or tell `{}` from `[]`, so RFC 6902's `value` travels as
    `value_json` and `from` as `from_path`.
    """

    op: PatchOp
    path: str = Field(description="RFC 6901 JSON Pointer of the target.")
    from_path: str | None = Field(
        default=None, description="For move and copy: RFC 6901 pointer of the source."
    )
    value_json: str | None = Field(
        default=None, description="For add, replace and test: the value as JSON text."
    )


class EntryDiff(ResponseBody):
    from_revision: str
    to_revision: str
    operations: list[JsonPatchOperation] = Field(
        description="Applied in order, they turn the older value into the newer one."
    )
    attributes_changed: bool
    user_ids_changed: bool
    source: Source
