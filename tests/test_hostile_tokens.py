"""Revoking a token ends what it holds open, and no token can hold the server (security suite).

The review saw a revoked token's WebSocket deliver 7 events over 67 s and its sessions stay
listed. Here revocation comes both ways the product offers: `DELETE /api/v1/tokens/{id}` in the
server's process, and `dsm tokens revoke` (a second handle on the same SQLite file) in another.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dsm.http.appkeys import STREAMS
from dsm.services.errors import ServiceError
from dsm.services.events import WAKE_CHUNK, EventBus
from dsm.services.streams import MAX_STREAMS_PER_TOKEN, StreamRegistry
from dsm.services.tokens import TokenStore
from shared_schema.common import Role
from shared_schema.errors import ErrorCode
from shared_schema.events import EventBatch, EventType
from tools.testing.server import Server, running_server


@dataclass
class Setup:
    server: Server
    admin: str
    victim: str
    victim_id: str
    data_dir: Path

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def revoke_in_process(self) -> None:
        status, body = await self.server.call("DELETE", f"/tokens/{self.victim_id}", self.admin)
        assert status == 200 and body["revoked"] is True, body

    async def revoke_from_the_cli(self) -> None:
        other = TokenStore.open(self.data_dir)  # what `dsm tokens revoke` opens
        try:
            other.revoke(self.victim_id)
        finally:
            other.close()

    async def long_poll(self, token: str, **params: str) -> tuple[int, Any]:
        async with self.server.http.get(
            self.server.url("/api/v1/events"),
            params={"cursor": "0", "timeout": "20", **params},
            headers=self.auth(token),
        ) as response:
            return response.status, await response.json()


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with running_server(tmp_path) as server:
        admin = await server.pair("admin", role=Role.ADMIN)
        victim = await server.pair("victim")
        status, tokens = await server.call("GET", "/tokens", admin)
        assert status == 200
        victim_id = next(t["token_id"] for t in tokens["tokens"] if t["name"] == "victim")
        yield Setup(server, admin, victim, victim_id, tmp_path)


REVOKERS = ["revoke_in_process", "revoke_from_the_cli"]


@pytest.mark.parametrize("how", REVOKERS)
async def test_a_revoked_tokens_long_poll_answers_401_at_once(setup: Setup, how: str) -> None:
    poll = asyncio.create_task(setup.long_poll(setup.victim))
    await until(lambda: setup.server.app[STREAMS].open_count() == 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await getattr(setup, how)()
    status, body = await asyncio.wait_for(poll, 10)
    assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED"
    assert "revoked" in body["error"]["message"]
    assert loop.time() - started < 5  # the poll's own timeout was 20 s
    assert setup.server.app[STREAMS].open_count() == 0


@pytest.mark.parametrize("how", REVOKERS)
async def test_a_revoked_tokens_websocket_closes_and_delivers_nothing_more(
    setup: Setup, how: str
) -> None:
    async with setup.server.http.ws_connect(
        setup.server.url("/api/v1/events/ws"), headers=setup.auth(setup.victim)
    ) as ws:
        await ws.send_json({"cursor": None})
        first = await ws.receive_json(timeout=5)
        assert first["events"] == []
        await getattr(setup, how)()
        # Open a session with another token: an event the revoked socket must not get.
        status, _ = await setup.server.call(
            "POST", "/sessions", setup.admin, json={"client_name": "after"}
        )
        assert status == 200
        # The next frame is the close (policy violation, saying why), never the new event.
        closing = await ws.receive(timeout=5)
        assert closing.type is aiohttp.WSMsgType.CLOSE, closing
        assert closing.data == aiohttp.WSCloseCode.POLICY_VIOLATION
        assert "revoked" in str(closing.extra)


@pytest.mark.parametrize("how", REVOKERS)
async def test_a_revoked_tokens_sessions_end_at_once(setup: Setup, how: str) -> None:
    status, opened = await setup.server.call(
        "POST", "/sessions", setup.victim, json={"client_name": "victim's Studio"}
    )
    assert status == 200
    status, listed = await setup.server.call("GET", "/sessions", setup.admin)
    assert [s["session_id"] for s in listed["sessions"]] == [opened["session_id"]]
    await getattr(setup, how)()

    async def gone() -> bool:
        status, listed = await setup.server.call("GET", "/sessions", setup.admin)
        return status == 200 and listed["sessions"] == []

    await until_async(gone)
    status, batch = await setup.server.call(
        "GET", "/events", setup.admin, params={"cursor": "0", "timeout": "0"}
    )
    left = [e for e in batch["events"] if e["type"] == "session.left"]
    assert [e["payload"]["reason"] for e in left] == ["revoked"]


async def test_a_token_holds_at_most_its_share_of_streams(setup: Setup) -> None:
    async with AsyncExitStack() as stack:
        sessions = [
            await stack.enter_async_context(aiohttp.ClientSession())
            for _ in range(MAX_STREAMS_PER_TOKEN + 1)
        ]
        polls = [
            asyncio.create_task(
                s.get(
                    setup.server.url("/api/v1/events"),
                    params={"cursor": "0", "timeout": "20"},
                    headers=setup.auth(setup.victim),
                )
            )
            for s in sessions[:MAX_STREAMS_PER_TOKEN]
        ]
        await until(lambda: setup.server.app[STREAMS].open_count() == MAX_STREAMS_PER_TOKEN)
        async with sessions[-1].get(
            setup.server.url("/api/v1/events"),
            params={"cursor": "0", "timeout": "20"},
            headers=setup.auth(setup.victim),
        ) as refused:
            assert refused.status == 429 and refused.headers["Retry-After"]
            assert (await refused.json())["error"]["code"] == "RATE_LIMITED"
        # A WebSocket past the cap is refused before the handshake, in the envelope.
        with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
            await sessions[-1].ws_connect(
                setup.server.url("/api/v1/events/ws"), headers=setup.auth(setup.victim)
            )
        assert handshake.value.status == 429
        # Another token is not affected.
        status, body = await setup.long_poll(setup.admin, timeout="0")
        assert status == 200 and body["resync"] is False
        # Revoking the flooding token frees every slot at once.
        await setup.revoke_in_process()
        answers = await asyncio.wait_for(asyncio.gather(*polls), 10)
        assert [a.status for a in answers] == [401] * MAX_STREAMS_PER_TOKEN
        for answer in answers:
            answer.release()
        assert setup.server.app[STREAMS].open_count() == 0


def test_all_tokens_together_hold_at_most_the_registry_total() -> None:
    registry = StreamRegistry(per_token=4, total=2)
    with registry.open("a"), registry.open("b"):
        with pytest.raises(ServiceError) as busy, registry.open("c"):
            pass
        assert busy.value.code is ErrorCode.SERVER_BUSY and busy.value.retryable
    with registry.open("c"):
        assert registry.token_ids() == {"c"}


async def until(condition: Any, timeout: float = 10.0) -> None:
    """Wait on observable state (checked every 10 ms), never on a guessed sleep."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.01)


async def until_async(condition: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.01)


async def test_a_publish_wakes_a_thousand_waiters_a_chunk_per_loop_turn() -> None:
    # Waking every stream in one loop iteration held hello behind a thousand deliveries.
    bus = EventBus(64)
    waiters = [asyncio.ensure_future(bus.wait(0, 10)) for _ in range(1000)]
    await asyncio.sleep(0)  # every waiter is now waiting on the same generation
    bus.publish(EventType.BACKEND_CHANGED, {"backend": "EMULATOR"})
    await asyncio.sleep(0)
    woken_first = sum(w.done() for w in waiters)
    assert 0 < woken_first <= 2 * WAKE_CHUNK
    answers = await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert all(isinstance(a, EventBatch) and len(a.events) == 1 for a in answers)
