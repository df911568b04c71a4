"""Messaging publish (v2 `:publishMessage`, v1 topics) and the emulator's message record."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from dsm.emulator.app import EmulatorConfig
from dsm.emulator.auth import KeyGrant
from dsm.emulator.clock import ManualClock
from dsm.emulator.throttle import LimitsConfig

from .conftest import RunningEmulator, start_emulator

V2 = "/cloud/v2/universes/123:publishMessage"
V1 = "/messaging-service/v1/universes/123/topics"
RECORD = "/_emulator/messages"
SCOPE = "universe-messaging-service:publish"


async def send(
    emu: RunningEmulator, path: str, body: Any = None, *, raw: str | None = None
) -> tuple[int, str]:
    kwargs: dict[str, Any] = {"json": body} if raw is None else {"data": raw}
    async with emu.http.post(emu.url(path), **kwargs) as resp:
        return resp.status, await resp.text()


async def recorded(emu: RunningEmulator, **params: str) -> list[dict[str, Any]]:
    async with emu.http.get(emu.url(RECORD), params=params) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert set(body) == {"messages"}
    messages: list[dict[str, Any]] = body["messages"]
    return messages


def error(text: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(text)
    return body


async def test_v2_publish_is_200_empty_and_recorded(emulator: RunningEmulator) -> None:
    status, text = await send(emulator, V2, {"topic": "announcements", "message": "Hello!"})
    assert (status, text) == (200, "")
    [message] = await recorded(emulator)
    assert message == {
        "id": message["id"],
        "universe": "123",
        "topic": "announcements",
        "message": "Hello!",
        "publishTime": emulator.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "api": "v2",
    }


async def test_v1_publish_is_200_empty_and_recorded(emulator: RunningEmulator) -> None:
    topic = "bans/appeals & more"
    status, text = await send(emulator, f"{V1}/{quote(topic, safe='')}", {"message": "kick 42"})
    assert (status, text) == (200, "")
    [message] = await recorded(emulator)
    assert (message["topic"], message["message"], message["api"]) == (topic, "kick 42", "v1")


async def test_limits_at_the_boundary_are_accepted(emulator: RunningEmulator) -> None:
    topic, text = "t" * 80, "ü" * 1024  # counted in characters, not bytes
    assert (await send(emulator, V2, {"topic": topic, "message": text}))[0] == 200
    assert (await send(emulator, f"{V1}/{topic}", {"message": text}))[0] == 200
    assert [m["message"] for m in await recorded(emulator)] == [text, text]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"message": "hi"}, "topic is required"),
        ({"topic": "", "message": "hi"}, "topic is required"),
        ({"topic": 5, "message": "hi"}, "topic is required"),
        ({"topic": "t"}, "message is required"),
        ({"topic": "t", "message": ""}, "message is required"),
        ({"topic": "t", "message": {"a": 1}}, "message is required"),
        ({"topic": "t" * 81, "message": "hi"}, "limit is 80"),
        ({"topic": "t", "message": "m" * 1025}, "limit is 1024"),
        ([1, 2], "JSON object"),
    ],
)
async def test_v2_validation_errors(emulator: RunningEmulator, body: Any, fragment: str) -> None:
    status, text = await send(emulator, V2, body)
    assert status == 400
    answer = error(text)
    assert answer["code"] == "INVALID_ARGUMENT" and fragment in answer["message"]
    assert await recorded(emulator) == []


async def test_v2_body_errors(emulator: RunningEmulator) -> None:
    for raw, fragment in (("{oops", "not valid JSON"), ("", "must be a JSON object")):
        status, text = await send(emulator, V2, raw=raw)
        assert status == 400 and fragment in error(text)["message"]
    assert await recorded(emulator) == []


async def test_v1_validation_errors_use_v1_envelope(emulator: RunningEmulator) -> None:
    status, text = await send(emulator, f"{V1}/{'t' * 81}", {"message": "hi"})
    assert status == 400
    assert set(error(text)) == {"code", "message"} and "limit is 80" in error(text)["message"]
    status, text = await send(emulator, f"{V1}/news", {})
    assert status == 400 and "message is required" in error(text)["message"]
    status, text = await send(emulator, f"{V1}/news", {"message": "m" * 1025})
    assert status == 400 and "1024" in error(text)["message"]
    status, text = await send(
        emulator, "/messaging-service/v1/universes/abc/topics/news", {"message": "x"}
    )
    assert status == 400 and "universe" in error(text)["message"]
    assert await recorded(emulator) == []


async def test_v2_bad_universe_and_unknown_verb(emulator: RunningEmulator) -> None:
    status, text = await send(
        emulator, "/cloud/v2/universes/abc:publishMessage", {"topic": "t", "message": "m"}
    )
    assert status == 400 and error(text)["code"] == "INVALID_ARGUMENT"
    status, text = await send(
        emulator, "/cloud/v2/universes/123:shout", {"topic": "t", "message": "m"}
    )
    assert status == 404
    assert await recorded(emulator) == []


async def test_publish_route_does_not_shadow_universe_routes(emulator: RunningEmulator) -> None:
    async with emulator.http.get(emulator.url("/cloud/v2/universes/123/data-stores")) as resp:
        assert resp.status == 200
    async with emulator.http.post(
        emulator.url("/cloud/v2/universes/123/memory-store/queues/q/items"), json={"data": 1}
    ) as resp:
        assert resp.status == 200


async def test_record_filters_and_limits(emulator: RunningEmulator) -> None:
    for universe, topic, text in (
        ("123", "a", "one"),
        ("123", "b", "two"),
        ("456", "a", "three"),
        ("123", "a", "four"),
    ):
        path = f"/cloud/v2/universes/{universe}:publishMessage"
        assert (await send(emulator, path, {"topic": topic, "message": text}))[0] == 200
        emulator.clock.advance(1)
    assert [m["message"] for m in await recorded(emulator)] == ["one", "two", "three", "four"]
    assert [m["message"] for m in await recorded(emulator, universe="123")] == [
        "one",
        "two",
        "four",
    ]
    assert [m["message"] for m in await recorded(emulator, universe="123", topic="a")] == [
        "one",
        "four",
    ]
    assert [m["message"] for m in await recorded(emulator, topic="a")] == ["one", "three", "four"]
    # A limit keeps the newest messages, still in publish order.
    latest = await recorded(emulator, limit="2")
    assert [m["message"] for m in latest] == ["three", "four"]
    assert latest[0]["id"] < latest[1]["id"]
    assert latest[0]["publishTime"] < latest[1]["publishTime"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [({"limit": "lots"}, "limit"), ({"limit": "-3"}, "limit"), ({"universe": "x1"}, "universe")],
)
async def test_record_parameter_errors(
    emulator: RunningEmulator, params: dict[str, str], fragment: str
) -> None:
    async with emulator.http.get(emulator.url(RECORD), params=params) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert fragment in body["errors"][0]["message"]


async def test_missing_key_is_401(emulator: RunningEmulator) -> None:
    async with aiohttp.ClientSession() as bare:
        for path, body in ((V2, {"topic": "t", "message": "m"}), (f"{V1}/t", {"message": "m"})):
            async with bare.post(emulator.url(path), json=body) as resp:
                assert resp.status == 401
                assert await resp.json() == {"errors": [{"code": 0, "message": "Invalid API Key"}]}
    assert await recorded(emulator) == []


@pytest.fixture
async def keyed(clock: ManualClock) -> AsyncIterator[RunningEmulator]:
    config = EmulatorConfig(
        clock=clock,
        limits=LimitsConfig(mode="documented", overrides={"gateway.messaging": 2}),
        keys=[
            KeyGrant(key="publisher", universes=["123"], scopes=[SCOPE]),
            KeyGrant(key="other-publisher", universes=["123"], scopes=[SCOPE]),
            KeyGrant(key="reader", universes=["123"], scopes=["memory-store.sorted-map:read"]),
            KeyGrant(key="elsewhere", universes=["999"], scopes=[SCOPE]),
        ],
    )
    runner, base_url, ctx = await start_emulator(config)
    async with aiohttp.ClientSession(headers={"x-api-key": "publisher"}) as http:
        yield RunningEmulator(base_url, ctx, clock, http)
    await runner.cleanup()


async def post_as(
    emu: RunningEmulator, key: str, path: str, body: Any
) -> tuple[int, dict[str, str], str]:
    async with emu.http.post(emu.url(path), json=body, headers={"x-api-key": key}) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def test_scope_and_universe_are_enforced(keyed: RunningEmulator) -> None:
    v2, v1 = {"topic": "t", "message": "m"}, {"message": "m"}
    for key in ("reader", "elsewhere"):
        status, _, text = await post_as(keyed, key, V2, v2)
        assert status == 403 and error(text)["code"] == "PERMISSION_DENIED"
        status, _, text = await post_as(keyed, key, f"{V1}/t", v1)
        assert status == 403 and set(error(text)) == {"code", "message"}
    status, _, _ = await post_as(keyed, "publisher", V2, v2)
    assert status == 200
    assert len(await recorded(keyed)) == 1


async def test_publishing_is_throttled_per_key(keyed: RunningEmulator) -> None:
    body = {"topic": "t", "message": "m"}
    for _ in range(2):
        assert (await post_as(keyed, "publisher", V2, body))[0] == 200
    status, headers, text = await post_as(keyed, "publisher", f"{V1}/t", {"message": "m"})
    assert status == 429
    assert error(text)["code"] == "RESOURCE_EXHAUSTED" and "retry-after" in {
        name.lower() for name in headers
    }
    assert (await post_as(keyed, "other-publisher", V2, body))[0] == 200
    assert len(await recorded(keyed)) == 3  # the refused message was not published
    keyed.clock.advance(60)
    assert (await post_as(keyed, "publisher", V2, body))[0] == 200
