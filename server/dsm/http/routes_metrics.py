"""`GET /api/v1/metrics` (Prometheus text, also at `/metrics` where scrapers look) and
`GET /api/v1/metrics/summary` (JSON for the plugin).

Both need a token like every other route: the counts reveal which data stores are in use.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from ..services.metrics import CONTENT_TYPE
from .appkeys import METRICS
from .binding import Call, Handler


async def metrics(call: Call) -> web.Response:
    return web.Response(body=call.app[METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE})


async def metrics_summary(call: Call) -> BaseModel:
    return call.app[METRICS].summary()


HANDLERS: dict[str, Handler] = {"metrics": metrics, "metrics_summary": metrics_summary}
