"""Latency the companion server adds, measured on loopback (not part of the test run).

Each figure is a nearest-rank percentile of real timings; nothing is estimated.

(a) Cache-hit read through the API against a bare aiohttp handler returning a JSON body of the
    same size, all in this one process on 127.0.0.1: the real server app (`create_app`, started
    by tools/testing/server.py exactly as `dsm serve` starts it, with guards, token auth and
    pairing), its embedded emulator, a bare aiohttp app, and one sequential aiohttp client. The
    server's GET entry reads fresh from Open Cloud by design and uses its cache only when Open
    Cloud cannot answer, so the cache-hit path is measured as that fallback: one read, then the
    embedded emulator is stopped and the same entry is read again and again (every answer is
    checked to be CACHED). Measured twice:
    (a1) as built: each read first spends the client's retry budget on the dead upstream;
    (a2) with the client's retries turned off (RetryPolicy(max_attempts=1)) - a one-line patch
         of this process only, labelled as such - which isolates what the cache hit itself costs
         (HTTP, guards, token check, one refused connection, cache lookup and decryption).
    The server paces Open Cloud calls per (universe, category) to keep half of each budget for
    the game's servers (default reserve share: 150 reads/min, bursts of 10); reads rotate over
    many universes with a gap so pacing never delays a measured request, and the rate limiter's
    waits are recorded and printed (they must be 0).
(b) Uncached read (every GET entry goes to Open Cloud) through a real `dsm serve` in a child
    process, pointed with --upstream at a `dsm emulator` in another, against the same read sent
    straight to that emulator, interleaved, from this process; reported as added latency. The
    server runs apart from the client as it does for Studio, so work it does after answering
    (the cache copy) is not charged to the answer; --ccu is at its maximum so its pacing never
    holds a read. Each read through the server is paired with the straight read sent right
    before it (so what the server does after answering happens in the gap, not during the
    straight read), and the median of the differences is reported beside p50 - p50 (it follows
    a shared machine's drift less); so is the server process's CPU time per read (/proc), which
    does not depend on how busy the machine is. With --baseline REV, the server as of that git
    revision (git archive, run from the extracted tree) is measured too, the two taking turns
    (ROUNDS servers each).

    .venv/bin/python -m benchmarks.server_latency [--samples 1000] [--universes 50]
        [--baseline 698f92c] [--part a|b]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import math
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import aiohttp
from aiohttp import web

from benchmarks.support import running_emulator, running_serve
from dsm.config import ServerConfig
from dsm.opencloud.client import OpenCloudClient
from dsm.opencloud.ratelimit import MAX_CCU, WINDOW_SECONDS, ClientBudget, ClientRateLimiter
from dsm.opencloud.retry import RetryPolicy
from dsm.services.upstream import INTERACTIVE_BURST
from shared_schema.common import Role
from tools.testing.server import Server, entry_path, idem, running_server

DS = "PlayerData"
KEY = "player_1234567"
# A plausible save: about 2 KB of JSON.
VALUE = json.dumps(
    {
        "coins": 123456,
        "level": 42,
        "inventory": [{"id": f"item_{i}", "count": i, "tags": {}} for i in range(30)],
        "settings": {"music": True, "sfx": 0.8, "keybinds": []},
    },
    separators=(",", ":"),
)
WARMUP = 50
# Part (b) starts a server per tree this many times, the trees taking turns (a noisy machine
# drifts; turns spread the drift over both).
ROUNDS = 3
BEFORE_SPEED_WORK = "698f92c"
# The server's pacing of reads per universe, from the same settings `dsm serve` uses.
READ_INTERVAL = WINDOW_SECONDS / ClientBudget(
    reserve_share=ServerConfig(data_dir=Path(".")).reserve_share
).allowed_per_window("read")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def describe(name: str, samples: list[float]) -> tuple[float, float]:
    p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
    print(f"  {name:<44} n={len(samples):<5} p50={p50 * 1000:9.3f} ms  p99={p99 * 1000:9.3f} ms")
    return p50, p99


async def timed(call: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


def record_waits(limiter: ClientRateLimiter | None) -> list[float]:
    """Seconds the server's rate limiter held each Open Cloud request back."""
    assert limiter is not None
    waits: list[float] = []
    original = limiter.acquire

    async def acquire(universe_id: str, category: str) -> float:
        waited = await original(universe_id, category)
        waits.append(waited)
        return waited

    limiter.acquire = acquire  # type: ignore[method-assign]
    return waits


def client_retries_off() -> AbstractContextManager[object]:
    """Build the server's Open Cloud clients with one attempt per request (variant a2 only)."""
    return mock.patch(
        "dsm.services.upstream.OpenCloudClient",
        functools.partial(OpenCloudClient, retry=RetryPolicy(max_attempts=1)),
    )


@asynccontextmanager
async def bare_app(body: bytes) -> AsyncIterator[str]:
    """The baseline: an aiohttp handler that returns a fixed JSON body and does nothing else."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/entry", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/entry"
    finally:
        await runner.cleanup()


class Reader:
    """GET an entry through the server's API and check where the answer came from."""

    def __init__(self, server: Server, token: str, expect: str) -> None:
        self.server = server
        self.headers = {"Authorization": f"Bearer {token}"}
        self.expect = expect
        self.last_body = b""

    async def read(self, universe: int) -> None:
        url = self.server.url("/api/v1" + entry_path(universe, DS, KEY))
        async with self.server.http.get(url, headers=self.headers) as resp:
            self.last_body = await resp.read()
        assert resp.status == 200, self.last_body[:300]
        kind = json.loads(self.last_body)["source"]["kind"]
        assert kind == self.expect, f"expected a {self.expect} answer, got {kind}"


async def seed(server: Server, token: str, universes: range) -> None:
    for universe in universes:
        status, body = await server.call(
            "POST",
            entry_path(universe, DS, KEY),
            token,
            json={"value_json": VALUE, "idempotency_key": idem()},
        )
        assert status == 200, body


async def rotate(
    call: Callable[[int], Awaitable[None]], universes: range, count: int, gap: float
) -> list[float]:
    """`count` timed calls over the universes in turn, `gap` seconds apart."""
    samples: list[float] = []
    for i in range(count):
        universe = universes[i % len(universes)]
        samples.append(await timed(functools.partial(call, universe)))
        await asyncio.sleep(gap)
    return samples


async def part_a1(data_dir: Path, samples: int) -> tuple[bytes, list[float], list[float]]:
    async with running_server(data_dir) as server:
        token = await server.pair("bench", Role.VIEWER)
        writer = await server.pair("bench-writer", Role.EDITOR)
        await seed(server, writer, range(1, 2))
        await Reader(server, token, "EMULATOR").read(1)
        emulator = server.upstream.emulator
        assert emulator is not None
        await emulator.stop()
        reader = Reader(server, token, "CACHED")
        await reader.read(1)
        waits = record_waits(server.upstream.limiter)
        times = [await timed(functools.partial(reader.read, 1)) for _ in range(samples)]
        return reader.last_body, times, waits


async def part_a2(
    data_dir: Path, universes: range, samples: int, gap: float
) -> tuple[list[float], list[float]]:
    with client_retries_off():
        async with running_server(data_dir) as server:
            token = await server.pair("bench", Role.VIEWER)
            writer = await server.pair("bench-writer", Role.EDITOR)
            await seed(server, writer, universes)
            fresh = Reader(server, token, "EMULATOR")
            for universe in universes:
                await fresh.read(universe)
            emulator = server.upstream.emulator
            assert emulator is not None
            await emulator.stop()
            waits = record_waits(server.upstream.limiter)
            reader = Reader(server, token, "CACHED")
            await rotate(reader.read, universes, WARMUP, gap)
            return await rotate(reader.read, universes, samples, gap), waits


async def seed_straight(http: aiohttp.ClientSession, emulator: str, universes: range) -> None:
    """The entry in every universe, written straight to the emulator (v2 create)."""
    for universe in universes:
        url = f"{emulator}/cloud/v2/universes/{universe}/data-stores/{DS}/entries?id={KEY}"
        async with http.post(url, json={"value": json.loads(VALUE)}) as resp:
            assert resp.status == 200, await resp.text()


async def read_through(
    http: aiohttp.ClientSession, base_url: str, token: str, universe: int
) -> None:
    """GET the entry through a server's API; the answer must come from Open Cloud."""
    url = base_url + "/api/v1" + entry_path(universe, DS, KEY)
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        body = await resp.read()
    assert resp.status == 200, body[:300]
    kind = json.loads(body)["source"]["kind"]
    assert kind != "CACHED", "a cached answer: Open Cloud was not read"


@dataclass
class Through:
    """Part (b) for one server tree: paired timings and the server's CPU time per read."""

    through: list[float] = field(default_factory=list)
    straight: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # per server started: CPU seconds per read


async def part_b(
    root: Path, trees: list[tuple[str, Path | None]], universes: range, samples: int, gap: float
) -> dict[str, Through]:
    """Timings per tree, the trees taking turns in rounds."""
    rounds = ROUNDS
    found = {label: Through() for label, _ in trees}
    async with (
        running_emulator(["--limits", "off"]) as emulator,
        aiohttp.ClientSession(headers={"x-api-key": "bench"}) as straight_http,
        aiohttp.ClientSession() as through_http,
    ):
        await seed_straight(straight_http, emulator, universes)

        async def straight(universe: int) -> None:
            url = f"{emulator}/cloud/v2/universes/{universe}/data-stores/{DS}/entries/{KEY}"
            async with straight_http.get(url) as resp:
                await resp.read()
            assert resp.status == 200

        for turn in range(rounds):
            for label, tree in trees:
                home = root / f"{label}-{turn}"
                serve_args = ("--upstream", emulator, "--ccu", str(MAX_CCU))
                async with running_serve(home, tree, *serve_args) as server:
                    through = functools.partial(
                        read_through, through_http, server.base_url, server.viewer_token
                    )
                    for i in range(WARMUP):
                        await through(universes[i % len(universes)])
                        await straight(universes[i % len(universes)])
                    got = found[label]
                    cpu_before = server.cpu_seconds()
                    count = samples // rounds
                    for i in range(count):
                        universe = universes[i % len(universes)]
                        # Straight first: what the server does after answering (its cache copy)
                        # then happens in the gap, not while the emulator answers the pair.
                        got.straight.append(await timed(functools.partial(straight, universe)))
                        got.through.append(await timed(functools.partial(through, universe)))
                        await asyncio.sleep(gap)
                    cpu_after = server.cpu_seconds()
                    if cpu_before is not None and cpu_after is not None:
                        got.cpu.append((cpu_after - cpu_before) / count)
    return found


def source_tree(revision: str, into: Path) -> Path:
    """The repository as of `revision` (git archive), for measuring it beside this one."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision],
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
        capture_output=True,
    ).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


async def main(
    samples: int,
    cached_samples: int,
    universe_count: int,
    gap_ms: float,
    baseline_rev: str | None,
    part: str | None,
) -> None:
    universes = range(1000, 1000 + universe_count)
    gap = gap_ms / 1000
    per_universe = universe_count * gap
    print("Companion server latency on 127.0.0.1 (one process, sequential requests)")
    print(f"  entry value: {len(VALUE.encode())} bytes of JSON; reads rotate over "
          f"{universe_count} universes, {gap_ms:g} ms apart ({per_universe:.2f} s per universe; "
          f"the limiter allows one per {READ_INTERVAL:.2f} s after a burst of "
          f"{INTERACTIVE_BURST})")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="dsm-bench-") as tmp:
        root = Path(tmp)
        if part != "b":
            await cached_reads(root, samples, cached_samples, universes, gap)
        if part == "a":
            return
        await uncached_reads(root, samples, universes, gap, baseline_rev)


async def cached_reads(
    root: Path, samples: int, cached_samples: int, universes: range, gap: float
) -> None:
    print("\n(a1) cache-hit read through the API, as built: upstream stopped, same entry")
    cached_body, a1, waits_a1 = await part_a1(root / "a1", cached_samples)
    print(f"  (every answer CACHED; body {len(cached_body)} bytes)")
    print(
        f"  {len(waits_a1) / len(a1):.2f} Open Cloud attempts per read (after the first "
        "failure the server skips Open Cloud for a while and answers from the cache)"
    )
    async with bare_app(cached_body) as url, aiohttp.ClientSession() as http:

        async def bare() -> None:
            async with http.get(url) as resp:
                await resp.read()

        for _ in range(WARMUP):
            await bare()
        baseline = [await timed(bare) for _ in range(samples)]
    b50, b99 = describe("bare aiohttp handler, same-sized body", baseline)
    c50, c99 = describe("server, CACHED (client retries on)", a1)
    print(f"  ratio server/bare: p50 x{c50 / b50:,.0f}   p99 x{c99 / b99:,.0f}")

    print("\n(a2) the same cache hit with the client's retries off (patched in this process)")
    a2, waits_a2 = await part_a2(root / "a2", universes, samples, gap)
    describe("bare aiohttp handler, same-sized body", baseline)
    d50, d99 = describe("server, CACHED (one attempt, then cache)", a2)
    print(f"  ratio server/bare: p50 x{d50 / b50:.1f}   p99 x{d99 / b99:.1f}")
    print(f"  rate-limiter wait during the run: {sum(waits_a2):.3f} s over {len(waits_a2)} calls")


async def uncached_reads(
    root: Path, samples: int, universes: range, gap: float, baseline_rev: str | None
) -> None:
    print(
        "\n(b) uncached read: through `dsm serve` (a child process, --upstream to a `dsm "
        "emulator`) vs the same read sent straight to that emulator, interleaved"
    )
    trees: list[tuple[str, Path | None]] = [("current", None)]
    if baseline_rev is not None:
        before = source_tree(baseline_rev, root / "baseline")
        trees.insert(0, (f"baseline {baseline_rev}", before))
    found = await part_b(root / "b", trees, universes, samples, gap)
    added: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for label, got in found.items():
        print(f"  {label}:")
        s50, s99 = describe("straight to the emulator (v2 GET entry)", got.straight)
        t50, t99 = describe("through the server (GET /api/v1/.../entries)", got.through)
        # Each read through the server is paired with the straight one sent right after it:
        # the median of the differences follows the machine's drift less than p50 - p50.
        pairs = [a - b for a, b in zip(got.through, got.straight, strict=True)]
        added[label] = percentile(pairs, 0.5)
        print(f"    added by the server: p50 +{(t50 - s50) * 1000:.3f} ms   "
              f"p99 +{(t99 - s99) * 1000:.3f} ms   "
              f"median of paired differences +{added[label] * 1000:.3f} ms")  # fmt: skip
        if got.cpu:
            cpu[label] = statistics.median(got.cpu)
            print(f"    server CPU per read: {cpu[label] * 1000:.3f} ms (median of "
                  f"{len(got.cpu)} servers, /proc utime + stime)")  # fmt: skip
    if baseline_rev is not None:
        (before, after), labels = list(added.values()), list(added)
        print(f"  added (paired), {labels[0]} / current: x{before / max(after, 1e-6):.2f}")
        if len(cpu) == 2:
            before_cpu, after_cpu = cpu.values()
            print(f"  server CPU per read, {labels[0]} / current: x{before_cpu / after_cpu:.2f}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=1000, help="requests per measurement")
    parser.add_argument("--cached-samples", type=int, default=1000, help="requests for (a1)")
    parser.add_argument("--universes", type=int, default=50, help="universes to rotate over")
    parser.add_argument("--gap-ms", type=float, default=10.0, help="pause between requests")
    parser.add_argument("--part", choices=["a", "b"], help="only (a) or only (b)")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also measure (b) for the server as of git revision REV, taking turns with this one "
        f"(e.g. {BEFORE_SPEED_WORK}, the commit before the read path was made faster)",
    )
    args = parser.parse_args()
    for name in ("samples", "cached_samples", "universes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.universes * args.gap_ms < READ_INTERVAL * 1000:
        parser.error(
            f"universes x gap-ms must be >= {READ_INTERVAL * 1000:.0f} ms, or the server's "
            "pacing is measured instead of its latency"
        )
    asyncio.run(
        main(
            args.samples, args.cached_samples, args.universes, args.gap_ms, args.baseline, args.part
        )
    )


if __name__ == "__main__":
    cli()
