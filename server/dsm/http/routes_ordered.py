"""Thin views over the ordered data store service (`/api/v1/universes/{u}/ordered/...`)."""

from __future__ import annotations

from pydantic import BaseModel

from ..services.ordered import OrderedRef
from .appkeys import DATA
from .binding import Call, Handler


def _ref(call: Call, entry_id: str | None = None) -> OrderedRef:
    return OrderedRef(
        call.path["universe_id"],
        call.path["ordered_store"],
        call.path["scope"],
        entry_id if entry_id is not None else call.path["entry_id"],
    )


async def list_ordered(call: Call) -> BaseModel:
    q = call.query
    return await call.app[DATA].ordered.list(
        call.path["universe_id"],
        call.path["ordered_store"],
        call.path["scope"],
        descending=q.descending,
        min_value=q.min,
        max_value=q.max,
        cursor=q.cursor,
        limit=q.limit,
    )


async def create_ordered(call: Call) -> BaseModel:
    b = call.body
    return await call.app[DATA].ordered.create(
        call.caller, _ref(call, b.id), b.value, b.idempotency_key
    )


async def update_ordered(call: Call) -> BaseModel:
    b = call.body
    return await call.app[DATA].ordered.update(
        call.caller, _ref(call), b.value, b.allow_missing, b.idempotency_key
    )


async def increment_ordered(call: Call) -> BaseModel:
    b = call.body
    return await call.app[DATA].ordered.increment(
        call.caller, _ref(call), b.amount, b.idempotency_key
    )


async def delete_ordered(call: Call) -> BaseModel:
    return await call.app[DATA].ordered.delete(call.caller, _ref(call), call.query.idempotency_key)


HANDLERS: dict[str, Handler] = {
    "list_ordered": list_ordered,
    "create_ordered": create_ordered,
    "update_ordered": update_ordered,
    "increment_ordered": increment_ordered,
    "delete_ordered": delete_ordered,
}
