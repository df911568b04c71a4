"""`GET /api/v1/events` (long-poll) and `GET /api/v1/events/ws` (WebSocket), one stream.

Both answer the same EventBatch / EventResync messages with the same cursor rules, so the
plugin keeps one interface and can fall back from the socket to long-polling at any time.

WebSocket protocol: the client sends `{"cursor": <next_cursor> | null}` (again whenever it wants
to restart from another cursor); the server then pushes every batch as a text frame, an empty
batch after WS_IDLE_SECONDS without events (an application-level keepalive), and WebSocket
pings every WS_PING_SECONDS. A malformed message is answered with the usual error envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import BaseModel, Field, ValidationError

from shared_schema.base import RequestBody
from shared_schema.common import Role
from shared_schema.constraints import NonNegativeInt
from shared_schema.errors import ErrorCode
from shared_schema.events import EventBatch, EventResync, EventsQuery

from ..services.errors import ServiceError
from ..services.events import EventBus
from ..services.streams import REVOKED_MESSAGE, Stream
from .appkeys import CONFIG, INSTANCE_ID, STREAMS
from .auth import require_role
from .errors import error_response, validation_message

__all__ = [
    "EVENTS",
    "MAX_POLL_SECONDS",
    "STREAM_HOLD",
    "WS_IDLE_SECONDS",
    "WS_PING_SECONDS",
    "WsSubscribe",
    "lifecycle",
    "setup",
]

EVENTS: web.AppKey[EventBus] = web.AppKey("dsm.events", EventBus)
# Set by the sessions service: held while a token's event stream is open (stream = liveness).
StreamHold = Callable[[str], AbstractContextManager[None]]
STREAM_HOLD: web.AppKey[StreamHold] = web.AppKey("dsm.event_stream_hold")

_SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("dsm.event_sockets")

# The bounds of EventsQuery.timeout (shared_schema): longer polls risk Studio's HttpService
# request timeout. Out-of-range values are clamped rather than refused.
MAX_POLL_SECONDS = 25.0
WS_IDLE_SECONDS = 20.0
WS_PING_SECONDS = 30.0


class WsSubscribe(RequestBody):
    """The one message a client sends on /events/ws."""

    cursor: NonNegativeInt | None = Field(
        description="next_cursor of the last batch received; null to start from now."
    )


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    # The per-start id from hello, when the app has one, so the plugin sees one id everywhere.
    bus = EventBus(app[CONFIG].event_buffer_size, instance_id=app.get(INSTANCE_ID))
    app[EVENTS] = bus
    try:
        yield
    finally:
        bus.close()


def setup(app: web.Application) -> None:
    app[_SOCKETS] = weakref.WeakSet()
    app.router.add_get("/api/v1/events", poll_events)
    app.router.add_get("/api/v1/events/ws", events_socket)
    app.on_shutdown.append(_on_shutdown)


async def _on_shutdown(app: web.Application) -> None:
    # Runs before aiohttp waits for in-flight handlers: answer the long-polls and close the
    # sockets now instead of holding shutdown for up to MAX_POLL_SECONDS.
    bus = app.get(EVENTS)
    if bus is not None:
        bus.close()
    sockets = app[_SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"The server is shutting down.")


def _json(model: BaseModel) -> web.Response:
    response = web.Response(
        text=model.model_dump_json(exclude_none=True), content_type="application/json"
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _query(request: web.Request) -> EventsQuery:
    params: dict[str, str | float] = dict(request.query)
    raw = params.get("timeout")
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            seconds = float(raw)
            if seconds == seconds:  # NaN is left for validation to refuse
                params["timeout"] = min(max(seconds, 0.0), MAX_POLL_SECONDS)
    return EventsQuery.model_validate(params)


def _hold(request: web.Request, token_id: str) -> AbstractContextManager[None]:
    hold = request.config_dict.get(STREAM_HOLD)
    return hold(token_id) if hold is not None else contextlib.nullcontext()


def _slot(request: web.Request, token_id: str) -> AbstractContextManager[Stream | None]:
    # Counted per token and ended when the token is revoked (apps without it: unbounded).
    registry = request.config_dict.get(STREAMS)
    return registry.open(token_id) if registry is not None else contextlib.nullcontext()


async def poll_events(request: web.Request) -> web.Response:
    caller = require_role(request, Role.VIEWER)
    query = _query(request)
    bus = request.config_dict[EVENTS]
    with _slot(request, caller.token_id) as slot, _hold(request, caller.token_id):
        wait = bus.wait(query.cursor, query.timeout)
        answer = await (slot.until_revoked(wait) if slot is not None else wait)
        if slot is not None and not slot.confirm():
            raise ServiceError(ErrorCode.UNAUTHENTICATED, REVOKED_MESSAGE)
    return _json(answer)


async def events_socket(request: web.Request) -> web.WebSocketResponse:
    caller = require_role(request, Role.VIEWER)
    bus = request.config_dict[EVENTS]
    # The slot is taken before the handshake, so a refusal is an HTTP answer in the envelope.
    with _slot(request, caller.token_id) as slot:
        ws = web.WebSocketResponse(heartbeat=WS_PING_SECONDS)
        await ws.prepare(request)
        request.config_dict[_SOCKETS].add(ws)
        stream = _SocketStream(ws, bus, slot.confirm if slot is not None else None)
        if slot is not None:
            slot.on_revoke(stream.revoke)
        try:
            with _hold(request, caller.token_id):
                await stream.serve()
        finally:
            await stream.stop()
    return ws


class _SocketStream:
    """One socket: a reader for subscribe messages and a pump that pushes batches."""

    def __init__(
        self, ws: web.WebSocketResponse, bus: EventBus, confirm: Callable[[], bool] | None = None
    ) -> None:
        self._ws = ws
        self._bus = bus
        self._confirm = confirm  # False once the token is revoked (and the socket closing)
        self._send_lock = asyncio.Lock()
        self._pump: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[bool] | None = None

    async def serve(self) -> None:
        async for message in self._ws:
            if message.type is WSMsgType.TEXT:
                await self._on_text(message.data)
            elif message.type is WSMsgType.BINARY:
                await self._send_error(
                    ServiceError(
                        ErrorCode.BAD_REQUEST,
                        'Send text frames holding JSON such as {"cursor": 0}.',
                    )
                )

    async def stop(self) -> None:
        await self._stop_pump()
        if not self._ws.closed:
            await self._ws.close()

    def revoke(self) -> None:
        """The token was revoked: close now (policy violation), the reader loop then ends."""
        self._closing = asyncio.ensure_future(
            self._ws.close(code=WSCloseCode.POLICY_VIOLATION, message=REVOKED_MESSAGE.encode())
        )

    async def _on_text(self, data: str) -> None:
        try:
            subscribe = WsSubscribe.model_validate_json(data)
        except ValidationError as exc:
            message, details = validation_message(exc)
            await self._send_error(ServiceError(ErrorCode.BAD_REQUEST, message, details=details))
            return
        # A new cursor replaces the running subscription, so batches never interleave.
        await self._stop_pump()
        self._pump = asyncio.create_task(self._run_pump(subscribe.cursor))

    async def _run_pump(self, cursor: int | None) -> None:
        while not self._ws.closed:
            answer: EventBatch | EventResync = await self._bus.wait(cursor, WS_IDLE_SECONDS)
            if self._bus.closed:
                await self._ws.close(
                    code=WSCloseCode.GOING_AWAY, message=b"The server is shutting down."
                )
                return
            if self._confirm is not None and not self._confirm():
                return  # revoked: the close is already on its way
            try:
                await self._send(answer.model_dump_json(exclude_none=True))
            except ConnectionResetError:
                return  # the peer is gone; the reader loop ends on its own
            cursor = answer.next_cursor

    async def _stop_pump(self) -> None:
        pump, self._pump = self._pump, None
        if pump is None:
            return
        pump.cancel()
        try:
            await pump
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves, not just the pump

    async def _send_error(self, error: ServiceError) -> None:
        await self._send(error_response(error).text or "")

    async def _send(self, text: str) -> None:
        async with self._send_lock:
            if not self._ws.closed:
                await self._ws.send_str(text)
