"""A rollback claims no more than it did.

The server runs on the LIVE code path against an emulator on loopback whose faults make some of
the rollback's writes fail (Open Cloud refusals), while a game write races the job. The rollback
then fails and says how many writes are not undone; the job it undoes stays as it was; a second
rollback finishes the rest without writing anything twice; and a job is `rolled_back` only once
every write of it is undone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from dsm.emulator.context import EmulatorConfig
from dsm.emulator.throttle import LimitsConfig
from dsm.http.appkeys import DATA
from dsm.storage.journal import Status
from dsm.storage.vault import ApiKeyRecord
from shared_schema.common import Role
from tools.testing import jobs
from tools.testing.emulator import set_faults, start_emulator
from tools.testing.server import Server, entry_path, idem, running_server

U = 1
KEYS = 30


@pytest.fixture
async def emulator() -> AsyncIterator[str]:
    runner, base_url, _ = await start_emulator(EmulatorConfig(limits=LimitsConfig(mode="off")))
    yield base_url
    await runner.cleanup()


@pytest.fixture
async def server(tmp_path: Path, emulator: str) -> AsyncIterator[Server]:
    key = ApiKeyRecord(
        id="main", label="Sky Castle (dev)", api_key=SecretStr("rollback-test-key"),
        universes=[U], environment="development", added_at=datetime.now(UTC),
    )  # fmt: skip
    async with running_server(
        tmp_path, keys=[key], open_cloud_base_url=emulator, budget_rpm=1_000_000
    ) as running:
        yield running


async def transform(server: Server, admin: str, values: dict[str, Any]) -> dict[str, Any]:
    await jobs.seed(server.call, admin, U, "Players", values)
    job = await jobs.run(
        server.call,
        admin,
        {
            "kind": "transform",
            "selection": {"universe_id": U, "datastores": ["Players"]},
            "params": {"program": ".n += 100"},
        },
    )
    assert job["state"] == "succeeded" and job["progress"]["applied"] == len(values), job
    return job


async def rollback(server: Server, admin: str, job_id: str) -> dict[str, Any]:
    status, started = await server.call(
        "POST",
        f"/jobs/{job_id}/rollback",
        admin,
        json={"dry_run": False, "idempotency_key": idem()},
    )
    assert status == 200, started
    return await jobs.wait(server.call, admin, started["id"], timeout=60)


async def game_writes(server: Server, admin: str, key: str, value: Any) -> None:
    """Someone else writes the key after the job (as a game server would)."""
    view = await jobs.read_value(server.call, admin, U, "Players", key)
    assert view is not None
    status, answer = await server.call(
        "PUT",
        entry_path(U, "Players", key),
        admin,
        json={
            "value_json": json.dumps(value),
            "expected_revision": view["revision"],
            "idempotency_key": idem(),
        },
    )
    assert status == 200, answer


async def job(server: Server, admin: str, job_id: str) -> dict[str, Any]:
    status, view = await server.call("GET", f"/jobs/{job_id}", admin)
    assert status == 200, view
    return view  # type: ignore[no-any-return]


async def n_of(server: Server, admin: str, key: str) -> int:
    view = await jobs.read_value(server.call, admin, U, "Players", key)
    assert view is not None
    return int(json.loads(view["value_json"])["n"])


async def test_failed_rollback_items_fail_it_and_a_second_rollback_finishes_once(
    server: Server, emulator: str
) -> None:
    admin = await server.pair("admin", role=Role.ADMIN)
    values = {f"k{i:02}": {"n": i} for i in range(KEYS)}
    original = await transform(server, admin, values)

    # Open Cloud refuses about a third of the requests while the rollback runs: with 30 items
    # of two requests each, some are undone and some fail (each side misses with p < 1e-8).
    await set_faults(emulator, error_rate=0.3, error_statuses=[400])
    first = await rollback(server, admin, original["id"])
    await set_faults(emulator, error_rate=0.0)

    progress = first["progress"]
    assert first["state"] == "failed", first
    assert progress["failed"] > 0 and progress["applied"] > 0, progress
    assert progress["applied"] + progress["failed"] == KEYS and progress["skipped"] == 0
    failure = first["failure"]
    assert failure["code"] == "BAD_REQUEST"
    assert failure["message"].startswith(
        f"{progress['failed']} of the {KEYS} writes of job {original['id']} could not be "
        f"rolled back ({progress['failed']} BAD_REQUEST)"
    ), failure
    assert "roll it back again" in failure["message"]
    failed_items = await jobs.items(server.call, admin, first["id"], state="failed")
    assert len(failed_items) == progress["failed"]
    assert {i["error_code"] for i in failed_items} == {"BAD_REQUEST"}
    assert all(i["message"] for i in failed_items)

    # The job is not rolled back: it says so, and offers the rollback again.
    view = await job(server, admin, original["id"])
    assert view["state"] == "succeeded" and view["rolled_back_by"] == first["id"]
    assert view["actions"] == ["rollback"]
    assert view["rollback_note"] == f"Rollback {first['id']} failed: {failure['message']}"
    failed_keys = {i["key"] for i in failed_items}
    for key, before in values.items():
        assert await n_of(server, admin, key) == before["n"] + (100 if key in failed_keys else 0)

    second = await rollback(server, admin, original["id"])
    assert second["state"] == "succeeded", second
    assert second["progress"]["applied"] == progress["failed"]
    assert second["progress"]["skipped"] == progress["applied"]
    skipped = await jobs.items(server.call, admin, second["id"], state="skipped")
    assert {i["skip_code"] for i in skipped} == {"already_undone"}
    assert {i["key"] for i in skipped} == set(values) - failed_keys
    assert second["rollback_note"] == f"Every write of job {original['id']} is undone."

    view = await job(server, admin, original["id"])
    assert view["state"] == "rolled_back" and view["rolled_back_by"] == second["id"]
    assert view["actions"] == [] and "every write it made is undone" in view["rollback_note"]
    for key, before in values.items():
        assert await n_of(server, admin, key) == before["n"]
    # Each of the job's writes was undone by exactly one applied write, across both rollbacks.
    journal = server.app[DATA].writes.journal
    undos = [
        record.undoes
        for rollback_id in (first["id"], second["id"])
        for record in journal.list(job_id=rollback_id, status=Status.APPLIED, limit=500)
    ]
    written = [r.id for r in journal.list(job_id=original["id"], limit=500)]
    assert sorted(undos) == sorted(written) and len(written) == KEYS


async def test_entries_changed_since_leave_the_job_not_rolled_back(server: Server) -> None:
    admin = await server.pair("admin", role=Role.ADMIN)
    original = await transform(server, admin, {"a": {"n": 1}, "b": {"n": 2}})
    await game_writes(server, admin, "b", {"n": 500})

    done = await rollback(server, admin, original["id"])
    # The rollback did all it may (it never overwrites a newer write), so it succeeds; but the
    # job is not rolled back, and both say what was left as it is.
    assert done["state"] == "succeeded" and "failure" not in done
    assert done["progress"]["applied"] == 1 and done["progress"]["skipped"] == 1
    note = (
        f"Job {original['id']} is not fully rolled back: 1 of its writes was left alone (1 "
        f"changed since); see the skipped items of {done['id']}."
    )
    assert done["rollback_note"] == note
    view = await job(server, admin, original["id"])
    assert view["state"] == "succeeded" and view["rollback_note"] == note
    assert view["actions"] == ["rollback"]
    assert await n_of(server, admin, "a") == 1 and await n_of(server, admin, "b") == 500

    # Rolling back again undoes nothing twice and overwrites nothing: the same outcome.
    again = await rollback(server, admin, original["id"])
    assert again["state"] == "succeeded" and again["progress"]["applied"] == 0
    codes = sorted(i["skip_code"] for i in await jobs.items(server.call, admin, again["id"]))
    assert codes == ["already_undone", "changed_since"]
    assert (await job(server, admin, original["id"]))["state"] == "succeeded"
    assert await n_of(server, admin, "a") == 1 and await n_of(server, admin, "b") == 500
