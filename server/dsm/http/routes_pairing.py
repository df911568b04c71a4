"""Pairing and token administration routes."""

from __future__ import annotations

from pydantic import BaseModel

from shared_schema.auth import PairCompleteResponse, PairStartResponse, TokenList

from ..services.pairing import describe_ttl
from .appkeys import ASSISTANT_CAPS, PAIRING, TOKEN_STORE
from .binding import Call, Handler


async def pair_start(call: Call) -> BaseModel:
    ticket = call.app[PAIRING].start(call.body.client_name)
    return PairStartResponse(
        pairing_id=ticket.pairing_id,
        expires_at=ticket.expires_at,
        code_length=ticket.code_length,
        message=f"Type the {ticket.code_length}-digit code shown in the DataStore Manager "
        f"Pro server window. It expires in {describe_ttl(ticket.ttl_seconds)}.",
    )


async def pair_complete(call: Call) -> BaseModel:
    b = call.body
    result = call.app[PAIRING].complete(b.pairing_id, b.code, b.client_name)
    return PairCompleteResponse(token=result.token, token_id=result.token_id, role=result.role)


async def list_tokens(call: Call) -> BaseModel:
    caps = call.app[ASSISTANT_CAPS]
    return TokenList(tokens=[caps.with_usage(t) for t in call.app[TOKEN_STORE].list_tokens()])


async def revoke_token(call: Call) -> BaseModel:
    return call.app[TOKEN_STORE].revoke(call.path["token_id"])


async def whoami(call: Call) -> BaseModel:
    return call.app[ASSISTANT_CAPS].with_usage(call.app[TOKEN_STORE].get(call.caller.token_id))


HANDLERS: dict[str, Handler] = {
    "pair_start": pair_start,
    "pair_complete": pair_complete,
    "list_tokens": list_tokens,
    "revoke_token": revoke_token,
    "whoami": whoami,
}
