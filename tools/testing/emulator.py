"""A real emulator application on a loopback port, in this event loop."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from dsm.emulator.app import create_emulator_app
from dsm.emulator.context import EMULATOR, EmulatorConfig, EmulatorContext


async def start_emulator(config: EmulatorConfig) -> tuple[web.AppRunner, str, EmulatorContext]:
    """Start it; returns the runner (clean it up to stop), its base URL and its state."""
    app = create_emulator_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    return runner, f"http://127.0.0.1:{port}", app[EMULATOR]


async def set_faults(base_url: str, **settings: object) -> dict[str, object]:
    """Change a running emulator's injected faults (POST /_emulator/faults)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            base_url + "/_emulator/faults", json=settings, headers={"x-api-key": "faults"}
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        answer: dict[str, object] = await resp.json()
        return answer
