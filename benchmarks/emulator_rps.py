"""Emulator requests per second on loopback.

Starts `dsm emulator` in its own process (limits off, temporary store), seeds entries, then
drives it from this process with concurrent aiohttp workers for a fixed time per operation.

    .venv/bin/python -m benchmarks.emulator_rps [--seconds 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp

from benchmarks.support import running_emulator

DS = "/cloud/v2/universes/1/data-stores/bench"
V1 = "/datastores/v1/universes/1/standard-datastores/datastore/entries/entry"


async def drive(
    name: str,
    seconds: float,
    concurrency: int,
    op: Callable[[aiohttp.ClientSession, int], Awaitable[int]],
    http: aiohttp.ClientSession,
) -> dict[str, float | str]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(worker_id: int) -> None:
        nonlocal errors
        i = 0
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            status = await op(http, worker_id * 1_000_000 + i)
            latencies.append(time.perf_counter() - start)
            if status >= 400:
                errors += 1
            i += 1

    begun = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - begun
    latencies.sort()
    return {
        "operation": name,
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


async def main(seconds: float, concurrency: int) -> None:
    async with (
        running_emulator(["--limits", "off"]) as base,
        aiohttp.ClientSession(
            base, headers={"x-api-key": "bench"}, connector=aiohttp.TCPConnector(limit=64)
        ) as http,
    ):
        value = json.dumps({"coins": 100, "inventory": ["sword", "shield"], "level": 7})
        for i in range(200):
            async with http.post(
                f"{DS}/entries", params={"id": f"k{i}"}, data=f'{{"value": {value}}}'
            ) as resp:
                assert resp.status == 200, await resp.text()

        async def v2_get(h: aiohttp.ClientSession, n: int) -> int:
            async with h.get(f"{DS}/entries/k{n % 200}") as resp:
                await resp.read()
                return resp.status

        async def v2_update(h: aiohttp.ClientSession, n: int) -> int:
            async with h.patch(
                f"{DS}/entries/k{n % 200}", data=f'{{"value": {{"n": {n}}}}}'
            ) as resp:
                await resp.read()
                return resp.status

        async def v2_list(h: aiohttp.ClientSession, n: int) -> int:
            async with h.get(f"{DS}/entries", params={"maxPageSize": "100"}) as resp:
                await resp.read()
                return resp.status

        async def v1_get(h: aiohttp.ClientSession, n: int) -> int:
            params = {"datastoreName": "bench", "entryKey": f"k{n % 200}"}
            async with h.get(V1, params=params) as resp:
                await resp.read()
                return resp.status

        results = []
        for name, op in (
            ("v2 get entry", v2_get),
            ("v2 update entry", v2_update),
            ("v2 list 100 entries", v2_list),
            ("v1 get entry", v1_get),
        ):
            results.append(await drive(name, seconds, concurrency, op, http))
    print(f"emulator on loopback, {concurrency} concurrent clients, {seconds:.0f} s per operation")
    print(f"{'operation':<22}{'requests':>10}{'errors':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for r in results:
        print(
            f"{r['operation']:<22}{r['requests']:>10}{r['errors']:>8}{r['rps']:>10}"
            f"{r['p50_ms']:>9}{r['p99_ms']:>9}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.concurrency))
