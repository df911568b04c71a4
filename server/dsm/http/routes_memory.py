"""Thin views over the read-only memory store service (`/api/v1/universes/{u}/memory/...`)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from ..services.memory import MemoryService
from .binding import Call, bind

MEMORY = web.AppKey("dsm.memory", MemoryService)


async def list_sorted_map(call: Call) -> BaseModel:
    q = call.query
    return await call.request.app[MEMORY].sorted_map_page(
        call.path["universe_id"],
        call.path["sorted_map"],
        cursor=q.cursor,
        limit=q.limit,
        descending=q.descending,
    )


async def get_sorted_map_item(call: Call) -> BaseModel:
    return await call.request.app[MEMORY].sorted_map_item(
        call.path["universe_id"], call.path["sorted_map"], call.path["item_id"]
    )


async def peek_queue(call: Call) -> BaseModel:
    return await call.request.app[MEMORY].peek_queue(
        call.path["universe_id"], call.path["queue"], call.query.count
    )


def setup(app: web.Application) -> None:
    bind(app, "list_sorted_map", list_sorted_map)
    bind(app, "get_sorted_map_item", get_sorted_map_item)
    bind(app, "peek_queue", peek_queue)
