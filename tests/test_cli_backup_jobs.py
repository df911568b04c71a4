"""`dsm backup create|restore|schedule`, `dsm restore` and `dsm erase-user` against a real
running server, and a portable (passphrase) archive restored by another server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from dsm.cli import main
from dsm.services.backups.archive import read_header
from dsm.services.backups.keyslots import PASSPHRASE_ENV
from shared_schema.common import Role
from tools.testing import jobs
from tools.testing.server import Server, idem, running_server

U, U2 = 1, 2


async def dsm(server: Server, token: str, *argv: str) -> tuple[int, str, str]:
    """Run a `dsm` command in a thread (it blocks on HTTP while the server runs in this loop)."""
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main([*argv, "--server", server.base_url, "--token", token])

    code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()


async def value(server: Server, token: str, universe: int, store: str, key: str) -> object:
    view = await jobs.read_value(server.call, token, universe, store, key)
    return None if view is None else json.loads(view["value_json"])


async def test_backup_restore_schedule_and_erase_user_from_the_cli(tmp_path: Path) -> None:
    async with running_server(tmp_path, budget_rpm=1_000_000, emulator_universes=[U, U2]) as server:
        token = await server.pair("cli", role=Role.ADMIN)
        await jobs.seed(server.call, token, U, "Players", {f"p{i}": {"c": i} for i in range(4)})
        await jobs.seed(server.call, token, U, "Players", {"Player_55": {"c": 55}})

        code, out, err = await dsm(server, token, "backup", "create", "--universe", "1")
        assert code == 0, err
        assert "Entries: 5" in out and "Nothing was written" in out
        code, out, err = await dsm(
            server, token, "backup", "create", "--universe", "1", "--note", "pre-v42", "--run"
        )
        assert code == 0, err
        assert "5 applied" in out and "Archive:" in out
        status, listing = await server.call("GET", "/backups", token)
        archive_id = listing["archives"][0]["archive_id"]

        code, out, err = await dsm(
            server, token, "restore", archive_id, "--universe", "1", "--datastore", "Players",
            "--to-universe", "2", "--run",
        )  # fmt: skip
        assert code == 0, err
        assert "5 create" in out and "5 applied" in out, out
        assert await value(server, token, U2, "Players", "p3") == {"c": 3}

        code, out, err = await dsm(
            server, token, "backup", "schedule", "nightly", "--universe", "1", "--every", "1d",
            "--keep", "7",
        )  # fmt: skip
        assert code == 0, err
        assert "every 1440 minutes, keeping 7" in out
        code, out, err = await dsm(server, token, "backup", "schedule")
        assert code == 0 and "nightly" in out, err
        code, _, err = await dsm(server, token, "backup", "schedule", "x", "--every", "2w")
        assert code == 2 and "--universe, --every and --keep" in err

        status, _ = await server.call(
            "PUT", "/erasure-patterns", token, json={"standard": {"*": ["Player_{userId}"]}}
        )
        assert status == 200
        report = tmp_path / "report.json"
        code, out, err = await dsm(
            server, token, "erase-user", "55", "--universe", "1", "--run", "--confirm",
            "erase 55", "--report", str(report), "--forget-report",
        )  # fmt: skip
        assert code == 0, err
        assert "Found 1 entries of player 55" in out and "Erasure report" in out
        assert json.loads(report.read_text())["user_id"] == 55
        assert await value(server, token, U, "Players", "Player_55") is None
        assert await value(server, token, U, "Players", "p0") == {"c": 0}


@pytest.mark.parametrize("wrong", [False, True])
async def test_a_passphrase_archive_restores_on_a_fresh_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wrong: bool
) -> None:
    passphrase = "correct horse battery staple 42"
    first, second = tmp_path / "first", tmp_path / "second"
    async with running_server(first, budget_rpm=1_000_000) as server:
        token = await server.pair("a", role=Role.ADMIN)
        await jobs.seed(server.call, token, U, "Players", {"p1": {"é": "ü"}}, user_ids=[3])
        status, job = await server.call(
            "POST", "/backups", token,
            json={"universe_id": U, "passphrase": passphrase, "dry_run": False,
                  "idempotency_key": idem()},
        )  # fmt: skip
        assert status == 200, job
        job = await jobs.wait(server.call, token, job["id"])
        assert job["state"] == "succeeded", job
        archive = Path(job["output_path"])
        archive_id = read_header(archive).archive_id
    # Another machine: a fresh data dir and data key; the archive file copied over.
    (second / "backups").mkdir(parents=True)
    shutil.copy(archive, second / "backups" / archive.name)
    async with running_server(second, budget_rpm=1_000_000) as server:
        token = await server.pair("b", role=Role.ADMIN)
        status, body = await server.call(
            "POST", "/restores", token,
            json={"universe_id": U, "archive_id": archive_id, "idempotency_key": idem()},
        )  # fmt: skip
        assert status == 403 and "passphrase" in body["error"]["message"], body
        monkeypatch.setenv(PASSPHRASE_ENV, passphrase + ("x" if wrong else ""))
        code, _, err = await dsm(
            server, token, "restore", archive_id, "--universe", "1", "--passphrase", "--run"
        )
        if wrong:
            assert code == 1 and "passphrase" in err, err
            assert await jobs.read_value(server.call, token, U, "Players", "p1") is None
            return
        assert code == 0, err
        view = await jobs.read_value(server.call, token, U, "Players", "p1")
        assert view is not None and json.loads(view["value_json"]) == {"é": "ü"}
        assert view["user_ids"] == [3]
