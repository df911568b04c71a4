"""Kill the server (SIGKILL) again and again while a backup and then a restore run: the archive
holds every entry exactly once, and the restore puts every entry back exactly as it was.

Entries `{"n": i}` are backed up while the server is killed at random moments; then a "bad
release" (a game server writing straight to Open Cloud, here the emulator) changes every value;
the restore runs with more kills. A lost item would leave a changed value, a duplicate archive
record would show in the manifest's count; the journal makes sure no restore write is sent
twice after a crash.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from dsm.emulator.context import EmulatorConfig, FaultConfig
from dsm.emulator.throttle import LimitsConfig
from dsm.opencloud.client import OpenCloudClient
from dsm.services.backups.archive import ArchiveReader
from dsm.services.backups.keyslots import ArchiveKeys
from dsm.services.tokens import TokenStore
from dsm.storage.crypto import new_key
from shared_schema.common import Role
from tools.testing import jobs
from tools.testing.emulator import start_emulator

from .test_crash_jobs import DS, Crashes, U

ENTRIES = 80


async def test_backup_and_restore_killed_repeatedly_give_the_exact_result(tmp_path: Path) -> None:
    config = EmulatorConfig(
        data_dir=tmp_path / "opencloud",
        limits=LimitsConfig(mode="off"),
        faults=FaultConfig(latency_ms=3),
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
            values = {f"k{i:03}": {"n": i, "name": f"é{i}"} for i in range(ENTRIES)}
            await asyncio.gather(
                *(
                    direct.create_entry(U, DS, k, json.dumps(v), user_ids=[i], attributes={"i": i})
                    for i, (k, v) in enumerate(values.items())
                )
            )
            await crashes.start()
            status, backup = await crashes.call(
                "POST", "/backups", token,
                json={"universe_id": U, "datastores": [DS], "dry_run": False,
                      "idempotency_key": "crash-backup-1"},
            )  # fmt: skip
            assert status == 200, backup
            await asyncio.sleep(0.2)
            crashes.kill()
            backup_kills = 1 + await crashes.crash_while_running(backup["id"], 3)
            backup = await jobs.wait(crashes.call, token, backup["id"])
            assert backup["state"] == "succeeded", backup
            keys = ArchiveKeys(data_key=data_key)
            with ArchiveReader(Path(backup["output_path"]), keys) as reader:
                assert reader.manifest.entries == ENTRIES
                held = {e.name.key: e for e in reader.entries()}
            assert {k: json.loads(e.value_json) for k, e in held.items()} == values
            archive_id = reader.header.archive_id

            # The bad release: every value changed behind the server's back.
            await asyncio.gather(
                *(
                    direct.update_entry(
                        U, DS, k, json.dumps({"n": -1}), attributes={"bad": 1}, user_ids=[]
                    )
                    for k in values
                )
            )
            status, restore = await crashes.call(
                "POST", "/restores", token,
                json={"universe_id": U, "archive_id": archive_id, "dry_run": False,
                      "idempotency_key": "crash-restore-1"},
            )  # fmt: skip
            assert status == 200, restore
            await asyncio.sleep(0.3)
            crashes.kill()
            restore_kills = 1 + await crashes.crash_while_running(restore["id"], 6)
            restore = await jobs.wait(crashes.call, token, restore["id"])
            assert restore["state"] == "succeeded", restore
            assert restore["progress"]["applied"] == ENTRIES, restore["progress"]
            entries = await asyncio.gather(*(direct.get_entry(U, DS, k) for k in values))
            for i, entry in enumerate(entries):
                assert json.loads(entry.value_json or "null") == values[entry.key]
                assert entry.user_ids == [i] and entry.attributes == {"i": i}
            crashes.kill()
    finally:
        if crashes.child is not None:
            crashes.child.kill()
        await runner.cleanup()
    print(f"{backup_kills} kills during the backup, {restore_kills} during the restore")
    assert backup_kills >= 2 and restore_kills >= 4
