"""Bearer-token authentication for every route except hello and the two pairing calls.

The token is accepted only in `Authorization: Bearer ...`: a token in a URL ends up in access
logs, proxies and screenshots. The row is read on every request (see services/tokens.py), so a
revocation or role change made by `dsm tokens` in another process applies to the next request.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from shared_schema.common import Role
from shared_schema.errors import ErrorCode
from shared_schema.registry import OPEN_ROUTES

from ..services.errors import ServiceError
from ..services.tokens import Principal, principal_of
from .appkeys import PRINCIPAL, TOKEN_STORE
from .errors import error_response
from .guards import Handler

_URL_TOKEN_PARAMS = ("token", "access_token", "auth", "authorization", "bearer")


def is_open_route(method: str, path: str) -> bool:
    """Whether the route table lets this request through without a token."""
    return (method.upper(), path) in OPEN_ROUTES


def _unauthenticated(message: str) -> web.Response:
    response = error_response(ServiceError(ErrorCode.UNAUTHENTICATED, message))
    response.headers["WWW-Authenticate"] = 'Bearer realm="dsm"'
    return response


def _bearer_token(request: web.Request) -> str | None:
    values = request.headers.getall(hdrs.AUTHORIZATION, [])
    if len(values) != 1:
        return None
    scheme, _, credentials = values[0].strip().partition(" ")
    token = credentials.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_open_route(request.method, request.path):
        return await handler(request)
    token = _bearer_token(request)
    if token is None:
        if any(name.lower() in _URL_TOKEN_PARAMS for name in request.query):
            return _unauthenticated(
                "Tokens in the URL are not accepted (URLs end up in logs); send "
                "'Authorization: Bearer <token>'."
            )
        return _unauthenticated(
            "This needs a token: send 'Authorization: Bearer <token>'. Pair the plugin with "
            "this server to get one."
        )
    info = request.config_dict[TOKEN_STORE].lookup(token)
    if info is None:
        return _unauthenticated(
            "The token is unknown or was revoked; pair the plugin with this server again."
        )
    request[PRINCIPAL] = principal_of(info)
    return await handler(request)


def principal(request: web.Request) -> Principal:
    """The caller; raises UNAUTHENTICATED on a route the auth middleware left open."""
    if PRINCIPAL not in request:
        raise ServiceError(ErrorCode.UNAUTHENTICATED, "This route needs a token.")
    return request[PRINCIPAL]


def require_role(request: web.Request, needed: Role) -> Principal:
    """The caller, if their token's role allows `needed`; else 403 FORBIDDEN naming the role."""
    caller = principal(request)
    if not caller.role.allows(needed):
        raise ServiceError(
            ErrorCode.FORBIDDEN,
            f"This needs the {needed.value} role; the token '{caller.name}' has the "
            f"{caller.role.value} role. On the server machine, `dsm tokens role "
            f"{caller.token_id} {needed.value}` changes it.",
            details={"needed_role": needed.value, "role": caller.role.value},
        )
    return caller
