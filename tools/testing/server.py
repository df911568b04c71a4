"""A real companion server on a loopback port, for API tests.

`running_server` starts `create_app` exactly as `dsm serve` does (guards, auth, pairing, data
plane), captures the pairing codes it would print, and `pair` runs the real pairing flow.
Without `keys` the server runs on its embedded emulator; with `keys` (records as the vault holds
them) and `open_cloud_base_url` it takes the LIVE code path against whatever answers there, e.g.
an emulator started separately on loopback.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from dsm.app import create_app
from dsm.config import ServerConfig
from dsm.http.appkeys import DATA, TOKEN_STORE
from dsm.http.connections import ConnectionLimits, GuardedAppRunner
from dsm.http.guards import BoundPort
from dsm.services.upstream import Upstream
from dsm.storage.crypto import new_key
from dsm.storage.vault import ApiKeyRecord
from shared_schema.common import Role


def idem() -> str:
    """A fresh idempotency key, as the plugin makes one per user action."""
    return "t-" + uuid.uuid4().hex


def store_path(universe: int, datastore: str) -> str:
    """`/universes/{u}/datastores/{ds}` with the name percent-encoded as the plugin sends it."""
    return f"/universes/{universe}/datastores/{quote(datastore, safe='')}"


def entry_path(universe: int, datastore: str, key: str) -> str:
    return f"{store_path(universe, datastore)}/entries/{quote(key, safe='')}"


@dataclass
class Server:
    base_url: str
    app: web.Application
    http: aiohttp.ClientSession
    announced: list[str] = field(default_factory=list)
    # Every response body this client received, as text (the canary test searches them).
    transcript: list[str] = field(default_factory=list)
    runner: GuardedAppRunner | None = None  # its server counts connections (hostile tests)

    @property
    def upstream(self) -> Upstream:
        return self.app[DATA].upstream

    def url(self, path: str) -> str:
        return self.base_url + path

    def pairing_code(self, client_name: str | None = None) -> str:
        """The code the server printed last (or last for `client_name`, as a user picks theirs
        out of codes other programs asked for), as a user would type it (8 digits)."""
        head = "" if client_name is None else f"Pairing code for {client_name}: "
        shown = [text[text.index(head) + len(head) :] for text in self.announced if head in text]
        assert shown, f"no code shown for {client_name!r}: {self.announced}"
        match = re.search(r"(\d{4}) ?(\d{4})", shown[-1])
        assert match, shown[-1]
        return match.group(1) + match.group(2)

    async def pair(self, client_name: str = "Studio test", role: Role | None = None) -> str:
        """Pair like the plugin does; optionally change the token's role like `dsm tokens`."""
        async with self.http.post(
            self.url("/api/v1/pair/start"), json={"client_name": client_name}
        ) as resp:
            text = await resp.text()
            self.transcript.append(text)
            assert resp.status == 200, text
            ticket = json.loads(text)
        code = self.pairing_code()
        async with self.http.post(
            self.url("/api/v1/pair/complete"),
            json={"pairing_id": ticket["pairing_id"], "code": code, "client_name": client_name},
        ) as resp:
            text = await resp.text()
            self.transcript.append(text)
            assert resp.status == 200, text
            paired = json.loads(text)
        if role is not None:
            self.app[TOKEN_STORE].set_role(paired["token_id"], role)
        token: str = paired["token"]
        return token

    async def call(
        self, method: str, path: str, token: str | None, **kwargs: Any
    ) -> tuple[int, Any]:
        """`method` on /api/v1 + `path`; the body parsed when it is JSON, else the text."""
        return await api_call(
            self.http, self.base_url, method, path, token, transcript=self.transcript, **kwargs
        )


async def api_call(
    http: aiohttp.ClientSession,
    base_url: str,
    method: str,
    path: str,
    token: str | None,
    *,
    transcript: list[str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    """One API call to the server at `base_url` (any process); (status, parsed JSON or text)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if method in ("POST", "PUT", "PATCH", "DELETE") and "json" not in kwargs:
        kwargs["json"] = {}
    async with http.request(method, base_url + "/api/v1" + path, headers=headers, **kwargs) as resp:
        text = await resp.text()
        if transcript is not None:
            transcript.append(text)
        body = None
        if text and resp.content_type == "application/json":
            body = json.loads(text)
        return resp.status, body if body is not None else text


@asynccontextmanager
async def running_server(
    data_dir: Path,
    *,
    data_key: bytes | None = None,
    keys: list[ApiKeyRecord] | None = None,
    limits: ConnectionLimits | None = None,
    **config: Any,
) -> AsyncIterator[Server]:
    announced: list[str] = []
    port = BoundPort(0)
    settings = ServerConfig(data_dir=data_dir, port=0, **{"emulator_limits": "off", **config})
    app = create_app(
        settings,
        keys=list(keys or []),
        data_key=data_key or new_key(),
        port=port,
        announce=announced.append,
    )
    runner = GuardedAppRunner(app, access_log=None, limits=limits)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    bound = runner.addresses[0][1]
    port.set(bound)
    try:
        async with aiohttp.ClientSession() as http:
            yield Server(f"http://127.0.0.1:{bound}", app, http, announced, runner=runner)
    finally:
        await runner.cleanup()


def serve_in_this_process(
    data_dir: Path,
    data_key: bytes,
    keys: list[ApiKeyRecord],
    base_url: str,
    port_out: Any,
    budget_rpm: float = 1_000_000,
) -> None:
    """Run the companion server until this process is killed (a child for crash tests).

    It talks to Open Cloud at `base_url` (an emulator outside this process, so it outlives a
    crash) with `keys`, paced to `budget_rpm` per budget, and sends its bound port through
    `port_out` once it serves.
    """
    import asyncio
    import os

    parent = os.getppid()

    async def orphaned() -> None:
        # Not a daemon (it runs jq worker processes), so it stops by itself instead: when the
        # process that started it is gone.
        while os.getppid() == parent:
            await asyncio.sleep(0.5)
        os._exit(0)

    async def main() -> None:
        watchdog = asyncio.create_task(orphaned())
        port = BoundPort(0)
        config = ServerConfig(
            data_dir=data_dir, port=0, open_cloud_base_url=base_url, budget_rpm=budget_rpm
        )
        app = create_app(config, keys=keys, data_key=data_key, port=port, announce=lambda _: None)
        runner = GuardedAppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.set(int(runner.addresses[0][1]))
        port_out.send(port())
        await watchdog

    asyncio.run(main())


class ServerProcess:
    """`serve_in_this_process` in a child process; `kill` is a crash (SIGKILL: no cleanup).

    Children are forked from a server pre-loaded once per test run, so a start costs
    milliseconds rather than the seconds of importing the server again.
    """

    def __init__(
        self,
        data_dir: Path,
        data_key: bytes,
        keys: list[ApiKeyRecord],
        base_url: str,
        budget_rpm: float = 1_000_000,
    ) -> None:
        import multiprocessing

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["dsm.app", "tools.testing.server"])
        receive, send = context.Pipe(duplex=False)
        self.process = context.Process(
            target=serve_in_this_process,
            args=(data_dir, data_key, keys, base_url, send, budget_rpm),
            daemon=False,  # it starts jq worker processes; it stops when its parent is gone
        )
        self.process.start()
        self._receive = receive

    async def port(self) -> int:
        import asyncio

        ready = await asyncio.to_thread(self._receive.poll, 30)
        assert ready, "the server did not start"
        port: int = self._receive.recv()
        return port

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
