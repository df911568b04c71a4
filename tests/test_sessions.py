"""Team sessions: open, heartbeat, expiry (injected clock), ownership, joined/left events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dsm.app import event_stream, sessions
from dsm.config import ServerConfig
from dsm.emulator.clock import ManualClock
from dsm.http import routes_events, routes_sessions
from dsm.http.appkeys import CONFIG, EVENTS, SERVER_BACKEND, SESSIONS
from dsm.services.errors import ServiceError
from dsm.services.events import EventBus
from dsm.services.sessions import MAX_SESSIONS_PER_TOKEN, SessionRegistry
from dsm.services.tokens import Principal
from shared_schema.common import Backend, Role
from shared_schema.errors import ErrorCode
from shared_schema.events import (
    Event,
    EventBatch,
    SessionJoinedPayload,
    SessionLeftPayload,
    SessionLeftReason,
)
from shared_schema.identity import make_person
from shared_schema.sessions import SessionInfo, SessionList, SessionOpened

from .test_events import Companion, batch, companion, poll, serving

T0 = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
ALICE = Principal("a" * 16, "alice", Role.VIEWER)
BOB = Principal("b" * 16, "bob", Role.EDITOR)


def left(event: Event) -> SessionLeftPayload:
    assert event.type == "session.left"
    return SessionLeftPayload.model_validate_json(json.dumps(event.payload))


def joined(event: Event) -> SessionInfo:
    assert event.type == "session.joined"
    return SessionJoinedPayload.model_validate_json(json.dumps(event.payload)).session


def events_after(bus: EventBus, cursor: int) -> list[Event]:
    answer = bus.check(cursor)
    assert isinstance(answer, EventBatch)
    return answer.events


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def bus(clock: ManualClock) -> EventBus:
    return EventBus(256, clock=clock.now)


@pytest.fixture
def registry(bus: EventBus, clock: ManualClock) -> SessionRegistry:
    return SessionRegistry(30, bus=bus, clock=clock.now)


def open_for(registry: SessionRegistry, who: Principal, label: str = "Studio") -> SessionInfo:
    return registry.open(who, studio_user_id=1234, place_id=0, client_name=label)


def code_of(failure: pytest.ExceptionInfo[ServiceError]) -> ErrorCode:
    return failure.value.code


# --------------------------------------------------------------------------- the service


def test_open_heartbeat_and_expiry_publish_joined_and_left(
    registry: SessionRegistry, bus: EventBus, clock: ManualClock
) -> None:
    info = open_for(registry, ALICE, "Alice's laptop")
    assert info.display_name == "alice" and info.token_id == ALICE.token_id
    assert info.client_name == "Alice's laptop"
    assert info.studio_user_id == 1234 and info.place_id == 0
    assert info.connected_at == info.last_seen_at == T0
    assert info.expires_at == T0 + timedelta(seconds=30)
    assert info.heartbeat_interval_seconds == 10
    [event] = events_after(bus, 0)
    assert joined(event) == info

    clock.advance(seconds=25)
    beat = registry.heartbeat(info.session_id, ALICE)
    assert beat.last_seen_at == T0 + timedelta(seconds=25)
    assert beat.expires_at == T0 + timedelta(seconds=55)
    assert beat.connected_at == T0

    clock.advance(seconds=29)
    assert [s.session_id for s in registry.list()] == [info.session_id]
    clock.advance(seconds=1)  # 30 s after the last heartbeat
    assert registry.list() == []
    [gone] = events_after(bus, 1)
    assert left(gone) == SessionLeftPayload(
        session_id=info.session_id,
        display_name="alice",
        reason=SessionLeftReason.EXPIRED,
        person=make_person(1234, None, "alice"),
    )
    with pytest.raises(ServiceError) as failure:
        registry.heartbeat(info.session_id, ALICE)
    assert code_of(failure) is ErrorCode.NOT_FOUND
    assert "open a new session" in failure.value.message


def test_only_the_owning_token_may_heartbeat_or_close(
    registry: SessionRegistry, bus: EventBus
) -> None:
    info = open_for(registry, ALICE)
    for action in (registry.heartbeat, registry.close):
        with pytest.raises(ServiceError) as failure:
            action(info.session_id, BOB)
        assert code_of(failure) is ErrorCode.FORBIDDEN
        assert "another paired plugin" in failure.value.message
    assert [s.session_id for s in registry.list()] == [info.session_id]
    with pytest.raises(ServiceError) as failure:
        registry.heartbeat("ses_unknown", ALICE)
    assert code_of(failure) is ErrorCode.NOT_FOUND

    registry.close(info.session_id, ALICE)
    assert registry.list() == []
    assert left(events_after(bus, 1)[0]).reason == "closed"
    with pytest.raises(ServiceError) as failure:
        registry.close(info.session_id, ALICE)
    assert code_of(failure) is ErrorCode.NOT_FOUND


def test_list_shows_only_live_sessions(registry: SessionRegistry, clock: ManualClock) -> None:
    a = open_for(registry, ALICE)
    clock.advance(seconds=5)
    b = open_for(registry, BOB)
    assert [s.session_id for s in registry.list()] == [a.session_id, b.session_id]
    clock.advance(seconds=20)
    registry.heartbeat(a.session_id, ALICE)
    clock.advance(seconds=10)  # b: 30 s without a sign of life; a: 10 s
    assert [s.session_id for s in registry.list()] == [a.session_id]


def test_an_open_event_stream_keeps_a_token_alive(
    registry: SessionRegistry, clock: ManualClock
) -> None:
    info = open_for(registry, ALICE)
    other = open_for(registry, BOB)
    with registry.streaming(ALICE.token_id):
        clock.advance(seconds=100)
        assert [s.session_id for s in registry.list()] == [info.session_id]
    # Closing the stream counts as the last sign of life.
    clock.advance(seconds=29)
    assert [s.session_id for s in registry.list()] == [info.session_id]
    clock.advance(seconds=1)
    assert registry.list() == []
    assert other.session_id not in [s.session_id for s in registry.list()]


def test_touch_token_extends_but_does_not_revive(
    registry: SessionRegistry, clock: ManualClock
) -> None:
    info = open_for(registry, ALICE)
    clock.advance(seconds=20)
    registry.touch_token(ALICE.token_id)
    clock.advance(seconds=20)
    assert registry.heartbeat(info.session_id, ALICE).last_seen_at == T0 + timedelta(seconds=40)
    clock.advance(seconds=31)
    registry.touch_token(ALICE.token_id)  # too late: the session has already ended
    assert registry.list() == []


def test_sessions_per_token_are_bounded(
    registry: SessionRegistry, bus: EventBus, clock: ManualClock
) -> None:
    opened = []
    for i in range(MAX_SESSIONS_PER_TOKEN + 3):
        opened.append(open_for(registry, ALICE, f"reload {i}"))
        clock.advance(seconds=0.5)
    bob = open_for(registry, BOB)
    live = registry.list()
    mine = [s.session_id for s in live if s.token_id == ALICE.token_id]
    assert mine == [s.session_id for s in opened[3:]]
    assert bob.session_id in [s.session_id for s in live]
    gone = [left(e) for e in events_after(bus, 0) if e.type == "session.left"]
    assert [(g.session_id, g.reason) for g in gone] == [
        (s.session_id, "closed") for s in opened[:3]
    ]


def test_revoking_a_token_ends_its_sessions(registry: SessionRegistry, bus: EventBus) -> None:
    open_for(registry, ALICE)
    open_for(registry, ALICE)
    kept = open_for(registry, BOB)
    cursor = bus.latest_seq
    assert registry.end_token_sessions(ALICE.token_id) == 2
    assert [s.session_id for s in registry.list()] == [kept.session_id]
    assert [left(e).reason for e in events_after(bus, cursor)] == ["revoked", "revoked"]


async def test_the_sweeper_announces_expiry_without_any_read(
    registry: SessionRegistry, bus: EventBus, clock: ManualClock
) -> None:
    info = open_for(registry, ALICE)
    sweeper = asyncio.create_task(registry.run_sweeper(interval=0.01))
    try:
        clock.advance(seconds=31)
        answer = await bus.wait(1, 5)
    finally:
        sweeper.cancel()
    assert isinstance(answer, EventBatch)
    [event] = answer.events
    assert left(event).session_id == info.session_id and left(event).reason == "expired"


# --------------------------------------------------------------------------- over HTTP


def sessions_with(clock: ManualClock) -> Callable[[web.Application], AsyncIterator[None]]:
    """The sessions lifecycle, but with a clock the test moves."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        registry = SessionRegistry(
            app[CONFIG].session_ttl_seconds, bus=app[EVENTS], clock=clock.now
        )
        app[SESSIONS] = registry
        yield

    return context


def emulator_backend(app: web.Application) -> None:
    app[SERVER_BACKEND] = lambda: Backend.EMULATOR


SETUPS = (serving({**routes_events.HANDLERS, **routes_sessions.HANDLERS}),)


@pytest.fixture
async def server(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Companion]:
    config = ServerConfig(data_dir=tmp_path, session_ttl_seconds=30)
    async with companion(
        tmp_path,
        config=config,
        contexts=(event_stream, sessions_with(clock)),
        setups=SETUPS,
        prepare=emulator_backend,
    ) as running:
        yield running


async def call(
    server: Companion, method: str, path: str, who: str = "alice", body: Any = None
) -> tuple[int, str]:
    # Without a body, send no Content-Type at all (as an empty HttpService request does).
    options: dict[str, Any] = (
        {"json": body} if body is not None else {"skip_auto_headers": ["Content-Type"]}
    )
    async with server.http.request(
        method, server.url(path), headers=server.auth(who), **options
    ) as resp:
        return resp.status, await resp.text()


async def open_http(server: Companion, who: str, **fields: Any) -> SessionInfo:
    body = {"client_name": f"{who}'s Studio", "studio_user_id": 42, "place_id": 9, **fields}
    status, text = await call(server, "POST", "/api/v1/sessions", who, body)
    assert status == 200, text
    return SessionInfo.model_validate_json(text)


async def listed(server: Companion, who: str = "alice") -> SessionList:
    status, text = await call(server, "GET", "/api/v1/sessions", who)
    assert status == 200, text
    return SessionList.model_validate_json(text)


async def test_sessions_over_http(server: Companion, clock: ManualClock) -> None:
    alice = await open_http(server, "alice")
    assert alice.display_name == "alice" and alice.client_name == "alice's Studio"
    assert alice.token_id == server.tokens["alice"].split("_")[1]
    assert alice.heartbeat_interval_seconds == 10
    clock.advance(seconds=10)
    bob = await open_http(server, "bob")

    sessions = await listed(server, "carol")
    assert [s.session_id for s in sessions.sessions] == [alice.session_id, bob.session_id]
    assert sessions.source.kind == "LIVE" and sessions.source.backend == "EMULATOR"

    # Bob's token cannot keep Alice's session alive or close it.
    for method, path in (
        ("POST", f"/api/v1/sessions/{alice.session_id}/heartbeat"),
        ("DELETE", f"/api/v1/sessions/{alice.session_id}"),
    ):
        status, text = await call(server, method, path, "bob")
        assert status == 403, text
        assert json.loads(text)["error"]["code"] == "FORBIDDEN"

    clock.advance(seconds=15)
    status, text = await call(server, "POST", f"/api/v1/sessions/{bob.session_id}/heartbeat", "bob")
    assert status == 200, text
    assert SessionInfo.model_validate_json(text).expires_at == clock.now() + timedelta(seconds=30)

    clock.advance(seconds=5)  # alice: 30 s without a heartbeat
    assert [s.session_id for s in (await listed(server)).sessions] == [bob.session_id]
    status, text = await call(server, "POST", f"/api/v1/sessions/{alice.session_id}/heartbeat")
    assert status == 404 and json.loads(text)["error"]["code"] == "NOT_FOUND"

    status, text = await call(server, "DELETE", f"/api/v1/sessions/{bob.session_id}", "bob")
    assert status == 204, text
    assert (await listed(server)).sessions == []

    answer = batch(await poll(server, 0, 0))
    assert [e.type for e in answer.events] == [
        "session.joined",
        "session.joined",
        "session.left",
        "session.left",
    ]
    assert joined(answer.events[0]) == alice and joined(answer.events[1]) == bob
    assert [(left(e).display_name, left(e).reason) for e in answer.events[2:]] == [
        ("alice", "expired"),
        ("bob", "closed"),
    ]


async def test_an_opened_session_says_where_its_event_stream_starts(server: Companion) -> None:
    """The stream starts right after the session's own join: a change made before the plugin's
    first poll lands still reaches it (a "from now" first poll would have missed it)."""
    status, text = await call(
        server, "POST", "/api/v1/sessions", "alice", {"client_name": "alice's Studio"}
    )
    assert status == 200, text
    alice = SessionOpened.model_validate_json(text)
    assert alice.event_cursor == 1  # alice's own session.joined
    bob = await open_http(server, "bob")
    answer = batch(await poll(server, alice.event_cursor, 0))
    assert [joined(e).session_id for e in answer.events] == [bob.session_id]


@pytest.mark.parametrize(
    "extra",
    [{"display_name": "the boss"}, {"token_id": "ffffffffffffffff"}, {"role": "admin"}],
)
async def test_identity_cannot_be_claimed_in_the_body(server: Companion, extra: Any) -> None:
    body = {"client_name": "Studio", **extra}
    status, text = await call(server, "POST", "/api/v1/sessions", "alice", body)
    assert status == 400, text
    assert json.loads(text)["error"]["code"] == "BAD_REQUEST"
    assert (await listed(server)).sessions == []


async def test_open_session_validates_its_body(server: Companion) -> None:
    for body in ({}, {"client_name": ""}, {"client_name": "S", "studio_user_id": "42"}):
        status, text = await call(server, "POST", "/api/v1/sessions", "alice", body)
        assert status == 400, (body, text)
    minimal = await open_http(server, "alice", studio_user_id=None, place_id=None)
    assert minimal.studio_user_id is None and minimal.place_id is None


async def test_sessions_need_a_token(server: Companion) -> None:
    async with server.http.get(server.url("/api/v1/sessions")) as resp:
        assert resp.status == 401


async def test_real_lifecycle_expires_quiet_sessions_and_keeps_streaming_ones(
    tmp_path: Path,
) -> None:
    """The production lifecycle with a short TTL and the wall clock: the sweeper ends a quiet
    session on its own, while a token with an open long-poll stays present."""
    config = ServerConfig(data_dir=tmp_path, session_ttl_seconds=0.6)
    async with companion(
        tmp_path,
        config=config,
        contexts=(event_stream, sessions),
        setups=SETUPS,
        prepare=emulator_backend,
    ) as server:
        quiet = await open_http(server, "alice")
        present = await open_http(server, "bob")
        cursor = server.bus.latest_seq
        # Bob keeps his event socket open (as the plugin does) and sends no heartbeat;
        # Alice sends nothing at all.
        async with server.http.ws_connect(
            server.ws_url("/api/v1/events/ws"), headers=server.auth("bob")
        ) as bob_socket:
            await bob_socket.send_json({"cursor": None})
            await bob_socket.receive(timeout=5)
            answer = batch(await asyncio.wait_for(poll(server, cursor, 5, "carol"), 10))
            [event] = answer.events
            assert left(event).session_id == quiet.session_id
            assert left(event).reason == "expired"
            await asyncio.sleep(1.0)  # well past the TTL for Bob too
            live = (await listed(server, "carol")).sessions
            assert [s.session_id for s in live] == [present.session_id]
        # Once the socket is gone, Bob's session ends after the TTL as well.
        answer = batch(await asyncio.wait_for(poll(server, cursor + 1, 5, "carol"), 10))
        assert [(left(e).session_id, left(e).reason) for e in answer.events] == [
            (present.session_id, "expired")
        ]
