"""Memory store sorted maps, queues and flush, and messaging (opencloud-api.md §5.2-5.5).

Memory store resources keep the ``cloud/v2/`` prefix in their paths (unlike data stores).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from . import ops
from .errors import InvalidArgument, NotFound, WriteOutcomeUnknown
from .models import FlushOperation, Page, QueueItem, QueueReadResult, SortedMapItem
from .transport import AnswerLost, ClientCore, Resolution, Response, paginate, universe_str
from .wire import (
    WireFormatError,
    check_json_text,
    compact,
    json_equal,
    parse_time,
    raw_array_items,
    raw_object_fields,
    seg,
)


def _duration(seconds: float | None, what: str) -> str | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise InvalidArgument(f"The {what} must be a positive number of seconds, got {seconds!r}.")
    return f"{seconds:g}s"


def _check_json(text: str, what: str) -> None:
    try:
        check_json_text(text, what)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


def _body_with_raw(head: dict[str, Any], field: str, raw_json: str) -> bytes:
    """A JSON object body that embeds ``raw_json`` verbatim under ``field``."""
    prefix = compact(head)[:-1]
    joiner = "," if head else ""
    return (prefix + joiner + json.dumps(field) + ":" + raw_json.strip() + "}").encode("utf-8")


def _sort_key_fields(sort_key: str | float | None) -> dict[str, Any]:
    if sort_key is None:
        return {}
    if isinstance(sort_key, str):
        return {"stringSortKey": sort_key}
    if isinstance(sort_key, bool) or not isinstance(sort_key, int | float):
        raise InvalidArgument(f"A sort key must be a string or a number, got {sort_key!r}.")
    return {"numericSortKey": sort_key}


class MemoryStoreMethods(ClientCore):
    # ------------------------------------------------------------- sorted maps

    @staticmethod
    def _map_path(universe: str, sorted_map: str) -> str:
        return f"/cloud/v2/universes/{universe}/memory-store/sorted-maps/{seg(sorted_map)}/items"

    def _map_item(self, text: str) -> SortedMapItem:
        raw = raw_object_fields(text)
        meta = {k: json.loads(v) for k, v in raw.items() if k != "value"}
        if not isinstance(meta.get("id"), str):
            raise WireFormatError("a sorted map item needs an id")
        numeric = meta.get("numericSortKey")
        return SortedMapItem(
            path=str(meta.get("path", "")),
            id=meta["id"],
            value_json=raw.get("value", "null"),
            etag=meta.get("etag"),
            expire_time=parse_time(meta.get("expireTime")),
            string_sort_key=meta.get("stringSortKey"),
            numeric_sort_key=float(numeric) if numeric is not None else None,
        )

    def _map_parse(self, response: Response, op: ops.Op, universe: str) -> SortedMapItem:
        try:
            return self._map_item(response.text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._bad_body(op, universe, exc) from None

    async def sorted_map_list_page(
        self,
        universe_id: int | str,
        sorted_map: str,
        *,
        descending: bool = False,
        filter: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> Page[SortedMapItem]:
        """Items ordered by id; ``filter`` is Open Cloud's CEL subset over ``id`` and
        ``sortKey`` with ``<``, ``>`` and ``&&``, e.g. ``id > "a" && id < "m"``."""
        universe = universe_str(universe_id)
        op = ops.SORTED_MAP_LIST
        response = await self._request(
            op,
            "GET",
            self._map_path(universe, sorted_map),
            universe=universe,
            subject=f"the items of sorted map {sorted_map!r}",
            params={
                "maxPageSize": page_size,
                "pageToken": page_token or None,
                "orderBy": "id desc" if descending else None,
                "filter": filter or None,
            },
        )
        try:
            data = json.loads(response.body)
            if not isinstance(data, dict):
                raise WireFormatError("expected a JSON object")
            # Re-scan each item's text so values stay verbatim.
            raw_items = raw_object_fields(response.text()).get("items", "[]")
            items = [self._map_item(text) for text in raw_array_items(raw_items)]
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._bad_body(op, universe, exc) from None
        return Page[SortedMapItem](items=items, next_page_token=data.get("nextPageToken") or None)

    def sorted_map_iter(
        self,
        universe_id: int | str,
        sorted_map: str,
        *,
        descending: bool = False,
        filter: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[SortedMapItem]:
        return paginate(
            lambda token: self.sorted_map_list_page(
                universe_id,
                sorted_map,
                descending=descending,
                filter=filter,
                page_size=page_size,
                page_token=token,
            )
        )

    async def sorted_map_get(
        self, universe_id: int | str, sorted_map: str, item_id: str
    ) -> SortedMapItem:
        universe = universe_str(universe_id)
        response = await self._request(
            ops.SORTED_MAP_GET,
            "GET",
            f"{self._map_path(universe, sorted_map)}/{seg(item_id)}",
            universe=universe,
            subject=f"item {item_id!r} of sorted map {sorted_map!r}",
        )
        return self._map_parse(response, ops.SORTED_MAP_GET, universe)

    async def _map_get_or_none(
        self, universe: str, sorted_map: str, item_id: str
    ) -> SortedMapItem | None:
        try:
            return await self.sorted_map_get(universe, sorted_map, item_id)
        except NotFound:
            return None

    async def _map_write(
        self,
        op: ops.Op,
        universe: str,
        sorted_map: str,
        item_id: str,
        value_json: str,
        ttl_seconds: float | None,
        sort_key: str | float | None,
        *,
        create: bool,
        allow_missing: bool = False,
        expected_etag: str | None = None,
    ) -> SortedMapItem:
        _check_json(value_json, "value")
        head: dict[str, Any] = dict(_sort_key_fields(sort_key))
        ttl = _duration(ttl_seconds, "ttl")
        if ttl is not None:
            head["ttl"] = ttl
        body = _body_with_raw(head, "value", value_json)
        subject = f"item {item_id!r} of sorted map {sorted_map!r}"
        base = self._map_path(universe, sorted_map)

        async def send() -> SortedMapItem:
            if create:
                response = await self._request(
                    op,
                    "POST",
                    base,
                    universe=universe,
                    subject=subject,
                    params={"id": item_id},
                    body=body,
                    write=True,
                )
            else:
                response = await self._request(
                    op,
                    "PATCH",
                    f"{base}/{seg(item_id)}",
                    universe=universe,
                    subject=subject,
                    params={"allowMissing": True if allow_missing else None},
                    body=body,
                    write=True,
                )
            return self._map_parse(response, op, universe)

        async def reconcile() -> Resolution[SortedMapItem]:
            current = await self._map_get_or_none(universe, sorted_map, item_id)
            if current is None:
                if create:
                    return Resolution("not_applied")
                return Resolution("unknown", reason="the item does not exist")
            same_key = (
                sort_key is None
                or current.string_sort_key == sort_key
                or current.numeric_sort_key == sort_key
            )
            if expected_etag is not None and current.etag == expected_etag:
                return Resolution("not_applied", current=current)
            if json_equal(current.value_json, value_json) and same_key:
                return Resolution("applied", result=current, current=current)
            return Resolution(
                "unknown",
                current=current,
                reason="the item holds another value"
                + ("" if create else "; pass expected_etag= to allow a re-send"),
            )

        return await self._write(
            op, universe=universe, subject=subject, send=send, reconcile=reconcile
        )

    async def sorted_map_create(
        self,
        universe_id: int | str,
        sorted_map: str,
        item_id: str,
        value_json: str,
        *,
        ttl_seconds: float | None = None,
        sort_key: str | float | None = None,
    ) -> SortedMapItem:
        """Create an item only if it does not exist (ttl defaults to the 45-day maximum)."""
        return await self._map_write(
            ops.SORTED_MAP_CREATE,
            universe_str(universe_id),
            sorted_map,
            item_id,
            value_json,
            ttl_seconds,
            sort_key,
            create=True,
        )

    async def sorted_map_update(
        self,
        universe_id: int | str,
        sorted_map: str,
        item_id: str,
        value_json: str,
        *,
        ttl_seconds: float | None = None,
        sort_key: str | float | None = None,
        allow_missing: bool = False,
        expected_etag: str | None = None,
    ) -> SortedMapItem:
        """Replace an item's value. Open Cloud takes no etag here (it is read-only), so
        ``expected_etag`` (the etag you read) is only used to re-send the update when its
        answer was lost and a re-read shows the item unchanged."""
        return await self._map_write(
            ops.SORTED_MAP_UPDATE,
            universe_str(universe_id),
            sorted_map,
            item_id,
            value_json,
            ttl_seconds,
            sort_key,
            create=False,
            allow_missing=allow_missing,
            expected_etag=expected_etag,
        )

    async def sorted_map_delete(
        self,
        universe_id: int | str,
        sorted_map: str,
        item_id: str,
        *,
        expected_etag: str | None = None,
    ) -> None:
        """Delete an item (deleting a missing item succeeds). ``expected_etag`` lets the
        client re-send the delete when its answer was lost and the item is unchanged."""
        universe = universe_str(universe_id)
        op = ops.SORTED_MAP_DELETE
        subject = f"item {item_id!r} of sorted map {sorted_map!r}"

        async def send() -> bool:
            await self._request(
                op,
                "DELETE",
                f"{self._map_path(universe, sorted_map)}/{seg(item_id)}",
                universe=universe,
                subject=subject,
                write=True,
            )
            return True

        async def reconcile() -> Resolution[bool]:
            current = await self._map_get_or_none(universe, sorted_map, item_id)
            if current is None:
                return Resolution("applied", result=True)
            if expected_etag is not None and current.etag == expected_etag:
                return Resolution("not_applied", current=current)
            return Resolution(
                "unknown",
                current=current,
                reason="the item still exists; pass expected_etag= to allow a re-send",
            )

        await self._write(op, universe=universe, subject=subject, send=send, reconcile=reconcile)

    # ------------------------------------------------------------------- queues

    @staticmethod
    def _queue_path(universe: str, queue: str) -> str:
        return f"/cloud/v2/universes/{universe}/memory-store/queues/{seg(queue)}/items"

    def _queue_item(self, text: str) -> QueueItem:
        raw = raw_object_fields(text)
        meta = {k: json.loads(v) for k, v in raw.items() if k != "data"}
        priority = meta.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int | float):
            raise WireFormatError("priority must be a number")
        return QueueItem(
            path=str(meta.get("path", "")),
            id=str(meta.get("id", "")),
            data_json=raw.get("data", "null"),
            priority=float(priority),
            expire_time=parse_time(meta.get("expireTime")),
        )

    async def queue_add(
        self,
        universe_id: int | str,
        queue: str,
        data_json: str,
        *,
        priority: float = 0,
        ttl_seconds: float | None = None,
    ) -> QueueItem:
        """Add an item (higher priority is read first). A lost answer is WriteOutcomeUnknown:
        queues cannot be re-read by id, and re-sending could add the item twice."""
        universe = universe_str(universe_id)
        _check_json(data_json, "queue item data")
        head: dict[str, Any] = {"priority": priority}
        ttl = _duration(ttl_seconds, "ttl")
        if ttl is not None:
            head["ttl"] = ttl
        body = _body_with_raw(head, "data", data_json)
        op = ops.QUEUE_ADD

        async def send() -> QueueItem:
            response = await self._request(
                op,
                "POST",
                self._queue_path(universe, queue),
                universe=universe,
                subject=f"queue {queue!r}",
                body=body,
                write=True,
            )
            try:
                return self._queue_item(response.text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise self._bad_body(op, universe, exc) from None

        return await self._write(
            op, universe=universe, subject=f"queue {queue!r}", send=send, reconcile=None
        )

    async def queue_read(
        self,
        universe_id: int | str,
        queue: str,
        *,
        count: int = 1,
        all_or_nothing: bool = False,
        invisibility_window_seconds: float = 30,
    ) -> QueueReadResult:
        """Read up to ``count`` items, hiding them from other readers for the window; discard
        them with ``queue_discard(read_id)`` once processed or they reappear.

        Retried like a read: items of a read whose answer was lost only stay hidden until the
        window ends.
        """
        universe = universe_str(universe_id)
        op = ops.QUEUE_READ
        response = await self._request(
            op,
            "GET",
            self._queue_path(universe, queue) + ":read",
            universe=universe,
            subject=f"queue {queue!r}",
            params={
                "count": count,
                "allOrNothing": True if all_or_nothing else None,
                "invisibilityWindow": _duration(invisibility_window_seconds, "invisibility window"),
            },
        )
        try:
            text = response.text()
            raw = raw_object_fields(text)
            read_id = json.loads(raw.get("readId", '""'))
            items = [self._queue_item(t) for t in raw_array_items(raw.get("items", "[]"))]
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._bad_body(op, universe, exc) from None
        return QueueReadResult(read_id=str(read_id), items=items)

    async def queue_discard(self, universe_id: int | str, queue: str, read_id: str) -> None:
        """Remove the items of a read. A lost answer is resolved by re-sending: discarding is
        idempotent, and a NotFound after a lost attempt means that attempt already did it."""
        universe = universe_str(universe_id)
        op = ops.QUEUE_DISCARD
        body = compact({"readId": read_id}).encode()
        lost: AnswerLost | None = None
        for resend in range(self.retry_policy.max_write_resends + 1):
            try:
                await self._request(
                    op,
                    "POST",
                    self._queue_path(universe, queue) + ":discard",
                    universe=universe,
                    subject=f"read {read_id!r} of queue {queue!r}",
                    body=body,
                    write=True,
                )
                return
            except AnswerLost as exc:
                lost = exc
                await self._sleep(self.retry_policy.backoff(resend + 1, self._rng))
            except NotFound:
                if lost is None:
                    raise
                return
        assert lost is not None
        raise WriteOutcomeUnknown(
            f"Could not confirm that the items of read {read_id!r} of queue {queue!r} were "
            f"discarded: {lost.error.message}",
            cause=lost.error,
            operation=op.name,
            universe_id=universe,
        )

    # -------------------------------------------------------------------- flush

    def _operation(self, response: Response, op: ops.Op, universe: str) -> FlushOperation:
        try:
            data = json.loads(response.body)
            if not isinstance(data, dict) or not isinstance(data.get("path"), str):
                raise WireFormatError("an operation needs a path")
        except ValueError as exc:
            raise self._bad_body(op, universe, exc) from None
        path: str = data["path"]
        return FlushOperation(
            path=path,
            operation_id=path.rstrip("/").rsplit("/", 1)[-1],
            done=bool(data.get("done", False)),
            error=data.get("error") if isinstance(data.get("error"), dict) else None,
            metadata=data.get("metadata") if isinstance(data.get("metadata"), dict) else None,
            response=data.get("response") if isinstance(data.get("response"), dict) else None,
        )

    async def flush_memory_store(
        self, universe_id: int | str, *, scope: str = "LIVE"
    ) -> FlushOperation:
        """Start flushing every memory store of the experience (``scope`` LIVE or TEST).

        Repeating a flush is harmless, so it is retried like a read."""
        universe = universe_str(universe_id)
        op = ops.FLUSH
        response = await self._request(
            op,
            "POST",
            f"/cloud/v2/universes/{universe}/memory-store:flush",
            universe=universe,
            subject=f"the memory stores of universe {universe}",
            params={"scope": scope},
        )
        return self._operation(response, op, universe)

    async def get_flush_operation(
        self, universe_id: int | str, operation_id: str, *, scope: str = "LIVE"
    ) -> FlushOperation:
        universe = universe_str(universe_id)
        op = ops.FLUSH_STATUS
        response = await self._request(
            op,
            "GET",
            f"/cloud/v2/universes/{universe}/memory-store/operations/{seg(operation_id)}",
            universe=universe,
            subject=f"flush operation {operation_id!r}",
            params={"scope": scope},
        )
        return self._operation(response, op, universe)

    # ---------------------------------------------------------------- messaging

    async def publish_message(self, universe_id: int | str, topic: str, message: str) -> None:
        """Publish to live servers subscribed to ``topic``. A lost answer is
        WriteOutcomeUnknown: re-sending could deliver the message twice."""
        universe = universe_str(universe_id)
        op = ops.PUBLISH
        body = compact({"topic": topic, "message": message}).encode("utf-8")

        async def send() -> bool:
            await self._request(
                op,
                "POST",
                f"/cloud/v2/universes/{universe}:publishMessage",
                universe=universe,
                subject=f"topic {topic!r}",
                body=body,
                write=True,
            )
            return True

        await self._write(
            op, universe=universe, subject=f"topic {topic!r}", send=send, reconcile=None
        )
