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
from collections.abc import Callable
from contextlib import AbstractContextManager

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import Field, ValidationError

from shared_schema.base import RequestBody
from shared_schema.constraints import NonNegativeInt
from shared_schema.errors import ErrorCode
from shared_schema.events import EventBatch, EventResync

from ..services.errors import ServiceError
from ..services.events import EventBus
from ..services.streams import REVOKED_MESSAGE, Stream
from .appkeys import EVENT_SOCKETS, EVENTS, SESSIONS, STREAMS, EventSockets
from .binding import Call, Handler
from .errors import error_response, validation_message

__all__ = [
    "HANDLERS",
    "WS_IDLE_SECONDS",
    "WS_PING_SECONDS",
    "WsSubscribe",
    "track_sockets",
]

WS_IDLE_SECONDS = 20.0
WS_PING_SECONDS = 30.0


class WsSubscribe(RequestBody):
    """The one message a client sends on /events/ws."""

    cursor: NonNegativeInt | None = Field(
        description="next_cursor of the last batch received; null to start from now."
    )


def track_sockets(app: web.Application) -> None:
    """Keep the open sockets, and close them (and answer the long-polls) at shutdown."""
    app[EVENT_SOCKETS] = EventSockets()
    app.on_shutdown.append(_on_shutdown)


async def _on_shutdown(app: web.Application) -> None:
    # Runs before aiohttp waits for in-flight handlers: answer the long-polls and close the
    # sockets now instead of holding shutdown for up to a whole poll.
    bus = app.get(EVENTS)
    if bus is not None:
        bus.close()
    for ws in list(app[EVENT_SOCKETS].open):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"The server is shutting down.")


def _hold(call: Call) -> AbstractContextManager[None]:
    # While a token's event stream is open its sessions count as alive (stream = liveness).
    sessions = call.app.get(SESSIONS)
    return sessions.streaming(call.caller.token_id) if sessions else contextlib.nullcontext()


def _slot(call: Call) -> AbstractContextManager[Stream | None]:
    # Counted per token and ended when the token is revoked (apps without it: unbounded).
    registry = call.app.get(STREAMS)
    if registry is None:
        return contextlib.nullcontext()
    return registry.open(call.caller.token_id)


async def poll_events(call: Call) -> EventBatch | EventResync:
    with _slot(call) as slot, _hold(call):
        wait = call.app[EVENTS].wait(call.query.cursor, call.query.timeout)
        answer = await (slot.until_revoked(wait) if slot is not None else wait)
        if slot is not None and not slot.confirm():
            raise ServiceError(ErrorCode.UNAUTHENTICATED, REVOKED_MESSAGE)
    return answer


async def events_socket(call: Call) -> web.WebSocketResponse:
    # The slot is taken before the handshake, so a refusal is an HTTP answer in the envelope.
    with _slot(call) as slot:
        ws = web.WebSocketResponse(heartbeat=WS_PING_SECONDS)
        await ws.prepare(call.request)
        sockets = call.app.get(EVENT_SOCKETS, EventSockets()).open
        sockets.add(ws)
        stream = _SocketStream(ws, call.app[EVENTS], slot.confirm if slot is not None else None)
        if slot is not None:
            slot.on_revoke(stream.revoke)
        try:
            with _hold(call):
                await stream.serve()
        finally:
            sockets.discard(ws)
            await stream.stop()
    return ws


HANDLERS: dict[str, Handler] = {"poll_events": poll_events, "events_socket": events_socket}


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
