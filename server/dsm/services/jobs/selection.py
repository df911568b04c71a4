"""Turn a `Selection` into items, page by page, resumable from a cursor.

Explicit keys become items at once. A prefix or a whole scope is listed from Open Cloud
(standard stores with Open Cloud's own prefix filter, 256 keys a page; ordered stores 100
entries a page, filtered here by prefix and by value range in Open Cloud). With
`all_datastores` the universe's data stores are listed first. The cursor names the stores, the
(store, scope) stream being listed and its page token, so planning that a crash interrupted goes
on with the next page instead of counting again.

A search selection (`Selection.search`) is read from the local index instead: the keys the
filter matches, in key order, a page at a time, the cursor being the last key seen. The plan
says how much of the data the index covers and how old it is (`selection_notes`); every item is
re-read live before anything is written (`writes.read_entry`), never written from the index.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from shared_schema.constraints import utf8_size
from shared_schema.entries import StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.index import IndexBasis
from shared_schema.jobs import Selection

from ...opencloud.client import OpenCloudClient
from ..dataplane import DataPlane
from ..errors import ServiceError
from ..index.search import check
from .kind import ItemPage, JobEnv, PlanNotes, search_text
from .store import NewItem

ALL_SCOPES = "-"
STANDARD_PAGE = 256
ORDERED_PAGE = 100
STORES_PAGE = 100
SEARCH_PAGE = 1000


def check_selection(selection: Selection) -> None:
    """What the protocol's model cannot check: key sizes by store kind, the search query."""
    if selection.store_kind is StoreKind.STANDARD and selection.keys is not None:
        for item in selection.keys:
            if utf8_size(item.key) > 50:
                raise ServiceError(
                    ErrorCode.BAD_REQUEST,
                    f"Key {item.key!r} is {utf8_size(item.key)} bytes of UTF-8; data store keys "
                    "are at most 50.",
                )
    search = selection.search
    if search is not None and search.query is not None:
        checked = check(search.query)
        if checked.error is not None:
            e = checked.error
            raise ServiceError(
                ErrorCode.BAD_REQUEST,
                f"The search query is not valid at line {e.line}, column {e.column}: {e.message}",
                details={"query_error": e.model_dump(mode="json")},
            )


def index_scopes(selection: Selection) -> tuple[str, ...]:
    """The scopes a search selection covers in the index (empty: every scope)."""
    return () if selection.all_scopes else tuple(dict.fromkeys(selection.scopes))


def index_stores(selection: Selection) -> tuple[str, ...]:
    """The stores a search selection covers in the index (empty: every store it holds)."""
    return () if selection.all_datastores else tuple(dict.fromkeys(selection.datastores))


def streams(stores: list[str], selection: Selection) -> list[tuple[str, str]]:
    """(store, scope) pairs listed, in order; scope `-` lists every scope of a store."""
    scopes = [ALL_SCOPES] if selection.all_scopes else list(dict.fromkeys(selection.scopes))
    return [(store, scope) for store in dict.fromkeys(stores) for scope in scopes]


def selected_stores(selection: Selection, cursor: dict[str, Any] | None) -> list[str]:
    """The data stores a planned job covers: named, or listed while planning."""
    if selection.all_datastores:
        return list((cursor or {}).get("stores") or [])
    return list(dict.fromkeys(selection.datastores))


async def enumerate_selection(
    selection: Selection, env: JobEnv, cursor: dict[str, Any] | None
) -> AsyncIterator[ItemPage]:
    universe = selection.universe_id
    kind = selection.store_kind
    if selection.search is not None:
        async for page in _search_pages(selection, env, cursor):
            yield page
        return
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
    plane = env.plane
    state = dict(cursor or {})
    if selection.all_datastores and "stores" not in state:
        state = {"stores": await _all_stores(plane, universe), "stream": 0, "token": None}
        yield ItemPage([], state, False)
    stores = selected_stores(selection, state)
    pairs = streams(stores, selection)
    index = int(state.get("stream", 0))
    token: str | None = state.get("token")
    while index < len(pairs):
        store, scope = pairs[index]
        if kind is StoreKind.ORDERED:
            items, token = await _ordered_page(plane, selection, store, scope, token)
        else:
            items, token = await _standard_page(plane, selection, store, scope, token)
        if token is None:
            index += 1
        done = index >= len(pairs)
        where: dict[str, Any] = {"stream": index, "token": token}
        if selection.all_datastores:
            where["stores"] = stores  # kept to the end: kinds read it from the final cursor
        yield ItemPage(items, where if not done or selection.all_datastores else None, done)
    if not pairs:
        yield ItemPage([], {"stores": stores} if selection.all_datastores else None, True)


async def _all_stores(plane: DataPlane, universe: int) -> list[str]:
    names: list[str] = []
    token: str | None = None
    while True:

        async def fetch(client: OpenCloudClient, token: str | None = token) -> Any:
            return await client.list_data_stores_page(
                universe, page_size=STORES_PAGE, page_token=token
            )

        page = await plane.upstream.call(universe, fetch)
        names += [store.name for store in page.items]
        token = page.next_page_token
        if token is None:
            return names


async def _search_pages(
    selection: Selection, env: JobEnv, cursor: dict[str, Any] | None
) -> AsyncIterator[ItemPage]:
    """The keys the search matches in the index, SEARCH_PAGE at a time, in key order."""
    assert selection.search is not None
    index = env.search_index()
    universe = selection.universe_id
    stores, scopes = index_stores(selection), index_scopes(selection)
    after_list = (cursor or {}).get("after")
    after = tuple(after_list) if after_list else None
    while True:
        keys = await index.selection_page(
            universe, stores, scopes, selection.search, after, SEARCH_PAGE
        )
        items = [NewItem(universe, StoreKind.STANDARD.value, d, s, k) for d, s, k in keys]
        if len(keys) < SEARCH_PAGE:
            basis = await index.basis(universe, stores, scopes)
            yield ItemPage(items, {"basis": basis.model_dump(mode="json")}, True)
            return
        after = keys[-1]
        yield ItemPage(items, {"after": list(after)}, False)


def selection_notes(selection: Selection | None, final_cursor: dict[str, Any] | None) -> PlanNotes:
    """What a plan says about where its selection came from (search selections: the index)."""
    notes = PlanNotes()
    if selection is None or selection.search is None:
        return notes
    stored = (final_cursor or {}).get("basis")
    matched = (
        f"Selected from the search index: the entries matching {search_text(selection.search)}."
    )
    if stored is None:
        notes.notes.append(matched)
        return notes
    basis = IndexBasis.model_validate(stored, strict=False)
    coverage = basis.coverage
    as_of = _when(basis.as_of)
    sample = " (the emulator's generated sample game)" if basis.sample_data else ""
    notes.notes.append(
        f"{matched} The index holds {coverage.entries_indexed:,} of the "
        f"{coverage.entries_listed:,} entries its crawls listed here ({coverage.share:.0%}), "
        f"read from {basis.backend.value}{sample}"
        + (f", the oldest as of {as_of}." if as_of else ".")
    )
    notes.notes.append(
        "Each entry is read again live before anything is done to it, never taken from the "
        "index; one that no longer matches the search (a game server changed it since it was "
        "indexed) is skipped and listed as no_longer_matches."
    )
    if not coverage.complete or coverage.share < 1:
        notes.warnings.append(
            "The index does not cover every entry here (a crawl did not finish, or keys were "
            "added since): entries it has not read cannot be selected. Crawl again first to "
            "act on everything that matches now."
        )
    if basis.note:
        notes.warnings.append(basis.note)
    return notes


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


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
