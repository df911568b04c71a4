"""Export throughput with limits off, and the server's peak memory exporting 100,000 entries.

The emulator runs in its own process with limits off and holds 100,000 entries (written
straight into its store). The server runs in a child process of its own (as `dsm serve` would)
so its memory can be read from /proc: VmHWM is the peak resident size. An export job (JSON
Lines by default) reads every entry and streams it to a file. For comparison in the same run,
a plain client reads the same entries with the same concurrency (32) and keeps nothing.

    .venv/bin/python -m benchmarks.jobs_export [--entries 100000] [--format jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from pydantic import SecretStr

from benchmarks.support import player_key, running_emulator, seed_emulator
from dsm.opencloud.client import OpenCloudClient
from dsm.services.tokens import TokenStore
from dsm.storage.crypto import new_key
from dsm.storage.vault import ApiKeyRecord
from shared_schema.common import Role
from tools.testing import jobs
from tools.testing.server import ServerProcess, api_call

U = 1
WORKERS = 32


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(rest.split()[0])
    return found


async def export(
    base_url: str, root: Path, format: str
) -> tuple[float, int, dict[str, int], dict[str, int], Path]:
    data_dir = root / "server"
    store = TokenStore.open(data_dir)
    token = store.issue("bench", Role.ADMIN)[0]
    store.close()
    key = ApiKeyRecord(
        id="bench",
        label="Benchmark",
        api_key=SecretStr("bench-key"),
        universes=[U],
        environment="development",
        added_at=datetime.now(UTC),
    )
    child = ServerProcess(data_dir, new_key(), [key], base_url, budget_rpm=1e9)
    try:
        base = f"http://127.0.0.1:{await child.port()}"
        async with aiohttp.ClientSession() as http:

            async def call(method: str, path: str, tok: str | None, **kw: object) -> object:
                return await api_call(http, base, method, path, tok, **kw)

            before = memory_kib(child.process.pid or 0)
            status, job = await jobs.create(
                call,
                token,
                {
                    "kind": "export",
                    "selection": {"universe_id": U, "datastores": ["Big"]},
                    "params": {"format": format},
                    "dry_run": False,
                },
            )
            assert status == 200, job
            job = await jobs.wait(call, token, job["id"], ("running", *jobs.TERMINAL), 600)
            started = time.monotonic()
            job = await jobs.wait(call, token, job["id"], timeout=3600)
            elapsed = time.monotonic() - started
            after = memory_kib(child.process.pid or 0)
            assert job["state"] == "succeeded", job
            return elapsed, job["progress"]["applied"], before, after, Path(job["output_path"])
    finally:
        child.kill()


async def plain_reads(base_url: str, entries: int) -> float:
    """The same reads by a bare client with the same concurrency, keeping nothing."""
    async with OpenCloudClient(api_key="bench-key", base_url=base_url) as client:
        keys = iter(range(entries))
        started = time.monotonic()

        async def worker() -> None:
            for i in keys:
                await client.get_entry(U, "Big", player_key(i))

        await asyncio.gather(*(worker() for _ in range(WORKERS)))
        return time.monotonic() - started


async def main(entries: int, format: str) -> None:
    with tempfile.TemporaryDirectory(prefix="dsm-bench-export-") as tmp:
        root = Path(tmp)
        began = time.monotonic()
        seed_emulator(root / "opencloud", U, "Big", entries)
        print(f"seeded {entries:,} entries in {time.monotonic() - began:.0f} s")
        args = ["--data", str(root / "opencloud"), "--limits", "off"]
        async with running_emulator(args) as base_url:
            elapsed, exported, before, after, path = await export(base_url, root, format)
            size = path.stat().st_size
            raw = await plain_reads(base_url, entries)
    rate, raw_rate = exported / elapsed, entries / raw
    print(
        f"export ({format}): {exported:,} entries in {elapsed:.1f} s = {rate:,.0f} entries/s; "
        f"file {size / 1e6:.1f} MB"
    )
    print(
        f"plain concurrent reads ({WORKERS} at a time): {raw_rate:,.0f} entries/s; the export "
        f"runs at {rate / raw_rate:.0%} of that"
    )
    print(
        f"server memory: {before['VmRSS'] / 1024:.0f} MiB resident before the job, peak "
        f"{after['VmHWM'] / 1024:.0f} MiB during it (+{(after['VmHWM'] - before['VmRSS']) / 1024:.0f} MiB)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--format", default="jsonl", choices=["jsonl", "csv", "sqlite"])
    options = parser.parse_args()
    asyncio.run(main(options.entries, options.format))
