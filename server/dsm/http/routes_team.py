"""Team sync routes: status, opting in and out, invites, soft locks, the audit log, workspace."""

from __future__ import annotations

from pydantic import BaseModel

from .appkeys import TEAM
from .binding import Call, Handler


def _universe(call: Call) -> int:
    universe: int = call.path["universe_id"]
    return universe


async def team_overview(call: Call) -> BaseModel:
    return call.app[TEAM].overview(call.caller)


async def team_status(call: Call) -> BaseModel:
    return call.app[TEAM].status(_universe(call), call.caller)


async def team_enable(call: Call) -> BaseModel:
    return await call.app[TEAM].enable(_universe(call), call.caller, call.body)


async def team_disable(call: Call) -> BaseModel:
    return await call.app[TEAM].disable(_universe(call), call.caller)


async def team_invite(call: Call) -> BaseModel:
    return await call.app[TEAM].invite(_universe(call), call.caller, call.body)


async def team_join(call: Call) -> BaseModel:
    return await call.app[TEAM].join(call.caller, call.body)


async def team_lock(call: Call) -> BaseModel:
    b = call.body
    return await call.app[TEAM].lock(_universe(call), call.caller, b.datastore, b.scope, b.key)


async def team_unlock(call: Call) -> BaseModel:
    q = call.query
    return await call.app[TEAM].unlock(_universe(call), call.caller, q.datastore, q.scope, q.key)


async def team_activity(call: Call) -> BaseModel:
    return await call.app[TEAM].activity(_universe(call), call.query)


async def audit_verify(call: Call) -> BaseModel:
    return await call.app[TEAM].verify(_universe(call))


async def team_workspace(call: Call) -> BaseModel:
    return await call.app[TEAM].workspace(_universe(call))


async def team_bookmark(call: Call) -> BaseModel:
    return await call.app[TEAM].bookmark(_universe(call), call.caller, call.body)


async def team_note(call: Call) -> BaseModel:
    return await call.app[TEAM].note(_universe(call), call.caller, call.body)


HANDLERS: dict[str, Handler] = {
    "team_overview": team_overview,
    "team_status": team_status,
    "team_enable": team_enable,
    "team_disable": team_disable,
    "team_invite": team_invite,
    "team_join": team_join,
    "team_lock": team_lock,
    "team_unlock": team_unlock,
    "team_activity": team_activity,
    "audit_verify": audit_verify,
    "team_workspace": team_workspace,
    "team_bookmark": team_bookmark,
    "team_note": team_note,
}
