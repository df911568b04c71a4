"""Memory stores, read only: sorted map items and a look at a queue's front.

Reading a queue is not side-effect free on Open Cloud: every item a read returns is hidden from
every other reader, game servers included, for the read's invisibility window, and it comes back
after the window unless the reader discards it. A peek therefore asks for the shortest window
Roblox allows and never discards anything, and its answer states which items were hidden and
until when, so the plugin can tell the user. While they are hidden, game servers read the items
behind them instead, so a peek can change the order in which a live game processes its queue.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared_schema.common import Backend
from shared_schema.errors import ErrorCode
from shared_schema.memory import (
    QueueItemView,
    QueuePeek,
    SortedMapItem,
    SortedMapItemView,
    SortedMapPage,
)

from ..opencloud.models import QueueItem
from ..opencloud.models import SortedMapItem as WireSortedMapItem
from .errors import ServiceError
from .provenance import fresh
from .upstream import Upstream

# Open Cloud takes the window as "<seconds>s", "greater than 0" (opencloud-api.md §5.2). Only
# whole seconds are documented (engine queues also take whole seconds), so one second is the
# shortest window we can rely on Roblox accepting; a fractional one it refused would fail the
# peek after nothing else changed.
PEEK_INVISIBILITY_SECONDS = 1.0


def _where(backend: Backend) -> str:
    return "the embedded emulator" if backend is Backend.EMULATOR else "Roblox Open Cloud"


def _missing_field(backend: Backend, what: str, field: str) -> ServiceError:
    # Never fill a missing field in: say what Open Cloud left out.
    return ServiceError(
        ErrorCode.UPSTREAM_REJECTED,
        f"{_where(backend)} returned {what} without its {field}, so it cannot be shown.",
        retryable=False,
    )


def _peek_notice(queue: str, items: list[QueueItemView], hidden_until: datetime) -> str:
    if not items:
        return (
            f"Queue {queue!r} returned no items: it is empty, or every item is being processed "
            "by a game server right now (items a game server has read are hidden from other "
            "readers). Nothing was hidden or removed."
        )
    count = f"{len(items)} item" + ("" if len(items) == 1 else "s")
    seconds = f"{PEEK_INVISIBILITY_SECONDS:g} second" + (
        "" if PEEK_INVISIBILITY_SECONDS == 1 else "s"
    )
    return (
        f"Reading queue {queue!r} hid the {count} shown here from game servers for {seconds} "
        f"(until about {hidden_until.strftime('%H:%M:%S')} UTC). Nothing was removed: they "
        "become readable again after that. Items a game server is processing right now are "
        "not shown."
    )


class MemoryService:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def _backend(self, universe_id: int) -> Backend:
        return self.upstream.binding(universe_id).backend

    def _map_item(
        self, universe_id: int, sorted_map: str, item: WireSortedMapItem
    ) -> SortedMapItem:
        what = f"item {item.id!r} of sorted map {sorted_map!r}"
        if item.etag is None:
            raise _missing_field(self._backend(universe_id), what, "etag")
        if item.expire_time is None:
            raise _missing_field(self._backend(universe_id), what, "expiry time")
        sort_key = (
            item.string_sort_key if item.string_sort_key is not None else item.numeric_sort_key
        )
        return SortedMapItem(
            id=item.id,
            value_json=item.value_json,
            sort_key=sort_key,
            etag=item.etag,
            expires_at=item.expire_time,
        )

    async def sorted_map_page(
        self,
        universe_id: int,
        sorted_map: str,
        *,
        cursor: str | None,
        limit: int,
        descending: bool,
    ) -> SortedMapPage:
        page = await self.upstream.call(
            universe_id,
            lambda c: c.sorted_map_list_page(
                universe_id,
                sorted_map,
                descending=descending,
                page_size=limit,
                page_token=cursor,
            ),
        )
        return SortedMapPage(
            items=[self._map_item(universe_id, sorted_map, item) for item in page.items],
            next_cursor=page.next_page_token,
            source=fresh(self._backend(universe_id)),
        )

    async def sorted_map_item(
        self, universe_id: int, sorted_map: str, item_id: str
    ) -> SortedMapItemView:
        item = await self.upstream.call(
            universe_id, lambda c: c.sorted_map_get(universe_id, sorted_map, item_id)
        )
        shown = self._map_item(universe_id, sorted_map, item)
        return SortedMapItemView(
            **shown.model_dump(),
            sorted_map=sorted_map,
            source=fresh(self._backend(universe_id)),
        )

    def _queue_item(self, universe_id: int, queue: str, item: QueueItem) -> QueueItemView:
        if item.expire_time is None:
            raise _missing_field(
                self._backend(universe_id),
                f"item {item.id!r} of queue {queue!r} (it is now hidden from game servers for "
                f"{PEEK_INVISIBILITY_SECONDS:g}s)",
                "expiry time",
            )
        return QueueItemView(
            id=item.id,
            value_json=item.data_json,
            priority=item.priority,
            expires_at=item.expire_time,
        )

    async def peek_queue(self, universe_id: int, queue: str, count: int) -> QueuePeek:
        """Read up to `count` items from the front without removing any (see module docs)."""
        result = await self.upstream.call(
            universe_id,
            lambda c: c.queue_read(
                universe_id,
                queue,
                count=count,
                invisibility_window_seconds=PEEK_INVISIBILITY_SECONDS,
            ),
        )
        items = [self._queue_item(universe_id, queue, item) for item in result.items]
        # The window starts when Open Cloud serves the read, just before its answer arrives.
        answered_at = datetime.now(UTC)
        hidden_until = answered_at + timedelta(seconds=PEEK_INVISIBILITY_SECONDS)
        return QueuePeek(
            queue=queue,
            items=items,
            read_id=result.read_id or None,
            invisibility_seconds=PEEK_INVISIBILITY_SECONDS,
            notice=_peek_notice(queue, items, hidden_until),
            source=fresh(self._backend(universe_id), answered_at),
        )
