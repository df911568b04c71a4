"""Thin views over backups, their schedules, restores and erasure (`/api/v1/backups`, ...)."""

from __future__ import annotations

from pydantic import BaseModel

from .appkeys import BACKUPS
from .binding import Call, Handler


async def list_backups(call: Call) -> BaseModel:
    return await call.app[BACKUPS].list()


async def create_backup(call: Call) -> BaseModel:
    return await call.app[BACKUPS].create_backup(call.caller, call.body)


async def import_backup(call: Call) -> BaseModel:
    return await call.app[BACKUPS].import_upload(call.path["upload_id"], call.body.passphrase)


async def get_backup(call: Call) -> BaseModel:
    return await call.app[BACKUPS].get(call.path["archive_id"])


async def open_backup(call: Call) -> BaseModel:
    return await call.app[BACKUPS].get(call.path["archive_id"], call.body.passphrase)


async def verify_backup(call: Call) -> BaseModel:
    return await call.app[BACKUPS].verify(call.path["archive_id"], call.body.passphrase)


async def diff_backup(call: Call) -> BaseModel:
    return await call.app[BACKUPS].diff(call.path["archive_id"], call.body)


async def delete_backup(call: Call) -> None:
    call.app[BACKUPS].delete(call.path["archive_id"])


async def list_backup_schedules(call: Call) -> BaseModel:
    return call.app[BACKUPS].schedules.list()


async def put_backup_schedule(call: Call) -> BaseModel:
    return call.app[BACKUPS].schedules.put(call.path["schedule"], call.body)


async def delete_backup_schedule(call: Call) -> None:
    call.app[BACKUPS].schedules.delete(call.path["schedule"])


async def run_backup_schedule(call: Call) -> BaseModel:
    return await call.app[BACKUPS].schedules.run_now(call.caller, call.path["schedule"])


async def create_restore(call: Call) -> BaseModel:
    return await call.app[BACKUPS].create_restore(call.caller, call.body)


async def get_restore_plan(call: Call) -> BaseModel:
    return await call.app[BACKUPS].restore_plan(call.path["job_id"], call.query)


async def create_erasure(call: Call) -> BaseModel:
    return await call.app[BACKUPS].create_erasure(call.caller, call.body)


async def get_erasure(call: Call) -> BaseModel:
    return call.app[BACKUPS].erasure(call.path["job_id"])


async def get_erasure_report(call: Call) -> BaseModel:
    return call.app[BACKUPS].erasure_report(call.path["job_id"])


async def forget_erasure_report(call: Call) -> None:
    call.app[BACKUPS].forget_erasure_report(call.path["job_id"])


async def get_erasure_patterns(call: Call) -> BaseModel:
    return call.app[BACKUPS].erasure_patterns()


async def put_erasure_patterns(call: Call) -> BaseModel:
    return call.app[BACKUPS].set_erasure_patterns(call.body)


HANDLERS: dict[str, Handler] = {
    "list_backups": list_backups,
    "create_backup": create_backup,
    "import_backup": import_backup,
    "get_backup": get_backup,
    "open_backup": open_backup,
    "verify_backup": verify_backup,
    "diff_backup": diff_backup,
    "delete_backup": delete_backup,
    "list_backup_schedules": list_backup_schedules,
    "put_backup_schedule": put_backup_schedule,
    "delete_backup_schedule": delete_backup_schedule,
    "run_backup_schedule": run_backup_schedule,
    "create_restore": create_restore,
    "get_restore_plan": get_restore_plan,
    "create_erasure": create_erasure,
    "get_erasure": get_erasure,
    "get_erasure_report": get_erasure_report,
    "forget_erasure_report": forget_erasure_report,
    "get_erasure_patterns": get_erasure_patterns,
    "put_erasure_patterns": put_erasure_patterns,
}
