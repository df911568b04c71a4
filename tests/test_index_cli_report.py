"""`dsm search`, `dsm index`, `dsm analytics` and `dsm report --html` against a real server,
and the report opened in real headless Chromium (Debian's `chromium`, installed by .ci/run)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from dsm import cli
from dsm.emulator import sample_game
from dsm.emulator.context import EMULATOR
from dsm.http.appkeys import DATA
from tools.testing.server import running_server

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def dsm(*argv: str) -> tuple[int, str]:
    """Run the real CLI in a worker thread (it has its own event loop) and capture stdout."""
    import contextlib
    import io

    out = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out):
            return cli.main(list(argv))

    code = await asyncio.to_thread(run)
    return code, out.getvalue()


async def test_cli_and_html_report_in_chromium(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", budget_rpm=1_000_000) as server:
        emulator = server.app[DATA].upstream.emulator
        assert emulator is not None
        sample_game.load(emulator.runner.app[EMULATOR], seed=2, players=40)
        common = ["--server", server.base_url, "--data-dir", str(tmp_path / "data")]

        code, out = await dsm("index", "crawl", "--datastore", "PlayerData", *common)
        assert code == 0, out
        code, out = await dsm("search", "coins >= 2e9", *common)
        assert code == 0 and "Player_900000001" in out and "EMULATOR sample game" in out, out
        code, out = await dsm("search", "--key", "Player_9000000", "--json", *common)
        assert code == 0 and '"total": 5' in out, out
        code, out = await dsm("analytics", "anomalies", "--datastore", "PlayerData", *common)
        assert code == 0 and "near_size_limit" in out, out
        code, out = await dsm("analytics", "economy", "--datastore", "PlayerData", *common)
        assert code == 0 and "coins" in out and "Gini" in out, out
        code, out = await dsm("index", "status", *common)
        assert code == 0 and "PlayerData" in out, out
        # The temporary tokens were revoked again.
        assert all(t.revoked for t in _cli_tokens(server))

        report = tmp_path / "report.html"
        code, out = await dsm("report", "--html", str(report), "--datastore", "PlayerData", *common)
        assert code == 0, out

    html = report.read_text(encoding="utf-8")
    assert "<svg" in html and "http://" not in html and "https://" not in html  # self-contained
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed; .ci/run installs it")
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # The browser parsed and laid out the page: the sections, the charts and the labels exist.
    assert "<h2>Economy</h2>" in dom and dom.count("<svg") >= 3
    assert "EMULATOR sample game" in dom and 'data-source="EMULATOR"' in dom
    assert "Player_900000004" in dom  # the near-4 MB save is listed with its reason
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={shot}",
            "--window-size=1000,1400",
            report.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one


def _cli_tokens(server: object) -> list:  # type: ignore[type-arg]
    from dsm.http.appkeys import TOKEN_STORE

    store = server.app[TOKEN_STORE]  # type: ignore[attr-defined]
    return [t for t in store.list_tokens() if t.name == "dsm cli (temporary)"]
