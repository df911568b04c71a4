"""Loading the sample game into a serving companion server: does the server keep answering?

    .venv/bin/python -m benchmarks.sample_game_load [--players 20000] [--baseline e103c83]

Each mode starts a fresh companion server in this process (tools/testing/server.py, as `dsm
serve` starts it, with its embedded emulator) and loads the sample game while two probes run on
the same loop: a timer that sleeps 5 ms at a time and records how much later than asked it woke
(the event loop's stalls), and a client that sends `GET /api/v1/hello` back to back (how long a
request waits). Modes:

- baseline: the loader as of git revision --baseline (its source from `git show`), run on the
  loop the way that revision's `POST /sample-game` ran it;
- now: `POST /api/v1/sample-game` as built (generated in a thread, written in short slices).

Figures are wall times on a shared machine, so the ratios (now / baseline, same run) are what
to read; each mode's emulator ends with the same players (checked).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from dsm.emulator.context import EMULATOR, EmulatorContext
from dsm.http.appkeys import DATA
from tools.testing.server import Server, running_server

TICK = 0.005
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Probe:
    stalls: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)


def baseline_loader(revision: str) -> ModuleType:
    """sample_game.py as of `revision`, imported beside today's (same package, same stores)."""
    source = subprocess.run(
        ["git", "show", f"{revision}:server/dsm/emulator/sample_game.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    name = "dsm.emulator._sample_game_baseline"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "dsm.emulator"
    sys.modules[name] = module
    exec(compile(source, f"{revision}:sample_game.py", "exec"), module.__dict__)
    return module


def emulator_of(server: Server) -> EmulatorContext:
    emulator = server.app[DATA].upstream.emulator
    assert emulator is not None
    return emulator.runner.app[EMULATOR]


async def probe_while(load: Awaitable[Any], server: Server) -> tuple[float, Probe]:
    """Run `load`; measure loop stalls and request waits until it ends. Its wall time."""
    probe = Probe()
    done = asyncio.Event()

    async def timer() -> None:
        while not done.is_set():
            asked = time.perf_counter()
            await asyncio.sleep(TICK)
            probe.stalls.append(time.perf_counter() - asked - TICK)

    async def client() -> None:
        while not done.is_set():
            sent = time.perf_counter()
            async with server.http.get(server.url("/api/v1/hello")) as resp:
                await resp.read()
                assert resp.status == 200
            probe.waits.append(time.perf_counter() - sent)

    probes = [asyncio.create_task(timer()), asyncio.create_task(client())]
    await asyncio.sleep(0.1)  # both probes running before the load starts
    started = time.perf_counter()
    try:
        await load
    finally:
        elapsed = time.perf_counter() - started
        done.set()
        await asyncio.gather(*probes)
    return elapsed, probe


async def run_mode(mode: str, players: int, baseline: ModuleType) -> tuple[float, Probe, int]:
    with tempfile.TemporaryDirectory(prefix="dsm-bench-sample-") as tmp:
        async with running_server(Path(tmp)) as server:
            token = await server.pair()
            ctx = emulator_of(server)
            load: Callable[[], Awaitable[Any]]
            if mode == "baseline":

                async def load() -> None:  # what that revision's handler did on the loop
                    baseline.load(ctx, universe="1", seed=1, players=players)

            else:

                async def load() -> None:
                    status, body = await server.call(
                        "POST", "/sample-game", token, json={"seed": 1, "players": players}
                    )
                    assert status == 200 and body["loaded"], body

            elapsed, probe = await probe_while(load(), server)
            (count,) = ctx.db.conn.execute(
                "SELECT count(*) FROM entries WHERE universe = '1' AND datastore = 'PlayerData'"
            ).fetchone()
            return elapsed, probe, int(count)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description="Sample game load vs a serving server")
    parser.add_argument("--players", type=int, default=20_000)
    parser.add_argument("--baseline", default="e103c83", help="git revision of the old loader")
    args = parser.parse_args()
    baseline = baseline_loader(args.baseline)
    results = {}
    for mode in ("baseline", "now"):
        elapsed, probe, count = asyncio.run(run_mode(mode, args.players, baseline))
        assert count == args.players, (mode, count)
        results[mode] = (elapsed, probe)
        waits = probe.waits or [float("nan")]
        print(
            f"{mode:8} load {elapsed:7.2f} s | loop stall max {max(probe.stalls) * 1000:8.1f} ms"
            f" p99 {pct(probe.stalls, 99) * 1000:7.1f} ms | /hello answered {len(probe.waits):5}"
            f" times, wait max {max(waits) * 1000:8.1f} ms median"
            f" {statistics.median(waits) * 1000:6.1f} ms"
        )
    (b_time, b), (n_time, n) = results["baseline"], results["now"]
    print(
        f"ratios now/baseline: load time {n_time / b_time:.2f}, longest stall "
        f"{max(n.stalls) / max(b.stalls):.4f}, longest request wait "
        f"{max(n.waits) / max(b.waits or [float('nan')]):.4f}"
    )


if __name__ == "__main__":
    main()
