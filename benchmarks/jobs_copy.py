"""A copy job against the documented budget at CCU 100, with 50 ms latency, and a plain loop.

The emulator runs in its own process with documented limits at CCU 100 and 50 ms added latency
(`dsm emulator --limits documented --ccu 100 --latency-ms 50`); the server is told the same CCU
(`ccu=100`, reserve share 0.5). 2,000 entries of universe 2 are copied to universe 1 by a copy
job: the writes land in universe 1, whose write budget is 300 + 20 x 100 = 2,300 a minute, of
which the server may use 1,150.

Reported, from the time every write request was sent (recorded in the server's limiter):
- the job's write rate as a share of budget x (1 - reserve share) (target at least 97%);
- requests over budget: writes beyond 1,150 in any sliding 60 s window, and 429 answers
  (target 0 for both);
- the same copy by a plain sequential loop (read, create, next), into universe 3, for
  comparison: its rate and the ratio between the two.

    .venv/bin/python -m benchmarks.jobs_copy [--entries 2000] [--loop-entries 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from benchmarks.client_throughput import max_in_window
from benchmarks.support import player_key, running_emulator, seed_emulator
from dsm.opencloud.client import OpenCloudClient
from dsm.storage.vault import ApiKeyRecord
from shared_schema.common import Role
from tools.testing import jobs
from tools.testing.server import running_server

CCU = 100
RESERVE = 0.5
SOURCE, TARGET, LOOP_TARGET = 2, 1, 3
SHARE = int((300 + 20 * CCU) * (1 - RESERVE))  # writes a minute this server may send


class Recorder:
    """Wraps the server's limiter: when each request was let through, and each 429."""

    def __init__(self, limiter: Any) -> None:
        self.sent: list[tuple[str, str, float]] = []
        self.throttled = 0
        acquire, penalize = limiter.acquire, limiter.penalize

        async def recording_acquire(universe_id: str, category: str) -> float:
            waited: float = await acquire(universe_id, category)
            self.sent.append((universe_id, category, time.monotonic()))
            return waited

        def recording_penalize(universe_id: str, category: str, retry_after: float) -> None:
            self.throttled += 1
            penalize(universe_id, category, retry_after)

        limiter.acquire = recording_acquire
        limiter.penalize = recording_penalize

    def times(self, universe: int, category: str) -> list[float]:
        return sorted(t for u, c, t in self.sent if u == str(universe) and c == category)


async def copy_job(base_url: str, server_dir: Path, entries: int) -> dict[str, Any]:
    key = ApiKeyRecord(
        id="bench",
        label="Benchmark",
        api_key=SecretStr("bench-key"),
        universes=[SOURCE, TARGET, LOOP_TARGET],
        environment="development",
        added_at=datetime.now(UTC),
    )
    async with running_server(
        server_dir, keys=[key], open_cloud_base_url=base_url, ccu=CCU, reserve_share=RESERVE
    ) as server:
        recorder = Recorder(server.upstream.limiter)
        token = await server.pair("bench", role=Role.ADMIN)
        body = {
            "kind": "copy",
            "selection": {"universe_id": SOURCE, "datastores": ["Players"]},
            "params": {"target": {"universe_id": TARGET}},
        }
        status, job = await jobs.create(server.call, token, body)
        assert status == 200, job
        job = await jobs.wait(server.call, token, job["id"], plan_complete=True, timeout=120)
        plan = job["plan"]
        print(
            f"plan: {plan['items']:,} entries, {plan['estimate']['requests']}, "
            f"about {plan['estimate']['seconds']:.0f} s; {plan['budget']['headline']}"
        )
        started = time.monotonic()
        status, job = await server.call("POST", f"/jobs/{job['id']}/start", token, json={})
        assert status == 200, job
        job = await jobs.wait(server.call, token, job["id"], timeout=3600)
        elapsed = time.monotonic() - started
        assert job["state"] == "succeeded", job
        writes = recorder.times(TARGET, "write")
        return {
            "job": job,
            "elapsed": elapsed,
            "writes": writes,
            "throttled": recorder.throttled,
            "estimate": plan["estimate"]["seconds"],
        }


async def plain_loop(base_url: str, entries: int) -> tuple[float, int]:
    """The same copy as a plain loop with no pacing: read one entry, create it, next."""
    async with OpenCloudClient(api_key="bench-key", base_url=base_url) as client:
        started = time.monotonic()
        for i in range(entries):
            key = player_key(i)
            entry = await client.get_entry(SOURCE, "Players", key)
            assert entry.value_json is not None
            await client.create_entry(
                LOOP_TARGET,
                "Players",
                key,
                entry.value_json,
                attributes=entry.attributes,
                user_ids=entry.user_ids,
            )
        return time.monotonic() - started, entries


async def main(entries: int, loop_entries: int) -> None:
    with tempfile.TemporaryDirectory(prefix="dsm-bench-copy-") as tmp:
        root = Path(tmp)
        seed_emulator(root / "opencloud", SOURCE, "Players", entries)
        args = [
            "--data",
            str(root / "opencloud"),
            "--limits",
            "documented",
            "--ccu",
            str(CCU),
            "--latency-ms",
            "50",
        ]
        async with running_emulator(args) as base_url:
            result = await copy_job(base_url, root / "server", entries)
            loop_seconds, loop_done = await plain_loop(base_url, loop_entries)
    writes: list[float] = result["writes"]
    span = writes[-1] - writes[0]
    rate = (len(writes) - 1) / span * 60 if span > 0 else 0.0
    busiest = max_in_window(writes)
    progress = result["job"]["progress"]
    loop_rate = loop_done / loop_seconds * 60
    print(
        f"copy job: {progress['applied']:,} copied, {progress['failed']} failed, "
        f"{result['elapsed']:.1f} s (plan estimated {result['estimate']:.0f} s)"
    )
    print(
        f"  write rate: {rate:,.0f}/min = {rate / SHARE:.1%} of the share "
        f"({SHARE:,}/min = 2,300 x (1 - {RESERVE}))"
    )
    print(
        f"  busiest 60 s window: {busiest:,} writes; over budget: {max(0, busiest - SHARE)}; "
        f"429 answers: {result['throttled']}"
    )
    print(
        f"plain sequential loop: {loop_done:,} copied in {loop_seconds:.1f} s = "
        f"{loop_rate:,.0f}/min ({loop_rate / SHARE:.1%} of the share); the job is "
        f"{rate / loop_rate:.2f}x faster"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--loop-entries", type=int, default=2000)
    options = parser.parse_args()
    asyncio.run(main(options.entries, options.loop_entries))
