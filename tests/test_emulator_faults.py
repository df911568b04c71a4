"""The emulator's fault settings are range-checked where they come in: `dsm emulator` flags (a
usage error naming the option) and POST /_emulator/faults (a 400 in the emulator's error
envelope, with nothing changed)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from dsm.cli import _fault, main
from dsm.emulator.context import EmulatorConfig, FaultConfig
from dsm.emulator.faults import FaultSettingError
from dsm.emulator.throttle import LimitsConfig
from tools.testing.emulator import start_emulator

BAD_FLAGS = [
    ("--error-rate", "1.5", "a share of requests from 0 to 1"),
    ("--error-rate", "-0.1", "a share of requests from 0 to 1"),
    ("--drop-rate", "nan", "a share of requests from 0 to 1"),
    ("--lost-response-rate", "2", "a share of writes from 0 to 1"),
    ("--latency-ms", "-5", "a number of milliseconds from 0 to 60,000"),
    ("--latency-ms", "86400000", "a number of milliseconds from 0 to 60,000"),
    ("--latency-ms", "soon", "a number of milliseconds from 0 to 60,000"),
]


@pytest.mark.parametrize(("flag", "value", "expected"), BAD_FLAGS)
def test_a_bad_fault_flag_is_a_usage_error_naming_it(flag: str, value: str, expected: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
        main(["emulator", "--port", "0", flag, value])
    assert exited.value.code == 2
    assert f"argument {flag}: expected {expected}, got {value!r}" in err.getvalue()


def test_fault_flags_accept_their_whole_range() -> None:
    assert _fault("error_rate")("0") == 0.0 and _fault("error_rate")("1") == 1.0
    assert _fault("lost_response_rate")("0.25") == 0.25
    assert _fault("latency_ms")("60000") == 60_000.0


def test_a_fault_config_out_of_range_is_refused_in_code_too() -> None:
    with pytest.raises(FaultSettingError, match="drop_rate must be a share"):
        FaultConfig(drop_rate=1.01)


@pytest.fixture
async def emulator() -> AsyncIterator[str]:
    runner, base_url, _ = await start_emulator(EmulatorConfig(limits=LimitsConfig(mode="off")))
    yield base_url
    await runner.cleanup()


async def post_faults(base_url: str, body: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(base_url + "/_emulator/faults", json=body, headers={"x-api-key": "k"}) as resp,
    ):
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error_rate": 1.5}, "error_rate must be a share of requests from 0 to 1; got 1.5."),
        ({"drop_rate": -1}, "drop_rate must be a share of requests from 0 to 1; got -1."),
        ({"lost_response_rate": True}, "lost_response_rate must be a share of writes"),
        ({"error_rate": "0.5"}, "error_rate must be a share of requests from 0 to 1; got '0.5'."),
        ({"latency_ms": -1}, "latency_ms must be a number of milliseconds from 0 to 60,000"),
        ({"latency_ms": 1e9}, "latency_ms must be a number of milliseconds from 0 to 60,000"),
        ({"latency_ms": None}, "latency_ms must be a number of milliseconds from 0 to 60,000"),
        ({"error_statuses": [200]}, "error_statuses must be a list of 1 to 10 HTTP error"),
        ({"error_statuses": []}, "error_statuses must be a list of 1 to 10 HTTP error"),
        ({"error_rat": 0.5}, "Unknown fault setting 'error_rat'; known: latency_ms, error_rate"),
        ([0.5], "The body must be a JSON object of fault settings."),
    ],
)
async def test_bad_fault_settings_get_a_400_and_change_nothing(
    emulator: str, body: Any, message: str
) -> None:
    # A good setting sent with the bad one is not applied either.
    status, answer = await post_faults(
        emulator, {"drop_rate": 0.5, **body} if isinstance(body, dict) else body
    )
    # The envelope Open Cloud's gateway uses, as for every path outside its API families.
    assert status == 400 and list(answer) == ["errors"], answer
    [error] = answer["errors"]
    assert error["code"] == 0 and error["message"].startswith(message), answer
    async with (
        aiohttp.ClientSession() as http,
        http.get(emulator + "/_emulator/faults", headers={"x-api-key": "k"}) as resp,
    ):
        settings = (await resp.json())["settings"]
    assert settings["drop_rate"] == 0.0 and settings["error_rate"] == 0.0
    assert settings["latency_ms"] == 0.0 and settings["error_statuses"] == [500, 503, 429]


async def test_good_fault_settings_apply(emulator: str) -> None:
    status, answer = await post_faults(
        emulator, {"error_rate": 1, "error_statuses": [503], "latency_ms": 0, "seed": 7}
    )
    assert status == 200, answer
    settings = answer["settings"]
    assert settings["error_rate"] == 1.0 and settings["error_statuses"] == [503]
    assert settings["seed"] == 7
