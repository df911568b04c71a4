"""Hostile HTTP below the routes (security suite): every answer is the envelope, no way around
the wall, and a flood of connections cannot take the server down.

Requests are written byte for byte on raw sockets, since no client library sends most of them.
The server is the real app behind GuardedAppRunner, as `dsm serve` runs it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dsm.emulator.app import EmulatorConfig, create_emulator_app
from dsm.http import guards
from dsm.http.connections import (
    ConnectionLimits,
    GuardedRequestHandler,
    GuardedServer,
    ThrottledLog,
    connection_cap,
)
from tools.testing.server import Server, running_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Server, str, int]]:
    async with running_server(tmp_path) as running:
        port = int(running.base_url.rsplit(":", 1)[1])
        yield running, await running.pair(), port


async def exchange(
    port: int, data: bytes, *, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """Send bytes, read until the server closes: (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def envelope(body: bytes) -> dict[str, Any]:
    parsed = json.loads(body)
    assert set(parsed) == {"error"}, parsed
    assert set(parsed["error"]) <= {"code", "message", "retryable", "details"}
    error: dict[str, Any] = parsed["error"]
    return error


def head(port: int, extra: str = "") -> str:
    return f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n{extra}"


# ---------------------------------------------------------------------------------------------
# aiohttp's own parser refusals come back in the envelope

PARSER_CASES = {
    "url over 8190 bytes": "GET /api/v1/hello?x={long} HTTP/1.1\r\n{h}\r\n",
    "header over 8190 bytes": "GET /api/v1/hello HTTP/1.1\r\n{h}X-Long: {long}\r\n\r\n",
    "too many headers": "GET /api/v1/hello HTTP/1.1\r\n{h}{many}\r\n",
    "duplicate content-type": "POST /api/v1/pair/start HTTP/1.1\r\n{h}Content-Type: application/json"
    "\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}",
    "bad content-length": "POST /api/v1/pair/start HTTP/1.1\r\n{h}Content-Type: application/json"
    "\r\nContent-Length: 2x\r\n\r\n{{}}",
    "two content-lengths": "POST /api/v1/pair/start HTTP/1.1\r\n{h}Content-Type: application/json"
    "\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}",
    "content-length and chunked": "POST /api/v1/pair/start HTTP/1.1\r\n{h}Content-Type: "
    "application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{{}}",
    "bad chunk size": "POST /api/v1/pair/start HTTP/1.1\r\n{h}Content-Type: application/json"
    "\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "not http": "HELLO THERE\r\n\r\n",
    "http/2 preface": "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "bad version": "GET /api/v1/hello HTTP/9.9\r\n{h}\r\n",
}


@pytest.mark.parametrize("case", sorted(PARSER_CASES))
async def test_parser_refusals_are_the_envelope(server: tuple[Server, str, int], case: str) -> None:
    _, _, port = server
    request = PARSER_CASES[case].format(
        h=head(port), long="a" * 9000, many="".join(f"X-{i}: y\r\n" for i in range(200))
    )
    status, headers, body = await exchange(port, request.encode("latin-1"))
    assert 400 <= status < 500, (case, status, body)
    assert headers["content-type"].startswith("application/json")
    error = envelope(body)
    assert error["code"] in ("BAD_REQUEST", "PAYLOAD_TOO_LARGE")
    assert "The request is not valid HTTP" in error["message"] or status == 413
    # What the client sent is never echoed back (it could hold a token).
    assert "aaaa" not in error["message"]


async def test_head_is_answered_like_get_or_refused_with_405(
    server: tuple[Server, str, int],
) -> None:
    _, token, port = server
    status, headers, body = await exchange(
        port, f"HEAD /api/v1/hello HTTP/1.1\r\n{head(port)}\r\n".encode()
    )
    assert status == 200 and body == b"" and headers["content-type"].startswith("application/json")
    for path in ("/api/v1/universes", "/api/v1/journal", "/api/v1/events"):
        status, headers, body = await exchange(
            port,
            f"HEAD {path} HTTP/1.1\r\n{head(port, f'Authorization: Bearer {token}' + chr(13) + chr(10))}\r\n".encode(),
        )
        # HEAD responses carry no body; the headers still say it is the JSON envelope.
        assert status == 405 and body == b"", (path, status)
        assert headers["content-type"].startswith("application/json")


async def test_method_not_allowed_is_its_own_code(server: tuple[Server, str, int]) -> None:
    running, token, _ = server
    status, body = await running.call("PATCH", "/universes", token)
    assert status == 405 and body["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert body["error"]["details"] == {"allowed": ["GET"]}


async def test_a_websocket_request_without_upgrade_is_the_envelope(
    server: tuple[Server, str, int],
) -> None:
    running, token, _ = server
    status, body = await running.call("GET", "/events/ws", token)
    assert status == 400 and body["error"]["code"] == "BAD_REQUEST"


# ---------------------------------------------------------------------------------------------
# Only origin-form targets: no scheme, case or form gets past the wall

TARGETS = [
    "http://127.0.0.1:{p}/api/v1/hello",
    "HTTP://127.0.0.1:{p}/api/v1/hello",
    "hTtPs://127.0.0.1:{p}/api/v1/hello",
    "HTTP://evil.example/api/v1/hello",
    "ws://127.0.0.1:{p}/api/v1/hello",
    "ftp://127.0.0.1:{p}/api/v1/hello",
    "127.0.0.1:{p}",
    "*",
]


@pytest.mark.parametrize("target", TARGETS)
async def test_every_non_origin_form_target_is_refused(
    server: tuple[Server, str, int], target: str
) -> None:
    _, _, port = server
    method = {"1": "CONNECT", "*": "OPTIONS"}.get(target[0], "GET")
    status, _, body = await exchange(
        port, f"{method} {target.format(p=port)} HTTP/1.1\r\n{head(port)}\r\n".encode()
    )
    assert status == 403, (target, status, body)
    assert envelope(body)["code"] == "FORBIDDEN_HOST"


# ---------------------------------------------------------------------------------------------
# The embedded emulator stands behind the same wall


async def test_the_embedded_emulator_refuses_browsers_and_foreign_hosts(
    server: tuple[Server, str, int],
) -> None:
    running, _, _ = server
    emulator = running.upstream.emulator
    assert emulator is not None
    port = int(emulator.base_url.rsplit(":", 1)[1])
    path = "/cloud/v2/universes/1/data-stores"
    refused = [
        f"GET {path} HTTP/1.1\r\nHost: evil.example:{port}\r\nx-api-key: k\r\nConnection: close\r\n\r\n",
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: https://evil.example\r\n"
        "x-api-key: k\r\nConnection: close\r\n\r\n",
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nSec-Fetch-Mode: no-cors\r\n"
        "x-api-key: k\r\nConnection: close\r\n\r\n",
        f"GET HTTP://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "x-api-key: k\r\nConnection: close\r\n\r\n",
        f"POST /_emulator/faults HTTP/1.1\r\nHost: localhost.:{port}\r\nContent-Length: 2\r\n"
        "Connection: close\r\n\r\n{}",
    ]
    for request in refused:
        status, headers, body = await exchange(port, request.encode())
        assert status == 403, (request, body)
        assert headers["x-dsm-emulator"]
        assert "Refused" in json.dumps(json.loads(body))
    ok, _, body = await exchange(
        port,
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-api-key: k\r\nConnection: close\r\n\r\n".encode(),
    )
    assert ok == 200, body


async def test_an_emulator_without_a_guard_port_serves_as_before(tmp_path: Path) -> None:
    # Tests and `dsm emulator --host 0.0.0.0` run without the wall; loopback hosts get it.
    app = create_emulator_app(EmulatorConfig(data_dir=tmp_path))
    assert len(app.middlewares) == 3
    guarded = create_emulator_app(EmulatorConfig(data_dir=tmp_path / "g", guard_port=lambda: 1))
    assert len(guarded.middlewares) == 4


# ---------------------------------------------------------------------------------------------
# Slow senders, a connection cap and quiet logs


async def test_headers_trickled_too_slowly_get_408_and_the_connection_closes(
    tmp_path: Path,
) -> None:
    limits = ConnectionLimits(max_connections=64, header_timeout=0.3)
    async with running_server(tmp_path, limits=limits) as running:
        port = int(running.base_url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/v1/hello HTTP/1.1\r\nHost: 127.0.0.1:")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert raw.startswith(b"HTTP/1.1 408 ")
        assert envelope(raw.partition(b"\r\n\r\n")[2])["code"] == "REQUEST_TIMEOUT"
        # A connection that says nothing at all is closed the same way.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 408 ")
        writer.close()
        # Normal requests on the same server are unaffected.
        async with running.http.get(running.url("/api/v1/hello")) as hello:
            assert hello.status == 200


async def test_a_body_trickled_too_slowly_gets_408(
    server: tuple[Server, str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token, port = server
    monkeypatch.setattr(guards, "BODY_TIMEOUT_SECONDS", 0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST /api/v1/sessions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Content-Length: 40\r\n\r\n{"
        ).encode()
    )
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 408 "), raw[:200]
    assert envelope(raw.partition(b"\r\n\r\n")[2])["code"] == "REQUEST_TIMEOUT"


async def test_at_the_cap_idle_and_slow_connections_make_room(tmp_path: Path) -> None:
    limits = ConnectionLimits(max_connections=4, header_timeout=30)
    async with running_server(tmp_path, limits=limits) as running:
        port = int(running.base_url.rsplit(":", 1)[1])
        slow = []
        for _ in range(4):  # four slowloris connections fill the cap
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /api/v1/hello HTTP/1.1\r\n")
            await writer.drain()
            slow.append((reader, writer))
        await connections_reach(running, 4, partial=True)
        # A real request still gets through: the oldest slow connection is closed for it.
        status, _, body = await exchange(
            port, f"GET /api/v1/hello HTTP/1.1\r\n{head(port)}\r\n".encode()
        )
        assert status == 200, body
        evicted = await asyncio.wait_for(slow[0][0].read(), 10)
        assert evicted.startswith(b"HTTP/1.1 503 ")
        assert envelope(evicted.partition(b"\r\n\r\n")[2])["code"] == "SERVER_BUSY"
        for _, writer in slow:
            writer.close()


async def test_at_the_cap_with_every_connection_busy_newcomers_get_503(tmp_path: Path) -> None:
    limits = ConnectionLimits(max_connections=3, header_timeout=30)
    async with running_server(tmp_path, limits=limits) as running:
        token = await running.pair()
        await running.http.close()  # its idle keep-alive connection would make room
        port = int(running.base_url.rsplit(":", 1)[1])
        auth = {"Authorization": f"Bearer {token}"}
        sessions = [aiohttp.ClientSession() for _ in range(3)]
        try:
            polls = [
                asyncio.create_task(
                    s.get(
                        running.url("/api/v1/events"),
                        params={"cursor": "0", "timeout": "3"},
                        headers=auth,
                    )
                )
                for s in sessions
            ]
            await connections_reach(running, 3, busy=True)
            status, headers, body = await exchange(
                port, f"GET /api/v1/hello HTTP/1.1\r\n{head(port)}\r\n".encode()
            )
            assert status == 503 and headers["retry-after"] == "1"
            error = envelope(body)
            assert error["code"] == "SERVER_BUSY" and error["retryable"] is True
            for poll in polls:
                (await poll).release()
        finally:
            for s in sessions:
                await s.close()


async def connections_reach(
    running: Server, count: int, *, partial: bool = False, busy: bool = False
) -> None:
    """Wait (on the server's own state, not a clock) until `count` connections are open,
    all sending headers (`partial`) or all with a request in progress (`busy`)."""
    assert running.runner is not None
    guarded = running.runner.server
    assert isinstance(guarded, GuardedServer)
    for _ in range(500):
        handlers = [h for h in guarded.connections if isinstance(h, GuardedRequestHandler)]
        if (
            len(handlers) == count
            and (not partial or all(h.partial_request for h in handlers))
            and (not busy or not any(h.evictable for h in handlers))
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the server never had {count} connections open")


def test_the_cap_stays_below_the_descriptor_limit() -> None:
    assert connection_cap(1024) == 640
    assert connection_cap(256) == 160
    assert connection_cap(100) == 36
    assert connection_cap(20) == 16
    assert connection_cap(1_000_000) == 4096


def test_repeated_log_lines_are_throttled() -> None:
    throttle = ThrottledLog(interval=3600)
    records = [
        logging.LogRecord(
            "asyncio",
            logging.ERROR,
            __file__,
            1,
            "socket.accept() out of system resource",
            None,
            None,
        )
        for _ in range(1000)
    ]
    passed = [r for r in records if throttle.filter(r)]
    assert len(passed) == 1
    other = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "another kind", None, None)
    assert throttle.filter(other)  # one flood does not hide another kind of message
    # After the interval the next one passes and says how many were left out.
    throttle._last = {k: v - 7200 for k, v in throttle._last.items()}
    late = logging.LogRecord(
        "asyncio", logging.ERROR, __file__, 1, "socket.accept() out of system resource", None, None
    )
    assert throttle.filter(late) and "999 more like this" in str(late.msg)
