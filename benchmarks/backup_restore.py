"""Backup and restore jobs against the documented budget at CCU 100, with 50 ms latency.

The emulator runs in its own process with documented limits at CCU 100 and 50 ms added latency
(`dsm emulator --limits documented --ccu 100 --latency-ms 50`); the server is told the same CCU
(reserve share 0.5). A backup job reads every entry of a store of universe 2 into an archive,
then a restore job writes the archive into universe 1 (restore elsewhere: every key created).

Reported, from the time each request was let through the server's limiter:
- the backup's read rate as a share of the server's read share (target at least 97%);
- the restore's write rate as a share of its write share (target at least 97%);
- requests over budget in any sliding 60 s window, and 429 answers (target 0);
- the archive's size against the raw JSON of the values.

    .venv/bin/python -m benchmarks.backup_restore [--entries 1000]
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
from benchmarks.jobs_copy import CCU, RESERVE, Recorder
from benchmarks.support import running_emulator, seed_emulator
from dsm.storage.vault import ApiKeyRecord
from shared_schema.common import Role
from tools.testing import jobs
from tools.testing.server import Server, idem, running_server

SOURCE, TARGET = 2, 1


def rate_of(times: list[float]) -> float:
    """Requests a minute between the first and the last."""
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return (len(times) - 1) / span * 60 if span > 0 else 0.0


async def run_job(server: Server, token: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, job = await server.call(
        "POST", path, token, json={"dry_run": False, "idempotency_key": idem(), **body}
    )
    assert status == 200, job
    started = time.monotonic()
    job = await jobs.wait(server.call, token, job["id"], timeout=3600)
    assert job["state"] == "succeeded", job
    job["elapsed"] = time.monotonic() - started
    return job


async def measure(base_url: str, server_dir: Path) -> dict[str, Any]:
    key = ApiKeyRecord(
        id="bench",
        label="Benchmark",
        api_key=SecretStr("bench-key"),
        universes=[SOURCE, TARGET],
        environment="development",
        added_at=datetime.now(UTC),
    )
    async with running_server(
        server_dir, keys=[key], open_cloud_base_url=base_url, ccu=CCU, reserve_share=RESERVE
    ) as server:
        limiter = server.upstream.limiter
        recorder = Recorder(limiter)
        token = await server.pair("bench", role=Role.ADMIN)
        backup = await run_job(
            server, token, "/backups", {"universe_id": SOURCE, "datastores": ["Players"]}
        )
        reads = recorder.times(SOURCE, "read")
        _, listing = await server.call("GET", "/backups", token)
        archive = listing["archives"][0]
        restore = await run_job(
            server,
            token,
            "/restores",
            {"universe_id": SOURCE, "archive_id": archive["archive_id"],
             "target": {"universe_id": TARGET}},
        )  # fmt: skip
        writes = recorder.times(TARGET, "write")
        return {
            "backup": backup,
            "restore": restore,
            "reads": reads,
            "writes": writes,
            "read_share": limiter.allowed(str(SOURCE), "read"),
            "write_share": limiter.allowed(str(TARGET), "write"),
            "throttled": recorder.throttled,
            "archive": archive,
        }


async def main(entries: int) -> None:
    with tempfile.TemporaryDirectory(prefix="dsm-bench-backup-") as tmp:
        root = Path(tmp)
        seed_emulator(root / "opencloud", SOURCE, "Players", entries)
        args = ["--data", str(root / "opencloud"), "--limits", "documented",
                "--ccu", str(CCU), "--latency-ms", "50"]  # fmt: skip
        async with running_emulator(args) as base_url:
            result = await measure(base_url, root / "server")
    reads, writes = result["reads"], result["writes"]
    read_rate, write_rate = rate_of(reads), rate_of(writes)
    read_share, write_share = result["read_share"], result["write_share"]
    archive = result["archive"]
    print(
        f"backup job: {result['backup']['progress']['applied']:,} entries in "
        f"{result['backup']['elapsed']:.1f} s; read rate {read_rate:,.0f}/min = "
        f"{read_rate / read_share:.1%} of the read share ({read_share:,.0f}/min); busiest 60 s "
        f"window {max_in_window(reads):,} reads"
    )
    print(
        f"restore job: {result['restore']['progress']['applied']:,} entries in "
        f"{result['restore']['elapsed']:.1f} s; write rate {write_rate:,.0f}/min = "
        f"{write_rate / write_share:.1%} of the write share ({write_share:,.0f}/min); busiest "
        f"60 s window {max_in_window(writes):,} writes"
    )
    print(f"429 answers: {result['throttled']}")
    print(
        f"archive: {archive['size_bytes'] / 1e6:.2f} MB for {archive['value_bytes'] / 1e6:.2f} "
        f"MB of value JSON ({archive['size_bytes'] / max(1, archive['value_bytes']):.0%})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1000)
    options = parser.parse_args()
    asyncio.run(main(options.entries))
