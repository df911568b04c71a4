"""Everything listed before an entry is opened: universes, data stores, scopes and keys.

List pages are cached too, so a user who loses Open Cloud mid-session still sees the pages they
already opened, labelled CACHED with their age and the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from shared_schema.common import Backend, Source, SourceKind
from shared_schema.data import (
    DataStoreInfo,
    DataStorePage,
    DataStoreState,
    Environment,
    KeyItem,
    KeyPage,
    ScopeList,
    UniverseInfo,
    UniverseList,
)
from shared_schema.events import DataStoreChangedPayload, EventType

from ..opencloud import errors as oc
from ..opencloud.client import OpenCloudClient
from ..opencloud.models import DataStore, ListedEntry, Page
from ..storage.cache import EntryCache
from .journaled import Actor, Publisher
from .provenance import fresh
from .readthrough import ListCopy, ReadThrough
from .upstream import Upstream

log = logging.getLogger("dsm.browse")
ALL_SCOPES = "-"
# Deriving scopes walks keys of every scope; stop after this many keys and say so.
SCOPE_SCAN_LIMIT = 10_000
DELETED_PAGE_LIMIT = 25


async def _all_scopes_page(
    universe_id: int, datastore: str, token: str | None, client: OpenCloudClient
) -> Page[ListedEntry]:
    return await client.list_entries_page(
        universe_id, datastore, scope=ALL_SCOPES, page_size=256, page_token=token
    )


def _store_info(store: DataStore) -> DataStoreInfo:
    return DataStoreInfo(
        name=store.name,
        created_at=store.create_time,
        state=DataStoreState.DELETED if store.state == "DELETED" else DataStoreState.ACTIVE,
        expires_at=store.expire_time,
    )


@dataclass
class BrowseService:
    upstream: Upstream
    cache: EntryCache
    reads: ReadThrough
    events: Publisher

    def _backend(self, universe_id: int) -> Backend:
        return self.upstream.binding(universe_id).backend

    async def _listing(
        self,
        universe_id: int,
        copy: ListCopy,
        fetch: Callable[[OpenCloudClient], Awaitable[dict[str, Any]]],
    ) -> tuple[dict[str, Any], Source]:
        """A page fresh from Open Cloud, or its labelled cached copy (see ReadThrough)."""
        answer = await self.reads.read(universe_id, fetch, copy, what="this list", category="list")
        return answer.value, answer.source

    async def universes(self) -> UniverseList:
        bindings, problem = await self.upstream.universes()
        return UniverseList(
            universes=[
                UniverseInfo(
                    universe_id=b.universe_id,
                    label=b.label,
                    environment=Environment(b.environment),
                    backend=b.backend,
                )
                for b in bindings
            ],
            source=fresh(self.upstream.backend)
            if problem is None
            else Source(
                kind=SourceKind.UNAVAILABLE,
                backend=self.upstream.backend,
                reason=f"Only the configured universes are listed: {problem}.",
            ),
        )

    async def datastores(
        self,
        universe_id: int,
        *,
        prefix: str | None,
        cursor: str | None,
        limit: int,
        show_deleted: bool,
    ) -> DataStorePage:
        async def fetch(client: OpenCloudClient) -> dict[str, Any]:
            page = await client.list_data_stores_page(
                universe_id,
                prefix=prefix,
                show_deleted=show_deleted,
                page_size=limit,
                page_token=cursor,
            )
            return {
                "items": [_store_info(s).model_dump(mode="json") for s in page.items],
                "next_cursor": page.next_page_token,
            }

        parts = (prefix or "", cursor or "", str(limit), str(show_deleted))
        copy = ListCopy(self.cache, "datastores", universe_id, None, parts)
        page, source = await self._listing(universe_id, copy, fetch)
        return DataStorePage.model_validate({**page, "source": source}, strict=False)

    async def delete_datastore(self, actor: Actor, universe_id: int, name: str) -> DataStoreInfo:
        store = await self.upstream.call(
            universe_id, lambda c: c.delete_data_store(universe_id, name)
        )
        self.cache.invalidate_datastore(universe_id, name)
        self.cache.invalidate_universe(universe_id)
        self._publish(actor, universe_id, name, store)
        return _store_info(store)

    async def undelete_datastore(self, actor: Actor, universe_id: int, name: str) -> DataStoreInfo:
        store = await self.upstream.call(
            universe_id, lambda c: c.undelete_data_store(universe_id, name)
        )
        self.cache.invalidate_universe(universe_id)
        self._publish(actor, universe_id, name, store)
        return _store_info(store)

    def _publish(self, actor: Actor, universe_id: int, name: str, store: DataStore) -> None:
        payload = DataStoreChangedPayload(
            universe_id=universe_id,
            datastore=name,
            state=DataStoreState.DELETED if store.state == "DELETED" else DataStoreState.ACTIVE,
            actor=actor.name,
        )
        # The change has landed: a failed notification must not turn it into an error.
        try:
            self.events.publish(EventType.DATASTORE_CHANGED, payload)
        except Exception:
            log.exception("could not publish datastore.changed for %s", name)

    async def keys(
        self,
        universe_id: int,
        datastore: str,
        *,
        scope: str,
        all_scopes: bool,
        prefix: str | None,
        cursor: str | None,
        limit: int,
        show_deleted: bool,
    ) -> KeyPage:
        wanted_scope = ALL_SCOPES if all_scopes else scope

        async def fetch(client: OpenCloudClient) -> dict[str, Any]:
            page = await client.list_entries_page(
                universe_id,
                datastore,
                scope=wanted_scope,
                prefix=prefix,
                show_deleted=show_deleted,
                page_size=limit,
                page_token=cursor,
            )
            return {
                "items": [
                    KeyItem(scope=ref.scope, key=ref.key, deleted=False).model_dump(mode="json")
                    for ref in page.items
                ],
                "next_cursor": page.next_page_token,
            }

        if show_deleted:
            # v2 lists only path and id, so which listed keys are deleted is learned by
            # comparing with the listing without deleted keys over the same range.
            # Each listed key costs one read, so such pages are kept small.
            return await self._keys_marking_deleted(
                universe_id, datastore, wanted_scope, prefix, cursor, min(limit, DELETED_PAGE_LIMIT)
            )
        parts = (wanted_scope, prefix or "", cursor or "", str(limit))
        copy = ListCopy(self.cache, "keys", universe_id, datastore, parts)
        page, source = await self._listing(universe_id, copy, fetch)
        return KeyPage.model_validate({**page, "source": source}, strict=False)

    async def _keys_marking_deleted(
        self,
        universe_id: int,
        datastore: str,
        scope: str,
        prefix: str | None,
        cursor: str | None,
        limit: int,
    ) -> KeyPage:
        page = await self.upstream.call(
            universe_id,
            lambda c: c.list_entries_page(
                universe_id,
                datastore,
                scope=scope,
                prefix=prefix,
                show_deleted=True,
                page_size=limit,
                page_token=cursor,
            ),
        )
        items = [
            KeyItem(
                scope=ref.scope,
                key=ref.key,
                deleted=not await self._exists(universe_id, datastore, ref.scope, ref.key),
            )
            for ref in page.items
        ]
        return KeyPage(
            items=items, next_cursor=page.next_page_token, source=fresh(self._backend(universe_id))
        )

    async def _exists(self, universe_id: int, datastore: str, scope: str, key: str) -> bool:
        async def read(client: OpenCloudClient) -> bool:
            try:
                await client.get_entry(universe_id, datastore, key, scope=scope)
            except oc.NotFound:
                return False
            return True

        return await self.upstream.call(universe_id, read)

    async def scopes(self, universe_id: int, datastore: str) -> ScopeList:
        """Open Cloud has no scope listing: walk the keys of every scope, up to a limit."""
        found: set[str] = set()
        seen = 0
        cursor: str | None = None
        complete = True
        while True:
            page = await self.upstream.call(
                universe_id, partial(_all_scopes_page, universe_id, datastore, cursor)
            )
            found.update(ref.scope for ref in page.items)
            seen += len(page.items)
            cursor = page.next_page_token
            if not cursor:
                break
            if seen >= SCOPE_SCAN_LIMIT:
                complete = False
                break
        return ScopeList(
            scopes=sorted(found), complete=complete, source=fresh(self._backend(universe_id))
        )
