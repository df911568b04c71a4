"""create_app(config) -> the companion server's aiohttp application.

Middleware order matters: the guards reject foreign Hosts, browser Origins, wrong media types
and oversized bodies before anything else runs; errors are rendered in the one envelope; the
auth middleware then requires a token everywhere but hello and pairing.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from shared_schema import PROTOCOL_MAJOR, PROTOCOL_MINOR
from shared_schema.hello import Hello
from shared_schema.registry import openapi_document, schema_hash

from . import __version__
from .config import ServerConfig
from .http import (
    routes_data,
    routes_events,
    routes_memory,
    routes_metrics,
    routes_ordered,
    routes_pairing,
    routes_sessions,
    streams,
)
from .http.appkeys import CONFIG, INSTANCE_ID
from .http.auth import auth_middleware
from .http.errors import error_middleware
from .http.guards import (
    CLIENT_MAX_SIZE,
    BoundPort,
    body_deadline_middleware,
    guard_middleware,
)
from .http.routes_data import BROWSE, ENTRIES
from .http.routes_events import EVENTS
from .http.routes_memory import MEMORY
from .http.routes_metrics import METRICS
from .http.routes_ordered import ORDERED
from .http.routes_sessions import SERVER_BACKEND
from .opencloud.ratelimit import ClientBudget
from .services.browse import BrowseService
from .services.entries import EntryService
from .services.memory import MemoryService
from .services.metrics import MeteredRateLimiter
from .services.ordered import OrderedService
from .services.upstream import INTERACTIVE_BURST, Upstream
from .storage.cache import EntryCache
from .storage.crypto import RecordCipher
from .storage.journal import WriteJournal
from .storage.vault import ApiKeyRecord

UPSTREAM = web.AppKey("dsm.upstream", Upstream)
log = logging.getLogger("dsm.app")

CAPABILITIES = [
    "events.long_poll",
    "events.websocket",
    "entries.conditional_write",
    "entries.idempotency",
    "entries.revisions",
    "entries.diff",
    "entries.revert",
    "journal.undo",
    "ordered.read_write",
    "memory.read",
    "sessions",
    "metrics",
]

Announce = Callable[[str], None]


def _data_lifecycle(
    config: ServerConfig, keys: list[ApiKeyRecord], data_key: bytes
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def data_plane(app: web.Application) -> AsyncIterator[None]:
        metrics = app[METRICS]
        events = app[EVENTS]
        upstream = await Upstream.start(
            keys=keys,
            base_url=config.open_cloud_base_url,
            emulator_dir=config.data_dir / "emulator",
            emulator_universes=config.emulator_universes,
            emulator_limits=config.emulator_limits,
            reserve_share=config.reserve_share,
            on_call=metrics.on_call,
            limiter=MeteredRateLimiter(
                ClientBudget(reserve_share=config.reserve_share),
                metrics=metrics,
                burst=INTERACTIVE_BURST,
            ),
        )
        events.backend = upstream.backend
        cipher = RecordCipher(data_key)
        cache = EntryCache(config.data_dir, cipher)
        journal = WriteJournal(config.data_dir, cipher)
        app[UPSTREAM] = upstream
        app[ENTRIES] = EntryService(upstream, cache, journal, events, metrics)
        settled = await app[ENTRIES].reconcile_pending()
        if any(settled.values()):
            log.info("journal writes left open by the last run, settled by re-reading: %s", settled)
        app[BROWSE] = BrowseService(upstream, cache, events)
        app[ORDERED] = OrderedService(upstream, journal, events)
        app[MEMORY] = MemoryService(upstream)
        app[SERVER_BACKEND] = lambda: upstream.backend
        try:
            yield
        finally:
            await upstream.close()
            cache.close()
            journal.close()

    return data_plane


async def hello(request: web.Request) -> web.Response:
    app = request.app
    body = Hello(
        server_version=__version__,
        protocol_major=PROTOCOL_MAJOR,
        protocol_minor=PROTOCOL_MINOR,
        capabilities=CAPABILITIES,
        schema_hash=schema_hash(),
        instance_id=app[INSTANCE_ID],
        backend=app[UPSTREAM].backend,
        pairing="required",
    )
    return web.Response(text=body.model_dump_json(), content_type="application/json")


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(__version__))


def create_app(
    config: ServerConfig,
    *,
    keys: list[ApiKeyRecord],
    data_key: bytes,
    port: BoundPort,
    announce: Announce | None = None,
) -> web.Application:
    """The server app; `keys` and `data_key` come from the unlocked vault."""
    app = web.Application(
        middlewares=[
            error_middleware,
            guard_middleware(port),
            auth_middleware,
            body_deadline_middleware,
        ],
        client_max_size=CLIENT_MAX_SIZE,
    )
    app[CONFIG] = config
    app[INSTANCE_ID] = secrets.token_hex(8)
    if announce is not None:
        app.cleanup_ctx.append(
            routes_pairing.lifecycle(config, role=config.pairing_role, announce=announce)
        )
    else:
        app.cleanup_ctx.append(routes_pairing.lifecycle(config, role=config.pairing_role))
    app.cleanup_ctx.append(routes_events.lifecycle)
    app.cleanup_ctx.append(routes_metrics.lifecycle)
    app.cleanup_ctx.append(routes_sessions.lifecycle)
    app.cleanup_ctx.append(streams.lifecycle)
    app.cleanup_ctx.append(_data_lifecycle(config, keys, data_key))
    app.router.add_get("/api/v1/hello", hello)
    app.router.add_get("/api/v1/openapi.json", openapi)
    routes_pairing.setup(app)
    routes_events.setup(app)
    routes_sessions.setup(app)
    routes_metrics.setup(app)
    routes_data.setup(app)
    routes_ordered.setup(app)
    routes_memory.setup(app)
    return app


def default_data_dir() -> Path:
    from .paths import data_dir

    return data_dir()
