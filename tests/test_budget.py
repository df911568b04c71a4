"""The Open Cloud budget at a user-set CCU: settings file, policy, descriptions, CLI, wiring."""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
from pathlib import Path

import pytest

from dsm import cli, cli_budget
from dsm.http.appkeys import DATA
from dsm.opencloud.ratelimit import ClientBudget, ClientRateLimiter
from dsm.paths import HOME_ENV
from dsm.services.jobs.budget import (
    SETTINGS_FILENAME,
    BudgetPolicy,
    BudgetSettingsError,
    CcuSettings,
)
from tools.testing.server import running_server


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_settings_round_trip_atomically_and_privately(tmp_path: Path) -> None:
    settings = CcuSettings(tmp_path)
    assert settings.all() == {} and settings.stamp() is None
    settings.set(123, 100)
    settings.set(7, 0)
    assert settings.all() == {7: 0, 123: 100}
    assert settings.get(123) == 100 and settings.get(8) is None
    doc = json.loads((tmp_path / SETTINGS_FILENAME).read_text())
    assert doc == {"version": 1, "universes": {"7": 0, "123": 100}}
    if os.name == "posix":
        assert stat.S_IMODE((tmp_path / SETTINGS_FILENAME).stat().st_mode) == 0o600
    assert settings.unset(7) is True and settings.unset(7) is False
    assert settings.all() == {123: 100}
    assert [p.name for p in tmp_path.iterdir()] == [SETTINGS_FILENAME]  # no temp files left


@pytest.mark.parametrize("bad", [-1, 10_000_001, True, 2.5])
def test_settings_refuse_impossible_ccus(tmp_path: Path, bad: object) -> None:
    with pytest.raises(BudgetSettingsError, match="whole number of concurrent users"):
        CcuSettings(tmp_path).set(1, bad)  # type: ignore[arg-type]
    with pytest.raises(BudgetSettingsError, match="not a valid universe"):
        CcuSettings(tmp_path).set(0, 5)


@pytest.mark.parametrize(
    "text",
    ["not json", '{"version": 2, "universes": {}}', '{"version": 1, "universes": {"1": -5}}'],
)
def test_a_damaged_settings_file_is_reported_not_guessed(tmp_path: Path, text: str) -> None:
    (tmp_path / SETTINGS_FILENAME).write_text(text)
    with pytest.raises(BudgetSettingsError, match="not a budget settings file"):
        CcuSettings(tmp_path).all()


def test_policy_uses_the_universe_ccu_else_the_default(tmp_path: Path) -> None:
    settings = CcuSettings(tmp_path)
    settings.set(42, 1000)
    policy = BudgetPolicy(settings, default_ccu=10, reserve_share=0.25)
    assert policy.ccu_of(42) == (1000, "universe")
    assert policy.ccu_of(43) == (10, "default")
    big = policy.budget_for("42")
    assert big.write == 300 + 20 * 1000 and big.reserve_share == 0.25
    assert big.categories()["memory"] == 1000 + 120 * 1000
    assert policy.budget_for("43").write == 300 + 20 * 10
    assert policy.budget_for("not-a-universe").write == 300 + 20 * 10
    assert policy.budget_for("42") is big  # cached between changes


def test_policy_picks_up_cli_changes_while_running(tmp_path: Path) -> None:
    clock = Clock()
    settings = CcuSettings(tmp_path)
    policy = BudgetPolicy(settings, default_ccu=0, reload_seconds=1.0, monotonic=clock)
    assert policy.budget_for("5").write == 300
    CcuSettings(tmp_path).set(5, 100)  # another process: `dsm budget set`
    assert policy.budget_for("5").write == 300  # looked at most once a second
    clock.now = 1.5
    assert policy.budget_for("5").write == 2300
    (tmp_path / SETTINGS_FILENAME).write_text("damaged")
    clock.now = 3.0
    assert policy.budget_for("5").write == 2300  # keeps the last good settings


def test_a_limiter_with_the_policy_paces_each_universe_to_its_budget(tmp_path: Path) -> None:
    settings = CcuSettings(tmp_path)
    settings.set(2, 100)
    policy = BudgetPolicy(settings, default_ccu=0, reserve_share=0.5)
    limiter = ClientRateLimiter(ClientBudget.for_ccu(0), budget_for=policy.budget_for)
    assert limiter.allowed("2", "write") == 1150
    assert limiter.allowed("3", "write") == 150
    assert limiter.allowed("2", "v1.write") == 150  # legacy v1 does not scale with users


def test_description_names_the_ccu_formulas_reserve_and_header_limits(tmp_path: Path) -> None:
    settings = CcuSettings(tmp_path)
    settings.set(9, 100)
    policy = BudgetPolicy(settings, default_ccu=0, reserve_share=0.5)
    limiter = ClientRateLimiter(ClientBudget.for_ccu(0), budget_for=policy.budget_for)
    limiter.observe("9", "read", {"x-ratelimit-limit": "600, 600;w=60"})
    limiter.penalize("9", "list", 30.0)
    used = policy.in_use(9, limiter)
    write = used.category("write")
    assert (write.documented_rpm, write.share_rpm, write.pace_rpm) == (2300, 1150, 1150)
    assert write.formula == "300 + 20 × CCU"
    assert used.category("read").pace_rpm == 600
    assert used.category("list").paused_for == pytest.approx(30.0, abs=1.0)
    text = used.describe()
    assert "assuming 100 concurrent users" in text and "dsm budget set" in text
    assert "50% of each is left to them" in text
    assert "300 + 20 × CCU = 2,300/min, this server uses up to 1,150/min" in text
    assert "lowered to 600/min by Open Cloud's rate-limit headers" in text
    assert "paused 30 s by Open Cloud (429)" in text
    assert used.headline() == (
        "CCU 100 (set for this universe): writes 1,150/min of 2,300, reads 600/min of 4,300; "
        "50% kept for game servers"
    )
    other = policy.in_use(10)
    assert "server default" in other.headline() and other.ccu == 0
    assert used.to_dict()["categories"][1]["category"] == "write"


def test_estimates_follow_the_slowest_budget(tmp_path: Path) -> None:
    policy = BudgetPolicy(CcuSettings(tmp_path), default_ccu=0, reserve_share=0.5)
    used = policy.in_use(1)
    # 151 writes at 150/min: 150 gaps of 0.4 s; 10 reads run in parallel on their own budget.
    assert used.estimate_seconds({"write": 151, "read": 10}) == pytest.approx(60.0)
    assert used.estimate_seconds({"write": 0}) == 0.0
    with pytest.raises(KeyError):
        used.estimate_seconds({"teleport": 1})


def run_cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="dsm")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_budget.register(sub)
    args = parser.parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    code = cli_budget.run(args, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    return tmp_path


def test_cli_sets_shows_and_unsets(home: Path) -> None:
    code, out, _ = run_cli("budget", "show")
    assert code == 0 and "No universe has its own CCU yet" in out
    code, out, _ = run_cli("budget", "set", "--universe", "123", "--ccu", "2500")
    assert code == 0 and "Universe 123 now assumes 2,500 concurrent users" in out
    assert "writes 25,150/min of 50,300" in out
    assert CcuSettings(home).get(123) == 2500
    code, out, _ = run_cli("budget", "show")
    assert code == 0 and "123" in out and "2,500" in out
    code, out, _ = run_cli("budget", "show", "--universe", "123")
    assert "Ordered data stores: list: 300 + 2 × CCU = 5,300/min" in out
    assert "Memory stores: request units: 1000 + 120 × CCU = 301,000/min" in out
    code, out, _ = run_cli("budget", "show", "--universe", "5", "--ccu", "40")
    assert "assuming 40 concurrent users (the server default" in out
    code, out, _ = run_cli("budget", "unset", "--universe", "123")
    assert code == 0 and "server default" in out
    code, out, _ = run_cli("budget", "unset", "--universe", "123")
    assert "had no CCU of its own" in out


def test_cli_reports_bad_input(home: Path) -> None:
    code, _, err = run_cli("budget", "set", "--universe", "1", "--ccu", "-3")
    assert code == 1 and "whole number of concurrent users" in err
    (home / SETTINGS_FILENAME).write_text("{")
    code, _, err = run_cli("budget", "show")
    assert code == 1 and "Fix or delete it" in err
    (home / SETTINGS_FILENAME).unlink()
    code, _, err = run_cli("budget", "show", "--reserve-share", "2")
    assert code == 2 and "reserve_share must be within 0..0.9" in err


def test_serve_ccu_flag_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--ccu", "lots"])
    assert "expected a whole number of concurrent users" in capsys.readouterr().err


async def test_the_server_paces_to_the_budget_at_its_ccu(tmp_path: Path) -> None:
    CcuSettings(tmp_path).set(77, 50)
    async with running_server(tmp_path, ccu=100) as server:
        policy = server.app[DATA].budget
        limiter = server.upstream.limiter
        assert limiter is not None
        assert limiter.allowed("1", "write") == (300 + 20 * 100) // 2  # the serve default
        assert limiter.allowed("77", "write") == (300 + 20 * 50) // 2  # its own setting
        assert policy.in_use(1, limiter).ccu == 100
