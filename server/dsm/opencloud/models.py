"""Typed results of Open Cloud calls.

Entry values are carried as raw JSON text (``value_json``), exactly as the server sent them,
next to parsed metadata. ``attributes`` is None when an entry has none (v2 sends ``{}``, v1 omits
the header); ``user_ids`` are bare integers (v2's ``users/{id}`` paths are unwrapped).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict


class CarryOver(enum.Enum):
    """Sentinel type: see CARRY_OVER."""

    CARRY_OVER = "CARRY_OVER"

    def __repr__(self) -> str:
        return "CARRY_OVER"


# Pass as ``attributes=`` or ``user_ids=`` of a write to keep the entry's current metadata: the
# client reads the entry, sends its attributes/user ids back explicitly, and conditions the write
# on the etag/version it read. Open Cloud clears metadata a write omits, so there is no default.
CARRY_OVER: Final = CarryOver.CARRY_OVER


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class Page[T](BaseModel):
    """One page of a list call; ``next_page_token`` is None on the last page."""

    model_config = ConfigDict(frozen=True)

    items: list[T]
    next_page_token: str | None = None


class DataStore(_Model):
    path: str
    name: str
    state: str  # ACTIVE | DELETED
    create_time: datetime | None = None
    expire_time: datetime | None = None  # set while a deleted store awaits purging


class ListedEntry(_Model):
    """An item of List Entries: Open Cloud only fills ``path`` and ``id``."""

    path: str
    id: str
    key: str
    scope: str


class DataStoreEntry(_Model):
    path: str
    id: str
    key: str
    scope: str
    value_json: str | None  # None on a deleted (tombstone) revision
    revision_id: str
    etag: str
    state: str  # ACTIVE | DELETED
    create_time: datetime | None = None
    revision_create_time: datetime | None = None
    attributes: dict[str, Any] | None = None
    user_ids: list[int] = []
    size_bytes: int = 0  # UTF-8 bytes of value_json


class EntryRevision(_Model):
    """An item of List Revisions; ``id`` and ``path`` carry an ``@<revisionId>`` suffix."""

    path: str
    id: str
    key: str
    revision_id: str
    etag: str
    state: str
    create_time: datetime | None = None
    revision_create_time: datetime | None = None


class SnapshotResult(_Model):
    new_snapshot_taken: bool
    latest_snapshot_time: datetime | None = None


class V1Entry(_Model):
    """A v1 Get / Get Version answer: the exact body bytes plus the ``roblox-entry-*`` headers."""

    key: str
    scope: str
    raw: bytes  # exact body; b"" for a deleted version
    value_json: str | None  # raw decoded as UTF-8; None for a deleted version
    deleted: bool
    version: str
    created_time: datetime | None = None
    version_created_time: datetime | None = None
    attributes: dict[str, Any] | None = None
    user_ids: list[int] = []
    content_md5: str | None = None
    size_bytes: int = 0


class V1EntryVersion(_Model):
    """v1 `EntryVersion`: returned by Set Entry and listed by List Entry Versions."""

    version: str
    deleted: bool
    content_length: int
    created_time: datetime | None = None
    object_created_time: datetime | None = None


class OrderedDataStoreEntry(_Model):
    path: str
    id: str
    value: int


class SortedMapItem(_Model):
    path: str
    id: str
    value_json: str
    etag: str | None = None
    expire_time: datetime | None = None
    string_sort_key: str | None = None
    numeric_sort_key: float | None = None


class QueueItem(_Model):
    path: str
    id: str
    data_json: str
    priority: float = 0.0
    expire_time: datetime | None = None


class QueueReadResult(_Model):
    read_id: str
    items: list[QueueItem]


class FlushOperation(_Model):
    """A memory store flush: a long-running operation polled by ``path``."""

    path: str
    operation_id: str
    done: bool
    error: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
