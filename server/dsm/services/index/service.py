"""The search index as the server uses it: search, analytics, live updates, erasure, and what
crawl jobs (services/jobs/kinds/crawl.py) and search selections of bulk jobs ask of it.

DuckDB work runs on one dedicated thread (`IndexWorker`) so the event loop never blocks and
the connection is never shared between threads. Writes made through the server update the
index at once: the service follows the event stream, and for each `entry.changed` from the one
journaled write path it indexes the write's after-image from the journal (no extra Open Cloud
call), or drops a deleted key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
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
    ProgressionRequest,
    SchemaReport,
)
from shared_schema.common import Backend, Source, SourceKind
from shared_schema.entries import EntryState, StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.events import EntryChangedPayload, EventType
from shared_schema.index import (
    Coverage,
    IndexBasis,
    IndexDropResult,
    IndexStatus,
    StoreCoverage,
)
from shared_schema.search import (
    MAX_VERIFY_PAGE,
    EntryFilter,
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
from ...storage.journal import WriteJournal
from ..errors import ServiceError
from ..events import EventBus
from ..readthrough import ReadThrough
from ..upstream import Upstream
from .analytics import Analytics, AnalyticsError
from .crawl import NoCopy, entry_of
from .query import QuerySyntaxError
from .search import SearchEngine, check
from .store import IndexedEntry, IndexStore, Scope, to_datetime

log = logging.getLogger("dsm.index")


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

    # -- what crawl jobs and search selections use -------------------------------------

    async def index_crawled(
        self,
        backend: Backend,
        universe_id: int,
        listed: list[tuple[str, str, str]],
        entries: list[IndexedEntry],
        crawl_id: str,
    ) -> None:
        """Record a crawl's batch (keys listed, entries read), written out before it returns."""
        await self.worker.run(
            self.store.index_crawled, backend, universe_id, listed, entries, crawl_id
        )

    async def add_revisions(self, backend: Backend, entries: list[IndexedEntry]) -> int:
        return await self.worker.run(self.store.add_revisions, backend, entries)

    async def finish_store(
        self,
        backend: Backend,
        universe_id: int,
        datastore: str,
        crawl_id: str,
        *,
        scopes: tuple[str, ...],
        key_prefix: str | None,
        complete: bool,
        since: float | None,
    ) -> int:
        """A crawl of `datastore` ended: drop keys it proved gone; snapshot the schema."""
        return await self.worker.run(
            self.store.finish_store,
            backend,
            universe_id,
            datastore,
            crawl_id,
            scopes=scopes,
            key_prefix=key_prefix,
            complete=complete,
            since=since,
        )

    async def sample_keys(
        self, universe_id: int, datastore: str, scopes: tuple[str, ...], size: int, seed: int
    ) -> tuple[list[tuple[str, str, str]], int]:
        """A seeded sample of indexed keys (datastore, scope, key), and how many of them already
        have revisions indexed."""
        scope = self.scope(universe_id, (datastore,), scopes)

        def run() -> tuple[list[tuple[str, str, str]], int]:
            sample = self.analytics.sample_keys(scope, size, seed)
            return [(d, s, k) for d, s, k in sample], self.analytics.keys_with_history(
                scope, sample
            )

        return await self.worker.run(run)

    async def selection_page(
        self,
        universe_id: int,
        datastores: tuple[str, ...],
        scopes: tuple[str, ...],
        f: EntryFilter,
        after: tuple[str, str, str] | None,
        limit: int,
    ) -> list[tuple[str, str, str]]:
        """The next keys (datastore, scope, key) a filter matches in the index, in key order."""
        scope = self.scope(universe_id, datastores, scopes)
        try:
            return await self.worker.run(self.engine.selection_page, scope, f, after, limit)
        except QuerySyntaxError as exc:
            raise _query_error(exc) from None
        except ValueError as exc:
            raise _bad_request(str(exc)) from None

    async def matches_live(
        self,
        universe_id: int,
        scopes: tuple[str, ...],
        f: EntryFilter,
        entry: DataStoreEntry,
        datastore: str,
    ) -> bool:
        """Whether an entry just read from Open Cloud matches the filter (the index untouched)."""
        indexed = entry_of(universe_id, datastore, entry)
        if indexed is None:
            return False
        scope = self.scope(universe_id, (datastore,), scopes)
        try:
            return await self.worker.run(self.engine.matches_live, scope, f, indexed)
        except QuerySyntaxError as exc:
            raise _query_error(exc) from None

    async def basis(
        self, universe_id: int, datastores: tuple[str, ...], scopes: tuple[str, ...]
    ) -> IndexBasis:
        scope = self.scope(universe_id, datastores, scopes)
        return await self.worker.run(self.store.basis, scope)

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
                basis=basis,
            )

        return await self.worker.run(build)

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
        existed = self.store.exists
        removed = await self.worker.run(self.store.drop)
        return IndexDropResult(
            dropped=existed,
            entries_removed=removed,
            message="The search index was deleted; crawl again to rebuild it."
            if existed
            else "There was no search index.",
        )

    async def listing_user(
        self, universe_id: int, user_id: int
    ) -> list[tuple[str, str, str, list[int]]]:
        """Indexed entries whose user ids contain the id (see IndexStore.listing_user)."""
        return await self.worker.run(self.store.listing_user, universe_id, user_id)

    async def scrub_user(self, user_id: int) -> int:
        """Erase a user from the index (the erasure feature calls this); rows removed."""
        return await self.worker.run(self.store.scrub_user, user_id)

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
    """The index service for a server run: opened and following writes (crawls are jobs)."""
    worker = IndexWorker()
    try:
        store = await worker.run(IndexStore.open, data_dir, data_key)
        service = IndexService(store, worker, upstream, reads, journal, events)
        follower = asyncio.create_task(service.follow(events), name="dsm index follower")
        try:
            yield service
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            await worker.run(store.close)
    finally:
        worker.close()
