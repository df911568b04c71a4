"""The jobs engine's parts on their own: the request model, the durable store, the export spool,
and the priority of a job's Open Cloud calls."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dsm.opencloud.ratelimit import Priority, current_priority
from dsm.services.jobs.formats import ExportEntry, JsonLinesWriter
from dsm.services.jobs.kinds.export import ExportRun, publish
from dsm.services.jobs.kinds.transform import JqPool
from dsm.services.jobs.store import JobRecord, JobStore, NewItem, Outcome, new_job_id, now_ms
from shared_schema.common import Role
from shared_schema.jobs import CopyParams, DeleteParams, ExportFormat, JobCreateRequest
from tools.testing import jobs
from tools.testing.server import running_server

SELECTION = {"universe_id": 1, "datastores": ["Players"]}


def request(**body: Any) -> JobCreateRequest:
    return JobCreateRequest.model_validate_json(
        json.dumps({"selection": SELECTION, "idempotency_key": "abcdefgh", **body})
    )


def test_each_kind_gets_its_own_params_model() -> None:
    assert isinstance(request(kind="delete").params, DeleteParams)
    assert isinstance(request(kind="delete", params=[]).params, DeleteParams)  # Luau's {}
    copy = request(kind="move", params={"target": {"scope": "archive"}})
    assert isinstance(copy.params, CopyParams) and copy.params.target.scope == "archive"
    with pytest.raises(ValidationError, match=r"export job: params\.program"):
        request(kind="export", params={"program": "."})
    with pytest.raises(ValidationError, match="rollback"):
        request(kind="rollback")
    with pytest.raises(ValidationError, match="keys cannot be combined with prefix"):
        JobCreateRequest.model_validate_json(
            json.dumps(
                {
                    "kind": "delete",
                    "idempotency_key": "abcdefgh",
                    "selection": {**SELECTION, "keys": [{"key": "a"}], "prefix": "a"},
                }
            )
        )
    with pytest.raises(ValidationError, match="ordered data stores cannot list their scopes"):
        request(kind="delete", selection={**SELECTION, "store_kind": "ordered", "all_scopes": True})


def record(job_id: str) -> JobRecord:
    return JobRecord(
        id=job_id,
        kind="delete",
        state="running",
        universe=1,
        store_kind="standard",
        request={"selection": SELECTION, "params": {}},
        idempotency_key=None,
        actor_id="t",
        actor_name="tester",
        created_ms=now_ms(),
        updated_ms=now_ms(),
        started_ms=None,
        finished_ms=None,
        plan=None,
        plan_complete=False,
        plan_cursor=None,
        start_when_planned=False,
        item_count=0,
        applied=0,
        skipped=0,
        failed=0,
        failure_code=None,
        failure_message=None,
        output_path=None,
        rollback_of=None,
        rolled_back_by=None,
        kind_state=None,
    )


def test_outcomes_replayed_after_a_restart_count_once(tmp_path: Path) -> None:
    with JobStore(tmp_path) as store:
        job_id = new_job_id()
        store.create(record(job_id))
        items = [NewItem(1, "standard", "Players", "global", f"k{i}") for i in range(3)]
        assert store.add_items(job_id, items, cursor={"stream": 1}) == 3
        store.record_outcomes(job_id, [Outcome(1, "applied"), Outcome(2, "pending", deferred=True)])
        again = store.record_outcomes(job_id, [Outcome(1, "applied"), Outcome(2, "skipped")])
        assert (again.applied, again.skipped, again.failed) == (1, 1, 0)
        assert [i.state for i in store.items(job_id)] == ["applied", "skipped", "pending"]
        assert store.get(job_id).plan_cursor == {"stream": 1}


def test_the_export_spool_is_cut_back_to_its_last_commit(tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"

    def entry(key: str) -> ExportEntry:
        return ExportEntry(key=key, value_json='{"n":1}')

    run = ExportRun(spool, 0)
    run.write(entry("a"))
    committed = run.checkpoint()
    assert committed is not None
    run.write(entry("b"))  # read, written, but its outcome was never committed: a crash
    run._file.flush()
    resumed = ExportRun(spool, committed["offset"])
    resumed.write(entry("c"))
    resumed.checkpoint()
    keys = [json.loads(line)["key"] for line in spool.read_text().splitlines()]
    assert keys == ["a", "c"]


async def test_a_jobs_open_cloud_calls_yield_to_the_plugins(tmp_path: Path) -> None:
    async with running_server(tmp_path, budget_rpm=1_000_000) as server:
        token = await server.pair("admin", role=Role.ADMIN)
        await jobs.seed(server.call, token, 1, "Players", {f"k{i}": i for i in range(5)})
        limiter = server.upstream.limiter
        assert limiter is not None
        seen: list[Priority] = []
        acquire = limiter.acquire

        async def recording(universe_id: str, category: str) -> float:
            seen.append(current_priority())
            waited: float = await acquire(universe_id, category)
            return waited

        limiter.acquire = recording  # type: ignore[method-assign]
        job = await jobs.run(server.call, token, {"kind": "export", "selection": SELECTION})
        assert job["state"] == "succeeded"
        # Listing, samples and every item: all background; nothing else called Open Cloud.
        assert len(seen) >= 5 and set(seen) == {Priority.BACKGROUND}


@pytest.mark.parametrize("format", list(ExportFormat))
def test_an_export_file_is_published_whole_once_and_never_over_another(
    tmp_path: Path, format: ExportFormat
) -> None:
    spool = tmp_path / ".job.partial.jsonl"
    with open(spool, "w", encoding="utf-8") as out:
        writer = JsonLinesWriter(out)
        for key in ("a", "b"):
            writer.write(ExportEntry(key=key, value_json='{"n":12345678901234567890}'))
    final = tmp_path / f"out.{format.value}"
    publish(spool, final, format)
    first = final.read_bytes()
    publish(spool, final, format)  # a restart after the link, before the job was marked done
    assert final.read_bytes() == first and b"12345678901234567890" in first
    other = tmp_path / f"other.{format.value}"
    other.write_text("someone else's file")
    with pytest.raises(FileExistsError):
        publish(spool, other, format)
    assert other.read_text() == "someone else's file"


async def test_a_cut_transform_never_hands_its_answer_to_the_next_value() -> None:
    pool = JqPool("if .slow then ([range(3000000)] | length) else .n end", size=1)
    try:
        assert (await pool.apply('{"n":1}'))[2] == "1"  # the worker process is up
        slow = asyncio.ensure_future(pool.apply('{"slow":true}'))
        await asyncio.sleep(0.05)
        slow.cancel()  # a pause cuts the item while jq works on it
        with pytest.raises(asyncio.CancelledError):
            await slow
        # The worker is still answering the cut value: it is not free for the next one yet.
        assert pool._free.qsize() == 0
        kind, _, value = await pool.apply('{"n":7}')
        assert (kind, value) == ("changed", "7")
        assert pool._free.qsize() == 1
    finally:
        await pool.close()
