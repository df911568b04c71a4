"""Checks every request passes before any handler runs: the browser and DNS-rebinding wall.

The wall itself (Host, request target, Origin and Sec-Fetch-*) lives in wall.py, shared with
the embedded emulator. Bodies must be `application/json`, which browsers
cannot send cross-origin without a CORS preflight, and preflights are refused with no allow
headers. Bodies are capped small except on routes that carry entry values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import unquote_to_bytes

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from shared_schema.errors import ErrorCode

from ..services.errors import ServiceError
from .errors import error_response
from .wall import LOOPBACK_NAMES, host_allowed, wall_refusal

__all__ = [
    "BODY_TIMEOUT_SECONDS",
    "CLIENT_MAX_SIZE",
    "ENTRY_BODY_LIMIT",
    "LOOPBACK_NAMES",
    "SMALL_BODY_LIMIT",
    "BoundPort",
    "allow_large_body",
    "body_deadline_middleware",
    "body_limit",
    "guard_middleware",
    "host_allowed",
    "is_json_media_type",
]

# A 4 MiB value travels as a JSON string inside the JSON body. Escaping doubles `"` and `\`,
# and an encoder that writes non-ASCII as \uXXXX turns 2 UTF-8 bytes into 6: at most 3x, plus
# the envelope (attributes, user ids, idempotency key). Pass this to web.Application too.
ENTRY_BODY_LIMIT = 13 * 1024 * 1024
CLIENT_MAX_SIZE = ENTRY_BODY_LIMIT
SMALL_BODY_LIMIT = 64 * 1024
# A 13 MiB body crosses loopback in milliseconds; anything slower is holding a handler open.
BODY_TIMEOUT_SECONDS = 30.0

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HEAD_PATH = "/api/v1/hello"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_LARGE_BODY_HANDLERS: set[Handler] = set()


class BoundPort:
    """The port we actually listen on; known only after binding when the configured port is 0."""

    def __init__(self, port: int = 0) -> None:
        self._port = port

    def set(self, port: int) -> None:
        self._port = port

    def __call__(self) -> int:
        return self._port


def allow_large_body[H: Handler](handler: H) -> H:
    """Mark a handler that takes entry values (up to ENTRY_BODY_LIMIT instead of 64 KiB)."""
    _LARGE_BODY_HANDLERS.add(handler)
    return handler


def is_json_media_type(value: str) -> bool:
    """`application/json` with at most a UTF-8 charset parameter.

    Parsed, not substring-matched: `text/plain; application/json` is a "simple" content type a
    browser sends cross-origin without a preflight.
    """
    media, *params = value.split(";")
    if media.strip().lower() != "application/json":
        return False
    for param in params:
        if not param.strip():
            continue
        name, sep, val = param.partition("=")
        if not sep or name.strip().lower() != "charset":
            return False
        if val.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


def _shown(value: str) -> str:
    return repr(value[:100])


def _check(request: web.Request, port: int) -> ServiceError | None:
    refusal = wall_refusal(request, port, service="this server")
    if refusal is not None:
        return ServiceError(refusal.code, refusal.message)
    if request.method == hdrs.METH_OPTIONS:
        return ServiceError(
            ErrorCode.FORBIDDEN_ORIGIN,
            "OPTIONS (CORS preflight) is refused: this server does not serve web pages.",
        )
    try:
        unquote_to_bytes(request.raw_path).decode("utf-8")
    except UnicodeDecodeError:
        # aiohttp leaves such bytes encoded in the path (so `%ff` would be read as the key
        # "%ff") and replaces them with U+FFFD in the query: either way, not what was meant.
        return ServiceError(
            ErrorCode.BAD_REQUEST,
            "The URL holds percent-encoded bytes that are not UTF-8 text; encode names and "
            "keys as UTF-8 before percent-encoding them.",
        )
    if request.method == hdrs.METH_HEAD and request.path != HEAD_PATH:
        # A HEAD answer has no body to carry the envelope in; only hello (a liveness probe)
        # has a use for it, so it is refused everywhere else before any handler runs.
        return ServiceError(
            ErrorCode.METHOD_NOT_ALLOWED,
            f"HEAD is answered only on {HEAD_PATH}; use the route's own method.",
        )
    return _check_body(request)


def _check_body(request: web.Request) -> ServiceError | None:
    types = request.headers.getall(hdrs.CONTENT_TYPE, [])
    needs_json = request.body_exists or (bool(types) and request.method in UNSAFE_METHODS)
    if needs_json and (len(types) != 1 or not is_json_media_type(types[0])):
        got = "no Content-Type" if not types else f"Content-Type {_shown(', '.join(types))}"
        return ServiceError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"Request bodies must be JSON sent with 'Content-Type: application/json' (got {got}).",
        )
    limit = body_limit(request)
    length = request.content_length
    if length is not None and length > limit:
        return _too_large(limit)
    return None


def body_limit(request: web.Request) -> int:
    return (
        ENTRY_BODY_LIMIT if request.match_info.handler in _LARGE_BODY_HANDLERS else SMALL_BODY_LIMIT
    )


def _too_large(limit: int) -> ServiceError:
    size = f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"
    return ServiceError(
        ErrorCode.PAYLOAD_TOO_LARGE, f"The request body is larger than this route's {size} limit."
    )


def _reject(error: ServiceError) -> web.Response:
    response = error_response(error)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@web.middleware
async def body_deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read a body within BODY_TIMEOUT_SECONDS, so a client trickling it cannot hold a handler.

    Runs after auth (innermost), so only a paired client's body is ever buffered; the handler's
    own read then returns the bytes already read.
    """
    if request.body_exists:
        try:
            async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
                await request.read()
        except TimeoutError:
            response = _reject(
                ServiceError(
                    ErrorCode.REQUEST_TIMEOUT,
                    f"The request body did not arrive within {BODY_TIMEOUT_SECONDS:g} s.",
                )
            )
            response.force_close()
            return response
    return await handler(request)


def guard_middleware(port: Callable[[], int]) -> Middleware:
    """The guard; `port` returns the bound port (see BoundPort), read on every request."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        problem = _check(request, port())
        if problem is not None:
            return _reject(problem)
        limit = body_limit(request)
        if request.body_exists:
            # A chunked body has no Content-Length to check up front; aiohttp enforces the
            # clone's cap while the handler reads.
            request = request.clone(client_max_size=limit)
        try:
            response = await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _reject(_too_large(limit))
        if not response.prepared:
            for name in [h for h in response.headers if h.lower().startswith("access-control-")]:
                del response.headers[name]
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    return guard
