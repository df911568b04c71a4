"""A job names the Studio user behind the token that created it (issue 13's "every journal
record, event and audit entry names that person"), and says "Studio user unknown" for a token
whose plugin never announced one (a script's)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from dsm.services.jobs.store import JOBS_FILENAME, JobStore
from shared_schema.common import Role
from tests.test_team import session
from tools.testing import jobs
from tools.testing.server import Server, running_server

U = 1
STORE = "PlayerData"


async def delete_job(server: Server, token: str, keys: list[str]) -> dict[str, Any]:
    selection = {"universe_id": U, "datastores": [STORE], "keys": [{"key": k} for k in keys]}
    return await jobs.run(server.call, token, {"kind": "delete", "selection": selection})


async def events_from(server: Server, token: str, cursor: int) -> list[dict[str, Any]]:
    status, batch = await server.call(
        "GET", "/events", token, params={"cursor": str(cursor), "timeout": "0"}
    )
    assert status == 200, batch
    found: list[dict[str, Any]] = batch["events"]
    return found


async def test_a_jobs_record_writes_and_events_name_the_studio_user(tmp_path: Path) -> None:
    async with running_server(tmp_path, emulator_universes=[U], budget_rpm=1_000_000) as server:
        laptop = await server.pair("laptop", role=Role.ADMIN)
        script = await server.pair("ci", role=Role.ADMIN)
        await session(server, laptop, 42, "Ana")
        await jobs.seed(server.call, script, U, STORE, {"a": 1, "b": 2, "c": 3})
        _, start = await server.call("GET", "/events", laptop, params={"timeout": "0"})

        job = await delete_job(server, laptop, ["a", "b"])
        assert job["state"] == "succeeded", job
        assert job["created_by"] == "laptop"
        assert job["creator"] == {
            "studio_user_id": 42,
            "studio_user_name": "Ana",
            "token_name": "laptop",
            "label": "Ana",
        }
        status, page = await server.call("GET", "/journal", laptop, params={"limit": "10"})
        assert status == 200, page
        deletes = [i for i in page["items"] if i["operation"] == "delete"]
        assert sorted(i["key"] for i in deletes) == ["a", "b"]
        assert {i["person"]["label"] for i in deletes} == {"Ana"}
        assert {i["person"]["studio_user_id"] for i in deletes} == {42}
        states = [
            e["payload"]
            for e in await events_from(server, laptop, start["next_cursor"])
            if e["type"] == "job.state" and e["payload"]["job_id"] == job["id"]
        ]
        caused = [s for s in states if s.get("person") is not None]
        assert caused and {s["person"]["label"] for s in caused} == {"Ana"}, states

        # A script's token never announced anyone: it says so rather than guess.
        unknown = await delete_job(server, script, ["c"])
        assert unknown["creator"]["label"] == "ci (Studio user unknown)", unknown
        _, page = await server.call("GET", "/journal", laptop, params={"limit": "1"})
        (latest,) = page["items"]
        assert latest["key"] == "c"
        assert latest["person"]["label"] == f"ci (job {unknown['id']}) (Studio user unknown)"


def test_a_version_1_jobs_file_gains_the_identity_columns(tmp_path: Path) -> None:
    # Jobs files written before proposals and identities: the migration adds the columns and
    # old jobs read back with nobody behind their token (shown as unknown, never guessed).
    path = tmp_path / JOBS_FILENAME
    with JobStore(tmp_path):
        pass
    conn = sqlite3.connect(path)
    for column in (
        "proposed_by",
        "approved_by_id",
        "approved_by_name",
        "actor_user_id",
        "actor_user_name",
        "approved_by_user_id",
        "approved_by_user_name",
    ):
        conn.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    conn.execute(
        "INSERT INTO jobs (id, kind, state, universe, store_kind, request, actor_id,"
        " actor_name, created_ms, updated_ms) VALUES ('job_0123456789ab', 'delete',"
        " 'succeeded', 1, 'standard', '{}', 'tok_1', 'old laptop', 1, 1)"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with JobStore(tmp_path) as store:
        record = store.get("job_0123456789ab")
    assert record.actor_name == "old laptop"
    assert record.actor_user_id is None and record.actor_user_name is None
