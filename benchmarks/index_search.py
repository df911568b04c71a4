"""Search index figures (issue 12): ingest rate, value search latency, analysis time, memory.

    .venv/bin/python -m benchmarks.index_search [--entries 1000000] [--plain]

Entries are generated here batch by batch (already fetched: no Open Cloud calls; each with the
times Open Cloud gives, spread over the last 30 days) and ingested as a crawl does (keys marked
listed, then the entries), including the final write-out of the crawl's buffer. The crawl is then
finished (schema snapshot, typed columns). Targets: ingest at least 20,000 entries/s; value
search p95 under 50 ms over 1,000,000 entries; schema + economy under 2 s; peak memory reported.

Wall time is what the targets mean; the machine is shared, so CPU time (all threads of this
process) is printed beside it. Search latency is the engine's page and count, then the same with
the coverage basis every search answer carries (what a search request costs the index thread).
Analyses run cold, as after any write (no cached result is valid). `--plain` measures without encryption.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dsm.services.index.analytics import Analytics
from dsm.services.index.search import SearchEngine
from dsm.services.index.store import IndexedEntry, IndexStore, Scope
from shared_schema.common import Backend
from shared_schema.search import SearchFilter

BATCH = 10_000
QUERIES = [
    "coins > 1e9",
    'coins > 1e6 and inventory has "sword" and not exists(banned)',
    "level between 10 and 20",
    'name ~ "^xX"',
    "settings.music = true and gems >= 400",
    "userIds has 10000123",
    'attributes.tag = "vip"',
]


def batches(count: int, seed: int = 1, size: int = BATCH) -> Iterator[list[IndexedEntry]]:
    """`count` player saves in batches of `size`, the same for the same seed."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out: list[IndexedEntry] = []
    for i in range(count):
        value = {
            "coins": int(rng.paretovariate(1.2) * 100),
            "gems": rng.choice([0, 0, 0, 80, 400, 1700]),
            "level": rng.randint(1, 100),
            "xp": rng.randint(0, 10**6),
            "name": ("xX" if rng.random() < 0.01 else "p") + str(i),
            "inventory": rng.sample(
                ["sword", "shield", "bow", "potion", "wand"], rng.randint(0, 3)
            ),
            "settings": {"music": rng.random() < 0.7, "language": rng.choice(["en", "es", "fr"])},
        }
        if rng.random() < 0.001:
            value["banned"] = True
        updated = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
        out.append(
            IndexedEntry(
                universe_id=1,
                datastore="PlayerData",
                scope="global",
                key=f"Player_{10_000_000 + i}",
                value_json=json.dumps(value, separators=(",", ":")),
                revision=f"r{i}",
                created_at=updated - timedelta(seconds=rng.uniform(0, 60 * 86400)),
                updated_at=updated,
                attributes={"tag": "vip"} if rng.random() < 0.01 else None,
                user_ids=[10_000_000 + i],
            )
        )
        if len(out) == size:
            yield out
            out = []
    if out:
        yield out


class Clock:
    """Wall and CPU seconds of a measured stretch."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--plain", action="store_true", help="without encryption")
    parser.add_argument("--runs", type=int, default=20, help="runs of each query")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = IndexStore.open(Path(tmp), None if args.plain else b"k" * 32)
        print(f"index: {store.protection.protection.value}")
        ingest_wall = ingest_cpu = 0.0
        for batch in batches(args.entries):
            with Clock() as clock:
                # What a crawl does per page: record the listed keys, then index what it read.
                store.mark_listed(
                    Backend.EMULATOR, 1, "PlayerData", [(e.scope, e.key) for e in batch], "bench"
                )
                store.ingest(Backend.EMULATOR, batch, crawl_id="bench", listed=False)
            ingest_wall += clock.wall
            ingest_cpu += clock.cpu
        with Clock() as clock:
            store.flush()  # what is still buffered is part of the ingest
        ingest_wall += clock.wall
        ingest_cpu += clock.cpu
        print(
            f"ingest: {args.entries / ingest_wall:,.0f} entries/s ({ingest_wall:.1f} s; "
            f"CPU {ingest_cpu:.1f} s, {args.entries / ingest_cpu:,.0f} entries/CPU-s)"
        )
        with Clock() as clock:
            store.finish_store(
                Backend.EMULATOR,
                1,
                "PlayerData",
                "bench",
                scope=None,
                key_prefix=None,
                complete=True,
            )
        print(f"finish crawl (schema snapshot + typed columns): {clock.wall:.1f} s")
        scope = Scope(Backend.EMULATOR, 1)
        engine = SearchEngine(store)
        engine_times: list[float] = []
        request_times: list[float] = []
        for query in QUERIES:
            mine = []
            for _ in range(args.runs):
                with Clock() as search:
                    _hits, total = engine.search(
                        scope,
                        SearchFilter(universe_id=1, query=query),
                        sort=None,
                        descending=False,
                        offset=0,
                        limit=50,
                    )
                with Clock() as basis:
                    store.basis(scope)
                mine.append(search.wall)
                request_times.append(search.wall + basis.wall)
            engine_times += mine
            mine.sort()
            print(f"  {query!r}: {total:,} matches, median {percentile(mine, 0.5) * 1000:.1f} ms")
        for name, times in (("search", engine_times), ("search + basis", request_times)):
            times.sort()
            print(
                f"{name} over {args.entries:,}: p50 {percentile(times, 0.5) * 1000:.1f} ms, "
                f"p95 {percentile(times, 0.95) * 1000:.1f} ms"
            )
        store.generation += 1  # analyses run cold, as after any write: no cached result is valid
        analytics = Analytics(store)
        with Clock() as schema:
            analytics.schema(scope)
        with Clock() as economy:  # what POST /analytics/economy does
            suggested = analytics.suggested_currencies(scope)
            analytics.currencies(scope, suggested, top=10, history_days=30)
        print(
            f"schema {schema.wall:.2f} s + economy {economy.wall:.2f} s = "
            f"{schema.wall + economy.wall:.2f} s (CPU {schema.cpu + economy.cpu:.2f} s)"
        )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"peak memory (ru_maxrss): {peak:,.0f} MiB; file {store.size_bytes() / 2**20:,.0f} MiB"
        )
        store.close()


if __name__ == "__main__":
    main()
