"""The search index and the jobs engine together: a crawl is a job that survives SIGKILL and
ends with the index complete; a search is a bulk job's selection, planned from the index with
its coverage stated, and every entry re-read live before it is touched.

Expected sets are computed here from the values the test wrote, never by the index code.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from dsm.emulator.context import EmulatorConfig, FaultConfig
from dsm.emulator.throttle import LimitsConfig
from dsm.opencloud.client import OpenCloudClient
from dsm.services.tokens import TokenStore
from dsm.storage.crypto import new_key
from shared_schema.common import Role
from tests.test_crash_jobs import Crashes
from tests.test_index_e2e import emulator_of
from tools.testing import jobs
from tools.testing.emulator import start_emulator
from tools.testing.server import Server, running_server

U, DS = 1, "crashjobs"
ENTRIES = 150


async def index_basis(call: jobs.Call, token: str, universe: int) -> dict[str, Any]:
    status, index = await call("GET", "/index", token, params={"universe_id": str(universe)})
    assert status == 200, index
    basis: dict[str, Any] = index["basis"]
    return basis


async def test_a_crawl_killed_with_sigkill_resumes_and_the_index_ends_complete(
    tmp_path: Path,
) -> None:
    config = EmulatorConfig(
        data_dir=tmp_path / "opencloud",
        limits=LimitsConfig(mode="off"),
        faults=FaultConfig(latency_ms=3),
    )
    runner, base_url, _ = await start_emulator(config)
    data_dir, data_key = tmp_path / "server", new_key()
    store = TokenStore.open(data_dir)
    token = store.issue("crawl crash test", Role.ADMIN)[0]
    store.close()
    crashes = Crashes(data_dir, data_key, base_url, token)
    values = {f"p{i:03}": {"coins": i * 10, "level": i % 7} for i in range(ENTRIES)}
    try:
        async with (
            aiohttp.ClientSession() as http,
            OpenCloudClient(api_key="direct", base_url=base_url) as direct,
        ):
            crashes.http = http
            await asyncio.gather(
                *(direct.create_entry(U, DS, k, json.dumps(v)) for k, v in values.items())
            )
            await crashes.start()
            body = {
                "kind": "crawl",
                "dry_run": False,
                "selection": {"universe_id": U, "all_datastores": True, "all_scopes": True},
                "idempotency_key": "crawl-crash-1",
            }
            status, job = await crashes.call("POST", "/jobs", token, json=body)
            assert status == 200, job
            job_id = job["id"]
            await jobs.wait(crashes.call, token, job_id, ("running",))
            await asyncio.sleep(0.3)
            crashes.kill()
            kills = 1 + await crashes.crash_while_running(job_id, 4)

            job = await jobs.wait(crashes.call, token, job_id)
            assert job["state"] == "succeeded", (job["failure"], job["progress"])
            assert job["progress"]["applied"] == ENTRIES, job["progress"]
            basis = await index_basis(crashes.call, token, U)
            coverage = basis["coverage"]
            assert coverage["entries_indexed"] == coverage["entries_listed"] == ENTRIES, basis
            assert coverage["complete"] is True and coverage["share"] == 1.0
            # Every value in the index is the one in Open Cloud.
            rich = {k for k, v in values.items() if v["coins"] >= 1000 and v["level"] == 3}
            status, page = await crashes.call(
                "POST",
                "/search",
                token,
                json={"universe_id": U, "query": "coins >= 1000 and level = 3", "limit": 200},
            )
            assert status == 200 and {h["entry"]["key"] for h in page["hits"]} == rich
            crashes.kill()
    finally:
        if crashes.child is not None:
            crashes.child.kill()
        await runner.cleanup()
    assert kills >= 3, kills


async def crawl(server: Server, token: str, store: str) -> dict[str, Any]:
    selection = {"universe_id": 1, "datastores": [store], "all_scopes": True}
    job = await jobs.run(server.call, token, {"kind": "crawl", "selection": selection})
    assert job["state"] == "succeeded", job
    return job


async def test_a_search_selection_states_its_coverage_and_rechecks_each_entry_live(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, budget_rpm=1_000_000) as server:
        token = await server.pair()
        values = {f"u{i:02}": {"coins": i * 100, "tag": "x" if i % 2 else "y"} for i in range(40)}
        await jobs.seed(server.call, token, 1, "Players", values)
        await crawl(server, token, "Players")

        # Keys added behind the server's back, then listed by a crawl that never ran: the index
        # lists 50 entries and holds 40 of them.
        ctx = emulator_of(server)
        for i in range(40, 50):
            ctx.standard.write(
                "1", "Players", "global", f"u{i:02}", json.dumps({"coins": i * 100}),
                attributes=None, user_ids=[],
            )  # fmt: skip
        listing = {
            "kind": "crawl",
            "selection": {"universe_id": 1, "datastores": ["Players"], "all_scopes": True},
        }
        status, planned = await jobs.create(server.call, token, listing)
        assert status == 200, planned
        await jobs.wait(server.call, token, planned["id"], plan_complete=True)
        status, _ = await server.call("POST", f"/jobs/{planned['id']}/cancel", token)
        assert status == 200

        search = {"query": 'coins >= 2000 and tag = "x"'}
        selection = {"universe_id": 1, "all_datastores": True, "all_scopes": True, "search": search}
        body = {"kind": "set_metadata", "selection": selection,
                "params": {"set_attributes": {"flagged": True}}}  # fmt: skip
        status, job = await jobs.create(server.call, token, body)
        assert status == 200, job
        job = await jobs.wait(server.call, token, job["id"], plan_complete=True)
        plan = job["plan"]
        expected = {k for k, v in values.items() if v["coins"] >= 2000 and v["tag"] == "x"}
        assert plan["items"] == len(expected)
        text = " ".join(plan["notes"])
        assert "Selected from the search index" in text and "40 of the 50 entries" in text, plan
        assert any("does not cover every entry" in w for w in plan["warnings"]), plan

        # One selected entry changes behind the server's back so it no longer matches: the job
        # re-reads it, skips it as no_longer_matches, and flags exactly the others.
        changed = sorted(expected)[0]
        ctx.standard.write(
            "1", "Players", "global", changed, json.dumps({"coins": 1, "tag": "x"}),
            attributes=None, user_ids=[],
        )  # fmt: skip
        done = await jobs.run(server.call, token, body)
        assert done["state"] == "succeeded", done
        outcomes = {i["key"]: i for i in await jobs.items(server.call, token, done["id"])}
        assert set(outcomes) == expected
        assert outcomes[changed]["state"] == "skipped"
        assert outcomes[changed]["skip_code"] == "no_longer_matches"
        for key in expected - {changed}:
            assert outcomes[key]["state"] == "applied"
            view = await jobs.read_value(server.call, token, 1, "Players", key)
            assert view is not None and view["attributes"] == {"flagged": True}
        assert (await jobs.read_value(server.call, token, 1, "Players", changed) or {}).get(
            "attributes"
        ) in (None, {})

        # A query that is not valid is refused when the job is created, with its position.
        bad = {**body, "selection": {**selection, "search": {"query": "coins >"}}}
        status, refused = await jobs.create(server.call, token, bad)
        assert status == 400 and "column" in refused["error"]["message"], refused

        # A crawl cannot select by a search of the index it fills.
        status, refused = await jobs.create(
            server.call, token, {"kind": "crawl", "selection": selection}
        )
        assert status == 400 and "cannot select by a search" in refused["error"]["message"]
