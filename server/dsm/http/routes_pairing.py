"""Pairing and token administration routes, and the cleanup context that owns their services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web
from pydantic import BaseModel

from shared_schema.auth import (
    PairCompleteRequest,
    PairCompleteResponse,
    PairStartRequest,
    PairStartResponse,
    TokenList,
)
from shared_schema.common import Role

from ..config import ServerConfig
from ..services.pairing import (
    DEFAULT_PAIRING_ROLE,
    Announce,
    PairingService,
    announce_on_console,
    describe_ttl,
)
from ..services.pairing_limits import AttemptLog
from ..services.tokens import TokenStore
from .auth import TOKEN_STORE, require_role

PAIRING: web.AppKey[PairingService] = web.AppKey("dsm.pairing", PairingService)

Lifecycle = Callable[[web.Application], AsyncIterator[None]]


def lifecycle(
    config: ServerConfig,
    *,
    role: Role = DEFAULT_PAIRING_ROLE,
    announce: Announce = announce_on_console,
) -> Lifecycle:
    """A cleanup_ctx entry that opens the token store and the pairing service for the app."""

    async def tokens_and_pairing(app: web.Application) -> AsyncIterator[None]:
        store = TokenStore.open(config.data_dir)
        attempts = AttemptLog.open(config.data_dir)
        app[TOKEN_STORE] = store
        app[PAIRING] = PairingService(
            store,
            ttl_seconds=config.pairing_code_ttl_seconds,
            role=role,
            announce=announce,
            attempts=attempts,
        )
        try:
            yield
        finally:
            attempts.close()
            store.close()

    return tokens_and_pairing


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/pair/start", pair_start)
    app.router.add_post("/api/v1/pair/complete", pair_complete)
    app.router.add_get("/api/v1/tokens", list_tokens)
    app.router.add_delete("/api/v1/tokens/{token_id}", revoke_token)


def _json(model: BaseModel, *, no_store: bool = False) -> web.Response:
    response = web.Response(
        text=model.model_dump_json(exclude_none=True), content_type="application/json"
    )
    if no_store:
        response.headers["Cache-Control"] = "no-store"
    return response


async def pair_start(request: web.Request) -> web.Response:
    body = PairStartRequest.model_validate_json(await request.read())
    ticket = request.config_dict[PAIRING].start(body.client_name)
    return _json(
        PairStartResponse(
            pairing_id=ticket.pairing_id,
            expires_at=ticket.expires_at,
            code_length=ticket.code_length,
            message=f"Type the {ticket.code_length}-digit code shown in the DataStore Manager "
            f"Pro server window. It expires in {describe_ttl(ticket.ttl_seconds)}.",
        )
    )


async def pair_complete(request: web.Request) -> web.Response:
    body = PairCompleteRequest.model_validate_json(await request.read())
    result = request.config_dict[PAIRING].complete(body.pairing_id, body.code, body.client_name)
    return _json(
        PairCompleteResponse(token=result.token, token_id=result.token_id, role=result.role),
        no_store=True,
    )


async def list_tokens(request: web.Request) -> web.Response:
    require_role(request, Role.ADMIN)
    return _json(TokenList(tokens=request.config_dict[TOKEN_STORE].list_tokens()))


async def revoke_token(request: web.Request) -> web.Response:
    require_role(request, Role.ADMIN)
    info = request.config_dict[TOKEN_STORE].revoke(request.match_info["token_id"])
    return _json(info)
