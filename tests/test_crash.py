"""Kill the server while writes are in flight, again and again: every journal record settles.

The companion server runs in a child process (forked from a pre-loaded server so a start costs
milliseconds) against an emulator in this process, which outlives every crash, like Open Cloud.
Each round fires creates, updates, deletes and increments (JSON spelled with spaces, as a user
may type it) and kills the child with SIGKILL at a random moment while they are in flight. The
next start settles each write it finds open by re-reading: after every restart, no journal item
is left pending or unknown, and each one matches what Open Cloud holds.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from dsm.emulator.context import EmulatorConfig, FaultConfig
from dsm.emulator.throttle import LimitsConfig
from dsm.services.tokens import TokenStore
from dsm.storage.crypto import RecordCipher, new_key
from dsm.storage.journal import WriteJournal
from dsm.storage.vault import ApiKeyRecord
from shared_schema.common import Role
from tools.testing.emulator import start_emulator
from tools.testing.server import ServerProcess, entry_path, idem

U, DS = 1, "crash"
KILLS = 30
API_KEY = "crash-test-key"


class Child(ServerProcess):
    """The server in a child process, with the universe's key."""

    def __init__(self, data_dir: Path, data_key: bytes, base_url: str) -> None:
        record = ApiKeyRecord(
            id="main",
            label="Crash test",
            api_key=SecretStr(API_KEY),
            universes=[U],
            environment="production",
            added_at=datetime.now(UTC),
        )
        super().__init__(data_dir, data_key, [record], base_url)


async def fire_writes(http: aiohttp.ClientSession, base: str, token: str, n: int) -> None:
    """Writes of every kind on keys of their own, answered or not (the server may die)."""
    headers = {"Authorization": f"Bearer {token}"}

    async def send(method: str, path: str, **kwargs: Any) -> None:
        try:
            async with http.request(method, base + "/api/v1" + path, headers=headers, **kwargs):
                pass
        except (aiohttp.ClientError, TimeoutError):
            pass  # the server was killed under this request

    async def update(key: str) -> None:
        async with http.get(base + "/api/v1" + entry_path(U, DS, key), headers=headers) as r:
            if r.status != 200:
                return
            revision = (await r.json())["revision"]
        body = {"value_json": f'{{ "n" : {n}, "by" : "update" }}', "expected_revision": revision,
                "idempotency_key": idem()}  # fmt: skip
        await send("PUT", entry_path(U, DS, key), json=body)

    writes = [
        send("POST", entry_path(U, DS, f"new-{n}"),
             json={"value_json": f'{{ "n" : {n} }}', "idempotency_key": idem()}),
        send("POST", entry_path(U, DS, f"count-{n}") + "/increment",
             json={"amount": n, "idempotency_key": idem()}),
        send("DELETE", entry_path(U, DS, f"new-{n - 1}"), params={"idempotency_key": idem()}),
        update(f"new-{n - 2}"),
    ]  # fmt: skip
    await asyncio.gather(*writes, return_exceptions=True)


async def journal_items(http: aiohttp.ClientSession, base: str, token: str) -> list[Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(base + "/api/v1/journal", params={"limit": "200"}, headers=headers) as r:
        assert r.status == 200
        page = await r.json()
    items: list[Any] = page["items"]
    return items


async def test_every_write_cut_by_a_crash_settles_after_the_restart(tmp_path: Path) -> None:
    faults = FaultConfig(latency_ms=4)  # keeps several writes in flight at the kill
    config = EmulatorConfig(data_dir=tmp_path / "opencloud", limits=LimitsConfig(mode="off"),
                            faults=faults)  # fmt: skip
    runner, base_url, _ = await start_emulator(config)
    data_dir, data_key = tmp_path / "server", new_key()
    store = TokenStore.open(data_dir)
    token = store.issue("crash test", Role.EDITOR)[0]
    store.close()
    rng = random.Random(7)
    cut = 0  # writes the kills left open in the journal
    try:
        async with aiohttp.ClientSession() as http:
            for n in range(1, KILLS + 2):
                child = Child(data_dir, data_key, base_url)
                try:
                    base = f"http://127.0.0.1:{await child.port()}"
                    # The start settled everything the previous crash left open.
                    items = await journal_items(http, base, token)
                    open_items = [i for i in items if i["status"] in ("pending", "unknown")]
                    assert open_items == [], open_items
                    if n > KILLS:
                        break
                    writes = asyncio.create_task(fire_writes(http, base, token, n))
                    await asyncio.sleep(rng.uniform(0.01, 0.08))
                finally:
                    child.kill()
                await writes
                with WriteJournal(data_dir, RecordCipher(data_key)) as journal:
                    cut += len(journal.pending())
    finally:
        await runner.cleanup()
    statuses = {i["status"] for i in items}
    assert statuses <= {"applied", "failed"} and "applied" in statuses
    print(f"{KILLS} kills left {cut} writes open; all of the {len(items)} journal items settled")
    assert cut >= 10  # the kills really did cut writes in flight
