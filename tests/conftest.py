"""Shared fixtures: a real emulator on a loopback port, driven by a manual clock; and for the
plugin UI tests, the plugin in a Luau harness beside a real companion server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from dsm.emulator.clock import ManualClock
from dsm.emulator.context import EmulatorConfig, EmulatorContext
from dsm.emulator.throttle import LimitsConfig
from tools.luau_harness import LuauHarness
from tools.testing.emulator import start_emulator
from tools.testing.plugin import PLUGIN_SRC
from tools.testing.server import Server, running_server

API_KEY = "test-key"


@dataclass
class RunningEmulator:
    base_url: str
    ctx: EmulatorContext
    clock: ManualClock
    http: aiohttp.ClientSession  # raw HTTP session that sends x-api-key

    def url(self, path: str) -> str:
        return self.base_url + path


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC))


@pytest.fixture
def emulator_config(clock: ManualClock) -> EmulatorConfig:
    """Override in a test module to change limits, keys or faults."""
    return EmulatorConfig(clock=clock, limits=LimitsConfig(mode="off"))


@pytest.fixture
async def emulator(
    emulator_config: EmulatorConfig, clock: ManualClock
) -> AsyncIterator[RunningEmulator]:
    runner, base_url, ctx = await start_emulator(emulator_config)
    async with aiohttp.ClientSession(headers={"x-api-key": API_KEY}) as http:
        yield RunningEmulator(base_url, ctx, clock, http)
    await runner.cleanup()


# Every plugin UI test runs under both of Studio's signal behaviours: Deferred (what new places
# use, and the harness's default) and Immediate (older places); handlers run at different times
# in each. A test file overrides `signal_behavior` when one mode is enough.
@pytest.fixture(params=["Deferred", "Immediate"])
def signal_behavior(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


@pytest.fixture
def harness(signal_behavior: str) -> Iterator[LuauHarness]:
    with LuauHarness(PLUGIN_SRC, signal_behavior=signal_behavior) as h:
        yield h


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """A real companion server on the embedded emulator, on a free loopback port."""
    async with running_server(tmp_path) as s:
        yield s
