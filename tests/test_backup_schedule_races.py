"""Backup schedules under races: a tick that is starting a backup (its planning lists through
Open Cloud, which can take long) holds up no one, and a tick racing "run now" for the same
schedule makes exactly one backup.

The slow step is held on an asyncio.Event, not slept through: a call that waited for the tick
would never answer while it is held, so `answers` would time out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from dsm.http.appkeys import BACKUPS
from dsm.services.backups.schedules import BackupSchedules
from dsm.services.tokens import Principal
from shared_schema.backups import BackupCreateRequest
from shared_schema.common import Role
from shared_schema.jobs import JobView
from tools.testing import jobs
from tools.testing.server import running_server

from .test_backup_jobs import Env, U, seed_players

PERSON = Principal(token_id="tok_person", name="a person", role=Role.ADMIN)
Start = Callable[[Principal, BackupCreateRequest, str], Awaitable[JobView]]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    # The server's own loop is off: the test drives every tick itself.
    async with running_server(
        tmp_path, budget_rpm=1_000_000, emulator_universes=[U], job_plan_wait_seconds=20,
        backup_schedules=False,
    ) as server:  # fmt: skip
        yield Env(server, await server.pair("admin", role=Role.ADMIN), tmp_path)


class HeldStart:
    """Starting schedule `held`'s backup waits (inside the real start) until released."""

    def __init__(self, schedules: BackupSchedules, held: str) -> None:
        self.held = held
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self._real: Start = schedules._start
        schedules._start = self

    async def __call__(self, caller: Principal, request: BackupCreateRequest, name: str) -> JobView:
        if name == self.held:
            self.entered.set()
            await self.release.wait()
        return await self._real(caller, request, name)


async def answers(env: Env, method: str, path: str, **kwargs: Any) -> Any:
    """The call's answer, which must come while the held start is still held."""
    status, body = await asyncio.wait_for(env.call(method, path, env.admin, **kwargs), 30)
    assert status == 200, body
    return body


async def schedule(env: Env, name: str) -> None:
    await answers(
        env, "PUT", f"/backup-schedules/{name}",
        json={"universe_id": U, "datastores": ["Players"], "every_seconds": 86400, "keep": 3},
    )  # fmt: skip


async def backups_of(env: Env, name: str) -> list[str]:
    page = await answers(env, "GET", "/jobs", params={"kind": "backup", "limit": "200"})
    found = []
    for summary in page["jobs"]:
        job = await answers(env, "GET", f"/jobs/{summary['id']}")
        if job["params"].get("schedule") == name:
            found.append(job["id"])
    return found


async def test_run_now_a_change_and_a_listing_answer_while_a_tick_is_starting_a_backup(
    env: Env,
) -> None:
    await seed_players(env)
    await schedule(env, "a")
    await schedule(env, "b")
    schedules = env.server.app[BACKUPS].schedules
    held = HeldStart(schedules, "a")
    tick = asyncio.create_task(schedules.tick())  # both are due at once; "a" comes first
    await held.entered.wait()

    listing = await answers(env, "GET", "/backup-schedules")
    assert [s["name"] for s in listing["schedules"]] == ["a", "b"]
    b_job = await answers(env, "POST", "/backup-schedules/b/run")
    changed = await answers(
        env, "PUT", "/backup-schedules/b",
        json={"universe_id": U, "datastores": ["Players"], "every_seconds": 86400, "keep": 5},
    )  # fmt: skip
    assert changed["keep"] == 5
    # "Run now" of the schedule the tick is starting joins that run: no second backup.
    a_now = asyncio.create_task(schedules.run_now(PERSON, "a"))
    await asyncio.sleep(0)  # it runs up to its wait for the held start
    assert not tick.done() and not a_now.done()

    held.release.set()
    await tick
    a_job = (await a_now).model_dump(mode="json")
    assert await backups_of(env, "a") == [a_job["id"]]
    # The tick found b's run-now job and started no other; the change made meanwhile stayed.
    assert await backups_of(env, "b") == [b_job["id"]]
    listing = await answers(env, "GET", "/backup-schedules")
    a_view, b_view = listing["schedules"]
    assert a_view["last_job_id"] == a_job["id"] and b_view["last_job_id"] == b_job["id"]
    assert b_view["keep"] == 5
    for job_id in (a_job["id"], b_job["id"]):
        assert (await jobs.wait(env.call, env.admin, job_id))["state"] == "succeeded"


async def test_a_tick_racing_a_run_now_that_is_starting_makes_one_backup(env: Env) -> None:
    await seed_players(env)
    await schedule(env, "a")
    schedules = env.server.app[BACKUPS].schedules
    held = HeldStart(schedules, "a")
    a_now = asyncio.create_task(env.call("POST", "/backup-schedules/a/run", env.admin))
    await held.entered.wait()

    await asyncio.wait_for(schedules.tick(), 30)  # "a" is due, but its run is starting
    assert not a_now.done()
    held.release.set()
    status, a_job = await a_now
    assert status == 200, a_job
    await schedules.tick()  # recorded now: running or done, so not started again
    assert await backups_of(env, "a") == [a_job["id"]]
    assert (await jobs.wait(env.call, env.admin, a_job["id"]))["state"] == "succeeded"


async def test_a_tick_after_a_lost_record_finds_the_backup_it_started(env: Env) -> None:
    await seed_players(env)
    await schedule(env, "a")
    schedules = env.server.app[BACKUPS].schedules
    await schedules.tick()
    (started,) = await backups_of(env, "a")
    # The server stopped after creating the job and before noting it in the schedules file.
    stored = json.loads(schedules.path.read_text())
    stored["schedules"]["a"].update(last_run_at=None, last_job_id=None)
    schedules.path.write_text(json.dumps(stored))

    await schedules.tick()  # the same due time: the same job, not a second backup
    assert await backups_of(env, "a") == [started]
    listing = await answers(env, "GET", "/backup-schedules")
    assert listing["schedules"][0]["last_job_id"] == started
    assert (await jobs.wait(env.call, env.admin, started))["state"] == "succeeded"
