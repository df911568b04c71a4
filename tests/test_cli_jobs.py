"""`dsm jobs` against a real running server: plan shown first, --run, watch, show, rollback."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path

from dsm.cli import main
from shared_schema.common import Role
from tools.testing import jobs
from tools.testing.server import Server, entry_path, idem, running_server

U = 1


async def dsm(server: Server, token: str, *argv: str) -> tuple[int, str, str]:
    """Run `dsm jobs ...` in a thread (it blocks on HTTP while the server runs in this loop)."""
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        import contextlib

        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(["jobs", "--server", server.base_url, "--token", token, *argv])

    code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()


async def test_create_shows_the_plan_and_runs_only_with_run(tmp_path: Path) -> None:
    async with running_server(tmp_path, budget_rpm=1_000_000) as server:
        token = await server.pair("cli", role=Role.ADMIN)
        await jobs.seed(server.call, token, U, "Players", {f"p{i}": {"coins": i} for i in range(6)})
        selection = ("--universe", "1", "--datastore", "Players", "--prefix", "p")
        code, out, err = await dsm(
            server, token, "create", "transform", *selection, "--program", ".coins += 5"
        )
        assert code == 0, err
        assert "Entries: 6" in out and "would change it" in out and "replace /coins" in out
        assert "Nothing was written" in out
        view = await jobs.read_value(server.call, token, U, "Players", "p1")
        assert view is not None and json.loads(view["value_json"]) == {"coins": 1}

        code, out, err = await dsm(
            server, token, "create", "transform", *selection, "--program", ".coins += 5", "--run"
        )
        assert code == 0, err
        assert "6 applied, 0 skipped, 0 failed" in out
        view = await jobs.read_value(server.call, token, U, "Players", "p1")
        assert view is not None and json.loads(view["value_json"]) == {"coins": 6}
        job_id = re.findall(r"job_[0-9a-f]{12}", out)[0]

        code, out, _ = await dsm(server, token, "list")
        assert code == 0 and job_id in out and "succeeded" in out
        code, out, _ = await dsm(server, token, "show", job_id, "--items")
        assert code == 0 and out.count("applied") >= 6
        code, out, err = await dsm(server, token, "rollback", job_id, "--run")
        assert code == 0, err
        assert "Roll back job" in out
        view = await jobs.read_value(server.call, token, U, "Players", "p1")
        assert view is not None and json.loads(view["value_json"]) == {"coins": 1}


async def test_import_uploads_the_file_and_errors_are_plain(tmp_path: Path) -> None:
    async with running_server(tmp_path, budget_rpm=1_000_000) as server:
        token = await server.pair("cli", role=Role.ADMIN)
        path = tmp_path / "players.jsonl"
        path.write_text('{"key":"a","value":1}\n{"key":"b"}\n', encoding="utf-8")
        code, out, err = await dsm(
            server,
            token,
            "create",
            "import",
            "--universe",
            "1",
            "--datastore",
            "Imported",
            "--file",
            str(path),
            "--run",
        )
        assert "line 2:" in out and "cannot start" in out
        assert code == 1 and "skip_bad_lines" in err
        code, out, err = await dsm(
            server,
            token,
            "create",
            "import",
            "--universe",
            "1",
            "--datastore",
            "Imported",
            "--file",
            str(path),
            "--skip-bad-lines",
            "--run",
        )
        assert code == 0, err
        assert "1 applied" in out
        code, _, err = await dsm(server, "dsm_0000000000000000_" + "x" * 43, "list")
        assert code == 1 and "error:" in err


async def test_a_rollback_that_leaves_writes_alone_says_so_and_exits_non_zero(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, budget_rpm=1_000_000) as server:
        token = await server.pair("cli", role=Role.ADMIN)
        await jobs.seed(server.call, token, U, "Players", {"a": {"n": 1}, "b": {"n": 2}})
        selection = {"universe_id": U, "datastores": ["Players"]}
        body = {"kind": "transform", "selection": selection, "params": {"program": ".n += 10"}}
        job = await jobs.run(server.call, token, body)
        view = await jobs.read_value(server.call, token, U, "Players", "b")
        assert view is not None
        status, _ = await server.call(
            "PUT",
            entry_path(U, "Players", "b"),
            token,
            json={"value_json": '{"n":500}', "expected_revision": view["revision"],
                  "idempotency_key": idem()},
        )  # fmt: skip
        assert status == 200  # someone wrote `b` after the job

        code, out, err = await dsm(server, token, "rollback", job["id"], "--run")
        flat = " ".join(out.split())
        assert code == 1, (out, err)
        assert f"Job {job['id']} is not fully rolled back: 1 of its writes was left" in flat
        assert "(1 changed since)" in flat
        code, out, _ = await dsm(server, token, "show", job["id"])
        flat = " ".join(out.split())
        assert code == 0 and "not fully rolled back" in flat and "Next: rollback" in flat
