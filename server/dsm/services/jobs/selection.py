"""Turn a `Selection` into items, page by page, resumable from a cursor.

Explicit keys become items at once. A prefix or a whole scope is listed from Open Cloud
(standard stores with Open Cloud's own prefix filter, 256 keys a page; ordered stores 100
entries a page, filtered here by prefix and by value range in Open Cloud). The cursor names the
(store, scope) stream being listed and its page token, so planning that a crash interrupted
goes on with the next page instead of counting again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from shared_schema.constraints import utf8_size
from shared_schema.entries import StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.jobs import Selection

from ...opencloud.client import OpenCloudClient
from ..dataplane import DataPlane
from ..errors import ServiceError
from .kind import ItemPage
from .store import NewItem

ALL_SCOPES = "-"
STANDARD_PAGE = 256
ORDERED_PAGE = 100


def check_selection(selection: Selection) -> None:
    """What the protocol's model cannot check: key sizes by store kind."""
    if selection.store_kind is StoreKind.STANDARD and selection.keys is not None:
        for item in selection.keys:
            if utf8_size(item.key) > 50:
                raise ServiceError(
                    ErrorCode.BAD_REQUEST,
                    f"Key {item.key!r} is {utf8_size(item.key)} bytes of UTF-8; data store keys "
                    "are at most 50.",
                )


def streams(selection: Selection) -> list[tuple[str, str]]:
    """(store, scope) pairs listed, in order; scope `-` lists every scope of a store."""
    scopes = [ALL_SCOPES] if selection.all_scopes else list(dict.fromkeys(selection.scopes))
    return [(store, scope) for store in dict.fromkeys(selection.datastores) for scope in scopes]


async def enumerate_selection(
    selection: Selection, plane: DataPlane, cursor: dict[str, Any] | None
) -> AsyncIterator[ItemPage]:
    universe = selection.universe_id
    kind = selection.store_kind
    if selection.keys is not None:
        seen: set[tuple[str, str, str]] = set()
        items = []
        for store in dict.fromkeys(selection.datastores):
            for chosen in selection.keys:
                if (store, chosen.scope, chosen.key) not in seen:
                    seen.add((store, chosen.scope, chosen.key))
                    items.append(NewItem(universe, kind.value, store, chosen.scope, chosen.key))
        yield ItemPage(items, None, True)
        return
    pairs = streams(selection)
    index = int((cursor or {}).get("stream", 0))
    token: str | None = (cursor or {}).get("token")
    while index < len(pairs):
        store, scope = pairs[index]
        if kind is StoreKind.ORDERED:
            items, token = await _ordered_page(plane, selection, store, scope, token)
        else:
            items, token = await _standard_page(plane, selection, store, scope, token)
        if token is None:
            index += 1
        done = index >= len(pairs)
        yield ItemPage(items, None if done else {"stream": index, "token": token}, done)
    if not pairs:
        yield ItemPage([], None, True)


async def _standard_page(
    plane: DataPlane, selection: Selection, store: str, scope: str, token: str | None
) -> tuple[list[NewItem], str | None]:
    universe = selection.universe_id

    async def fetch(client: OpenCloudClient) -> Any:
        return await client.list_entries_page(
            universe,
            store,
            scope=scope,
            prefix=selection.prefix,
            page_size=STANDARD_PAGE,
            page_token=token,
        )

    page = await plane.upstream.call(universe, fetch)
    items = [
        NewItem(universe, StoreKind.STANDARD.value, store, ref.scope, ref.key) for ref in page.items
    ]
    return items, page.next_page_token


async def _ordered_page(
    plane: DataPlane, selection: Selection, store: str, scope: str, token: str | None
) -> tuple[list[NewItem], str | None]:
    universe = selection.universe_id

    async def fetch(client: OpenCloudClient) -> Any:
        return await client.ordered_list_page(
            universe,
            store,
            scope=scope,
            min_value=selection.min_value,
            max_value=selection.max_value,
            page_size=ORDERED_PAGE,
            page_token=token,
        )

    page = await plane.upstream.call(universe, fetch)
    prefix = selection.prefix or ""
    items = [
        NewItem(universe, StoreKind.ORDERED.value, store, scope, entry.id)
        for entry in page.items
        if entry.id.startswith(prefix)
    ]
    return items, page.next_page_token
