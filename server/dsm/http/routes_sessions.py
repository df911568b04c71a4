"""Team presence routes: open, keep alive, close and list Studio sessions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from aiohttp import web
from pydantic import BaseModel

from shared_schema.common import Backend, Role, Source, SourceKind
from shared_schema.sessions import SessionList, SessionOpenRequest

from ..services.sessions import SessionRegistry
from .appkeys import CONFIG
from .auth import require_role
from .routes_events import EVENTS, STREAM_HOLD

__all__ = ["SERVER_BACKEND", "SESSIONS", "lifecycle", "setup"]

SESSIONS: web.AppKey[SessionRegistry] = web.AppKey("dsm.sessions", SessionRegistry)
# Which Open Cloud backend this server talks to now; every data response names it.
SERVER_BACKEND: web.AppKey[Callable[[], Backend]] = web.AppKey("dsm.server_backend")


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Needs the events lifecycle to have run first (sessions publish joined/left)."""
    registry = SessionRegistry(app[CONFIG].session_ttl_seconds, bus=app[EVENTS])
    app[SESSIONS] = registry
    app[STREAM_HOLD] = registry.streaming
    sweeper = asyncio.create_task(registry.run_sweeper(), name="dsm-session-sweeper")
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/sessions", open_session)
    app.router.add_get("/api/v1/sessions", list_sessions)
    app.router.add_post("/api/v1/sessions/{session_id}/heartbeat", heartbeat)
    app.router.add_delete("/api/v1/sessions/{session_id}", close_session)


def _json(model: BaseModel) -> web.Response:
    response = web.Response(
        text=model.model_dump_json(exclude_none=True), content_type="application/json"
    )
    response.headers["Cache-Control"] = "no-store"
    return response


async def open_session(request: web.Request) -> web.Response:
    caller = require_role(request, Role.VIEWER)
    body = SessionOpenRequest.model_validate_json(await request.read())
    info = request.config_dict[SESSIONS].open(
        caller,
        studio_user_id=body.studio_user_id,
        place_id=body.place_id,
        client_name=body.client_name,
    )
    return _json(info)


async def heartbeat(request: web.Request) -> web.Response:
    caller = require_role(request, Role.VIEWER)
    info = request.config_dict[SESSIONS].heartbeat(request.match_info["session_id"], caller)
    return _json(info)


async def close_session(request: web.Request) -> web.Response:
    caller = require_role(request, Role.VIEWER)
    request.config_dict[SESSIONS].close(request.match_info["session_id"], caller)
    return web.Response(status=204)


async def list_sessions(request: web.Request) -> web.Response:
    require_role(request, Role.VIEWER)
    sessions = request.config_dict[SESSIONS].list()
    # Presence is this server's own real-time state, read just now: LIVE, not a cached copy.
    source = Source(
        kind=SourceKind.LIVE,
        backend=request.config_dict[SERVER_BACKEND](),
        fetched_at=datetime.now(UTC),
    )
    return _json(SessionList(sessions=sessions, source=source))
