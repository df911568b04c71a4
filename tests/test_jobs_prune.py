"""Pruning old finished jobs: over the store, and over HTTP and the CLI against a running server
on the emulator. What is still needed stays; what goes takes its items with it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dsm.cli import main
from dsm.http.appkeys import BACKUPS, JOBS
from dsm.services.jobs.store import (
    JOBS_FILENAME,
    JobRecord,
    JobStore,
    NewItem,
    new_job_id,
    now_ms,
    reclaim_space,
)
from dsm.storage.crypto import new_key
from shared_schema.common import Role
from tools.testing import jobs
from tools.testing.server import Server, running_server

U = 1
DAY_MS = 86_400_000


def _record(state: str) -> JobRecord:
    created = now_ms() - 60 * DAY_MS
    return JobRecord(
        id=new_job_id(), kind="delete", state=state, universe=U, store_kind="standard",
        request={"selection": None, "params": {}}, idempotency_key=None, actor_id="t",
        actor_name="test", created_ms=created, updated_ms=created, started_ms=created,
        finished_ms=None, plan=None, plan_complete=True, plan_cursor=None,
        start_when_planned=False, item_count=0, applied=0, skipped=0, failed=0,
        failure_code=None, failure_message=None, output_path=None, rollback_of=None,
        rolled_back_by=None, kind_state=None,
    )  # fmt: skip


def test_removed_jobs_take_their_items_and_the_file_shrinks(tmp_path: Path) -> None:
    old = now_ms() - 40 * DAY_MS
    with JobStore(tmp_path) as store:
        gone = store.create(_record("succeeded"))
        gone = store.update(gone.id, finished_ms=old)
        kept = store.create(_record("running"))
        for job in (gone, kept):
            items = [NewItem(U, "standard", "Players", "global", f"k{i}" + "x" * 40)
                     for i in range(12_000)]  # fmt: skip
            store.add_items(job.id, items, cursor=None, complete=True)
        store._db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        big = store.file_bytes()

        chosen = store.finished_before(now_ms() - 30 * DAY_MS, ["succeeded", "failed"])
        assert [r.id for r in chosen] == [gone.id]
        store.remove_jobs([gone.id])
        assert store.find(gone.id) is None and store.pruning_pending()
        batches = 0
        while store.drop_pruned_items(rows=5000):
            batches += 1
        assert batches >= 3  # 12,000 items in short transactions, not one long one
        assert not store.pruning_pending()
        assert store.items(gone.id) == []
        assert len(store.items(kept.id, limit=20_000)) == 12_000
        reclaim_space(store.path)
        store._db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert store.file_bytes() < big * 0.7, (big, store.file_bytes())


def test_a_prune_cut_short_finishes_at_the_next_open(tmp_path: Path) -> None:
    with JobStore(tmp_path) as store:
        job = store.create(_record("failed"))
        store.add_items(job.id, [NewItem(U, "standard", "S", "global", "a")], cursor=None)
        store.remove_jobs([job.id])  # the crash comes before any item is deleted
    with JobStore(tmp_path) as store:
        assert store.pruning_pending()
        while store.drop_pruned_items():
            pass
        assert store.items(job.id) == [] and not store.pruning_pending()


def test_a_file_from_before_retention_is_migrated_and_made_reclaimable(tmp_path: Path) -> None:
    path = tmp_path / JOBS_FILENAME
    conn = sqlite3.connect(path)
    conn.executescript(
        "PRAGMA journal_mode=WAL; CREATE TABLE jobs (id TEXT); CREATE TABLE items (job_id TEXT);"
        "CREATE TABLE uploads (id TEXT); PRAGMA user_version=2;"
    )
    conn.close()
    with JobStore(tmp_path) as store:
        assert not store.pruning_pending()  # the version 3 table exists
        assert store.make_reclaimable() is True
        assert store.make_reclaimable() is False
        assert store._db.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2


# ------------------------------------------------------------------------ over HTTP and CLI


async def _prune(server: Server, token: str, **body: Any) -> tuple[int, Any]:
    return await server.call("POST", "/jobs/prune", token, json=body)


def _age(server: Server, job_id: str, days: int) -> None:
    """Make a finished job look as if it ended `days` ago."""
    server.app[JOBS].store.update(job_id, finished_ms=now_ms() - days * DAY_MS)


async def _job_ids(server: Server, token: str) -> set[str]:
    status, page = await server.call("GET", "/jobs", token, params={"limit": "200"})
    assert status == 200, page
    return {job["id"] for job in page["jobs"]}


EVERY = {"universe_id": U, "datastores": ["Players"]}


async def _run(server: Server, token: str, kind: str, **params: Any) -> dict[str, Any]:
    """A job of `kind` over every key of Players, run to its end."""
    body = {"kind": kind, "selection": EVERY, "params": params}
    return await jobs.run(server.call, token, body)


async def _setup(server: Server, token: str) -> dict[str, str]:
    """Old jobs of every sort, and a planned one."""
    await jobs.seed(server.call, token, U, "Players", {f"p{i}": {"n": i} for i in range(4)})
    missing = {**EVERY, "keys": [{"key": "nobody"}]}
    # Wrote nothing (the key does not exist): nothing to roll back.
    idle = await jobs.run(server.call, token, {"kind": "delete", "selection": missing})
    # Wrote: it could still be rolled back.
    wrote = await _run(server, token, "transform", program=".n += 1")
    # Rolled back just now: the rollback is recent, so the old job stays with it.
    undone = await _run(server, token, "transform", program=".n += 10")
    status, rollback = await server.call(
        "POST", f"/jobs/{undone['id']}/rollback", token,
        json={"dry_run": False, "idempotency_key": jobs.idem()},
    )  # fmt: skip
    assert status == 200, rollback
    rollback = await jobs.wait(server.call, token, rollback["id"])
    assert rollback["state"] == "succeeded"
    status, planned = await jobs.create(server.call, token, {"kind": "delete", "selection": EVERY})
    assert status == 200, planned
    for job_id in (idle["id"], wrote["id"], undone["id"]):
        _age(server, job_id, 40)
    store = server.app[JOBS].store
    store._db.conn.execute(  # planned long ago, never started
        "UPDATE jobs SET created_ms = ?, updated_ms = ? WHERE id = ?",
        (now_ms() - 90 * DAY_MS, now_ms() - 90 * DAY_MS, planned["id"]),
    )
    return {
        "idle": idle["id"], "wrote": wrote["id"], "undone": undone["id"],
        "rollback": rollback["id"], "planned": planned["id"],
    }  # fmt: skip


async def test_prune_over_http_keeps_what_is_needed(tmp_path: Path) -> None:
    async with running_server(tmp_path, budget_rpm=1_000_000) as server:
        token = await server.pair("admin", role=Role.ADMIN)
        ids = await _setup(server, token)
        before = await _job_ids(server, token)
        store = server.app[JOBS].store
        idle_items = len(store.items(ids["idle"]))
        assert idle_items == 1

        status, report = await _prune(server, token, older_than="30d")  # dry run by default
        assert status == 200, report
        assert report["dry_run"] is True
        assert report["jobs"] == 1 and report["listed"][0]["id"] == ids["idle"]
        assert report["items"] == 1 and report["data_bytes"] > 0
        assert report["oldest_finished_at"] == report["newest_finished_at"]
        kept = {k["reason"]: k["jobs"] for k in report["kept"]}
        assert kept == {"rollbackable": 1, "linked": 1}, report["kept"]
        assert any("1 more finished job could still be rolled back" in n for n in report["notes"])
        assert await _job_ids(server, token) == before  # a dry run changes nothing
        assert len(store.items(ids["idle"])) == 1

        status, report = await _prune(server, token, older_than="30d", dry_run=False)
        assert status == 200, report
        assert report["jobs"] == 1 and report["file_bytes_before"] > 0
        assert report["file_bytes_after"] is not None
        status, body = await server.call("GET", f"/jobs/{ids['idle']}", token)
        assert status == 404, body
        assert store.items(ids["idle"]) == [] and not store.pruning_pending()
        left = await _job_ids(server, token)
        assert left == before - {ids["idle"]}
        assert {ids["planned"], ids["wrote"], ids["undone"], ids["rollback"]} <= left

        # Knowingly: the job that could be rolled back goes too, and the report says so.
        status, report = await _prune(
            server, token, older_than="30d", dry_run=True, include_rollbackable=True
        )
        assert status == 200, report
        assert report["jobs"] == 1 and report["rollbackable"] == 1
        assert report["listed"][0]["rollbackable"] is True
        assert any(
            "1 of these jobs could still be rolled back; pruning them removes that" in n
            for n in report["notes"]
        )
        status, report = await _prune(
            server, token, older_than="30d", dry_run=False, include_rollbackable=True
        )
        assert status == 200 and report["jobs"] == 1
        left = await _job_ids(server, token)
        assert ids["wrote"] not in left and ids["planned"] in left
        # Its writes stay in the journal, each still undoable on its own.
        journal = server.app[JOBS].plane.writes.journal
        assert journal.list(job_id=ids["wrote"], limit=10)

        # Once the rollback itself is old, the pair goes together; a rollback can itself be
        # rolled back, so it stays unless that is included.
        _age(server, ids["rollback"], 31)
        status, report = await _prune(server, token, older_than="30d", dry_run=False)
        assert status == 200 and report["jobs"] == 0, report
        kept = {k["reason"]: k["jobs"] for k in report["kept"]}
        assert kept == {"rollbackable": 1, "linked": 1}, report["kept"]
        status, report = await _prune(
            server, token, older_than="30d", dry_run=False, include_rollbackable=True
        )
        assert status == 200 and report["jobs"] == 2, report
        left = await _job_ids(server, token)
        assert ids["undone"] not in left and ids["rollback"] not in left
        assert ids["planned"] in left


async def test_a_rollback_not_yet_run_keeps_the_job_it_rolls_back(tmp_path: Path) -> None:
    async with running_server(tmp_path, budget_rpm=1_000_000) as server:
        token = await server.pair("admin", role=Role.ADMIN)
        await jobs.seed(server.call, token, U, "Players", {"a": {"n": 1}})
        job = await _run(server, token, "transform", program=".n += 1")
        status, rollback = await server.call(
            "POST", f"/jobs/{job['id']}/rollback", token,
            json={"dry_run": True, "idempotency_key": jobs.idem()},
        )  # fmt: skip
        assert status == 200 and rollback["state"] == "planned"
        _age(server, job["id"], 40)
        status, report = await _prune(
            server, token, older_than="30d", dry_run=False, include_rollbackable=True
        )
        assert status == 200 and report["jobs"] == 0, report
        assert report["kept"] == [
            {"reason": "linked", "jobs": 1, "note": report["kept"][0]["note"]}
        ]
        assert job["id"] in await _job_ids(server, token)


async def test_referenced_jobs_stay(tmp_path: Path) -> None:
    async with running_server(tmp_path, budget_rpm=1_000_000) as server:
        token = await server.pair("admin", role=Role.ADMIN)
        await jobs.seed(server.call, token, U, "Players", {"a": {"n": 1}})
        export = await _run(server, token, "export", format="jsonl")
        assert export["state"] == "succeeded" and Path(export["output_path"]).exists()
        # A schedule keeping one archive, run twice: the first run's archive is gone.
        status, view = await server.call(
            "PUT", "/backup-schedules/nightly", token,
            json={"universe_id": U, "datastores": ["Players"], "every_seconds": 86400, "keep": 1},
        )  # fmt: skip
        assert status == 200, view
        runs = []
        for _ in range(2):
            status, job = await server.call("POST", "/backup-schedules/nightly/run", token)
            assert status == 200, job
            runs.append(await jobs.wait(server.call, token, job["id"]))
        await server.app[BACKUPS].schedules.tick()  # retention after the last run
        status, listing = await server.call("GET", "/backups", token)
        assert [a["job_id"] for a in listing["archives"]] == [runs[1]["id"]]
        for job_id in (export["id"], runs[0]["id"], runs[1]["id"]):
            _age(server, job_id, 40)

        status, report = await _prune(server, token, older_than="30d", dry_run=False)
        assert status == 200, report
        assert [j["id"] for j in report["listed"]] == [runs[0]["id"]]
        kept = {k["reason"]: k["jobs"] for k in report["kept"]}
        assert kept == {"output_file": 1, "schedule": 1}, report["kept"]
        Path(export["output_path"]).unlink()  # the file is gone: its job may go
        status, report = await _prune(server, token, older_than="30d", dry_run=False)
        assert status == 200 and [j["id"] for j in report["listed"]] == [export["id"]]
        status, listing = await server.call("GET", "/backup-schedules", token)
        assert listing["schedules"][0]["last_job_id"] == runs[1]["id"]
        assert listing["schedules"][0]["last_state"] == "succeeded"


@pytest.mark.parametrize(
    ("older_than", "words"),
    [
        ("-5d", "negative"),
        ("30x", "unknown unit 'x'"),
        ("99999d", "at most 3650d"),
        ("10m", "unknown unit 'm'"),
        ("0d", "at least 1h"),
        ("soon", "not an age"),
    ],
)
async def test_bad_ages_are_a_clear_400(tmp_path: Path, older_than: str, words: str) -> None:
    async with running_server(tmp_path) as server:
        token = await server.pair("admin", role=Role.ADMIN)
        status, body = await _prune(server, token, older_than=older_than)
        assert status == 400, body
        assert body["error"]["code"] == "BAD_REQUEST" and words in body["error"]["message"]


async def test_prune_needs_admin_and_a_body(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        editor = await server.pair("editor", role=Role.EDITOR)
        status, body = await _prune(server, editor, older_than="30d")
        assert status == 403, body
        admin = await server.pair("admin", role=Role.ADMIN)
        status, body = await server.call("POST", "/jobs/prune", admin, json={})
        assert status == 400 and "older_than" in body["error"]["message"]
        status, body = await _prune(server, admin, older_than="30d", dry_run="yes")
        assert status == 400, body


async def _dsm(server: Server, token: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                return main(["jobs", "--server", server.base_url, "--token", token, *argv])
            except SystemExit as exc:  # argparse's usage errors
                return int(exc.code or 0)

    code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()


async def test_cli_prune_dry_run_then_real(tmp_path: Path) -> None:
    async with running_server(tmp_path, budget_rpm=1_000_000) as server:
        token = await server.pair("admin", role=Role.ADMIN)
        ids = await _setup(server, token)
        code, out, err = await _dsm(server, token, "prune", "--older-than", "30d", "--dry-run")
        flat = " ".join(out.split())
        assert code == 0, err
        assert "Would remove 1 finished job with 1 items" in flat and ids["idle"] in out
        assert "Nothing was removed (dry run)." in flat
        assert "could still be rolled back and stay" in flat
        assert ids["idle"] in await _job_ids(server, token)

        code, out, err = await _dsm(
            server, token, "prune", "--older-than", "4w", "--include-rollbackable"
        )
        flat = " ".join(out.split())
        assert code == 0, err
        assert "Removed 2 finished jobs" in flat and "The jobs file:" in flat
        assert "could still be rolled back; pruning them removes that" in flat
        left = await _job_ids(server, token)
        assert ids["idle"] not in left and ids["wrote"] not in left and ids["planned"] in left

        for bad, words in (("30x", "unknown unit"), ("-1d", "negative"), ("5000w", "at most")):
            code, out, err = await _dsm(server, token, "prune", f"--older-than={bad}")
            assert code == 2 and words in err, err
        code, out, err = await _dsm(server, token, "prune")
        assert code == 2 and "--older-than" in err


async def test_list_says_a_job_is_not_fully_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the table on one line a row
    async with running_server(tmp_path, budget_rpm=1_000_000) as server:
        token = await server.pair("admin", role=Role.ADMIN)
        await jobs.seed(server.call, token, U, "Players", {"a": {"n": 1}, "b": {"n": 2}})
        job = await _run(server, token, "transform", program=".n += 10")
        status, page = await server.call("GET", "/jobs", token)
        assert status == 200 and page["jobs"][0]["rollback_incomplete"] is False
        view = await jobs.read_value(server.call, token, U, "Players", "b")
        assert view is not None
        status, _ = await server.call(
            "PUT", f"/universes/{U}/datastores/Players/entries/b", token,
            json={"value_json": '{"n":500}', "expected_revision": view["revision"],
                  "idempotency_key": jobs.idem()},
        )  # fmt: skip
        assert status == 200
        status, rollback = await server.call(
            "POST", f"/jobs/{job['id']}/rollback", token,
            json={"dry_run": False, "idempotency_key": jobs.idem()},
        )  # fmt: skip
        assert status == 200, rollback
        await jobs.wait(server.call, token, rollback["id"])
        status, page = await server.call("GET", "/jobs", token)
        listed = {j["id"]: j for j in page["jobs"]}
        assert listed[job["id"]]["state"] == "succeeded"
        assert listed[job["id"]]["rollback_incomplete"] is True
        assert listed[rollback["id"]]["rollback_incomplete"] is False
        code, out, _ = await _dsm(server, token, "list")
        line = next(row for row in out.splitlines() if row.startswith(f"│ {job['id']}"))
        assert code == 0 and "succeeded · not fully rolled back" in line, out


async def test_serve_prunes_old_jobs_by_itself_but_never_a_rollbackable_one(
    tmp_path: Path,
) -> None:
    key = new_key()
    async with running_server(tmp_path, data_key=key, budget_rpm=1_000_000) as server:
        token = await server.pair("admin", role=Role.ADMIN)
        ids = await _setup(server, token)
        for job_id in ids.values():
            if job_id != ids["planned"]:
                _age(server, job_id, 100)
    # Started again with 90-day retention, the first pass at once.
    async with running_server(
        tmp_path, data_key=key, job_retention_days=90, job_retention_first_seconds=0
    ) as server:
        store = server.app[JOBS].store
        for _ in range(400):
            if store.find(ids["idle"]) is None and not store.pruning_pending():
                break
            await asyncio.sleep(0.02)
        assert store.find(ids["idle"]) is None  # wrote nothing: it went
        # Could still be rolled back (and the pair whose rollback could): they stay.
        for name in ("wrote", "undone", "rollback", "planned"):
            assert store.find(ids[name]) is not None, name


@pytest.mark.parametrize("days", ["-1", "3651", "ninety"])
def test_serve_refuses_a_bad_retention(days: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--job-retention-days", days])
    assert exited.value.code == 2
    assert "from 0 (off) to 3650" in capsys.readouterr().err
