"""Run `dsm emulator` in a child process on a free loopback port for a benchmark."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from dsm.emulator.context import EmulatorConfig, EmulatorContext


def seed_emulator(data_dir: Path, universe: int, datastore: str, entries: int) -> None:
    """Write `entries` player-like entries (`player_000000` ...) straight into an emulator's
    store, spending no budget; start the emulator on `data_dir` afterwards."""
    ctx = EmulatorContext(EmulatorConfig(data_dir=data_dir))
    try:
        for i in range(entries):
            value = json.dumps({"coins": i, "name": f"player {i}", "inventory": list(range(10))})
            ctx.standard.write(
                str(universe),
                datastore,
                "global",
                player_key(i),
                value,
                attributes='{"v":1}',
                user_ids=[i],
            )
    finally:
        ctx.close()


def player_key(i: int) -> str:
    return f"player_{i:06}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def running_emulator(extra_args: list[str]) -> AsyncIterator[str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dsm.cli",
        "emulator",
        "--port",
        str(port),
        *extra_args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(base + "/") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the emulator did not start within 10 s")
        yield base
    finally:
        proc.terminate()
        await proc.wait()
