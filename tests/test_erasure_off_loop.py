"""An erasure rewrites the jobs file (VACUUM with secure_delete) in a worker thread: the server
keeps answering meanwhile, a write to the file waits for the rewrite and is kept, and the job
(and its report) says done only once the rewrite finished. The rewrite is held inside its
VACUUM with events, so nothing here depends on timing."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from dsm.services.jobs import store as store_module
from dsm.services.jobs.store import JOBS_FILENAME, REDACTED_KEY, JobStore, NewItem
from dsm.storage.sqlite import RewriteIncomplete, database_files
from tools.testing import jobs
from tools.testing.server import idem

from .test_backup_jobs import Env, U, env
from .test_jobs_prune import _record

__all__ = ["env"]  # the fixture, imported to be used here

WAIT = 30.0  # seconds a held step waits before failing the test instead of hanging


class HeldRewrite:
    """Stands in for `rewrite_securely` and stops inside its VACUUM until released."""

    def __init__(self, real: Callable[[sqlite3.Connection], None]) -> None:
        self.real = real
        self.inside = threading.Event()
        self.release = threading.Event()

    def __call__(self, conn: sqlite3.Connection) -> None:
        statements: list[str] = []
        conn.set_trace_callback(statements.append)

        def hold() -> int:
            if statements[-1:] == ["VACUUM"] and not self.inside.is_set():
                self.inside.set()
                # Not released in time: interrupt the VACUUM so the test fails, not hangs.
                return 0 if self.release.wait(WAIT) else 1
            return 0

        conn.set_progress_handler(hold, 1)
        try:
            self.real(conn)
        finally:
            conn.set_progress_handler(None, 1)
            conn.set_trace_callback(None)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> HeldRewrite:
    rewrite = HeldRewrite(store_module.rewrite_securely)
    monkeypatch.setattr(store_module, "rewrite_securely", rewrite)
    return rewrite


def in_files(path: Path, needle: bytes) -> bool:
    return any(needle in p.read_bytes() for p in database_files(path))


def test_a_write_during_the_rewrite_waits_for_it_and_is_kept(
    tmp_path: Path, held: HeldRewrite
) -> None:
    with JobStore(tmp_path) as store:
        job = store.create(_record("running"))
        keys = ["Player_1_secret", "Player_2"]
        store.add_items(job.id, [NewItem(U, "standard", "Players", "global", k) for k in keys],
                        cursor=None)  # fmt: skip
        redacted: list[int] = []
        worker = threading.Thread(
            target=lambda: redacted.append(
                store.redact_items(lambda *name: name[3] == keys[0], user_id=1)
            )
        )
        worker.start()
        assert held.inside.wait(WAIT)
        # The server's connection still reads while the rewrite holds the file.
        assert [i.key for i in store.items(job.id)] == [REDACTED_KEY, "Player_2"]

        writing = threading.Event()
        store._db.conn.set_trace_callback(lambda sql: writing.set() if "BEGIN" in sql else None)
        failures: list[BaseException] = []

        def write() -> None:
            try:
                store.add_items(job.id, [NewItem(U, "standard", "Players", "global", "Player_3")],
                                cursor=None, complete=True)  # fmt: skip
            except BaseException as exc:
                failures.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        assert writing.wait(WAIT)  # its transaction began while the VACUUM holds the file
        held.release.set()
        worker.join(WAIT)
        writer.join(WAIT)
        store._db.conn.set_trace_callback(None)

        assert failures == [] and redacted == [1]
        assert [i.key for i in store.items(job.id)] == [REDACTED_KEY, "Player_2", "Player_3"]
        assert not in_files(store.path, keys[0].encode())


async def erase(env: Env, uid: int) -> str:
    """Plan and start an erasure of `uid` (Player_{uid} in Players); its job id."""
    status, _ = await env.call(
        "PUT", "/erasure-patterns", env.admin, json={"standard": {"*": ["Player_{userId}"]}}
    )
    assert status == 200
    await jobs.seed(env.call, env.admin, U, "Players", {f"Player_{uid}": {"coins": 5}},
                    user_ids=[uid])  # fmt: skip
    await jobs.seed(env.call, env.admin, U, "Players", {"Player_7": {"coins": 1}}, user_ids=[7])
    status, plan = await env.call(
        "POST", "/erasures", env.admin,
        json={"universe_id": U, "user_id": uid, "idempotency_key": idem()},
    )  # fmt: skip
    assert status == 200, plan
    job_id = plan["id"]
    await jobs.wait(env.call, env.admin, job_id, ("planned", *jobs.TERMINAL))
    status, _ = await env.call(
        "POST", f"/jobs/{job_id}/start", env.admin, json={"confirm": f"erase {uid}"}
    )
    assert status == 200
    return str(job_id)


async def test_the_server_answers_while_an_erasure_rewrites_the_jobs_file(
    env: Env, held: HeldRewrite
) -> None:
    uid = 900_000_000_000 + secrets.randbelow(99_999_999)
    job_id = await erase(env, uid)
    assert await asyncio.to_thread(held.inside.wait, WAIT), "the rewrite never started"

    # Held inside the VACUUM: the loop still answers, reading the jobs file and Open Cloud.
    status, job = await env.call("GET", f"/jobs/{job_id}", env.admin)
    assert status == 200 and job["state"] == "running", job
    status, error = await env.call("GET", f"/erasures/{job_id}/report", env.admin)
    assert status == 404 and "has no report yet (job state: running)" in error["error"]["message"]
    other = await jobs.read_value(env.call, env.admin, U, "Players", "Player_7")
    assert other is not None and other["user_ids"] == [7]

    held.release.set()
    job = await jobs.wait(env.call, env.admin, job_id)
    assert job["state"] == "succeeded", job
    status, report = await env.call("GET", f"/erasures/{job_id}/report", env.admin)
    assert status == 200 and report["user_id"] == uid
    jobs_file = env.data_dir / JOBS_FILENAME
    assert jobs_file.exists() and not in_files(jobs_file, f"Player_{uid}".encode())


async def test_a_rewrite_that_cannot_finish_fails_the_erasure_and_gives_no_report(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    def log_kept(conn: sqlite3.Connection) -> None:
        raise RewriteIncomplete("another connection kept reading the file's write-ahead log")

    monkeypatch.setattr(store_module, "rewrite_securely", log_kept)
    job_id = await erase(env, 900_000_000_000 + secrets.randbelow(99_999_999))
    job = await jobs.wait(env.call, env.admin, job_id)
    assert job["state"] == "failed", job
    assert "could not be rewritten" in job["failure"]["message"], job
    assert "run the erasure again" in job["failure"]["message"]
    status, error = await env.call("GET", f"/erasures/{job_id}/report", env.admin)
    assert status == 404 and "(job state: failed)" in error["error"]["message"]
