"""Team presence routes: open, keep alive, close and list Studio sessions."""

from __future__ import annotations

from pydantic import BaseModel

from shared_schema.sessions import SessionOpened
from shared_schema.team import EntryRef

from .appkeys import EVENTS, SERVER_BACKEND, SESSIONS, TEAM, TOKEN_STORE
from .binding import Call, Handler


async def open_session(call: Call) -> BaseModel:
    b = call.body
    # The Studio user is recorded with the token, so every later request names that person.
    call.app[TOKEN_STORE].record_identity(
        call.caller.token_id, b.studio_user_id, b.studio_user_name
    )
    info = call.app[SESSIONS].open(
        call.caller,
        studio_user_id=b.studio_user_id,
        place_id=b.place_id,
        client_name=b.client_name,
        studio_user_name=b.studio_user_name,
    )
    # Read with no await since the open: the plugin's stream starts exactly after its own join,
    # so a change made between this answer and the stream's first poll still reaches it.
    return SessionOpened(**info.model_dump(), event_cursor=call.app[EVENTS].latest_seq)


async def set_session_viewing(call: Call) -> BaseModel:
    b = call.body
    viewing = None
    if b.universe_id is not None and b.datastore is not None:
        viewing = EntryRef(
            universe_id=b.universe_id, datastore=b.datastore, scope=b.scope or "global", key=b.key
        )
    info = call.app[SESSIONS].set_viewing(call.path["session_id"], call.caller, viewing)
    call.app[TEAM].local_presence_changed()
    return info


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
    "set_session_viewing": set_session_viewing,
}
