"""`crawl` and `crawl_history`: read Open Cloud into the local search index (docs/search.md).

A crawl is an ordinary job, so it is planned, paced to the background budget, paused, resumed
after a crash and cancelled like every other. Planning lists the selected keys and records each
listed page in the index (the denominator of its coverage) before the page's items are
committed; each item reads its key and writes it to the index before its outcome is committed.
A crash between the two re-reads the key: the index write is an upsert, so nothing is lost or
counted twice. When every item has an outcome, each crawled store's keys that the listing no
longer has are dropped (a complete listing proves them gone) and the schema is snapshotted for
drift. A refresh is a new crawl of the same selection.

`crawl_history` reads the revision history of a seeded sample of indexed keys (progression and
sudden jumps); its plan says the sample and the requests it costs before anything is read.

Both write only the local index, never Open Cloud: they have nothing to roll back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

from shared_schema.common import Backend, Role
from shared_schema.errors import ErrorCode
from shared_schema.jobs import (
    CrawlHistoryParams,
    CrawlParams,
    JobKind,
    JobSample,
    SampleAction,
)

from ....opencloud.client import OpenCloudClient
from ...errors import ServiceError
from ...index.crawl import entry_of
from ...index.store import IndexedEntry
from ..kind import (
    ItemContext,
    ItemPage,
    ItemResult,
    JobEnv,
    JobKindHandler,
    JobSpec,
    PlanNotes,
    RunResources,
    register,
)
from ..selection import enumerate_selection, selected_stores
from ..store import ItemRecord, NewItem
from ..writes import missing, read_entry, sample

if TYPE_CHECKING:
    from ...index.service import IndexService

REVISIONS_PAGE = 100
Listed = tuple[str, str, str]


class CrawlBatch(RunResources):
    """Group commit of a crawl's index writes: items that finish reading while a write is under
    way are written together by the next one. Each item waits until its own entry is written
    out, so its outcome is never committed before the index holds it."""

    def __init__(self, index: IndexService, backend: Backend, universe: int, crawl_id: str):
        self.index, self.backend, self.universe, self.crawl_id = index, backend, universe, crawl_id
        self._listed: list[Listed] = []
        self._entries: list[IndexedEntry] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None

    async def add(self, listed: Listed, entry: IndexedEntry | None) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._listed.append(listed)
        if entry is not None:
            self._entries.append(entry)
        self._waiters.append(done)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name=f"dsm {self.crawl_id} index")
        await asyncio.shield(done)

    async def _write(self) -> None:
        try:
            while self._waiters:
                listed, entries, waiters = self._listed, self._entries, self._waiters
                self._listed, self._entries, self._waiters = [], [], []
                try:
                    await self.index.index_crawled(
                        self.backend, self.universe, listed, entries, self.crawl_id
                    )
                except Exception as exc:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(exc)
                else:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(None)
        finally:
            self._writer = None
            for waiter in self._waiters:  # cut by shutdown: those items stay pending
                if not waiter.done():
                    waiter.cancel()

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)


class IndexReadKind(JobKindHandler):
    """What both kinds share: they read Open Cloud into the index and write nothing there. Their
    plan samples read nothing (they are just the first keys the job will read)."""

    role: ClassVar[Role] = Role.EDITOR
    rollback = "none"
    pace = "read"

    def check(self, spec: JobSpec, env: JobEnv) -> None:
        if spec.selection is not None and spec.selection.search is not None:
            raise ServiceError(
                ErrorCode.BAD_REQUEST,
                "A crawl reads data stores into the index; it cannot select by a search of the "
                "index itself. Select stores, scopes or a key prefix.",
            )
        env.search_index()


class CrawlKind(IndexReadKind):
    kind: ClassVar[JobKind] = JobKind.CRAWL
    params_model = CrawlParams

    def describe(self, spec: JobSpec) -> str:
        return "Crawl into the search index: " + super().describe(spec)[len("Crawl ") :]

    def enumerate(
        self, spec: JobSpec, env: JobEnv, cursor: dict[str, Any] | None
    ) -> AsyncIterator[ItemPage]:
        assert spec.selection is not None
        index = env.search_index()
        backend = index.backend(spec.universe)
        pages = enumerate_selection(spec.selection, env, cursor)

        async def listed() -> AsyncIterator[ItemPage]:
            async for page in pages:
                keys = [(i.datastore, i.scope, i.key) for i in page.items]
                if keys:  # written out before the page's items (and cursor) are committed
                    await index.index_crawled(backend, spec.universe, keys, [], spec.id)
                yield page

        return listed()

    def requests(self, spec: JobSpec, items: int) -> dict[int, dict[str, int]]:
        return {spec.universe: {"read": items}}

    def plan_notes(
        self, spec: JobSpec, env: JobEnv, final_cursor: dict[str, Any] | None
    ) -> PlanNotes:
        notes = PlanNotes()
        notes.notes.append(
            "Each listed key is read once and written to the local search index; nothing is "
            "written to Open Cloud. Keys the listing no longer has are dropped from the index "
            "when the crawl ends."
        )
        return notes

    async def sample(self, spec: JobSpec, item: ItemRecord, env: JobEnv) -> JobSample:
        return sample(item, SampleAction.READ, "would read into the search index")

    async def open_run(self, spec: JobSpec, env: JobEnv) -> RunResources:
        index = env.search_index()
        return CrawlBatch(index, index.backend(spec.universe), spec.universe, spec.id)

    async def execute(self, ctx: ItemContext) -> ItemResult:
        item = ctx.item
        entry = await read_entry(ctx, item.universe, item.datastore, item.scope, item.key)
        indexed = None if entry is None else entry_of(item.universe, item.datastore, entry)
        batch: CrawlBatch = ctx.resources
        await batch.add((item.datastore, item.scope, item.key), indexed)
        if indexed is None:
            return missing()
        return ItemResult.applied()

    async def finish(self, spec: JobSpec, env: JobEnv, resources: Any) -> dict[str, Any]:
        selection = spec.selection
        assert selection is not None
        index = env.search_index()
        record = env.store.get(spec.id)
        stores = selected_stores(selection, record.plan_cursor)
        # The scopes it listed (empty: every scope); its listing of them is complete when no
        # key failed, however many scopes were named.
        scopes = () if selection.all_scopes else tuple(dict.fromkeys(selection.scopes))
        complete = record.failed == 0
        since = (record.started_ms or record.created_ms) / 1000
        for store in stores:
            await index.finish_store(
                index.backend(spec.universe),
                spec.universe,
                store,
                spec.id,
                scopes=scopes,
                key_prefix=selection.prefix,
                complete=complete and selection.keys is None,
                since=since,
            )
        return {}


class CrawlHistoryKind(IndexReadKind):
    kind: ClassVar[JobKind] = JobKind.CRAWL_HISTORY
    params_model = CrawlHistoryParams

    def check(self, spec: JobSpec, env: JobEnv) -> None:
        super().check(spec, env)
        selection = spec.selection
        assert selection is not None
        if len(selection.datastores) != 1 or selection.keys is not None:
            raise ServiceError(
                ErrorCode.BAD_REQUEST,
                "A history read samples the indexed keys of one data store: name exactly one "
                "in datastores.",
            )

    def describe(self, spec: JobSpec) -> str:
        assert spec.selection is not None
        params: CrawlHistoryParams = spec.params
        return (
            f"Read the revision history of {params.sample_size} sampled keys of data store "
            f"{spec.selection.datastores[0]} (universe {spec.universe}) into the search index"
        )

    def enumerate(
        self, spec: JobSpec, env: JobEnv, cursor: dict[str, Any] | None
    ) -> AsyncIterator[ItemPage]:
        selection = spec.selection
        assert selection is not None
        params: CrawlHistoryParams = spec.params
        index = env.search_index()

        async def pages() -> AsyncIterator[ItemPage]:
            scopes = () if selection.all_scopes else tuple(selection.scopes)
            keys, have = await index.sample_keys(
                spec.universe, selection.datastores[0], scopes, params.sample_size, params.seed
            )
            if not keys:
                raise ServiceError(
                    ErrorCode.NOT_FOUND,
                    f"No keys of data store {selection.datastores[0]!r} are indexed: crawl it "
                    "first.",
                )
            items = [NewItem(spec.universe, "standard", d, s, k) for d, s, k in keys]
            yield ItemPage(items, {"with_history": have}, True)

        return pages()

    def requests(self, spec: JobSpec, items: int) -> dict[int, dict[str, int]]:
        params: CrawlHistoryParams = spec.params
        return {spec.universe: {"list": items, "read": items * params.max_revisions_per_key}}

    def plan_notes(
        self, spec: JobSpec, env: JobEnv, final_cursor: dict[str, Any] | None
    ) -> PlanNotes:
        params: CrawlHistoryParams = spec.params
        notes = PlanNotes()
        have = int((final_cursor or {}).get("with_history", 0))
        notes.notes.append(
            f"Each sampled key costs one revision list and up to {params.max_revisions_per_key} "
            "revision reads; the revisions are written to the local search index only."
        )
        if have:
            notes.notes.append(
                f"{have} of the sampled keys already have revisions indexed; they are read again "
                "(newer revisions may exist)."
            )
        return notes

    async def sample(self, spec: JobSpec, item: ItemRecord, env: JobEnv) -> JobSample:
        return sample(item, SampleAction.READ, "would read its revision history")

    async def execute(self, ctx: ItemContext) -> ItemResult:
        item = ctx.item
        params: CrawlHistoryParams = ctx.spec.params
        plane = ctx.env.plane
        revisions: list[str] = []
        token: str | None = None
        while True:

            async def page_of(client: OpenCloudClient, token: str | None = token) -> Any:
                return await client.list_revisions_page(
                    item.universe,
                    item.datastore,
                    item.key,
                    scope=item.scope,
                    page_size=REVISIONS_PAGE,
                    page_token=token,
                )

            page = await plane.upstream.call(item.universe, page_of)
            revisions += [r.revision_id for r in page.items if r.state != "DELETED"]
            token = page.next_page_token
            if token is None:
                break
        entries: list[IndexedEntry] = []
        for revision in revisions[-params.max_revisions_per_key :]:

            async def fetch(client: OpenCloudClient, revision: str = revision) -> Any:
                return await client.get_entry(
                    item.universe, item.datastore, item.key, scope=item.scope, revision_id=revision
                )

            entry = await plane.upstream.call(item.universe, fetch)
            indexed = entry_of(item.universe, item.datastore, entry)
            if indexed is not None:
                entries.append(indexed)
        index = ctx.env.search_index()
        added = await index.add_revisions(index.backend(item.universe), entries)
        return ItemResult.applied(f"{added} revisions indexed")


register(CrawlKind())
register(CrawlHistoryKind())
