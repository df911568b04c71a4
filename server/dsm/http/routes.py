"""Every handler of the companion server's API, keyed by the route table's operation ids."""

from __future__ import annotations

from aiohttp import web

from shared_schema.registry import ROUTES_BY_ID

from . import (
    routes_backups,
    routes_data,
    routes_events,
    routes_index,
    routes_jobs,
    routes_memory,
    routes_meta,
    routes_metrics,
    routes_monitor,
    routes_ordered,
    routes_pairing,
    routes_sessions,
    routes_team,
)
from .binding import Handler, bind_routes

HANDLERS: dict[str, Handler] = {
    **routes_meta.HANDLERS,
    **routes_pairing.HANDLERS,
    **routes_sessions.HANDLERS,
    **routes_events.HANDLERS,
    **routes_metrics.HANDLERS,
    **routes_data.HANDLERS,
    **routes_ordered.HANDLERS,
    **routes_memory.HANDLERS,
    **routes_team.HANDLERS,
    **routes_monitor.HANDLERS,
    **routes_index.HANDLERS,
    **routes_jobs.HANDLERS,
    **routes_backups.HANDLERS,
}


def bind_all(app: web.Application) -> None:
    """Serve every route of the table; a route without a handler (or the reverse) is a bug."""
    missing = set(ROUTES_BY_ID) - set(HANDLERS)
    extra = set(HANDLERS) - set(ROUTES_BY_ID)
    if missing or extra:
        raise RuntimeError(f"route table and handlers differ: missing {missing}, extra {extra}")
    bind_routes(app, HANDLERS)
    routes_events.track_sockets(app)
