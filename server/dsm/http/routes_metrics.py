"""`GET /metrics` (Prometheus text) and `GET /api/v1/metrics/summary` (JSON for the plugin).

Both need a token like every other route: the counts reveal which data stores are in use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from shared_schema.common import Role

from ..services.metrics import CONTENT_TYPE, Metrics
from .auth import require_role
from .routes_events import EVENTS

__all__ = ["METRICS", "lifecycle", "setup"]

METRICS: web.AppKey[Metrics] = web.AppKey("dsm.metrics", Metrics)


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Needs the events lifecycle first: throttle.changed goes on the stream, and the summary
    names the same per-start instance id as the events."""
    bus = app[EVENTS]
    metrics = Metrics(instance_id=bus.instance_id, bus=bus)
    app[METRICS] = metrics
    try:
        yield
    finally:
        metrics.close()


def setup(app: web.Application) -> None:
    # /metrics is where Prometheus scrapers look; /api/v1/metrics is the protocol's spelling.
    app.router.add_get("/metrics", prometheus_text)
    app.router.add_get("/api/v1/metrics", prometheus_text)
    app.router.add_get("/api/v1/metrics/summary", summary)


async def prometheus_text(request: web.Request) -> web.Response:
    require_role(request, Role.VIEWER)
    body = request.config_dict[METRICS].exposition()
    return web.Response(
        body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"}
    )


async def summary(request: web.Request) -> web.Response:
    require_role(request, Role.VIEWER)
    result = request.config_dict[METRICS].summary()
    response = web.Response(
        text=result.model_dump_json(exclude_none=True), content_type="application/json"
    )
    response.headers["Cache-Control"] = "no-store"
    return response
