"""Backups, restores and erasure as jobs, through the real HTTP API against the emulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared_schema.common import Role
from tools.testing import jobs
from tools.testing.server import Server, idem, running_server

U, U2 = 1, 2


@dataclass
class Env:
    server: Server
    admin: str
    data_dir: Path

    async def call(self, method: str, path: str, token: str | None, **kwargs: Any) -> Any:
        return await self.server.call(method, path, token, **kwargs)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with running_server(
        tmp_path, budget_rpm=1_000_000, emulator_universes=[U, U2], job_plan_wait_seconds=20
    ) as server:
        yield Env(server, await server.pair("admin", role=Role.ADMIN), tmp_path)


async def start(env: Env, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create a job with its own route (dry_run false) and wait for it to end."""
    status, job = await env.call(
        "POST", path, env.admin, json={"dry_run": False, "idempotency_key": idem(), **body}
    )
    assert status == 200, job
    return await jobs.wait(env.call, env.admin, job["id"])


async def entry(env: Env, universe: int, store: str, key: str, scope: str = "global") -> Any:
    view = await jobs.read_value(env.call, env.admin, universe, store, key, scope=scope)
    if view is None:
        return None
    return json.loads(view["value_json"]), view["attributes"], view["user_ids"]


async def seed_players(env: Env) -> dict[str, Any]:
    players = {f"p{i}": {"coins": i, "name": f"joueur é {i}"} for i in range(6)}
    await jobs.seed(env.call, env.admin, U, "Players", players, attributes={"v": 1}, user_ids=[7])
    await jobs.seed(env.call, env.admin, U, "Players", {"s": {"x": 1}}, scope="eu")
    await jobs.seed(env.call, env.admin, U, "Guilds", {"g1": {"members": [7, 8]}})
    return players


async def backup(env: Env, **body: Any) -> dict[str, Any]:
    job = await start(env, "/backups", {"universe_id": U, **body})
    assert job["state"] == "succeeded", job
    return job


async def test_backup_job_makes_an_archive_that_verifies(env: Env) -> None:
    await seed_players(env)
    status, plan = await env.call(
        "POST", "/backups", env.admin, json={"universe_id": U, "idempotency_key": idem()}
    )
    assert status == 200, plan
    plan = await jobs.wait(
        env.call, env.admin, plan["id"], ("planned", *jobs.TERMINAL), plan_complete=False
    )
    assert plan["plan"]["items"] == 8 and plan["kind"] == "backup"
    assert not list((env.data_dir / "backups").glob("*.dsmbak"))  # a dry run reads only

    job = await backup(env)
    assert job["progress"]["applied"] == 8
    status, listing = await env.call("GET", "/backups", env.admin)
    assert status == 200 and len(listing["archives"]) == 1, listing
    archive = listing["archives"][0]
    assert archive["entries"] == 8 and archive["job_id"] == job["id"]
    status, report = await env.call("POST", f"/backups/{archive['archive_id']}/verify", env.admin)
    assert status == 200 and report["ok"] and report["entries_checked"] == 8, report
    status, shown = await env.call("GET", f"/backups/{archive['archive_id']}", env.admin)
    assert shown["first_read_at"] is not None and shown["last_read_at"] is not None
    assert not list((env.data_dir / "backups").glob(".*.spool"))  # the spool is gone


async def test_backup_of_a_prefix_and_scope_only(env: Env) -> None:
    await seed_players(env)
    job = await backup(env, datastores=["Players"], scopes=["global"], prefix="p1")
    assert job["progress"]["applied"] == 1
