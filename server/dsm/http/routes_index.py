"""Thin views over the search index, search, analytics and sample game services."""

from __future__ import annotations

from pydantic import BaseModel

from .appkeys import INDEX, SAMPLE_GAME
from .binding import Call, Handler


async def index_status(call: Call) -> BaseModel:
    return await call.app[INDEX].status(call.query.universe_id)


async def drop_index(call: Call) -> BaseModel:
    return await call.app[INDEX].drop()


async def search(call: Call) -> BaseModel:
    return await call.app[INDEX].search(call.body)


async def check_query(call: Call) -> BaseModel:
    return await call.app[INDEX].check(call.body.query)


async def analytics_schema(call: Call) -> BaseModel:
    return await call.app[INDEX].schema(call.body)


async def analytics_distribution(call: Call) -> BaseModel:
    return await call.app[INDEX].distribution(call.body)


async def analytics_economy(call: Call) -> BaseModel:
    return await call.app[INDEX].economy(call.body)


async def analytics_progression(call: Call) -> BaseModel:
    return await call.app[INDEX].progression(call.body)


async def analytics_anomalies(call: Call) -> BaseModel:
    return await call.app[INDEX].anomalies(call.body)


async def sample_game_status(call: Call) -> BaseModel:
    return call.app[SAMPLE_GAME].status()


async def load_sample_game(call: Call) -> BaseModel:
    return await call.app[SAMPLE_GAME].load(call.body)


HANDLERS: dict[str, Handler] = {
    "index_status": index_status,
    "drop_index": drop_index,
    "search": search,
    "check_query": check_query,
    "analytics_schema": analytics_schema,
    "analytics_distribution": analytics_distribution,
    "analytics_economy": analytics_economy,
    "analytics_progression": analytics_progression,
    "analytics_anomalies": analytics_anomalies,
    "sample_game_status": sample_game_status,
    "load_sample_game": load_sample_game,
}
