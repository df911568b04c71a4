"""`dsm emulator` and `dsm serve` in child processes on free loopback ports, for benchmarks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
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


async def answering(url: str, what: str, seconds: float = 20.0) -> None:
    """Wait until GET `url` answers 200 (a child process has started serving)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(int(seconds / 0.05)):
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {seconds:g} s")


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
        await answering(base + "/", "the emulator")
        yield base
    finally:
        proc.terminate()
        await proc.wait()


def child_env(home: Path, tree: Path | None) -> dict[str, str]:
    """The environment of a `dsm` child: its own home and vault passphrase, no keyring daemon,
    and `tree` (a source checkout) first on the path when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSM_", "PYTHON_KEYRING"))}
    env.update(
        DSM_HOME=str(home),
        DSM_VAULT_PASSPHRASE="benchmark passphrase",
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        PYTHONUNBUFFERED="1",
    )
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree / "server"), str(tree)])
    return env


@dataclass
class ServeChild:
    base_url: str
    editor_token: str
    viewer_token: str
    pid: int

    def cpu_seconds(self) -> float | None:
        """CPU time the server process has used so far (Linux /proc; None elsewhere)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _dsm(env: dict[str, str], *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dsm.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"dsm {' '.join(args)} failed: {err.decode(errors='replace')}")
    return out.decode().strip()


@asynccontextmanager
async def running_serve(home: Path, tree: Path | None, *extra: str) -> AsyncIterator[ServeChild]:
    """`dsm serve` in a child process (from `tree`, a source checkout, or this one) with its
    state in `home`, and a viewer and an editor token made with `dsm tokens create`."""
    env = child_env(home, tree)
    editor = await _dsm(env, "tokens", "create", "--role", "editor", "--label", "bench writer")
    viewer = await _dsm(env, "tokens", "create", "--role", "viewer", "--label", "bench reader")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dsm.cli",
        "serve",
        "--port",
        str(port),
        *extra,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await answering(base + "/api/v1/hello", "dsm serve")
        yield ServeChild(base, editor, viewer, proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
