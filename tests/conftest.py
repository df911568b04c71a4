"""Shared fixtures: a real emulator on a loopback port, driven by a manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import pytest

from dsm.emulator.clock import ManualClock
from dsm.emulator.context import EmulatorConfig, EmulatorContext
from dsm.emulator.throttle import LimitsConfig
from tools.testing.emulator import start_emulator

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
