"""The event stream: long-poll and WebSocket over real loopback HTTP, cursors and resyncs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from dsm.app import event_stream
from dsm.config import ServerConfig
from dsm.http import routes_events
from dsm.http.appkeys import CONFIG, EVENTS, INSTANCE_ID, TOKEN_STORE
from dsm.http.auth import auth_middleware
from dsm.http.binding import Handler, bind_routes
from dsm.http.errors import error_middleware
from dsm.http.guards import CLIENT_MAX_SIZE, BoundPort, guard_middleware
from dsm.services.events import MAX_BATCH_EVENTS, EventBus
from dsm.services.tokens import TokenStore
from shared_schema.common import Backend, Role
from shared_schema.data import DataStoreState
from shared_schema.events import (
    EVENT_PAYLOADS,
    BackendChangedPayload,
    DataStoreChangedPayload,
    EventBatch,
    EventResync,
    EventType,
    SessionLeftPayload,
    SessionLeftReason,
)

Lifecycle = Callable[[web.Application], AsyncIterator[None]]
Setup = Callable[[web.Application], None]


def serving(handlers: Mapping[str, Handler]) -> Setup:
    """Bind these routes through the route table, as the full app binds all of them."""

    def setup(app: web.Application) -> None:
        bind_routes(app, handlers)
        if "events_socket" in handlers:
            routes_events.track_sockets(app)

    return setup


# --------------------------------------------------------------------------- a real server


@dataclass
class Companion:
    """The companion server's middlewares plus the route modules under test, on a real port."""

    base_url: str
    app: web.Application
    runner: web.AppRunner
    http: aiohttp.ClientSession
    tokens: dict[str, str]
    stopped: list[bool] = field(default_factory=lambda: [False])

    def url(self, path: str) -> str:
        return self.base_url + path

    def ws_url(self, path: str) -> str:
        return "ws" + self.base_url.removeprefix("http") + path

    def auth(self, who: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    @property
    def bus(self) -> EventBus:
        return self.app[EVENTS]

    async def stop(self) -> None:
        if not self.stopped[0]:
            self.stopped[0] = True
            await self.runner.cleanup()


TOKENS = (("alice", Role.VIEWER), ("bob", Role.VIEWER), ("carol", Role.ADMIN))


@asynccontextmanager
async def companion(
    tmp_path: Path,
    *,
    config: ServerConfig | None = None,
    contexts: Sequence[Lifecycle] = (event_stream,),
    setups: Sequence[Setup] = (serving(routes_events.HANDLERS),),
    prepare: Callable[[web.Application], None] | None = None,
) -> AsyncIterator[Companion]:
    store = TokenStore.open(tmp_path)
    tokens = {name: store.issue(name, role)[0] for name, role in TOKENS}
    bound = BoundPort()
    app = web.Application(
        client_max_size=CLIENT_MAX_SIZE,
        middlewares=[error_middleware, guard_middleware(bound), auth_middleware],
    )
    app[CONFIG] = config or ServerConfig(data_dir=tmp_path)
    app[TOKEN_STORE] = store
    for context in contexts:
        app.cleanup_ctx.append(context)
    for setup in setups:
        setup(app)
    if prepare is not None:
        prepare(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    bound.set(port)
    server: Companion | None = None
    try:
        async with aiohttp.ClientSession() as http:
            server = Companion(f"http://127.0.0.1:{port}", app, runner, http, tokens)
            yield server
    finally:
        if server is not None:
            await server.stop()
        else:
            await runner.cleanup()
        store.close()


def ds_changed(universe: int, name: str) -> DataStoreChangedPayload:
    return DataStoreChangedPayload(
        universe_id=universe, datastore=name, state=DataStoreState.ACTIVE
    )


async def poll(
    server: Companion, cursor: int | None, timeout: float, who: str = "alice"
) -> EventBatch | EventResync:
    params: dict[str, str] = {"timeout": str(timeout)}
    if cursor is not None:
        params["cursor"] = str(cursor)
    async with server.http.get(
        server.url("/api/v1/events"), params=params, headers=server.auth(who)
    ) as resp:
        text = await resp.text()
        assert resp.status == 200, text
        assert resp.headers["Cache-Control"] == "no-store"
    return parse_answer(text)


def parse_answer(text: str) -> EventBatch | EventResync:
    # Strict response models take times as JSON text, as the plugin receives them.
    if json.loads(text).get("resync"):
        return EventResync.model_validate_json(text)
    return EventBatch.model_validate_json(text)


def batch(answer: EventBatch | EventResync) -> EventBatch:
    assert isinstance(answer, EventBatch), answer
    return answer


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Companion]:
    config = ServerConfig(data_dir=tmp_path, event_buffer_size=8)
    async with companion(tmp_path, config=config) as running:
        yield running


# --------------------------------------------------------------------------- long-poll


async def test_pending_events_are_returned_at_once(server: Companion) -> None:
    for name in ("a", "b", "c"):
        server.bus.publish(EventType.DATASTORE_CHANGED, ds_changed(7, name))
    started = time.monotonic()
    answer = batch(await poll(server, 0, 25))
    assert time.monotonic() - started < 5
    assert [e.seq for e in answer.events] == [1, 2, 3]
    assert answer.next_cursor == 3
    assert answer.instance_id == server.bus.instance_id
    for event in answer.events:
        assert event.instance_id == server.bus.instance_id
        assert event.type == "datastore.changed"
        EVENT_PAYLOADS[EventType(event.type)].model_validate_json(json.dumps(event.payload))
    assert [e.payload["datastore"] for e in answer.events] == ["a", "b", "c"]
    # Polling from the middle returns only what came after the cursor.
    assert [e.seq for e in batch(await poll(server, 2, 25)).events] == [3]


async def test_wait_is_woken_by_a_publish(server: Companion) -> None:
    server.bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, "x"))
    waiting = asyncio.create_task(poll(server, 1, 25))
    await asyncio.sleep(0.3)
    assert not waiting.done(), "nothing new was published, so the poll must still be waiting"
    started = time.monotonic()
    server.bus.publish(EventType.BACKEND_CHANGED, BackendChangedPayload(backend=Backend.LIVE))
    answer = batch(await asyncio.wait_for(waiting, 5))
    assert time.monotonic() - started < 2
    assert [(e.seq, e.type) for e in answer.events] == [(2, "backend.changed")]
    assert answer.events[0].payload == {"backend": "LIVE"}  # absent optionals are left out
    assert answer.next_cursor == 2


async def test_a_quiet_wait_times_out_with_an_empty_batch(server: Companion) -> None:
    server.bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, "x"))
    started = time.monotonic()
    answer = batch(await poll(server, 1, 0.4))
    elapsed = time.monotonic() - started
    assert 0.35 <= elapsed < 5
    assert answer.events == [] and answer.next_cursor == 1


async def test_timeout_is_clamped_not_refused(server: Companion) -> None:
    # Negative means "do not wait".
    started = time.monotonic()
    assert batch(await poll(server, 0, -5)).events == []
    assert time.monotonic() - started < 2
    # Above the limit is shortened, not refused: the poll is answered by the next event.
    waiting = asyncio.create_task(poll(server, 0, 1000))
    await asyncio.sleep(0.2)
    server.bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, "x"))
    assert [e.seq for e in batch(await asyncio.wait_for(waiting, 5)).events] == [1]


@pytest.mark.parametrize(
    "query",
    ["cursor=abc&timeout=1", "cursor=-1&timeout=0", "timeout=soon", "timeout=nan", "cursr=1"],
)
async def test_malformed_queries_are_bad_requests(server: Companion, query: str) -> None:
    async with server.http.get(
        server.url(f"/api/v1/events?{query}"), headers=server.auth()
    ) as resp:
        body = await resp.json()
    assert resp.status == 400
    assert body["error"]["code"] == "BAD_REQUEST"
    assert body["error"]["message"].startswith("Invalid request:")


async def test_no_cursor_starts_from_now(server: Companion) -> None:
    for name in ("a", "b"):
        server.bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, name))
    started = time.monotonic()
    answer = batch(await poll(server, None, 25))
    assert time.monotonic() - started < 2
    assert answer.events == [] and answer.next_cursor == 2


async def test_events_need_a_token(server: Companion) -> None:
    async with server.http.get(server.url("/api/v1/events?timeout=0")) as resp:
        body = await resp.json()
    assert resp.status == 401
    assert body["error"]["code"] == "UNAUTHENTICATED"


# --------------------------------------------------------------------------- resync


async def test_an_evicted_cursor_gets_resync(server: Companion) -> None:
    for i in range(20):  # the buffer holds 8: events 13..20 remain
        server.bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, f"d{i}"))
    answer = await poll(server, 3, 25)
    assert isinstance(answer, EventResync)
    assert answer.resync is True and answer.next_cursor == 20
    assert answer.instance_id == server.bus.instance_id
    assert "4..12 are no longer kept" in answer.reason
    # The oldest kept event is 13, so cursor 12 still replays everything it asks for.
    assert [e.seq for e in batch(await poll(server, 12, 25)).events] == list(range(13, 21))
    assert isinstance(await poll(server, 11, 25), EventResync)
    # After a resync the client follows from next_cursor like any other cursor.
    server.bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, "after"))
    assert [e.seq for e in batch(await poll(server, answer.next_cursor, 25)).events] == [21]


async def test_a_cursor_from_another_run_gets_resync(server: Companion) -> None:
    server.bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, "x"))
    answer = await poll(server, 500, 25)
    assert isinstance(answer, EventResync)
    assert answer.next_cursor == 1
    assert "not issued by this server run" in answer.reason


async def test_service_resyncs_a_cursor_of_another_instance() -> None:
    bus = EventBus(16, instance_id="run-b")
    bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, "x"))
    bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, "y"))
    stale = await bus.wait(1, 0, instance_id="run-a")
    assert isinstance(stale, EventResync) and stale.next_cursor == 2
    assert "restarted" in stale.reason
    same = await bus.wait(1, 0, instance_id="run-b")
    assert isinstance(same, EventBatch) and [e.seq for e in same.events] == [2]


async def test_overflow_while_waiting_is_a_resync() -> None:
    bus = EventBus(4)
    waiting = asyncio.create_task(bus.wait(0, 5))
    await asyncio.sleep(0)
    for i in range(10):  # all published before the waiter gets to run again
        bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, f"d{i}"))
    answer = await asyncio.wait_for(waiting, 5)
    assert isinstance(answer, EventResync) and answer.next_cursor == 10


# --------------------------------------------------------------------------- buffer, order


async def test_the_buffer_is_bounded() -> None:
    bus = EventBus(5)
    for i in range(1000):
        bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, f"d{i}"))
    assert bus.latest_seq == 1000
    kept = bus.check(995)
    assert isinstance(kept, EventBatch) and [e.seq for e in kept.events] == list(range(996, 1001))
    assert isinstance(bus.check(994), EventResync)


async def test_a_long_backlog_comes_in_chunks() -> None:
    bus = EventBus(MAX_BATCH_EVENTS * 3)
    for i in range(MAX_BATCH_EVENTS * 2 + 10):
        bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, f"d{i}"))
    seen: list[int] = []
    cursor = 0
    while cursor < bus.latest_seq:
        answer = await bus.wait(cursor, 0)
        assert isinstance(answer, EventBatch)
        assert len(answer.events) <= MAX_BATCH_EVENTS
        seen.extend(e.seq for e in answer.events)
        cursor = answer.next_cursor
    assert seen == list(range(1, MAX_BATCH_EVENTS * 2 + 11))


async def test_concurrent_publishers_give_one_gapless_order(tmp_path: Path) -> None:
    per_publisher = 60
    config = ServerConfig(data_dir=tmp_path, event_buffer_size=4096)
    async with companion(tmp_path, config=config) as server:
        bus = server.bus

        async def on_loop(universe: int) -> None:
            for i in range(per_publisher):
                bus.publish(EventType.DATASTORE_CHANGED, ds_changed(universe, f"n{i}"))
                await asyncio.sleep(0)

        def in_thread(universe: int) -> None:
            for i in range(per_publisher):
                bus.publish(EventType.DATASTORE_CHANGED, ds_changed(universe, f"n{i}"))

        async def consume(who: str) -> list[tuple[int, int, str]]:
            got: list[tuple[int, int, str]] = []
            cursor = 0
            while len(got) < per_publisher * 6:
                answer = batch(await poll(server, cursor, 10, who))
                got.extend(
                    (e.seq, e.payload["universe_id"], e.payload["datastore"]) for e in answer.events
                )
                cursor = answer.next_cursor
            return got

        consumers = [asyncio.create_task(consume(w)) for w in ("alice", "bob")]
        await asyncio.sleep(0.1)
        await asyncio.gather(
            *(on_loop(u) for u in (1, 2, 3)),
            *(asyncio.to_thread(in_thread, u) for u in (4, 5, 6)),
        )
        results = await asyncio.wait_for(asyncio.gather(*consumers), 20)
    assert results[0] == results[1], "every client sees the same order"
    got = results[0]
    assert [seq for seq, _, _ in got] == list(range(1, per_publisher * 6 + 1))
    for universe in range(1, 7):
        mine = [name for _, u, name in got if u == universe]
        assert mine == [f"n{i}" for i in range(per_publisher)], "each publisher's order holds"


async def test_many_waiters_wake_on_one_publish(server: Companion) -> None:
    waiters = [asyncio.create_task(poll(server, 0, 25, who)) for who in ("alice", "bob") * 20]
    await asyncio.sleep(0.3)
    assert not any(w.done() for w in waiters)
    server.bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, "x"))
    answers = await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert all([e.seq for e in batch(a).events] == [1] for a in answers)


async def test_shutdown_answers_pending_polls_at_once(tmp_path: Path) -> None:
    async with companion(tmp_path) as server:
        waiting = asyncio.create_task(poll(server, 0, 25))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await server.stop()
        answer = batch(await asyncio.wait_for(waiting, 10))
        assert time.monotonic() - started < 5
        assert answer.events == [] and answer.next_cursor == 0


def test_publish_takes_only_the_payload_model_of_its_type() -> None:
    bus = EventBus(4)
    with pytest.raises(TypeError, match="SessionLeftPayload"):
        bus.publish(EventType.SESSION_LEFT, ds_changed(1, "x"))
    with pytest.raises(TypeError, match="JobProgressPayload"):
        bus.publish(EventType.JOB_PROGRESS, ds_changed(1, "x"))
    assert bus.latest_seq == 0
    event = bus.publish(
        EventType.SESSION_LEFT,
        SessionLeftPayload(
            session_id="ses_1", display_name="alice", reason=SessionLeftReason.EXPIRED
        ),
    )
    assert event.seq == 1 and event.payload["reason"] == "expired"


def test_publish_takes_a_mapping_checked_like_the_wire() -> None:
    bus = EventBus(4)
    event = bus.publish(
        "entry.changed",
        {
            "universe_id": 5,
            "store_kind": "standard",
            "datastore": "coins",
            "scope": "global",
            "key": "player_1",
            "operation": "update",
            "state": "ACTIVE",
            "revision": None,
            "actor": "alice",
            "journal_id": 3,
        },
    )
    assert event.type == "entry.changed"
    assert event.payload == {
        "universe_id": 5,
        "store_kind": "standard",
        "datastore": "coins",
        "scope": "global",
        "key": "player_1",
        "operation": "update",
        "state": "ACTIVE",
        "actor": "alice",
        "journal_id": 3,
    }
    # Fields the payload model does not define are not passed on.
    dropped = bus.publish(
        "datastore.changed",
        {"universe_id": 5, "datastore": "coins", "state": "DELETED", "extra": "x"},
    )
    assert dropped.payload == {"universe_id": 5, "datastore": "coins", "state": "DELETED"}
    with pytest.raises(ValidationError):  # no "5" -> 5 coercion
        bus.publish("datastore.changed", {"universe_id": "5", "datastore": "c", "state": "ACTIVE"})
    with pytest.raises(ValueError, match="Unknown event type 'not-a-type'"):
        bus.publish("not-a-type", {})
    assert bus.latest_seq == 2


async def test_the_stream_uses_the_apps_instance_id(tmp_path: Path) -> None:
    def name_instance(app: web.Application) -> None:
        app[INSTANCE_ID] = "run-from-hello"

    async with companion(tmp_path, prepare=name_instance) as server:
        assert server.bus.instance_id == "run-from-hello"
        assert batch(await poll(server, None, 0)).instance_id == "run-from-hello"


# --------------------------------------------------------------------------- WebSocket


async def ws_text(ws: aiohttp.ClientWebSocketResponse) -> str:
    message = await asyncio.wait_for(ws.receive(), 10)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    text: str = message.data
    return text


async def ws_answer(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await ws_text(ws))
    return data


async def ws_batch(ws: aiohttp.ClientWebSocketResponse) -> EventBatch:
    return batch(parse_answer(await ws_text(ws)))


async def test_websocket_streams_the_same_events_as_long_poll(server: Companion) -> None:
    server.bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, "before"))
    async with server.http.ws_connect(
        server.ws_url("/api/v1/events/ws"), headers=server.auth()
    ) as ws:
        await ws.send_json({"cursor": 0})
        first = await ws_batch(ws)
        assert [e.seq for e in first.events] == [1]
        server.bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, "live-1"))
        server.bus.publish(EventType.DATASTORE_CHANGED, ds_changed(2, "live-2"))
        pushed: list[int] = []
        while len(pushed) < 2:
            pushed.extend(e.seq for e in (await ws_batch(ws)).events)
        assert pushed == [2, 3]
    polled = batch(await poll(server, 0, 0))
    assert first.events + [e for e in polled.events if e.seq > 1] == polled.events
    assert [e.payload["datastore"] for e in polled.events] == ["before", "live-1", "live-2"]


async def test_websocket_cursor_rules_match_long_poll(server: Companion) -> None:
    for i in range(20):
        server.bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, f"d{i}"))
    async with server.http.ws_connect(
        server.ws_url("/api/v1/events/ws"), headers=server.auth()
    ) as ws:
        await ws.send_json({"cursor": None})
        now = await ws_batch(ws)
        assert now.events == [] and now.next_cursor == 20
        await ws.send_json({"cursor": 2})  # evicted: the buffer holds 8
        resync = parse_answer(await ws_text(ws))
        assert isinstance(resync, EventResync) and resync.next_cursor == 20
        # The stream carries on from next_cursor after a resync.
        server.bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, "next"))
        after = await ws_batch(ws)
        assert [e.seq for e in after.events] == [21]


async def test_websocket_reports_bad_messages_and_keeps_going(server: Companion) -> None:
    async with server.http.ws_connect(
        server.ws_url("/api/v1/events/ws"), headers=server.auth()
    ) as ws:
        await ws.send_str('{"cursor": "soon"}')
        error = await ws_answer(ws)
        assert error["error"]["code"] == "BAD_REQUEST"
        assert "cursor" in error["error"]["message"]
        await ws.send_bytes(b"\x00")
        assert (await ws_answer(ws))["error"]["code"] == "BAD_REQUEST"
        await ws.send_json({"cursor": 0})
        server.bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, "x"))
        answer: dict[str, Any] = {"events": []}
        while not answer["events"]:
            answer = await ws_answer(ws)
        assert [e["seq"] for e in answer["events"]] == [1]


async def test_websocket_needs_a_token(server: Companion) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as failure:
        await server.http.ws_connect(server.ws_url("/api/v1/events/ws"))
    assert failure.value.status == 401


async def test_websocket_is_closed_on_shutdown(tmp_path: Path) -> None:
    async with companion(tmp_path) as server:
        ws = await server.http.ws_connect(server.ws_url("/api/v1/events/ws"), headers=server.auth())
        server.bus.publish(EventType.DATASTORE_CHANGED, ds_changed(1, "x"))
        await ws.send_json({"cursor": 0})
        await ws_answer(ws)  # subscribed; the pump now waits for the next event
        started = time.monotonic()
        await server.stop()
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert time.monotonic() - started < 5
        await ws.close()
