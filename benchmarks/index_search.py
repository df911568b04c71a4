"""Search index figures (issue 12): ingest rate, value search latency, analysis time, memory.

    .venv/bin/python -m benchmarks.index_search [--entries 1000000] [--plain]

Entries are generated here (already fetched: no Open Cloud calls), ingested in crawl-sized
batches, then typed columns are materialised as a finished crawl does. Targets: ingest at least
20,000 entries/s; value search p95 under 50 ms over 1,000,000 entries; schema + economy under
2 s; peak memory reported (ru_maxrss of this process). `--plain` measures without encryption
for comparison; the default is the encrypted file the server uses.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import tempfile
import time
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


def entries(count: int, seed: int = 1) -> list[IndexedEntry]:
    rng = random.Random(seed)
    out = []
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
        out.append(
            IndexedEntry(
                universe_id=1,
                datastore="PlayerData",
                scope="global",
                key=f"Player_{10_000_000 + i}",
                value_json=json.dumps(value, separators=(",", ":")),
                revision=f"r{i}",
                attributes={"tag": "vip"} if rng.random() < 0.01 else None,
                user_ids=[10_000_000 + i],
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--plain", action="store_true", help="without encryption")
    parser.add_argument("--runs", type=int, default=20, help="runs of each query")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = IndexStore.open(Path(tmp), None if args.plain else b"k" * 32)
        print(f"index: {store.protection.protection.value}")
        started = time.perf_counter()
        generated = entries(args.entries)
        print(f"generated {len(generated):,} entries in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        for offset in range(0, len(generated), BATCH):
            batch = generated[offset : offset + BATCH]
            # What a crawl does per page: record the listed keys, then index what it read.
            store.mark_listed(
                Backend.EMULATOR, 1, "PlayerData", [(e.scope, e.key) for e in batch], "bench"
            )
            store.ingest(Backend.EMULATOR, batch, crawl_id="bench", listed=False)
        ingest = time.perf_counter() - started
        print(f"ingest: {len(generated) / ingest:,.0f} entries/s ({ingest:.1f} s)")
        del generated
        started = time.perf_counter()
        store.finish_store(
            Backend.EMULATOR, 1, "PlayerData", "bench", scope=None, key_prefix=None, complete=True
        )
        print(
            f"finish crawl (schema snapshot + typed columns): {time.perf_counter() - started:.1f} s"
        )
        scope = Scope(Backend.EMULATOR, 1)
        engine = SearchEngine(store)
        times: list[float] = []
        for query in QUERIES:
            mine = []
            for _ in range(args.runs):
                t = time.perf_counter()
                _hits, total = engine.search(
                    scope,
                    SearchFilter(universe_id=1, query=query),
                    sort=None,
                    descending=False,
                    offset=0,
                    limit=50,
                )
                mine.append(time.perf_counter() - t)
            times += mine
            print(f"  {query!r}: {total:,} matches, median {statistics.median(mine) * 1000:.1f} ms")
        times.sort()
        p50 = times[len(times) // 2] * 1000
        p95 = times[int(len(times) * 0.95) - 1] * 1000
        print(f"value search over {args.entries:,}: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
        analytics = Analytics(store)
        started = time.perf_counter()
        analytics.schema(scope)
        schema_s = time.perf_counter() - started
        started = time.perf_counter()
        for field in analytics.suggested_currencies(scope):
            analytics.currency(scope, field, top=10, history_days=30)
        economy_s = time.perf_counter() - started
        print(f"schema {schema_s:.2f} s + economy {economy_s:.2f} s = {schema_s + economy_s:.2f} s")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"peak memory (ru_maxrss): {peak:,.0f} MiB; file {store.size_bytes() / 2**20:,.0f} MiB"
        )
        store.close()


if __name__ == "__main__":
    main()
