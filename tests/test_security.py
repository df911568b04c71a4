"""The local API's wall against browsers, DNS rebinding and unauthenticated callers.

Every case runs over real loopback HTTP against an app wired like the server: error envelope,
guards, auth, the pairing routes and a few probe routes that count how often they run, so
"rejected before any handler runs" is checked, not assumed.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dsm.http import routes_pairing
from dsm.http.appkeys import ASSISTANT_CAPS, PAIRING, TOKEN_STORE
from dsm.http.auth import auth_middleware, require_role
from dsm.http.binding import bind_routes
from dsm.http.errors import error_middleware
from dsm.http.guards import (
    CLIENT_MAX_SIZE,
    ENTRY_BODY_LIMIT,
    SMALL_BODY_LIMIT,
    BoundPort,
    allow_large_body,
    guard_middleware,
    host_allowed,
    is_json_media_type,
)
from dsm.services.assistant_caps import AssistantCaps
from dsm.services.pairing import PairingService
from dsm.services.tokens import TokenStore
from shared_schema.common import Role

# ---------------------------------------------------------------------------------------------
# Test server (also used by test_pairing.py and test_tokens.py)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeWallClock:
    def __init__(self, mono: FakeClock) -> None:
        self._mono = mono
        self._start = mono.t
        self.base = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.base + timedelta(seconds=self._mono.t - self._start)


@dataclass
class Server:
    port: int
    store: TokenStore
    pairing: PairingService
    http: aiohttp.ClientSession
    calls: Counter[str]
    announced: list[str]
    clock: FakeClock
    data_dir: Path
    wrote: list[Any] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def token(self, role: Role = Role.EDITOR, name: str = "tester") -> str:
        token, _ = self.store.issue(name, role)
        return token


def auth_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def add_probe_routes(app: web.Application, calls: Counter[str], wrote: list[Any]) -> None:
    async def hello(request: web.Request) -> web.Response:
        calls["hello"] += 1
        return web.json_response({"hello": True})

    async def whoami(request: web.Request) -> web.Response:
        calls["whoami"] += 1
        caller = require_role(request, Role.VIEWER)
        return web.json_response(
            {"token_id": caller.token_id, "name": caller.name, "role": caller.role.value}
        )

    async def write(request: web.Request) -> web.Response:
        require_role(request, Role.EDITOR)
        body = await request.read()
        calls["write"] += 1
        wrote.append(json.loads(body) if body else None)
        return web.json_response({"stored": len(body)})

    @allow_large_body
    async def put_entry(request: web.Request) -> web.Response:
        require_role(request, Role.EDITOR)
        body = await request.read()
        calls["put_entry"] += 1
        return web.json_response({"size": len(body)})

    async def admin_only(request: web.Request) -> web.Response:
        require_role(request, Role.ADMIN)
        calls["admin"] += 1
        return web.json_response({"ok": True})

    async def metrics(request: web.Request) -> web.Response:
        calls["metrics"] += 1
        return web.Response(text="dsm_up 1\n", content_type="text/plain")

    async def cors_leak(request: web.Request) -> web.Response:
        # A handler that (wrongly) adds CORS headers: the guard must strip them.
        return web.json_response({}, headers={"Access-Control-Allow-Origin": "*"})

    app.router.add_get("/api/v1/hello", hello)
    app.router.add_get("/api/v1/whoami", whoami)
    app.router.add_post("/api/v1/write", write)
    app.router.add_put("/api/v1/entries/{key}", put_entry)
    app.router.add_post("/api/v1/admin-only", admin_only)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/cors-leak", cors_leak)


def build_app(
    store: TokenStore,
    pairing: PairingService,
    port: BoundPort,
    calls: Counter[str],
    wrote: list[Any],
) -> web.Application:
    app = web.Application(
        client_max_size=CLIENT_MAX_SIZE,
        middlewares=[error_middleware, guard_middleware(port), auth_middleware],
    )
    app[TOKEN_STORE] = store
    app[PAIRING] = pairing
    app[ASSISTANT_CAPS] = AssistantCaps(120, 60)  # /tokens and /me show assistants' usage
    bind_routes(app, routes_pairing.HANDLERS)
    add_probe_routes(app, calls, wrote)
    return app


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


@asynccontextmanager
async def running_server(data_dir: Path) -> AsyncIterator[Server]:
    """The test app on a loopback port with manual clocks; stops when the block ends."""
    clock = FakeClock()
    announced: list[str] = []
    store = TokenStore.open(data_dir, monotonic=clock, now=FakeWallClock(clock))
    pairing = PairingService(
        store, announce=announced.append, monotonic=clock, now=FakeWallClock(clock)
    )
    calls: Counter[str] = Counter()
    wrote: list[Any] = []
    bound = BoundPort()
    runner, port = await serve(build_app(store, pairing, bound, calls, wrote))
    bound.set(port)
    try:
        async with aiohttp.ClientSession() as http:
            yield Server(port, store, pairing, http, calls, announced, clock, data_dir, wrote)
    finally:
        await runner.cleanup()
        store.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path) as running:
        yield running


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_http(port: int, head: str, body: bytes = b"") -> RawResponse:
    """Send bytes exactly as given (no client fixes up Host) and read one response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
        status_line = await reader.readline()
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        data = await reader.readexactly(length)
        return RawResponse(int(status_line.split()[1]), headers, data)
    finally:
        writer.close()


def no_cors_headers(headers: Any) -> bool:
    return not any(str(name).lower().startswith("access-control-") for name in headers)


async def error_of(response: aiohttp.ClientResponse) -> str:
    body = await response.json()
    assert set(body) == {"error"}
    return str(body["error"]["code"])


# ---------------------------------------------------------------------------------------------
# Host allow-list (DNS rebinding)

REJECTED_HOSTS = [
    "evil.example:{p}",
    "evil.example",
    "127.0.0.1:1",  # wrong port
    "localhost:1",
    "127.0.0.1",  # no port
    "localhost",
    "[::1]",
    "localhost.:{p}",  # trailing dot
    "evil@127.0.0.1:{p}",  # userinfo
    "127.0.0.1:{p}@evil.example",
    "localhost:{p}@evil.example:{p}",
    "127.0.0.1.nip.io:{p}",
    "localhost.evil.example:{p}",
    "0.0.0.0:{p}",
    "127.0.0.2:{p}",
    "127.1:{p}",
    "2130706433:{p}",
    "[::ffff:127.0.0.1]:{p}",
    "::1:{p}",  # unbracketed IPv6
    "[0:0:0:0:0:0:0:1]:{p}",
    "127.0.0.1:{p}:{p}",
    "127.0.0.1:0{p}",  # leading zero: not the exact port text
    "",
]
ACCEPTED_HOSTS = ["127.0.0.1:{p}", "localhost:{p}", "LOCALHOST:{p}", "LocalHost:{p}", "[::1]:{p}"]


@pytest.mark.parametrize("host", REJECTED_HOSTS)
async def test_foreign_hosts_are_rejected_before_any_handler(server: Server, host: str) -> None:
    value = host.format(p=server.port)
    response = await raw_http(
        server.port, f"GET /api/v1/hello HTTP/1.1\r\nHost: {value}\r\nConnection: close\r\n\r\n"
    )
    assert response.status == 403
    assert response.json()["error"]["code"] == "FORBIDDEN_HOST"
    assert server.calls["hello"] == 0
    assert no_cors_headers(response.headers)


@pytest.mark.parametrize("host", ACCEPTED_HOSTS)
async def test_loopback_hosts_with_our_port_are_accepted(server: Server, host: str) -> None:
    value = host.format(p=server.port)
    response = await raw_http(
        server.port, f"GET /api/v1/hello HTTP/1.1\r\nHost: {value}\r\nConnection: close\r\n\r\n"
    )
    assert response.status == 200
    assert response.json() == {"hello": True}
    assert server.calls["hello"] == 1


async def test_missing_host_is_rejected(server: Server) -> None:
    # HTTP/1.1 without Host is refused by aiohttp's parser; HTTP/1.0 reaches us without one.
    response = await raw_http(server.port, "GET /api/v1/hello HTTP/1.0\r\n\r\n")
    assert response.status == 403
    assert response.json()["error"]["code"] == "FORBIDDEN_HOST"
    assert server.calls["hello"] == 0


async def test_absolute_form_target_naming_another_host_is_rejected(server: Server) -> None:
    p = server.port
    bad = await raw_http(
        p,
        f"GET http://evil.example:{p}/api/v1/hello HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"
        "Connection: close\r\n\r\n",
    )
    assert bad.status == 403
    assert bad.json()["error"]["code"] == "FORBIDDEN_HOST"
    # Any absolute-form target is refused, even one naming us: only proxies are sent them
    # (issue 8; this used to be served). test_hostile_http.py tries every scheme and case.
    ours = await raw_http(
        p,
        f"GET http://127.0.0.1:{p}/api/v1/hello HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"
        "Connection: close\r\n\r\n",
    )
    assert ours.status == 403
    assert ours.json()["error"]["code"] == "FORBIDDEN_HOST"
    assert server.calls["hello"] == 0


async def test_guard_reads_the_port_bound_after_startup(server: Server) -> None:
    # Until the real port is known nothing is accepted (port 0 matches no Host).
    assert not host_allowed(f"127.0.0.1:{server.port}", 0)
    assert host_allowed("127.0.0.1:80", 80) and host_allowed("localhost", 80)
    assert not host_allowed("localhost", 8080)
    assert not host_allowed(None, 8080)


async def test_rejections_of_protected_routes_happen_before_auth(server: Server) -> None:
    token = server.token(Role.ADMIN)
    response = await raw_http(
        server.port,
        "POST /api/v1/write HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\n\r\n",
        b"{}",
    )
    assert response.status == 403
    assert response.json()["error"]["code"] == "FORBIDDEN_HOST"
    assert server.calls["write"] == 0


# ---------------------------------------------------------------------------------------------
# Browser markers: Origin and Sec-Fetch-*


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "null", "http://127.0.0.1:{p}", "http://localhost:{p}", ""],
)
async def test_any_origin_header_is_rejected(server: Server, origin: str) -> None:
    headers = {"Origin": origin.format(p=server.port)}
    async with server.http.get(server.url("/api/v1/hello"), headers=headers) as response:
        assert response.status == 403
        assert await error_of(response) == "FORBIDDEN_ORIGIN"
        assert no_cors_headers(response.headers)
    assert server.calls["hello"] == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-origin"),
        ("Sec-Fetch-Site", "none"),
        ("Sec-Fetch-Mode", "no-cors"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-Dest", "image"),
    ],
)
async def test_sec_fetch_headers_are_rejected(server: Server, name: str, value: str) -> None:
    token = server.token()
    headers = {name: value, **auth_header(token)}
    async with server.http.post(
        server.url("/api/v1/write"), json={"x": 1}, headers=headers
    ) as response:
        assert response.status == 403
        assert await error_of(response) == "FORBIDDEN_ORIGIN"
    assert server.calls["write"] == 0


async def test_options_preflight_gets_403_and_no_cors_headers(server: Server) -> None:
    preflight = {
        "Origin": "https://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
        "Access-Control-Request-Private-Network": "true",
    }
    for headers in (preflight, {}):
        async with server.http.options(server.url("/api/v1/write"), headers=headers) as response:
            assert response.status == 403
            assert await error_of(response) == "FORBIDDEN_ORIGIN"
            assert no_cors_headers(response.headers)


async def test_cors_headers_never_leave_the_server(server: Server) -> None:
    token = server.token()
    async with server.http.get(
        server.url("/api/v1/cors-leak"), headers=auth_header(token)
    ) as response:
        assert response.status == 200
        assert no_cors_headers(response.headers)
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_plugin_shaped_requests_are_accepted(server: Server) -> None:
    # What Studio's HttpService:RequestAsync sends: no Origin, no Sec-Fetch-*, JSON body.
    token = server.token()
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}"):
        response = await raw_http(
            server.port,
            f"POST /api/v1/write HTTP/1.1\r\nHost: {host}\r\nUser-Agent: RobloxStudio/WinInet\r\n"
            f"Accept: */*\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 9\r\nConnection: close\r\n\r\n",
            b'{"a":[1]}',
        )
        assert response.status == 200, response.body
    assert server.calls["write"] == 2
    assert server.wrote == [{"a": [1]}, {"a": [1]}]


# ---------------------------------------------------------------------------------------------
# CSRF: bodies must be JSON


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "text/plain",
        "text/plain; application/json",
        "text/plain;charset=UTF-8",
        "multipart/form-data; boundary=xyz",
        "application/jsonx",
        "application/json-patch+json",
        "application/json; charset=latin-1",
        "application/json; boundary=x",
        "application/json, text/plain",
    ],
)
async def test_non_json_bodies_get_415_with_no_state_change(
    server: Server, content_type: str
) -> None:
    token = server.token()
    body = b'{"a":1}'
    for headers in ({}, auth_header(token)):  # with or without a token: the guard runs first
        async with server.http.post(
            server.url("/api/v1/write"),
            data=body,
            headers={"Content-Type": content_type, **headers},
        ) as response:
            assert response.status == 415
            assert await error_of(response) == "UNSUPPORTED_MEDIA_TYPE"
    assert server.calls["write"] == 0
    assert server.wrote == []


async def test_real_form_and_multipart_posts_are_refused(server: Server) -> None:
    token = server.token()
    form = aiohttp.FormData({"value_json": "{}"})
    multipart = aiohttp.FormData()
    multipart.add_field("file", b"{}", filename="x.json", content_type="application/json")
    for data in (form, multipart, {"value_json": "{}"}):
        async with server.http.post(
            server.url("/api/v1/write"), data=data, headers=auth_header(token)
        ) as response:
            assert response.status == 415
    # The same on an open state-changing route: no pairing code is shown for a form post.
    async with server.http.post(
        server.url("/api/v1/pair/start"), data={"client_name": "evil"}
    ) as response:
        assert response.status == 415
    assert server.calls["write"] == 0
    assert server.announced == []


async def test_body_without_content_type_is_refused(server: Server) -> None:
    token = server.token()
    response = await raw_http(
        server.port,
        f"POST /api/v1/write HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
        b"{}",
    )
    assert response.status == 415
    assert server.calls["write"] == 0


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", 'Application/JSON;charset="UTF-8"'],
)
async def test_json_content_types_are_accepted(server: Server, content_type: str) -> None:
    token = server.token()
    async with server.http.post(
        server.url("/api/v1/write"),
        data=b'{"v":2}',
        headers={"Content-Type": content_type, **auth_header(token)},
    ) as response:
        assert response.status == 200
    assert server.wrote == [{"v": 2}]


async def test_empty_post_needs_no_content_type_but_a_wrong_one_is_refused(
    server: Server,
) -> None:
    token = server.token()
    head = (
        f"POST /api/v1/write HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n"
    )
    ok = await raw_http(server.port, head + "Content-Length: 0\r\n\r\n")
    assert ok.status == 200
    no_length = await raw_http(server.port, head + "\r\n")
    assert no_length.status == 200
    refused = await raw_http(
        server.port, head + "Content-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
    )
    assert refused.status == 415
    assert server.calls["write"] == 2
    assert server.wrote == [None, None]


def test_media_type_parser() -> None:
    assert is_json_media_type("application/json")
    assert is_json_media_type(" application/JSON ; charset=utf-8")
    assert is_json_media_type("application/json;")
    assert not is_json_media_type("text/plain; application/json")
    assert not is_json_media_type("application/json; charset=utf-16")
    assert not is_json_media_type("")


# ---------------------------------------------------------------------------------------------
# Body size limits


async def test_small_routes_cap_bodies_at_64_kib(server: Server) -> None:
    token = server.token()
    headers = {"Content-Type": "application/json", **auth_header(token)}

    def body_of(size: int) -> bytes:
        return b'"' + b"a" * (size - 2) + b'"'

    async with server.http.post(
        server.url("/api/v1/write"), data=body_of(SMALL_BODY_LIMIT), headers=headers
    ) as at_cap:
        assert at_cap.status == 200
    async with server.http.post(
        server.url("/api/v1/write"), data=body_of(SMALL_BODY_LIMIT + 1), headers=headers
    ) as over:
        assert over.status == 413
        assert await error_of(over) == "PAYLOAD_TOO_LARGE"
    assert server.calls["write"] == 1


async def test_oversized_content_length_is_refused_before_the_body_is_read(
    server: Server,
) -> None:
    token = server.token()
    # Only the headers are sent: the answer comes without waiting for 20 MB that never arrive.
    response = await asyncio.wait_for(
        raw_http(
            server.port,
            f"PUT /api/v1/entries/k HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Content-Length: 20000000\r\n\r\n",
        ),
        timeout=5,
    )
    assert response.status == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert server.calls["put_entry"] == 0


async def test_chunked_bodies_are_capped_while_read(server: Server) -> None:
    token = server.token()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * (16 * 1024)  # 80 KiB in all, no Content-Length

    async with server.http.post(
        server.url("/api/v1/write"),
        data=chunks(),
        headers={"Content-Type": "application/json", **auth_header(token)},
    ) as response:
        assert response.status == 413
        assert await error_of(response) == "PAYLOAD_TOO_LARGE"
    assert server.wrote == []


MIB = 1024 * 1024


def _entry_body(value_json: str, *, ensure_ascii: bool) -> bytes:
    document = {"value_json": value_json, "idempotency_key": "k" * 32, "user_ids": [1, 2, 3]}
    return json.dumps(document, ensure_ascii=ensure_ascii).encode("utf-8")


async def test_entry_routes_take_a_4_mib_value_however_it_is_escaped(server: Server) -> None:
    token = server.token()
    headers = {"Content-Type": "application/json", **auth_header(token)}
    # 4 MiB of escaped quotes: each `\"` becomes `\\\"` in the body (2x).
    quotes = '"' + '\\"' * ((4 * MIB - 2) // 2) + '"'
    # 4 MiB of 2-byte characters, sent by an encoder that writes \u00e9 for each (3x).
    accents = json.dumps("é" * (2 * MIB - 2), ensure_ascii=False)
    for value_json, ascii_only in ((quotes, False), (accents, True)):
        assert len(value_json.encode("utf-8")) <= 4 * MIB
        body = _entry_body(value_json, ensure_ascii=ascii_only)
        assert len(body) > 2 * 4 * MIB
        async with server.http.put(
            server.url("/api/v1/entries/k"), data=io.BytesIO(body), headers=headers
        ) as response:
            assert response.status == 200
            assert (await response.json())["size"] == len(body)
    # One byte over the cap (headers only: the answer must not wait for the body).
    over = await raw_http(
        server.port,
        f"PUT /api/v1/entries/k HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {ENTRY_BODY_LIMIT + 1}\r\n\r\n",
    )
    assert over.status == 413
    assert over.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert server.calls["put_entry"] == 2


# ---------------------------------------------------------------------------------------------
# Authentication and roles


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/whoami"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/tokens"),
        ("DELETE", "/api/v1/tokens/0123456789abcdef"),
        ("GET", "/api/v1/no-such-route"),
        ("GET", "/"),
        ("GET", "/api/v1/hello/"),
        ("POST", "/api/v1/hello"),
    ],
)
async def test_everything_but_the_open_routes_needs_a_token(
    server: Server, method: str, path: str
) -> None:
    headers = {"Content-Type": "application/json"}
    async with server.http.request(method, server.url(path), headers=headers) as response:
        assert response.status == 401
        assert await error_of(response) == "UNAUTHENTICATED"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert sum(server.calls.values()) == 0


async def test_open_routes_need_no_token(server: Server) -> None:
    async with server.http.get(server.url("/api/v1/hello")) as hello:
        assert hello.status == 200
    async with server.http.post(
        server.url("/api/v1/pair/start"), json={"client_name": "Studio"}
    ) as start:
        assert start.status == 200
    async with server.http.post(
        server.url("/api/v1/pair/complete"),
        json={"pairing_id": "nope", "code": "00000000", "client_name": "Studio"},
    ) as complete:
        assert complete.status == 400  # reached the pairing service, not the auth wall
        assert await error_of(complete) == "PAIRING_FAILED"


async def test_token_in_the_query_string_is_not_accepted(server: Server) -> None:
    token = server.token()
    for param in ("token", "access_token"):
        async with server.http.get(server.url("/api/v1/whoami"), params={param: token}) as response:
            assert response.status == 401
            body = await response.json()
            assert "Authorization" in body["error"]["message"]
    assert server.calls["whoami"] == 0


@pytest.mark.parametrize(
    "value",
    [
        "Token {t}",
        "Basic {t}",
        "{t}",
        "Bearer",
        "Bearer ",
        "Bearer {t} extra",
        "Bearer {t}x",
        "Bearer dsm_0123456789abcdef_" + "A" * 43,
    ],
)
async def test_malformed_or_wrong_tokens_get_401(server: Server, value: str) -> None:
    token = server.token()
    async with server.http.get(
        server.url("/api/v1/whoami"), headers={"Authorization": value.format(t=token)}
    ) as response:
        assert response.status == 401
        assert await error_of(response) == "UNAUTHENTICATED"
    assert server.calls["whoami"] == 0


async def test_identity_comes_from_the_token_only(server: Server) -> None:
    token = server.token(Role.VIEWER, name="alice")
    headers = {"X-User": "bob", "X-Role": "admin", **auth_header(token)}
    async with server.http.get(
        server.url("/api/v1/whoami"), headers=headers, params={"name": "bob"}
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert body["name"] == "alice" and body["role"] == "viewer"
    # The scheme name is case-insensitive.
    async with server.http.get(
        server.url("/api/v1/whoami"), headers={"Authorization": f"bearer {token}"}
    ) as lower:
        assert lower.status == 200


async def test_wrong_role_gets_403_naming_the_needed_role(server: Server) -> None:
    viewer = server.token(Role.VIEWER)
    editor = server.token(Role.EDITOR)
    async with server.http.post(
        server.url("/api/v1/write"), json={}, headers=auth_header(viewer)
    ) as response:
        assert response.status == 403
        body = await response.json()
        assert body["error"]["code"] == "FORBIDDEN"
        assert body["error"]["details"] == {"needed_role": "editor", "role": "viewer"}
        assert "editor" in body["error"]["message"]
    async with server.http.post(
        server.url("/api/v1/admin-only"), json={}, headers=auth_header(editor)
    ) as response:
        assert response.status == 403
        assert (await response.json())["error"]["details"]["needed_role"] == "admin"
    assert server.calls["write"] == 0 and server.calls["admin"] == 0


async def test_metrics_open_to_any_token(server: Server) -> None:
    token = server.token(Role.VIEWER)
    async with server.http.get(server.url("/metrics"), headers=auth_header(token)) as response:
        assert response.status == 200
        assert await response.text() == "dsm_up 1\n"


async def test_revoked_token_is_refused_on_the_next_request(server: Server) -> None:
    token = server.token(Role.EDITOR)
    async with server.http.get(server.url("/api/v1/whoami"), headers=auth_header(token)) as ok:
        assert ok.status == 200
        token_id = (await ok.json())["token_id"]
    # Revoked through a second handle on the same file, as `dsm tokens revoke` does.
    other = TokenStore.open(server.data_dir)
    try:
        other.revoke(token_id)
    finally:
        other.close()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with server.http.get(server.url("/api/v1/whoami"), headers=auth_header(token)) as refused:
        assert refused.status == 401
    assert loop.time() - started < 1.0
    assert server.calls["whoami"] == 1


async def test_role_change_applies_to_the_next_request(server: Server) -> None:
    token = server.token(Role.VIEWER)
    info = server.store.lookup(token)
    assert info is not None
    async with server.http.post(
        server.url("/api/v1/admin-only"), json={}, headers=auth_header(token)
    ) as before:
        assert before.status == 403
    other = TokenStore.open(server.data_dir)
    try:
        other.set_role(info.token_id, Role.ADMIN)
    finally:
        other.close()
    async with server.http.post(
        server.url("/api/v1/admin-only"), json={}, headers=auth_header(token)
    ) as after:
        assert after.status == 200
