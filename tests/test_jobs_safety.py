"""Jobs on a production universe need its typed label; a 429 storm slows a job, never breaks it.

Both run the server on the LIVE code path (an API key in the vault) against an emulator on
loopback, as `tools.testing.server.running_server` documents.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from dsm.emulator.context import EmulatorConfig
from dsm.emulator.throttle import LimitsConfig
from dsm.storage.vault import ApiKeyRecord
from shared_schema.common import Role
from tools.testing import jobs
from tools.testing.emulator import set_faults, start_emulator
from tools.testing.server import idem, running_server

U = 1
LABEL = "Sky Castle (live)"


def key(environment: str) -> ApiKeyRecord:
    return ApiKeyRecord(
        id="main",
        label=LABEL,
        api_key=SecretStr("safety-test-key"),
        universes=[U],
        environment=environment,
        added_at=datetime.now(UTC),
    )


@pytest.fixture
async def emulator() -> AsyncIterator[str]:
    runner, base_url, _ = await start_emulator(EmulatorConfig(limits=LimitsConfig(mode="off")))
    yield base_url
    await runner.cleanup()


async def test_production_jobs_need_the_universes_label(tmp_path: Path, emulator: str) -> None:
    async with running_server(
        tmp_path, keys=[key("production")], open_cloud_base_url=emulator, budget_rpm=1_000_000
    ) as server:
        admin = await server.pair("admin", role=Role.ADMIN)
        call = server.call
        await jobs.seed(call, admin, U, "Players", {"a": {"n": 1}, "b": {"n": 2}})
        delete = {"kind": "delete", "selection": {"universe_id": U, "datastores": ["Players"]}}
        # A dry run needs no confirmation, and its plan says what to type.
        status, job = await jobs.create(call, admin, delete)
        assert status == 200, job
        assert job["plan"]["confirmation"] == LABEL
        assert LABEL in job["plan"]["warnings"][0]
        for wrong in ({}, {"confirm": "sky castle (live)"}, {"confirm": "yes"}):
            status, answer = await call("POST", f"/jobs/{job['id']}/start", admin, json=wrong)
            assert status == 403, answer
            assert answer["error"]["details"] == {"confirmation": LABEL}
        assert await jobs.read_value(call, admin, U, "Players", "a") is not None
        status, answer = await jobs.create(call, admin, {**delete, "dry_run": False})
        assert status == 403 and "type 'Sky Castle (live)'" in answer["error"]["message"]

        status, started = await call(
            "POST", f"/jobs/{job['id']}/start", admin, json={"confirm": LABEL}
        )
        assert status == 200, started
        job = await jobs.wait(call, admin, job["id"])
        assert job["state"] == "succeeded" and job["progress"]["applied"] == 2
        # Its rollback writes to the same universe: the same confirmation.
        path = f"/jobs/{job['id']}/rollback"
        status, answer = await call(
            "POST", path, admin, json={"dry_run": False, "idempotency_key": idem()}
        )
        assert status == 403
        status, rollback = await call(
            "POST",
            path,
            admin,
            json={"dry_run": False, "confirm": LABEL, "idempotency_key": idem()},
        )
        assert status == 200, rollback
        assert (await jobs.wait(call, admin, rollback["id"]))["state"] == "succeeded"
        # An export writes nothing to Open Cloud: no confirmation.
        export = {"kind": "export", "selection": delete["selection"]}
        assert (await jobs.run(call, admin, export))["state"] == "succeeded"


async def test_a_429_storm_slows_a_job_but_loses_and_repeats_nothing(
    tmp_path: Path, emulator: str
) -> None:
    async with running_server(
        tmp_path, keys=[key("development")], open_cloud_base_url=emulator, budget_rpm=1_000_000
    ) as server:
        admin = await server.pair("admin", role=Role.ADMIN)
        call = server.call
        values = {f"k{i:02}": {"n": i} for i in range(20)}
        await jobs.seed(call, admin, U, "Players", values)
        # A third of the requests are refused with 429 (retry-after 1 s), and some writes land
        # with their answer lost: the job must still apply each item exactly once.
        await set_faults(
            emulator, error_rate=0.3, error_statuses=[429], lost_response_rate=0.05, seed=4
        )
        job = await jobs.run(
            call,
            admin,
            {
                "kind": "transform",
                "selection": {"universe_id": U, "datastores": ["Players"]},
                "params": {"program": ".n += 100"},
            },
            timeout=50,
        )
        await set_faults(emulator, error_rate=0.0, lost_response_rate=0.0)
        assert job["state"] == "succeeded", job
        progress = job["progress"]
        outcomes = await jobs.items(call, admin, job["id"])
        unknown = [i for i in outcomes if i.get("error_code") == "WRITE_OUTCOME_UNKNOWN"]
        assert progress["applied"] + len(unknown) == 20 and progress["skipped"] == 0
        for key_, original in values.items():
            view = await jobs.read_value(call, admin, U, "Players", key_)
            assert view is not None
            n = json.loads(view["value_json"])["n"]
            # Applied once, or (outcome unknown, reported) at most once: never twice.
            assert n == original["n"] + 100 or (
                n == original["n"] and key_ in {i["key"] for i in unknown}
            ), (key_, n)
        _, metrics = await call("GET", "/metrics", admin)
        throttles = re.findall(
            r'dsm_opencloud_throttles_total\{[^}]*universe_id="1"[^}]*\} (\S+)', metrics
        )
        assert sum(float(t) for t in throttles) > 0
