"""The data plane: the Open Cloud connection with the cache, the journal and the services on it.

`open_data_plane` is its lifecycle: it starts Upstream (Open Cloud, or the embedded emulator
when the vault holds no key), opens the cache and the journal, builds the one read path and
the one write path and the services on them, settles writes a previous run left open, and
closes everything in reverse order.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from ..config import ServerConfig
from ..opencloud.ratelimit import ClientBudget
from ..storage.cache import EntryCache
from ..storage.crypto import RecordCipher
from ..storage.journal import WriteJournal
from ..storage.vault import ApiKeyRecord
from .browse import BrowseService
from .entries import EntryService
from .events import EventBus
from .jobs.budget import BudgetPolicy, CcuSettings
from .journal import JournalService
from .journaled import JournaledWrites
from .memory import MemoryService
from .metrics import MeteredRateLimiter, Metrics
from .ordered import OrderedService
from .readthrough import ReadThrough
from .upstream import INTERACTIVE_BURST, OnCall, Upstream

log = logging.getLogger("dsm.dataplane")


@dataclass(frozen=True)
class DataPlane:
    upstream: Upstream
    cache: EntryCache
    reads: ReadThrough
    writes: JournaledWrites
    entries: EntryService
    browse: BrowseService
    ordered: OrderedService
    memory: MemoryService
    journal: JournalService
    # The Open Cloud budget per universe at its CCU; the limiter paces to it.
    budget: BudgetPolicy

    @classmethod
    def build(
        cls,
        upstream: Upstream,
        cache: EntryCache,
        journal: WriteJournal,
        events: EventBus,
        budget: BudgetPolicy,
        metrics: Metrics | None = None,
    ) -> DataPlane:
        reads = ReadThrough(upstream, cache, metrics)
        writes = JournaledWrites(upstream, journal, cache, events)
        entries = EntryService(upstream, cache, reads, writes)
        ordered = OrderedService(upstream, cache, reads, writes)
        return cls(
            upstream=upstream,
            cache=cache,
            reads=reads,
            writes=writes,
            entries=entries,
            browse=BrowseService(upstream, cache, reads, events),
            ordered=ordered,
            memory=MemoryService(upstream, cache, reads),
            journal=JournalService(journal, entries, ordered),
            budget=budget,
        )


def _limiter(config: ServerConfig, budget: BudgetPolicy, metrics: Metrics) -> MeteredRateLimiter:
    """Paces to each universe's documented budget at its CCU; `budget_rpm` (tests and
    benchmarks) replaces every budget with one flat rate."""
    if config.budget_rpm is None:
        return MeteredRateLimiter(
            ClientBudget.for_ccu(config.ccu, reserve_share=config.reserve_share),
            metrics=metrics,
            burst=INTERACTIVE_BURST,
            budget_for=budget.budget_for,
        )
    rpm = config.budget_rpm
    flat = ClientBudget(
        read=rpm, write=rpm, list=rpm, remove=rpm, reserve_share=config.reserve_share
    )
    return MeteredRateLimiter(flat, metrics=metrics, burst=INTERACTIVE_BURST)


def _both(first: OnCall, second: OnCall) -> OnCall:
    def on_call(operation: str, status: int | str, latency_s: float, backend: str) -> None:
        first(operation, status, latency_s, backend)
        second(operation, status, latency_s, backend)

    return on_call


@asynccontextmanager
async def open_data_plane(
    config: ServerConfig,
    *,
    keys: list[ApiKeyRecord],
    data_key: bytes,
    events: EventBus,
    metrics: Metrics,
    charge: OnCall | None = None,
) -> AsyncIterator[DataPlane]:
    """`charge` also sees every Open Cloud call (an assistant's caps count them)."""
    async with AsyncExitStack() as stack:
        budget = BudgetPolicy(
            CcuSettings(config.data_dir), default_ccu=config.ccu, reserve_share=config.reserve_share
        )
        upstream = await Upstream.start(
            keys=keys,
            base_url=config.open_cloud_base_url,
            emulator_dir=config.data_dir / "emulator",
            emulator_universes=config.emulator_universes,
            emulator_limits=config.emulator_limits,
            reserve_share=config.reserve_share,
            upstream_url=config.upstream_url,
            emulator_ccu=config.ccu,
            on_call=metrics.on_call if charge is None else _both(metrics.on_call, charge),
            limiter=_limiter(config, budget, metrics),
        )
        stack.push_async_callback(upstream.close)
        events.backend = upstream.backend
        cipher = RecordCipher(data_key)
        cache = stack.enter_context(EntryCache(config.data_dir, cipher))
        journal = stack.enter_context(WriteJournal(config.data_dir, cipher))
        plane = DataPlane.build(upstream, cache, journal, events, budget, metrics)
        settled = await plane.journal.reconcile_pending()
        if any(settled.values()):
            log.info("journal writes left open by the last run, settled by re-reading: %s", settled)
        yield plane
