"""The app's stream registry and revocation watch (see services/streams and revocation)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from ..services.revocation import RevocationWatch
from ..services.streams import StreamRegistry
from .appkeys import STREAMS
from .auth import TOKEN_STORE
from .connections import connection_cap
from .routes_sessions import SESSIONS

__all__ = ["STREAMS", "lifecycle"]


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Needs the token store and sessions lifecycles first. Streams may take half the
    connections the server accepts, so ordinary requests always find room."""
    tokens = app[TOKEN_STORE]
    streams = StreamRegistry(
        total=max(1, connection_cap() // 2),
        is_active=tokens.is_active,
        version=tokens.data_version,
    )
    app[STREAMS] = streams
    watch = RevocationWatch(tokens, streams, app.get(SESSIONS))
    task = asyncio.create_task(watch.run(), name="dsm-revocation-watch")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
