"""Kill the server again and again while a job runs: no item is lost, none applied twice, and the
rollback puts every entry back exactly.

The job is an increment-style transform (`.n += 1`) over entries `{"n": i}`, so a lost item
leaves `n == i` and an item applied twice leaves `n == i + 2`. The server runs in a child
process against an emulator in this process (which outlives every crash, like Open Cloud), is
killed with SIGKILL at random moments of the transform and then of its rollback (at least 20
kills in all), and restarted each time: the jobs resume from their durable items, and the write
journal (settled at start-up) tells which writes already landed. A paused job stays paused
across a crash.
"""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from dsm.emulator.context import EmulatorConfig, FaultConfig
from dsm.emulator.throttle import LimitsConfig
from dsm.opencloud.client import OpenCloudClient
from dsm.services.tokens import TokenStore
from dsm.storage.crypto import new_key
from dsm.storage.vault import ApiKeyRecord
from shared_schema.common import Role
from tools.testing import jobs
from tools.testing.emulator import start_emulator
from tools.testing.server import ServerProcess, api_call

U, DS = 1, "crashjobs"
ENTRIES = 120
MIN_KILLS = 20
# Slow enough (20 writes a second) that the job is still running at each kill.
BUDGET_RPM = 1200


class Crashes:
    """Starts the server, lets a job run for a random moment, kills it; counts the kills."""

    def __init__(self, data_dir: Path, data_key: bytes, base_url: str, token: str) -> None:
        self.data_dir, self.data_key, self.base_url, self.token = (
            data_dir, data_key, base_url, token,
        )  # fmt: skip
        self.key = ApiKeyRecord(
            id="main",
            label="Crash jobs",
            api_key=SecretStr("crash-jobs-key"),
            universes=[U],
            environment="development",
            added_at=datetime.now(UTC),
        )
        self.kills = 0
        self.rng = random.Random(10)
        self.child: ServerProcess | None = None
        self.http: aiohttp.ClientSession | None = None
        self.base = ""

    async def start(self) -> None:
        self.child = ServerProcess(
            self.data_dir, self.data_key, [self.key], self.base_url, BUDGET_RPM
        )
        self.base = f"http://127.0.0.1:{await self.child.port()}"

    def kill(self) -> None:
        assert self.child is not None
        self.child.kill()
        self.child = None
        self.kills += 1

    async def call(self, method: str, path: str, token: str | None, **kwargs: Any) -> Any:
        assert self.http is not None
        return await api_call(self.http, self.base, method, path, token, **kwargs)

    async def job(self, job_id: str) -> dict[str, Any]:
        status, job = await self.call("GET", f"/jobs/{job_id}", self.token)
        assert status == 200, job
        found: dict[str, Any] = job
        return found

    async def crash_while_running(self, job_id: str, kills: int) -> int:
        """Up to `kills` times: restart, let the job make some progress, kill it at a random
        moment. Returns the kills that hit the job while it ran; the server is left running."""
        hits = 0
        while hits < kills:
            await self.start()
            job = await self.job(job_id)
            start = job["progress"]["done"]
            while job["state"] not in jobs.TERMINAL and job["progress"]["done"] == start:
                await asyncio.sleep(0.02)
                job = await self.job(job_id)
            if job["state"] in jobs.TERMINAL:
                return hits
            await asyncio.sleep(self.rng.uniform(0.0, 0.3))
            self.kill()
            hits += 1
        await self.start()
        return hits


async def stored(direct: OpenCloudClient, values: dict[str, Any]) -> dict[str, int]:
    """`n` of every entry, read straight from the emulator (not paced by the server)."""
    entries = await asyncio.gather(*(direct.get_entry(U, DS, key) for key in values))
    return {e.key: json.loads(e.value_json or "null")["n"] for e in entries}


async def test_a_job_killed_twenty_times_applies_each_item_once_and_rolls_back_exactly(
    tmp_path: Path,
) -> None:
    faults = FaultConfig(latency_ms=3)
    config = EmulatorConfig(
        data_dir=tmp_path / "opencloud", limits=LimitsConfig(mode="off"), faults=faults
    )
    runner, base_url, _ = await start_emulator(config)
    data_dir, data_key = tmp_path / "server", new_key()
    store = TokenStore.open(data_dir)
    token = store.issue("crash test", Role.ADMIN)[0]
    store.close()
    crashes = Crashes(data_dir, data_key, base_url, token)
    try:
        async with (
            aiohttp.ClientSession() as http,
            OpenCloudClient(api_key="direct", base_url=base_url) as direct,
        ):
            crashes.http = http
            await crashes.start()
            values = {f"k{i:03}": {"n": i} for i in range(ENTRIES)}
            await asyncio.gather(
                *(direct.create_entry(U, DS, k, json.dumps(v)) for k, v in values.items())
            )
            body = {
                "kind": "transform",
                "dry_run": False,
                "selection": {"universe_id": U, "datastores": [DS]},
                "params": {"program": ".n += 1"},
                "idempotency_key": "crash-transform-1",
            }
            status, job = await crashes.call("POST", "/jobs", token, json=body)
            assert status == 200, job
            job_id = job["id"]
            await asyncio.sleep(0.2)
            crashes.kill()

            transform_kills = 1 + await crashes.crash_while_running(job_id, 9)
            job = await jobs.wait(crashes.call, token, job_id)
            assert job["state"] == "succeeded", (job["failure"], job["progress"])
            assert job["progress"]["applied"] == ENTRIES, job["progress"]
            assert await stored(direct, values) == {k: v["n"] + 1 for k, v in values.items()}
            # Exactly one journaled write per item landed, whatever the kills cut.
            outcomes = await jobs.items(crashes.call, token, job_id)
            assert {i["state"] for i in outcomes} == {"applied"}

            status, rollback = await crashes.call(
                "POST",
                f"/jobs/{job_id}/rollback",
                token,
                json={"dry_run": False, "idempotency_key": "crash-rollback-1"},
            )
            assert status == 200, rollback
            rollback_id = rollback["id"]
            # A paused job stays paused across a crash, and goes on when resumed.
            await jobs.wait(crashes.call, token, rollback_id, ("running",))
            await asyncio.sleep(0.2)
            status, paused = await crashes.call("POST", f"/jobs/{rollback_id}/pause", token)
            assert status == 200 and paused["state"] == "paused"
            crashes.kill()
            await crashes.start()
            await asyncio.sleep(0.3)
            after = await crashes.job(rollback_id)
            assert after["state"] == "paused"
            done = after["progress"]["done"]
            await asyncio.sleep(0.3)
            assert (await crashes.job(rollback_id))["progress"]["done"] == done
            status, _ = await crashes.call("POST", f"/jobs/{rollback_id}/resume", token)
            assert status == 200
            await asyncio.sleep(0.1)
            crashes.kill()

            rollback_kills = 1 + await crashes.crash_while_running(rollback_id, 12)
            rollback = await jobs.wait(crashes.call, token, rollback_id)
            assert rollback["state"] == "succeeded", rollback
            assert rollback["progress"]["applied"] == ENTRIES, rollback["progress"]
            assert await stored(direct, values) == {k: v["n"] for k, v in values.items()}
            assert (await crashes.job(job_id))["state"] == "rolled_back"
            crashes.kill()
    finally:
        if crashes.child is not None:
            crashes.child.kill()
        await runner.cleanup()
    print(
        f"{crashes.kills} kills: {transform_kills} during the transform, {rollback_kills} "
        f"during its rollback; {ENTRIES} items each applied exactly once, then restored"
    )
    assert transform_kills >= 8 and rollback_kills >= 8
    assert crashes.kills >= MIN_KILLS
