"""The search index as the server uses it: search, analytics, crawls, live updates, erasure.

DuckDB work runs on one dedicated thread (`IndexWorker`) so the event loop never blocks and
the connection is never shared between threads. Writes made through the server update the
index at once: the service follows the event stream, and for each `entry.changed` from the one
journaled write path it indexes the write's after-image from the journal (no extra Open Cloud
call), or drops a deleted key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from shared_schema.analytics import (
    AnalyticsScope,
    AnomaliesRequest,
    AnomalyReport,
    Distribution,
    DistributionRequest,
    EconomyReport,
    EconomyRequest,
    Progression,
    ProgressionPlan,
    ProgressionPlanRequest,
    ProgressionRequest,
    SchemaReport,
)
from shared_schema.common import Backend, Source, SourceKind
from shared_schema.entries import EntryState, StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.events import EntryChangedPayload, EventType
from shared_schema.index import (
    Coverage,
    CrawlInfo,
    CrawlKind,
    CrawlList,
    CrawlRequest,
    CrawlState,
    HistoryRequest,
    IndexBasis,
    IndexDropResult,
    IndexStatus,
    StoreCoverage,
)
from shared_schema.search import (
    MAX_VERIFY_PAGE,
    LiveCheck,
    LiveState,
    QueryCheck,
    SearchFilter,
    SearchPage,
    SearchRequest,
)

from ...opencloud import errors as oc
from ...opencloud.client import OpenCloudClient
from ...opencloud.models import DataStoreEntry
from ...opencloud.ratelimit import background_calls
from ...storage.journal import WriteJournal
from ..errors import ServiceError
from ..events import EventBus
from ..readthrough import ReadThrough
from ..upstream import Upstream
from .analytics import Analytics, AnalyticsError
from .crawl import Crawl, CrawlPosition, NoCopy, entry_of, run_crawl
from .query import QuerySyntaxError
from .search import SearchEngine, check
from .store import IndexedEntry, IndexStore, Scope, to_datetime

log = logging.getLogger("dsm.index")
KEEP_FINISHED_CRAWLS = 20


class IndexWorker:
    """One thread for every DuckDB call."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dsm-index")

    async def run[T](self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _bad_request(message: str, details: dict[str, Any] | None = None) -> ServiceError:
    return ServiceError(ErrorCode.BAD_REQUEST, message, details=details)


def _query_error(exc: QuerySyntaxError) -> ServiceError:
    e = exc.error
    return _bad_request(
        f"The query is not valid at line {e.line}, column {e.column}: {e.message}",
        details={"query_error": e.model_dump(mode="json")},
    )


@dataclass
class IndexService:
    store: IndexStore
    worker: IndexWorker
    upstream: Upstream
    reads: ReadThrough
    journal: WriteJournal
    events: EventBus
    crawls: dict[str, Crawl] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.engine = SearchEngine(self.store)
        self.analytics = Analytics(self.store)

    def backend(self, universe_id: int) -> Backend:
        return self.upstream.binding(universe_id).backend

    def scope(
        self, universe_id: int, datastores: tuple[str, ...] = (), scopes: tuple[str, ...] = ()
    ) -> Scope:
        return Scope(self.backend(universe_id), universe_id, datastores, scopes)

    def _analytics_scope(self, request: AnalyticsScope | Any) -> Scope:
        return self.scope(
            request.universe_id,
            (request.datastore,) if request.datastore else (),
            (request.scope,) if request.scope else (),
        )

    # -- IndexWriter (what crawls write through) ----------------------------------------

    async def ingest(self, backend: Backend, entries: list[IndexedEntry], crawl_id: str) -> int:
        return await self.worker.run(
            self.store.ingest, backend, entries, crawl_id=crawl_id, listed=False
        )

    async def add_revisions(self, backend: Backend, entries: list[IndexedEntry]) -> int:
        return await self.worker.run(self.store.add_revisions, backend, entries)

    async def mark_listed(
        self,
        backend: Backend,
        universe_id: int,
        datastore: str,
        keys: list[tuple[str, str]],
        crawl_id: str,
    ) -> None:
        await self.worker.run(
            self.store.mark_listed, backend, universe_id, datastore, keys, crawl_id
        )

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
    ) -> int:
        return await self.worker.run(
            self.store.finish_store,
            backend,
            universe_id,
            datastore,
            crawl_id,
            scope=scope,
            key_prefix=key_prefix,
            complete=complete,
        )

    # -- status and drop -----------------------------------------------------------------

    async def status(self, universe_id: int | None) -> IndexStatus:
        def build() -> IndexStatus:
            backend = self.upstream.backend
            where = "backend = ?"
            params: list[Any] = [backend.value]
            if universe_id is not None:
                where += " AND universe_id = ?"
                params.append(universe_id)
            rows = self.store.rows(
                f"""SELECT universe_id, datastore, count(*), min(crawled_at) FROM entries
                    WHERE {where} GROUP BY ALL ORDER BY universe_id, datastore""",
                params,
            )
            stores = []
            for universe, datastore, indexed, oldest in rows:
                scope = Scope(backend, universe, (datastore,))
                basis = self.store.basis(scope)
                last = self.store.rows(
                    """SELECT max(finished_at) FROM store_crawls WHERE backend = ?
                       AND universe_id = ? AND datastore = ?""",
                    [backend.value, universe, datastore],
                )
                revisions = self.store.one(
                    """SELECT count(*) FROM revisions WHERE backend = ? AND universe_id = ?
                       AND datastore = ?""",
                    [backend.value, universe, datastore],
                )[0]
                stores.append(
                    StoreCoverage(
                        universe_id=universe,
                        datastore=datastore,
                        entries_indexed=int(indexed),
                        entries_listed=basis.coverage.entries_listed,
                        complete=basis.coverage.complete,
                        last_crawl_at=to_datetime(last[0][0]) if last else None,
                        as_of=to_datetime(oldest),
                        revisions_indexed=int(revisions),
                        typed_fields=len(self.store.typed),
                    )
                )
            basis = (
                self.store.basis(Scope(backend, universe_id))
                if universe_id is not None
                else self._overall_basis(backend, stores)
            )
            return IndexStatus(
                exists=self.store.exists,
                protection=self.store.protection.protection,
                protection_note=self.store.protection.note,
                size_bytes=self.store.size_bytes(),
                stores=stores,
                crawls=[],
                basis=basis,
            )

        status = await self.worker.run(build)
        return status.model_copy(update={"crawls": self.list_crawls().crawls})

    def _overall_basis(self, backend: Backend, stores: list[StoreCoverage]) -> IndexBasis:
        universes = sorted({s.universe_id for s in stores})
        if len(universes) == 1:
            return self.store.basis(Scope(backend, universes[0]))
        indexed = sum(s.entries_indexed for s in stores)
        listed = sum(s.entries_listed for s in stores)
        return IndexBasis(
            backend=backend,
            coverage=Coverage(
                entries_indexed=indexed,
                entries_listed=listed,
                share=1.0 if listed == 0 else min(1.0, indexed / listed),
                complete=bool(stores) and all(s.complete for s in stores),
                stores=len(stores),
            ),
            as_of=min((s.as_of for s in stores if s.as_of), default=None),
            note=None if stores else "Nothing is indexed yet: crawl a universe first.",
        )

    async def drop(self) -> IndexDropResult:
        for crawl_id in list(self.tasks):
            await self.cancel_crawl(crawl_id)
        existed = self.store.exists
        removed = await self.worker.run(self.store.drop)
        self.crawls.clear()
        return IndexDropResult(
            dropped=existed,
            entries_removed=removed,
            message="The search index was deleted; crawl again to rebuild it."
            if existed
            else "There was no search index.",
        )

    async def scrub_user(self, user_id: int) -> int:
        """Erase a user from the index (the erasure feature calls this); rows removed."""
        return await self.worker.run(self.store.scrub_user, user_id)

    # -- crawls ---------------------------------------------------------------------------

    async def start_crawl(self, request: CrawlRequest) -> CrawlInfo:
        backend = self.backend(request.universe_id)
        self.upstream.client_for(request.universe_id)  # NO_API_KEY now, not in the task
        info = CrawlInfo(
            crawl_id=Crawl.new_id(),
            kind=CrawlKind.LATEST,
            universe_id=request.universe_id,
            datastores=list(dict.fromkeys(request.datastores)),
            scope=request.scope,
            state=CrawlState.QUEUED,
            created_at=datetime.now(UTC),
            backend=backend,
        )
        crawl = Crawl(
            info, CrawlPosition(), key_prefix=request.key_prefix, reads=self.reads, index=self
        )
        return await self._launch(crawl)

    async def start_history(self, request: HistoryRequest) -> CrawlInfo:
        backend = self.backend(request.universe_id)
        scope = self.scope(
            request.universe_id, (request.datastore,), (request.scope,) if request.scope else ()
        )
        sample = await self.worker.run(
            self.analytics.sample_keys, scope, request.sample_size, request.seed
        )
        if not sample:
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                f"No keys of data store {request.datastore!r} are indexed: crawl it first.",
            )
        info = CrawlInfo(
            crawl_id=Crawl.new_id(),
            kind=CrawlKind.HISTORY,
            universe_id=request.universe_id,
            datastores=[request.datastore],
            scope=request.scope,
            state=CrawlState.QUEUED,
            created_at=datetime.now(UTC),
            stores_total=len(sample),
            keys_listed=len(sample),
            requests_estimated=len(sample) * (1 + request.max_revisions_per_key),
            backend=backend,
        )
        position = CrawlPosition(
            stores_listed=True,
            sample=[list(k) for k in sample],
            max_revisions=request.max_revisions_per_key,
        )
        crawl = Crawl(info, position, key_prefix=None, reads=self.reads, index=self)
        return await self._launch(crawl)

    async def _launch(self, crawl: Crawl) -> CrawlInfo:
        self.crawls[crawl.info.crawl_id] = crawl
        await self._save(crawl)
        self.tasks[crawl.info.crawl_id] = asyncio.create_task(
            self._drive(crawl), name=f"dsm {crawl.info.crawl_id}"
        )
        self._publish(crawl)
        return crawl.info

    async def _drive(self, crawl: Crawl) -> None:
        try:
            with background_calls():
                await run_crawl(crawl, on_progress=self._progress)
        except asyncio.CancelledError:
            crawl.cancel()
            await asyncio.shield(self._save(crawl))
            self._publish(crawl)
            raise
        except Exception as exc:  # a bug must not leave the crawl "running" forever
            log.exception("crawl %s failed", crawl.info.crawl_id)
            crawl.fail(f"Internal error: {type(exc).__name__}; see the server's log.")
            await self._progress(crawl)
        finally:
            self.tasks.pop(crawl.info.crawl_id, None)
            self._forget_old()

    async def _progress(self, crawl: Crawl) -> None:
        await self._save(crawl)
        self._publish(crawl)

    async def _save(self, crawl: Crawl) -> None:
        await self.worker.run(
            self.store.save_crawl,
            crawl.info.crawl_id,
            crawl.info.created_at.timestamp(),
            crawl.info.model_dump_json(),
            json.dumps(crawl.state()),
        )

    def _publish(self, crawl: Crawl) -> None:
        try:
            self.events.publish(EventType.INDEX_CRAWL, crawl.info)
        except Exception:
            log.exception("could not publish index.crawl")

    def _forget_old(self) -> None:
        finished = [c for c in self.crawls.values() if c.done]
        finished.sort(key=lambda c: c.info.created_at)
        for crawl in finished[:-KEEP_FINISHED_CRAWLS]:
            self.crawls.pop(crawl.info.crawl_id, None)

    def list_crawls(self) -> CrawlList:
        crawls = sorted(
            self.crawls.values(), key=lambda c: (c.done, -c.info.created_at.timestamp())
        )
        return CrawlList(crawls=[c.info for c in crawls])

    def get_crawl(self, crawl_id: str) -> CrawlInfo:
        crawl = self.crawls.get(crawl_id)
        if crawl is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"No crawl {crawl_id!r} is known.")
        return crawl.info

    async def cancel_crawl(self, crawl_id: str) -> CrawlInfo:
        info = self.get_crawl(crawl_id)
        task = self.tasks.get(crawl_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return self.crawls[crawl_id].info if crawl_id in self.crawls else info

    async def resume(self) -> None:
        """Crawls a previous run left unfinished go on where they stopped."""
        for crawl_id, info_json, state_json in await self.worker.run(self.store.load_crawls):
            info = CrawlInfo.model_validate_json(info_json)
            state = json.loads(state_json)
            crawl = Crawl(
                info,
                CrawlPosition(**state["position"]),
                key_prefix=state.get("key_prefix"),
                reads=self.reads,
                index=self,
            )
            self.crawls[crawl_id] = crawl
            if crawl.done:
                continue
            if info.backend is not self.upstream.backend:
                crawl.fail("The server now talks to another Open Cloud; start the crawl again.")
                await self._save(crawl)
                continue
            log.info("resuming crawl %s", crawl_id)
            self.tasks[crawl_id] = asyncio.create_task(self._drive(crawl), name=f"dsm {crawl_id}")

    async def close(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        for task in list(self.tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- search ---------------------------------------------------------------------------

    async def check(self, query: str) -> QueryCheck:
        return check(query)

    async def search(self, request: SearchRequest) -> SearchPage:
        if request.verify_live and request.limit > MAX_VERIFY_PAGE:
            raise _bad_request(
                f"verify_live re-reads every hit from Open Cloud: use a limit of at most "
                f"{MAX_VERIFY_PAGE} (got {request.limit})."
            )
        offset = _offset(request.cursor)
        scope = self.scope(request.universe_id, tuple(request.datastores), tuple(request.scopes))

        def run() -> tuple[Any, int, Any]:
            hits, total = self.engine.search(
                scope,
                request,
                sort=request.sort,
                descending=request.descending,
                offset=offset,
                limit=request.limit,
            )
            return hits, total, self.store.basis(scope)

        try:
            hits, total, basis = await self.worker.run(run)
        except QuerySyntaxError as exc:
            raise _query_error(exc) from None
        except ValueError as exc:
            raise _bad_request(str(exc)) from None
        if request.verify_live:
            hits = [
                hit.model_copy(update={"live": await self._verify(scope, request, hit)})
                for hit in hits
            ]
        following = offset + len(hits)
        return SearchPage(
            hits=hits,
            total=total,
            next_cursor=f"o:{following}" if following < total and hits else None,
            basis=basis,
        )

    async def _verify(self, scope: Scope, f: SearchFilter, hit: Any) -> LiveCheck:
        """Re-read one hit through the read path; update the index with what changed."""
        link = hit.entry
        backend = scope.backend

        async def fetch(client: OpenCloudClient) -> DataStoreEntry | None:
            try:
                return await client.get_entry(
                    link.universe_id, link.datastore, link.key, scope=link.scope
                )
            except oc.NotFound:
                return None

        try:
            answer = await self.reads.read(
                link.universe_id, fetch, NoCopy(), what=f"{link.datastore}/{link.key}"
            )
        except ServiceError as exc:
            return LiveCheck(
                state=LiveState.UNAVAILABLE,
                source=Source(kind=SourceKind.UNAVAILABLE, backend=backend, reason=exc.message),
                reason=exc.message,
            )
        entry = answer.value
        if entry is None or entry.value_json is None:
            await self.worker.run(
                self.store.remove, backend, link.universe_id, link.datastore, link.scope, link.key
            )
            return LiveCheck(state=LiveState.DELETED, source=answer.source)
        if entry.revision_id == hit.revision:
            return LiveCheck(
                state=LiveState.UNCHANGED, live_revision=entry.revision_id, source=answer.source
            )
        indexed = entry_of(link.universe_id, link.datastore, entry)
        assert indexed is not None
        await self.worker.run(self.store.ingest, backend, [indexed], crawl_id="verify")
        still = await self.worker.run(
            self.engine.matches, scope, f, link.datastore, link.scope, link.key
        )
        return LiveCheck(
            state=LiveState.CHANGED,
            live_revision=entry.revision_id,
            still_matches=still,
            source=answer.source,
        )

    async def selection(self, f: SearchFilter) -> list[tuple[str, str, str, str]]:
        """Everything a filter matches (datastore, scope, key, revision): a bulk job's work."""
        scope = self.scope(f.universe_id, tuple(f.datastores), tuple(f.scopes))
        try:
            return await self.worker.run(lambda: list(self.engine.selection(scope, f)))
        except QuerySyntaxError as exc:
            raise _query_error(exc) from None

    # -- analytics ------------------------------------------------------------------------

    async def _analyse[T](self, fn: Callable[[], T]) -> T:
        try:
            return await self.worker.run(fn)
        except AnalyticsError as exc:
            raise _bad_request(str(exc)) from None

    async def schema(self, request: AnalyticsScope) -> SchemaReport:
        scope = self._analytics_scope(request)
        return await self._analyse(
            lambda: SchemaReport(stores=self.analytics.schema(scope), basis=self.store.basis(scope))
        )

    async def distribution(self, request: DistributionRequest) -> Distribution:
        scope = self._analytics_scope(request)
        return await self._analyse(
            lambda: self.analytics.distribution(
                scope,
                request.field,
                bins=request.bins,
                top=request.top,
                log_scale=request.log_scale,
            )
        )

    async def economy(self, request: EconomyRequest) -> EconomyReport:
        scope = self._analytics_scope(request)

        def run() -> EconomyReport:
            suggested = self.analytics.suggested_currencies(scope)
            fields = request.currencies or suggested
            return EconomyReport(
                currencies=self.analytics.currencies(
                    scope, fields, top=request.top, history_days=request.history_days
                ),
                suggested=suggested,
                basis=self.store.basis(scope),
            )

        return await self._analyse(run)

    async def progression_plan(self, request: ProgressionPlanRequest) -> ProgressionPlan:
        scope = self.scope(
            request.universe_id, (request.datastore,), (request.scope,) if request.scope else ()
        )
        rpm = (
            float(self.upstream.limiter.allowed(str(request.universe_id), "read"))
            if self.upstream.limiter is not None
            else 0.0
        )

        def run() -> ProgressionPlan:
            available = int(
                self.store.one(
                    f"SELECT count(*) FROM entries WHERE {scope.where()[0]}", scope.where()[1]
                )[0]
            )
            sample = self.analytics.sample_keys(scope, request.sample_size, 0)
            have = self.analytics.keys_with_history(scope, sample)
            requests = (len(sample) - have) * (1 + request.max_revisions_per_key)
            return ProgressionPlan(
                keys_available=available,
                sample_size=len(sample),
                keys_with_history=have,
                requests_max=requests,
                budget_per_minute=rpm,
                minutes_max=(requests / rpm) if rpm else 0.0,
                basis=self.store.basis(scope),
            )

        return await self._analyse(run)

    async def progression(self, request: ProgressionRequest) -> Progression:
        scope = self.scope(
            request.universe_id, (request.datastore,), (request.scope,) if request.scope else ()
        )
        return await self._analyse(
            lambda: self.analytics.progression(
                scope, request.field, bucket_days=request.bucket_days, series=request.series
            )
        )

    async def anomalies(self, request: AnomaliesRequest) -> AnomalyReport:
        scope = self._analytics_scope(request)

        def run() -> AnomalyReport:
            found, counts, fields, entries = self.analytics.anomalies(scope, request)
            return AnomalyReport(
                anomalies=found,
                counts=counts,
                fields_checked=fields,
                entries_checked=entries,
                basis=self.store.basis(scope),
            )

        try:
            return await self._analyse(run)
        except Exception as exc:
            if request.key_pattern is not None and "regex" in str(exc).lower():
                raise _bad_request(
                    f"key_pattern is not a valid regular expression: {exc}"
                ) from None
            raise

    # -- following writes made through the server ---------------------------------------

    async def follow(self, bus: EventBus) -> None:
        """Index every write the journaled write path publishes, as it happens."""
        cursor = bus.latest_seq
        while not bus.closed:
            batch = await bus.wait(cursor, timeout=20.0)
            cursor = batch.next_cursor
            for event in getattr(batch, "events", []):
                if event.type != EventType.ENTRY_CHANGED.value:
                    continue
                try:
                    await self.apply_change(
                        EntryChangedPayload.model_validate(event.payload, strict=False)
                    )
                except Exception:
                    log.exception("could not index the write of event %d", event.seq)

    async def apply_change(self, change: EntryChangedPayload) -> None:
        if change.store_kind is not StoreKind.STANDARD:
            return
        backend = self.backend(change.universe_id)
        if change.state is EntryState.DELETED:
            await self.worker.run(
                self.store.remove,
                backend,
                change.universe_id,
                change.datastore,
                change.scope,
                change.key,
            )
            return
        entry = self._after_image(change)
        if entry is None:
            return
        await self.worker.run(self.store.ingest, backend, [entry], crawl_id="write")

    def _after_image(self, change: EntryChangedPayload) -> IndexedEntry | None:
        if change.journal_id is None:
            return None
        detail = self.journal.get(change.journal_id)
        after = detail.after
        if after is None:
            return None
        meta = after.metadata
        return IndexedEntry(
            universe_id=change.universe_id,
            datastore=change.datastore,
            scope=change.scope,
            key=change.key,
            value_json=after.value_json,
            revision=str(meta.get("revision") or change.revision or "unknown"),
            created_at=_parse_time(meta.get("created_at")),
            updated_at=_parse_time(meta.get("updated_at")) or datetime.now(UTC),
            attributes=meta.get("attributes") or None,
            user_ids=list(meta.get("user_ids") or []),
        )


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    prefix, _, number = cursor.partition(":")
    if prefix != "o" or not number.isdigit():
        raise _bad_request("cursor is not one this server issued; start from the first page.")
    return int(number)


@asynccontextmanager
async def open_index(
    data_dir: Path,
    data_key: bytes | None,
    *,
    upstream: Upstream,
    reads: ReadThrough,
    journal: WriteJournal,
    events: EventBus,
) -> AsyncIterator[IndexService]:
    """The index service for a server run: opened, following writes, crawls resumed."""
    worker = IndexWorker()
    try:
        store = await worker.run(IndexStore.open, data_dir, data_key)
        service = IndexService(store, worker, upstream, reads, journal, events)
        follower = asyncio.create_task(service.follow(events), name="dsm index follower")
        await service.resume()
        try:
            yield service
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            await service.close()
            await worker.run(store.close)
    finally:
        worker.close()
