"""`dsm serve` as a user starts it: a real child process, headless like CI (no terminal, no OS
keyring, the vault passphrase from the environment), driven over loopback HTTP and stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import stat
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

STARTUP_SECONDS = 30.0
BANNER_END = "Pair the Studio plugin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Child:
    proc: asyncio.subprocess.Process
    port: int
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_for(self, lines: list[str], found: Callable[[str], bool]) -> str:
        """The first line satisfying `found`, waiting up to STARTUP_SECONDS for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_SECONDS
        while loop.time() < deadline:
            for line in lines:
                if found(line):
                    return line
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"dsm serve did not print the expected line (exit code {self.proc.returncode}).\n"
            f"stdout:\n{''.join(self.out)}\nstderr:\n{''.join(self.err)}"
        )


async def _pump(stream: asyncio.StreamReader | None, into: list[str]) -> None:
    assert stream is not None
    while line := await stream.readline():
        into.append(line.decode("utf-8", "replace"))


@asynccontextmanager
async def dsm_serve(tmp_path: Path, *extra: str, port: int | None = None) -> AsyncIterator[Child]:
    """`dsm serve` with its home and data under `tmp_path`; `extra` are more serve options."""
    port = free_port() if port is None else port
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DSM_", "PYTHON_KEYRING"))
    }
    env.update(
        DSM_HOME=str(tmp_path / "home"),
        DSM_VAULT_PASSPHRASE="headless passphrase for the serve test",
        # CI machines have no keyring daemon; say so instead of depending on this one's.
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        PYTHONUNBUFFERED="1",
        TERM="dumb",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dsm.cli",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "data"),
        *extra,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,  # no controlling terminal, as under CI
    )
    child = Child(proc, port)
    pumps = [
        asyncio.create_task(_pump(proc.stdout, child.out)),
        asyncio.create_task(_pump(proc.stderr, child.err)),
    ]
    try:
        yield child
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for pump in pumps:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(pump, 5)


async def test_dsm_serve_starts_answers_guards_pairs_and_stops(tmp_path: Path) -> None:
    async with dsm_serve(tmp_path) as child, aiohttp.ClientSession() as http:
        await child.wait_for(child.out, lambda line: BANNER_END in line)
        banner = "".join(child.out)
        assert f"http://127.0.0.1:{child.port} (loopback only)" in banner
        assert "backend   : EMULATOR" in banner
        assert str(tmp_path / "data") in banner

        async with http.get(child.base_url + "/api/v1/hello") as resp:
            assert resp.status == 200
            hello = await resp.json()
        assert hello["backend"] == "EMULATOR" and hello["pairing"] == "required"
        assert re.fullmatch(r"[0-9a-f]{64}", hello["schema_hash"])

        # A page that points its own name at 127.0.0.1 (DNS rebinding) gets nothing.
        async with http.get(
            child.base_url + "/api/v1/hello", headers={"Host": f"evil.example:{child.port}"}
        ) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"]["code"] == "FORBIDDEN_HOST"
        async with http.get(
            child.base_url + "/api/v1/hello", headers={"Origin": "https://evil.example"}
        ) as resp:
            assert resp.status == 403
        async with http.get(child.base_url + "/api/v1/universes") as resp:
            assert resp.status == 401

        # Pairing: the code appears on the server's console (stderr), nowhere in the answer.
        async with http.post(
            child.base_url + "/api/v1/pair/start", json={"client_name": "CI Studio"}
        ) as resp:
            assert resp.status == 200
            ticket = await resp.json()
        line = await child.wait_for(child.err, lambda text: "Pairing code for CI Studio" in text)
        match = re.search(r"(\d{4}) (\d{4})", line)
        assert match, line
        assert match.group(1) + match.group(2) not in str(ticket)
        async with http.post(
            child.base_url + "/api/v1/pair/complete",
            json={
                "pairing_id": ticket["pairing_id"],
                "code": match.group(1) + match.group(2),
                "client_name": "CI Studio",
            },
        ) as resp:
            assert resp.status == 200
            token = (await resp.json())["token"]
        async with http.get(
            child.base_url + "/api/v1/universes", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            assert resp.status == 200
            universes = await resp.json()
        assert universes["universes"][0]["backend"] == "EMULATOR"

        # The passphrase vault was created, private, next to the server's other state.
        vault = tmp_path / "data" / "vault.bin"
        assert vault.is_file()
        assert stat.S_IMODE(vault.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700

        # Ctrl+C stops it cleanly.
        child.proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(child.proc.wait(), 10) == 0
    assert "Traceback" not in "".join(child.err), "".join(child.err)


async def test_a_port_in_use_is_one_clear_line_and_exit_code_1(tmp_path: Path) -> None:
    """docs/getting-started.md promises this answer when another program holds the port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with dsm_serve(tmp_path, port=port) as child:
            assert await asyncio.wait_for(child.proc.wait(), STARTUP_SECONDS) == 1
    errors = "".join(child.err)
    assert f"error: cannot listen on 127.0.0.1:{port}" in errors
    assert "address already in use" in errors
    assert "Traceback" not in errors, errors
    assert BANNER_END not in "".join(child.out)
