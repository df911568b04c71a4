"""Memory stores, read only: sorted map items and a look at a queue's front.

Reads go through ReadThrough like every other read: fresh, else the last answer labelled
CACHED with its age and why (a cached peek says that nothing was hidden this time).

Reading a queue is not side-effect free on Open Cloud: every item a read returns is hidden from
every other reader, game servers included, for the read's invisibility window, and it comes back
after the window unless the reader discards it. A peek therefore asks for the shortest window
Roblox allows and never discards anything, and its answer states which items were hidden and
until when, so the plugin can tell the user. While they are hidden, game servers read the items
behind them instead, so a peek can change the order in which a live game processes its queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared_schema.common import Backend
from shared_schema.errors import ErrorCode
from shared_schema.memory import (
    QueueItemView,
    QueuePeek,
    SortedMapItem,
    SortedMapItemView,
    SortedMapPage,
)

from ..opencloud.client import OpenCloudClient
from ..opencloud.models import QueueItem
from ..opencloud.models import SortedMapItem as WireSortedMapItem
from ..storage.cache import EntryCache
from .errors import ServiceError
from .provenance import fresh
from .readthrough import ListCopy, ReadThrough
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


@dataclass
class MemoryService:
    upstream: Upstream
    cache: EntryCache
    reads: ReadThrough

    def _backend(self, universe_id: int) -> Backend:
        return self.upstream.binding(universe_id).backend

    def _copy(self, kind: str, universe_id: int, *parts: str) -> ListCopy:
        return ListCopy(self.cache, kind, universe_id, None, parts, kind="memory")

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
        async def fetch(client: OpenCloudClient) -> dict[str, Any]:
            page = await client.sorted_map_list_page(
                universe_id,
                sorted_map,
                descending=descending,
                page_size=limit,
                page_token=cursor,
            )
            return {
                "items": [
                    self._map_item(universe_id, sorted_map, item).model_dump(mode="json")
                    for item in page.items
                ],
                "next_cursor": page.next_page_token,
            }

        copy = self._copy("sorted_map", universe_id, sorted_map, cursor or "", str(limit),
                          str(descending))  # fmt: skip
        answer = await self.reads.read(
            universe_id, fetch, copy, what="this sorted map page", category="list"
        )
        return SortedMapPage.model_validate({**answer.value, "source": answer.source}, strict=False)

    async def sorted_map_item(
        self, universe_id: int, sorted_map: str, item_id: str
    ) -> SortedMapItemView:
        async def fetch(client: OpenCloudClient) -> dict[str, Any]:
            item = await client.sorted_map_get(universe_id, sorted_map, item_id)
            return self._map_item(universe_id, sorted_map, item).model_dump(mode="json")

        answer = await self.reads.read(
            universe_id,
            fetch,
            self._copy("sorted_map_item", universe_id, sorted_map, item_id),
            what=f"item {item_id!r} of sorted map {sorted_map!r}",
        )
        return SortedMapItemView.model_validate(
            {**answer.value, "sorted_map": sorted_map, "source": answer.source}, strict=False
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

        async def fetch(client: OpenCloudClient) -> dict[str, Any]:
            result = await client.queue_read(
                universe_id,
                queue,
                count=count,
                invisibility_window_seconds=PEEK_INVISIBILITY_SECONDS,
            )
            items = [self._queue_item(universe_id, queue, item) for item in result.items]
            return {
                "items": [item.model_dump(mode="json") for item in items],
                "read_id": result.read_id or None,
                # The window starts when Open Cloud serves the read, just before its answer.
                "answered_at": datetime.now(UTC).isoformat(),
            }

        answer = await self.reads.read(
            universe_id,
            fetch,
            self._copy("queue_peek", universe_id, queue, str(count)),
            what=f"the front of queue {queue!r}",
        )
        items = [QueueItemView.model_validate(i, strict=False) for i in answer.value["items"]]
        answered_at = datetime.fromisoformat(answer.value["answered_at"])
        if answer.is_fresh:
            hidden_until = answered_at + timedelta(seconds=PEEK_INVISIBILITY_SECONDS)
            notice = _peek_notice(queue, items, hidden_until)
            source = fresh(self._backend(universe_id), answered_at)
        else:
            notice = (
                f"Queue {queue!r} could not be read just now, so these are the items a peek "
                f"at {answered_at.strftime('%H:%M:%S')} UTC returned; they may have been "
                "processed since. Nothing was hidden or removed this time."
            )
            source = answer.source
        return QueuePeek(
            queue=queue,
            items=items,
            read_id=answer.value["read_id"],
            invisibility_seconds=PEEK_INVISIBILITY_SECONDS,
            notice=notice,
            source=source,
        )
