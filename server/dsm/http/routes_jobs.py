"""Thin views over the jobs engine, uploads and the per-universe budget (`/api/v1/jobs`, ...)."""

from __future__ import annotations

from pydantic import BaseModel

from shared_schema.errors import ErrorCode

from ..services.errors import ServiceError
from ..services.jobs.budget import BudgetSettingsError
from .appkeys import DATA
from .binding import Call, Handler


def _budget(call: Call) -> BaseModel:
    plane = call.app[DATA]
    universe = call.path["universe_id"]
    backend = plane.upstream.binding(universe).backend
    return plane.budget.in_use(universe, plane.upstream.limiter).view(backend)


async def get_budget(call: Call) -> BaseModel:
    return _budget(call)


async def set_budget(call: Call) -> BaseModel:
    plane = call.app[DATA]
    try:
        plane.budget.settings.set(call.path["universe_id"], call.body.ccu)
    except BudgetSettingsError as exc:
        raise ServiceError(ErrorCode.BAD_REQUEST, str(exc)) from None
    plane.budget.reload()
    return _budget(call)


async def reset_budget(call: Call) -> BaseModel:
    plane = call.app[DATA]
    try:
        plane.budget.settings.unset(call.path["universe_id"])
    except BudgetSettingsError as exc:
        raise ServiceError(ErrorCode.BAD_REQUEST, str(exc)) from None
    plane.budget.reload()
    return _budget(call)


async def _not_yet(call: Call) -> BaseModel:
    raise ServiceError(
        ErrorCode.NOT_FOUND,
        f"{call.route.operation_id}: the jobs engine is not served by this build yet.",
    )


HANDLERS: dict[str, Handler] = {
    "get_budget": get_budget,
    "set_budget": set_budget,
    "reset_budget": reset_budget,
    "create_job": _not_yet,
    "list_jobs": _not_yet,
    "get_job": _not_yet,
    "list_job_items": _not_yet,
    "start_job": _not_yet,
    "pause_job": _not_yet,
    "resume_job": _not_yet,
    "cancel_job": _not_yet,
    "rollback_job": _not_yet,
    "create_upload": _not_yet,
    "get_upload": _not_yet,
    "put_upload_chunk": _not_yet,
    "complete_upload": _not_yet,
    "delete_upload": _not_yet,
}
