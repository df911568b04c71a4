"""Live monitoring: the traffic time series and the feature availability panel."""

from __future__ import annotations

from pydantic import BaseModel

from ..services.traffic import budget_uses
from .appkeys import FEATURES, METRICS, SERVER_BACKEND
from .binding import Call, Handler


async def monitor_traffic(call: Call) -> BaseModel:
    metrics = call.app[METRICS]
    return metrics.traffic.series(
        call.query.window_seconds,
        call.query.bucket_seconds,
        budget=budget_uses(metrics.budget_snapshot()),
        backend=call.app[SERVER_BACKEND](),
    )


async def list_features(call: Call) -> BaseModel:
    return await call.app[FEATURES].check()


HANDLERS: dict[str, Handler] = {
    "monitor_traffic": monitor_traffic,
    "list_features": list_features,
}
