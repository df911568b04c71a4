"""A crawl: a resumable, budget-paced unit of work that reads data stores into the index.

`Crawl.step()` does one bounded piece (list one page of keys and read each key, or read one
sampled key's history) and leaves `state` describing where to go on, so a crawl survives a
restart and can be driven by anything that calls `step()` until `done`: today the
`CrawlRunner` below (a tracked background task), later the jobs engine as a job kind.

Every Open Cloud call goes through the one read path (`ReadThrough.read`) inside
`background_calls()`, so crawls yield to the plugin's own calls and never spend more than the
budget the limiter allows. A crawl keeps no cached copy (the index is its copy): when Open
Cloud throttles or is unreachable it waits and retries the same page, never indexes stale data.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from shared_schema.common import Backend
from shared_schema.errors import ErrorCode
from shared_schema.index import CrawlInfo, CrawlKind, CrawlState

from ...opencloud.client import OpenCloudClient
from ...opencloud.models import DataStoreEntry
from ...opencloud.ratelimit import background_calls
from ..errors import ServiceError
from ..readthrough import ReadThrough, Recalled
from .store import IndexedEntry

log = logging.getLogger("dsm.index.crawl")

LIST_PAGE = 100
READ_CONCURRENCY = 4
MAX_WAIT_SECONDS = 60.0
ALL_SCOPES = "-"


@dataclass(frozen=True)
class NoCopy:
    """A crawl keeps no cached copy: its copy is the index."""

    kind: str = "crawl"

    def recall(self) -> Recalled[Any] | None:
        return None

    def remember(self, value: Any, generation: int) -> None:
        return None


class IndexWriter(Protocol):
    """What a crawl writes to (the index, on its own thread)."""

    async def ingest(self, backend: Backend, entries: list[IndexedEntry], crawl_id: str) -> int: ...

    async def add_revisions(self, backend: Backend, entries: list[IndexedEntry]) -> int: ...

    async def mark_listed(
        self,
        backend: Backend,
        universe_id: int,
        datastore: str,
        keys: list[tuple[str, str]],
        crawl_id: str,
    ) -> None: ...

    async def finish_store(
        self,
        backend: Backend,
        universe_id: int,
        datastore: str,
        crawl_id: str,
        *,
        scope: str | None,
        key_prefix: str | None,
        complete: bool,
    ) -> int: ...


@dataclass
class CrawlPosition:
    """Where a crawl resumes: JSON-serialisable."""

    stores_listed: bool = False
    store_index: int = 0
    page_token: str | None = None
    store_failures: int = 0
    sample: list[list[str]] = field(default_factory=list)  # history: [datastore, scope, key]
    sample_index: int = 0
    max_revisions: int = 30


def entry_of(universe_id: int, datastore: str, entry: DataStoreEntry) -> IndexedEntry | None:
    if entry.value_json is None:
        return None
    return IndexedEntry(
        universe_id=universe_id,
        datastore=datastore,
        scope=entry.scope,
        key=entry.key,
        value_json=entry.value_json,
        revision=entry.revision_id,
        created_at=entry.create_time,
        updated_at=entry.revision_create_time,
        attributes=entry.attributes,
        user_ids=list(entry.user_ids),
    )


class Crawl:
    def __init__(
        self,
        info: CrawlInfo,
        position: CrawlPosition,
        *,
        key_prefix: str | None,
        reads: ReadThrough,
        index: IndexWriter,
    ) -> None:
        self.info = info
        self.position = position
        self.key_prefix = key_prefix
        self.reads = reads
        self.index = index

    @classmethod
    def new_id(cls) -> str:
        return "crawl-" + secrets.token_hex(6)

    @property
    def done(self) -> bool:
        return self.info.state in (CrawlState.DONE, CrawlState.FAILED, CrawlState.CANCELLED)

    def state(self) -> dict[str, Any]:
        return {"position": asdict(self.position), "key_prefix": self.key_prefix}

    def _update(self, **changes: Any) -> None:
        self.info = self.info.model_copy(update=changes)

    # -- reading through the one read path ----------------------------------------------

    async def _read[T](
        self, fetch: Callable[[OpenCloudClient], Awaitable[T]], what: str, category: str
    ) -> T:
        self._update(requests_made=self.info.requests_made + 1)
        with background_calls():
            answer = await self.reads.read(
                self.info.universe_id, fetch, NoCopy(), what=what, category=category
            )
        value: T = answer.value
        return value

    # -- one step ------------------------------------------------------------------------

    async def step(self) -> None:
        """One bounded piece of work; raises ServiceError for the runner to wait or stop on."""
        if self.done:
            return
        if self.info.state is not CrawlState.RUNNING:
            self._update(state=CrawlState.RUNNING, message=None)
        if self.info.kind is CrawlKind.HISTORY:
            await self._history_step()
        else:
            await self._latest_step()

    async def _latest_step(self) -> None:
        pos = self.position
        universe = self.info.universe_id
        if not pos.stores_listed:
            if not self.info.datastores:
                names = await self._all_stores()
                self._update(datastores=names)
            pos.stores_listed = True
            self._update(stores_total=len(self.info.datastores))
            self._update(requests_estimated=self.info.stores_total)
            return
        if pos.store_index >= len(self.info.datastores):
            self._finish(CrawlState.DONE)
            return
        store = self.info.datastores[pos.store_index]
        scope = self.info.scope or ALL_SCOPES
        token = pos.page_token

        async def list_page(client: OpenCloudClient) -> Any:
            return await client.list_entries_page(
                universe,
                store,
                scope=scope,
                prefix=self.key_prefix,
                page_size=LIST_PAGE,
                page_token=token,
            )

        page = await self._read(list_page, f"the key list of data store {store!r}", "list")
        refs = [(ref.scope, ref.key) for ref in page.items]
        await self.index.mark_listed(self.info.backend, universe, store, refs, self.info.crawl_id)
        self._update(
            keys_listed=self.info.keys_listed + len(refs),
            requests_estimated=(self.info.requests_estimated or 0) + len(refs) + 1,
        )
        entries = await self._read_keys(store, refs)
        await self.index.ingest(self.info.backend, entries, self.info.crawl_id)
        self._update(entries_indexed=self.info.entries_indexed + len(entries))
        pos.page_token = page.next_page_token
        if pos.page_token is None:
            removed = await self.index.finish_store(
                self.info.backend,
                universe,
                store,
                self.info.crawl_id,
                scope=self.info.scope,
                key_prefix=self.key_prefix,
                complete=pos.store_failures == 0
                and self.info.scope is None
                and self.key_prefix is None,
            )
            pos.store_index += 1
            pos.store_failures = 0
            self._update(
                stores_done=self.info.stores_done + 1,
                entries_removed=self.info.entries_removed + removed,
            )

    async def _all_stores(self) -> list[str]:
        names: list[str] = []
        token: str | None = None
        while True:

            async def page_of(client: OpenCloudClient, token: str | None = token) -> Any:
                return await client.list_data_stores_page(
                    self.info.universe_id, page_size=100, page_token=token
                )

            page = await self._read(page_of, "the data store list", "list")
            names += [store.name for store in page.items]
            token = page.next_page_token
            if token is None:
                return names

    async def _read_keys(self, store: str, refs: list[tuple[str, str]]) -> list[IndexedEntry]:
        """Read each listed key; a key deleted meanwhile is skipped, a refused read counted."""
        universe = self.info.universe_id
        semaphore = asyncio.Semaphore(READ_CONCURRENCY)

        async def one(scope: str, key: str) -> IndexedEntry | None:
            async def fetch(client: OpenCloudClient) -> DataStoreEntry:
                return await client.get_entry(universe, store, key, scope=scope)

            async with semaphore:
                try:
                    entry = await self._read(fetch, f"{store}/{scope}/{key}", "read")
                except ServiceError as exc:
                    if exc.code is ErrorCode.NOT_FOUND:
                        return None
                    if exc.retryable:
                        raise
                    self.position.store_failures += 1
                    self._update(entries_failed=self.info.entries_failed + 1)
                    log.warning(
                        "crawl %s: %s/%s/%s: %s", self.info.crawl_id, store, scope, key, exc
                    )
                    return None
            return entry_of(universe, store, entry)

        results = await asyncio.gather(*(one(s, k) for s, k in refs))
        return [entry for entry in results if entry is not None]

    async def _history_step(self) -> None:
        pos = self.position
        if pos.sample_index >= len(pos.sample):
            self._finish(CrawlState.DONE)
            return
        store, scope, key = pos.sample[pos.sample_index]
        universe = self.info.universe_id
        revisions: list[str] = []
        token: str | None = None
        while len(revisions) < pos.max_revisions:

            async def page_of(client: OpenCloudClient, token: str | None = token) -> Any:
                return await client.list_revisions_page(
                    universe, store, key, scope=scope, page_size=100, page_token=token
                )

            page = await self._read(page_of, f"the revisions of {store}/{scope}/{key}", "list")
            revisions += [r.revision_id for r in page.items if r.state != "DELETED"]
            token = page.next_page_token
            if token is None:
                break
        entries: list[IndexedEntry] = []
        for revision in revisions[-pos.max_revisions :]:

            async def fetch(client: OpenCloudClient, revision: str = revision) -> DataStoreEntry:
                return await client.get_entry(
                    universe, store, key, scope=scope, revision_id=revision
                )

            try:
                entry = await self._read(fetch, f"{store}/{scope}/{key}@{revision}", "read")
            except ServiceError as exc:
                if exc.retryable:
                    raise
                self._update(entries_failed=self.info.entries_failed + 1)
                continue
            indexed = entry_of(universe, store, entry)
            if indexed is not None:
                entries.append(indexed)
        added = await self.index.add_revisions(self.info.backend, entries)
        pos.sample_index += 1
        self._update(
            revisions_read=self.info.revisions_read + added,
            entries_indexed=self.info.entries_indexed + 1,
            stores_done=pos.sample_index,
        )

    def _finish(self, state: CrawlState, message: str | None = None) -> None:
        self._update(state=state, finished_at=datetime.now(UTC), message=message)

    def fail(self, message: str) -> None:
        self._finish(CrawlState.FAILED, message)

    def cancel(self) -> None:
        if not self.done:
            self._finish(CrawlState.CANCELLED, "Cancelled; what was indexed stays.")

    def waiting(self, message: str) -> None:
        self._update(state=CrawlState.WAITING, message=message)


async def run_crawl(
    crawl: Crawl,
    *,
    on_progress: Callable[[Crawl], Awaitable[None]],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Drive `crawl` to the end: wait out throttling and outages, stop on a refusal."""
    failures = 0
    last = 0.0
    while not crawl.done:
        try:
            await crawl.step()
            failures = 0
        except ServiceError as exc:
            if not exc.retryable:
                crawl.fail(exc.message)
                await on_progress(crawl)
                return
            failures += 1
            delay = min(MAX_WAIT_SECONDS, exc.retry_after or 2.0 * 2 ** min(failures, 5))
            crawl.waiting(f"{exc.message} Retrying in {delay:.0f} s.")
            await on_progress(crawl)
            await sleep(delay)
            continue
        now = time.monotonic()
        if crawl.done or now - last >= 0.5:
            last = now
            await on_progress(crawl)
