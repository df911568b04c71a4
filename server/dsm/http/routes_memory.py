"""Thin views over the read-only memory store service (`/api/v1/universes/{u}/memory/...`)."""

from __future__ import annotations

from pydantic import BaseModel

from .appkeys import DATA
from .binding import Call, Handler


async def list_sorted_map(call: Call) -> BaseModel:
    q = call.query
    return await call.app[DATA].memory.sorted_map_page(
        call.path["universe_id"],
        call.path["sorted_map"],
        cursor=q.cursor,
        limit=q.limit,
        descending=q.descending,
    )


async def get_sorted_map_item(call: Call) -> BaseModel:
    return await call.app[DATA].memory.sorted_map_item(
        call.path["universe_id"], call.path["sorted_map"], call.path["item_id"]
    )


async def peek_queue(call: Call) -> BaseModel:
    return await call.app[DATA].memory.peek_queue(
        call.path["universe_id"], call.path["queue"], call.query.count
    )


HANDLERS: dict[str, Handler] = {
    "list_sorted_map": list_sorted_map,
    "get_sorted_map_item": get_sorted_map_item,
    "peek_queue": peek_queue,
}
