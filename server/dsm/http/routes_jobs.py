"""Thin views over the jobs engine, uploads and the per-universe budget (`/api/v1/jobs`, ...)."""

from __future__ import annotations

from pydantic import BaseModel

from shared_schema.errors import ErrorCode

from ..services.errors import ServiceError
from ..services.jobs.budget import BudgetSettingsError
from ..services.jobs.uploads import UploadStore
from .appkeys import DATA, JOBS
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


async def create_job(call: Call) -> BaseModel:
    return await call.app[JOBS].create(call.caller, call.body)


async def prune_jobs(call: Call) -> BaseModel:
    return await call.app[JOBS].prune(call.body)


async def list_jobs(call: Call) -> BaseModel:
    return call.app[JOBS].list(call.query)


async def get_job(call: Call) -> BaseModel:
    return call.app[JOBS].get(call.path["job_id"])


async def list_job_items(call: Call) -> BaseModel:
    return call.app[JOBS].items(call.path["job_id"], call.query)


async def start_job(call: Call) -> BaseModel:
    return await call.app[JOBS].start(
        call.caller, call.path["job_id"], call.body.confirm, call.body.skip_backup
    )


async def pause_job(call: Call) -> BaseModel:
    return await call.app[JOBS].pause(call.caller, call.path["job_id"])


async def resume_job(call: Call) -> BaseModel:
    return await call.app[JOBS].resume(call.caller, call.path["job_id"])


async def cancel_job(call: Call) -> BaseModel:
    return await call.app[JOBS].cancel(call.caller, call.path["job_id"])


async def rollback_job(call: Call) -> BaseModel:
    return await call.app[JOBS].rollback(call.caller, call.path["job_id"], call.body)


def _uploads(call: Call) -> UploadStore:
    return call.app[JOBS].env.uploads


async def create_upload(call: Call) -> BaseModel:
    b = call.body
    uploads = _uploads(call)
    record = uploads.create(
        call.caller.token_id, b.file_name, b.size_bytes, b.chunk_bytes, b.sha256
    )
    return uploads.info(record)


async def get_upload(call: Call) -> BaseModel:
    uploads = _uploads(call)
    return uploads.info(uploads.get(call.path["upload_id"]))


async def put_upload_chunk(call: Call) -> BaseModel:
    uploads = _uploads(call)
    record = uploads.put_chunk(
        call.path["upload_id"], call.path["chunk_index"], call.body.data_base64, call.body.sha256
    )
    return uploads.info(record)


async def complete_upload(call: Call) -> BaseModel:
    uploads = _uploads(call)
    return uploads.info(uploads.complete(call.path["upload_id"]))


async def delete_upload(call: Call) -> None:
    _uploads(call).delete(call.path["upload_id"])


HANDLERS: dict[str, Handler] = {
    "get_budget": get_budget,
    "set_budget": set_budget,
    "reset_budget": reset_budget,
    "create_job": create_job,
    "prune_jobs": prune_jobs,
    "list_jobs": list_jobs,
    "get_job": get_job,
    "list_job_items": list_job_items,
    "start_job": start_job,
    "pause_job": pause_job,
    "resume_job": resume_job,
    "cancel_job": cancel_job,
    "rollback_job": rollback_job,
    "create_upload": create_upload,
    "get_upload": get_upload,
    "put_upload_chunk": put_upload_chunk,
    "complete_upload": complete_upload,
    "delete_upload": delete_upload,
}
