"""Memory stores (read-only views): sorted maps and queues.

Reading a queue is not side-effect free in Open Cloud: read items become invisible to game
servers for the invisibility window. QueuePeek carries that window and a notice the plugin shows.
"""

from __future__ import annotations

from pydantic import Field

from .base import QueryParams, ResponseBody
from .common import Source
from .constraints import Cursor, UtcDateTime


class SortedMapListQuery(QueryParams):
    cursor: Cursor | None = None
    limit: int = Field(default=50, ge=1, le=100, description="Page size (1-100).")
    descending: bool = Field(default=False)


class SortedMapItem(ResponseBody):
    id: str = Field(min_length=1)
    value_json: str = Field(description="The item's value as raw JSON text.")
    sort_key: str | float | None = Field(
        default=None, description="String or number the map is sorted by; absent if none."
    )
    etag: str
    expires_at: UtcDateTime


class SortedMapPage(ResponseBody):
    items: list[SortedMapItem]
    next_cursor: str | None = Field(default=None, description="Absent on the last page.")
    source: Source


class SortedMapItemView(SortedMapItem):
    sorted_map: str = Field(min_length=1)
    source: Source


class QueuePeekQuery(QueryParams):
    count: int = Field(default=10, ge=1, le=200, description="Items to read (1-200).")


class QueueItemView(ResponseBody):
    id: str = Field(min_length=1)
    value_json: str = Field(description="The item's value as raw JSON text.")
    priority: float
    expires_at: UtcDateTime


class QueuePeek(ResponseBody):
    queue: str = Field(min_length=1)
    items: list[QueueItemView]
    read_id: str | None = Field(
        default=None, description="Open Cloud's read id; the server never discards with it."
    )
    invisibility_seconds: float = Field(
        ge=0, description="Read items stay hidden from game servers this long."
    )
    notice: str = Field(description="What the plugin must show the user about the hidden items.")
    source: Source
