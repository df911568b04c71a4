"""A companion server whose Open Cloud is a separate emulator the caller controls.

`dsm serve --upstream URL` in a test: the emulator runs on `clock` (so revisions can be hours
apart), its data is labelled EMULATOR (it says it is one), and the caller can reach its state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from dsm.emulator.clock import ManualClock
from dsm.emulator.context import EmulatorConfig
from dsm.emulator.throttle import LimitsConfig

from .emulator import start_emulator
from .server import Server, running_server


@asynccontextmanager
async def server_on_emulator(
    data_dir: Path, clock: ManualClock, **config: Any
) -> AsyncIterator[Server]:
    """A real server (`running_server`, `config` passed on) using an emulator on `clock`."""
    emulator = EmulatorConfig(limits=LimitsConfig(mode="off"), clock=clock)
    runner, emulator_url, _ = await start_emulator(emulator)
    try:
        async with running_server(data_dir, upstream_url=emulator_url, **config) as server:
            yield server
    finally:
        await runner.cleanup()
