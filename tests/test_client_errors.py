"""OpenCloudClient error mapping: every Open Cloud error envelope becomes a typed error with a
message a game developer understands, and the API key never leaks into reprs, errors or logs.

Envelopes the emulator produces are tested against it; the gateway, ASP.NET-validation,
non-JSON and odd shapes come from a tiny aiohttp server inside the test.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from dsm.emulator.app import EmulatorConfig
from dsm.emulator.auth import KeyGrant
from dsm.emulator.clock import ManualClock
from dsm.emulator.throttle import LimitsConfig
from dsm.opencloud.client import (
    CARRY_OVER,
    AlreadyExists,
    Conflict,
    InvalidArgument,
    NetworkError,
    NotFound,
    OpenCloudClient,
    OpenCloudError,
    PermissionDenied,
    RateLimited,
    RetryPolicy,
    ServerError,
    Unauthorized,
)
from dsm.opencloud.errors import parse_envelope

from .conftest import RunningEmulator

SECRET = "sk-live-0123456789abcdef-SECRET"
READER = "reader-key-ABCDEFGH"
FAST = RetryPolicy(base_delay=0.001, max_delay=0.01, max_attempts=3)


@pytest.fixture
def emulator_config(clock: ManualClock) -> EmulatorConfig:
    return EmulatorConfig(
        clock=clock,
        limits=LimitsConfig(mode="off"),
        keys=[
            KeyGrant(key=SECRET, universes=["*"], scopes=_ALL_SCOPES),
            KeyGrant(
                key=READER,
                universes=["1"],
                scopes=["universe-datastores.objects:read", "universe-datastores.objects:list"],
            ),
        ],
    )


_ALL_SCOPES = [
    "universe-datastores.control:list",
    "universe-datastores.control:create",
    "universe-datastores.control:delete",
    "universe-datastores.objects:list",
    "universe-datastores.objects:read",
    "universe-datastores.objects:create",
    "universe-datastores.objects:update",
    "universe-datastores.objects:delete",
    "universe-datastores.versions:list",
    "universe-datastores.versions:read",
    "universe.ordered-data-store.scope.entry:read",
    "universe.ordered-data-store.scope.entry:write",
]


def make_client(base_url: str, key: str = SECRET, **kw: Any) -> OpenCloudClient:
    return OpenCloudClient(api_key=key, base_url=base_url, retry=FAST, **kw)


# ------------------------------------------------------------ envelopes from the emulator


async def test_403_names_the_missing_scope_v2_and_v1(emulator: RunningEmulator) -> None:
    async with make_client(emulator.base_url) as owner:
        await owner.create_entry(1, "ds", "k", "1")
    async with make_client(emulator.base_url, READER) as client:
        assert (await client.get_entry(1, "ds", "k")).value_json == "1"
        with pytest.raises(PermissionDenied) as info:
            await client.update_entry(1, "ds", "k", "2", attributes=None, user_ids=[])
        error = info.value
        assert str(error).startswith(
            "This API key lacks universe-datastores.objects:update for universe 1"
        )
        assert error.status == 403 and error.code == "PERMISSION_DENIED"
        assert error.required_scopes == ("universe-datastores.objects:update",)
        # v1 uses its own envelope (INSUFFICIENT_SCOPE + datastoreErrorCode).
        with pytest.raises(PermissionDenied) as v1_info:
            await client.v1_list_versions_page(1, "ds", "k")
        assert v1_info.value.code == "INSUFFICIENT_SCOPE"
        assert v1_info.value.datastore_error_code == "InsufficientScope"
        assert "universe-datastores.versions:list for universe 1" in str(v1_info.value)
        # Increment needs two scopes; the message names both.
        with pytest.raises(
            PermissionDenied, match=r"objects:create and universe-datastores\.objects:update"
        ):
            await client.increment_entry(1, "ds", "n", 1, attributes=None, user_ids=[])
        # A universe the key is not allowed for.
        with pytest.raises(PermissionDenied, match="for universe 2"):
            await client.get_entry(2, "ds", "k")


async def test_401_unknown_key_gateway_envelope(emulator: RunningEmulator) -> None:
    async with make_client(emulator.base_url, "not-a-known-key") as client:
        with pytest.raises(Unauthorized) as info:
            await client.get_entry(1, "ds", "k")
    assert info.value.status == 401
    assert "rejected the API key" in str(info.value) and "Invalid API Key" in str(info.value)


async def test_404_400_409_from_each_family(emulator: RunningEmulator) -> None:
    async with make_client(emulator.base_url) as client:
        with pytest.raises(NotFound) as v2_missing:
            await client.get_entry(1, "ds", "missing")
        assert "Entry 'missing' in data store 'ds' was not found in universe 1" in str(
            v2_missing.value
        )
        await client.create_entry(1, "ds", "k", "1")
        with pytest.raises(NotFound) as v1_missing:
            await client.v1_get_entry(1, "ds", "missing")
        assert v1_missing.value.datastore_error_code == "EntryNotFound"
        with pytest.raises(InvalidArgument) as v1_bad:
            await client.v1_get_version(1, "ds", "k", "not-a-version")
        assert v1_bad.value.datastore_error_code == "InvalidVersionId"
        assert "[InvalidVersionId]" in str(v1_bad.value)
        with pytest.raises(InvalidArgument) as v2_bad:
            await client.get_entry(1, "ds", "k", revision_id="bogus")
        assert v2_bad.value.code == "INVALID_ARGUMENT" and v2_bad.value.status == 400
        with pytest.raises(NotFound):
            await client.ordered_get(1, "ods", "nobody")
        with pytest.raises(Conflict) as conflict:
            await client.update_entry(1, "ds", "k", "2", attributes=None, user_ids=[], etag="x")
        assert conflict.value.code == "ABORTED"
        with pytest.raises(NotFound, match="does not exist"):
            await client.update_entry(1, "ds", "nope", "2", attributes=CARRY_OVER, user_ids=[])


# ------------------------------------------------------- odd envelopes from a tiny server


@dataclass
class Canned:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class TinyServer:
    base_url: str
    responses: list[Canned]
    seen_keys: list[str]


@pytest.fixture
async def tiny() -> AsyncIterator[TinyServer]:
    state = TinyServer("", [], [])

    async def handler(request: web.Request) -> web.Response:
        state.seen_keys.append(request.headers.get("x-api-key", ""))
        canned = state.responses.pop(0) if state.responses else Canned(500, b"exhausted")
        return web.Response(status=canned.status, body=canned.body, headers=canned.headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.base_url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


def js(data: Any) -> bytes:
    return json.dumps(data).encode()


Call = Callable[[OpenCloudClient], Awaitable[Any]]


async def _get(client: OpenCloudClient) -> Any:
    return await client.get_entry(9, "ds", "k")


@pytest.mark.parametrize(
    ("canned", "expected", "fragments"),
    [
        (
            Canned(401, js({"errors": [{"code": 0, "message": "Invalid API Key"}]})),
            Unauthorized,
            ["Roblox rejected the API key", "Roblox said: Invalid API Key"],
        ),
        (
            Canned(403, js({"errors": [{"code": 0, "message": "Insufficient scope"}]})),
            PermissionDenied,
            ["lacks universe-datastores.objects:read for universe 9", "Insufficient scope"],
        ),
        (
            Canned(
                400,
                js(
                    {
                        "errors": {"entryKey": ["The entryKey field is required."]},
                        "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
                        "title": "One or more validation errors occurred.",
                        "status": 400,
                    }
                ),
            ),
            InvalidArgument,
            ["One or more validation errors occurred.", "entryKey: The entryKey field"],
        ),
        (
            Canned(
                400,
                js(
                    {
                        "error": "INVALID_ARGUMENT",
                        "message": "Invalid cursor.",
                        "errorDetails": [
                            {
                                "errorDetailType": "DatastoreErrorInfo",
                                "datastoreErrorCode": "InvalidCursor",
                            }
                        ],
                    }
                ),
            ),
            InvalidArgument,
            ["Invalid cursor. [InvalidCursor]"],
        ),
        (
            Canned(404, js({"code": "NOT_FOUND", "message": "Entry not found."})),
            NotFound,
            ["Entry 'k' in data store 'ds' was not found in universe 9", "Entry not found."],
        ),
        (
            Canned(409, js({"code": 10, "message": "Aborted"})),  # gRPC numeric code
            Conflict,
            ["changed since it was read"],
        ),
        (
            Canned(412, b""),
            Conflict,
            ["changed since it was read"],
        ),
        (
            Canned(400, js({"code": "INVALID_ARGUMENT", "message": "bad", "details": [{"x": 1}]})),
            InvalidArgument,
            ["rejected the request to read a data store entry", "Roblox said: bad"],
        ),
        (
            Canned(501, b"upstream connect error or disconnect/reset before headers"),
            ServerError,
            ["HTTP 501", "upstream connect error"],
        ),
        (
            Canned(418, b"<!DOCTYPE html><html><body>teapot</body></html>"),
            OpenCloudError,
            ["HTTP 418", "(an HTML error page)"],
        ),
    ],
)
async def test_every_envelope_maps_to_a_typed_error(
    tiny: TinyServer, canned: Canned, expected: type[OpenCloudError], fragments: list[str]
) -> None:
    tiny.responses.append(canned)
    async with make_client(tiny.base_url) as client:
        with pytest.raises(expected) as info:
            await _get(client)
    assert type(info.value) is expected
    assert info.value.status == canned.status
    for fragment in fragments:
        assert fragment in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)


async def test_ordered_v1_envelope_is_understood() -> None:
    env = parse_envelope(js({"code": "INVALID_ARGUMENT", "message": "Invalid cursor."}))
    assert (env.kind, env.code, env.message) == ("status", "INVALID_ARGUMENT", "Invalid cursor.")
    assert parse_envelope(b"").kind == "empty"
    assert parse_envelope(b"[1, 2]").kind == "text"


async def test_5xx_retried_then_server_error(tiny: TinyServer) -> None:
    tiny.responses += [Canned(503, b"")] * 3
    async with make_client(tiny.base_url) as client:
        with pytest.raises(ServerError, match="HTTP 503"):
            await _get(client)
    assert len(tiny.seen_keys) == FAST.max_attempts


async def test_429_exhausted_becomes_rate_limited(tiny: TinyServer) -> None:
    sleeps: list[float] = []

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    busy = Canned(
        429, js({"code": "RESOURCE_EXHAUSTED", "message": "slow down"}), {"retry-after": "2"}
    )
    tiny.responses += [busy] * 3
    async with make_client(tiny.base_url, sleep=record) as client:
        with pytest.raises(RateLimited) as info:
            await _get(client)
    assert info.value.retry_after == 2.0
    assert sleeps == [2.0, 2.0]  # honoured between the three attempts
    assert "Retry after 2 s" in str(info.value)


async def test_unreadable_success_body_is_a_server_error(tiny: TinyServer) -> None:
    tiny.responses.append(Canned(200, b"<html>not json</html>"))
    async with make_client(tiny.base_url) as client:
        with pytest.raises(ServerError, match="cannot read"):
            await _get(client)


async def test_connection_refused_is_network_error() -> None:
    async with make_client("http://127.0.0.1:9") as client:
        with pytest.raises(NetworkError) as info:
            await _get(client)
    assert "read a data store entry" in str(info.value)
    assert SECRET not in str(info.value)


# ------------------------------------------------------------------------- secrets


async def test_api_key_never_in_repr_errors_or_logs(
    tiny: TinyServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # A server that echoes the key back in its error text.
    tiny.responses += [
        Canned(503, b""),
        Canned(429, b"", {"retry-after": "0"}),
        Canned(400, js({"code": "INVALID_ARGUMENT", "message": f"bad key {SECRET}"})),
    ]
    async with make_client(tiny.base_url) as client:
        for text in (repr(client), str(client), repr(vars(client))):
            assert SECRET not in text
        with pytest.raises(InvalidArgument) as info:
            await _get(client)
        with pytest.raises(AlreadyExists):
            tiny.responses.append(
                Canned(400, js({"code": "INVALID_ARGUMENT", "message": "Entry already exists."}))
            )
            await client.create_entry(9, "ds", "k", "1")
    assert tiny.seen_keys[0] == SECRET  # it was sent, in the header only
    assert "[redacted]" in str(info.value)
    for text in (str(info.value), repr(info.value), info.value.server_message or ""):
        assert SECRET not in text
    assert caplog.records, "retries should have been logged"
    assert SECRET not in caplog.text
    with pytest.raises(ValueError):
        OpenCloudClient(api_key="  ", base_url=tiny.base_url)
