"""Run the emulator inside another asyncio program (the companion server) on loopback."""

from __future__ import annotations

from dataclasses import dataclass, replace

from aiohttp import web

from .app import create_emulator_app
from .context import EMULATOR, EmulatorConfig


@dataclass
class EmbeddedEmulator:
    runner: web.AppRunner
    base_url: str

    @classmethod
    async def start(cls, config: EmulatorConfig, host: str = "127.0.0.1") -> EmbeddedEmulator:
        """Serve on a free loopback port, behind the same Host/Origin wall as the server."""
        bound = [0]  # set once the port is known; until then no Host matches
        config = replace(config, guard_port=lambda: bound[0])
        runner = web.AppRunner(create_emulator_app(config), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if not sockets:
            await runner.cleanup()
            raise RuntimeError("the embedded emulator could not bind a loopback port")
        port = sockets[0].getsockname()[1]
        bound[0] = port
        return cls(runner, f"http://{host}:{port}")

    def universes(self) -> list[int]:
        """Universes that hold standard data stores here (read in-process, not over HTTP)."""
        return [int(u) for u in self.runner.app[EMULATOR].standard.universes() if u.isdigit()]

    async def stop(self) -> None:
        await self.runner.cleanup()
