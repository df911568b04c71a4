"""Thin views over the search index, search and analytics services (`/api/v1/index`, ...)."""

from __future__ import annotations

from pydantic import BaseModel

from shared_schema.errors import ErrorCode

from ..services.errors import ServiceError
from .binding import Call, Handler


async def _not_built(call: Call) -> BaseModel:
    # The protocol is published first so the plugin can be built against it; the server side
    # lands in the next commits of the same branch.
    raise ServiceError(
        ErrorCode.NOT_FOUND, f"{call.route.operation_id} is not available in this server build."
    )


HANDLERS: dict[str, Handler] = {
    name: _not_built
    for name in (
        "index_status",
        "drop_index",
        "start_crawl",
        "start_history",
        "list_crawls",
        "get_crawl",
        "cancel_crawl",
        "search",
        "check_query",
        "analytics_schema",
        "analytics_distribution",
        "analytics_economy",
        "progression_plan",
        "analytics_progression",
        "analytics_anomalies",
        "sample_game_status",
        "load_sample_game",
    )
}
