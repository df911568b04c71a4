"""Team presence routes: open, keep alive, close and list Studio sessions."""

from __future__ import annotations

from pydantic import BaseModel

from .appkeys import SERVER_BACKEND, SESSIONS
from .binding import Call, Handler


async def open_session(call: Call) -> BaseModel:
    b = call.body
    return call.app[SESSIONS].open(
        call.caller,
        studio_user_id=b.studio_user_id,
        place_id=b.place_id,
        client_name=b.client_name,
    )


async def heartbeat_session(call: Call) -> BaseModel:
    return call.app[SESSIONS].heartbeat(call.path["session_id"], call.caller)


async def close_session(call: Call) -> None:
    call.app[SESSIONS].close(call.path["session_id"], call.caller)


async def list_sessions(call: Call) -> BaseModel:
    return call.app[SESSIONS].listing(call.app[SERVER_BACKEND]())


HANDLERS: dict[str, Handler] = {
    "open_session": open_session,
    "list_sessions": list_sessions,
    "heartbeat_session": heartbeat_session,
    "close_session": close_session,
}
