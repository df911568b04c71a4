"""The emulator's aiohttp application: shared context, middlewares and route assembly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from .. import __version__
from ..http.wall import wall_refusal
from . import (
    routes_memorystore,
    routes_messaging,
    routes_ordered,
    routes_v1,
    routes_v2,
    sample_game,
)
from .context import (
    EMULATOR,
    GRANT,
    RATELIMIT_HEADERS,
    EmulatorConfig,
    EmulatorContext,
    FaultConfig,
    json_response,
)
from .errors import EmulatorError, Family, family_for_path, invalid
from .validation import parse_json_body

__all__ = [
    "EMULATOR",
    "EMULATOR_HEADER",
    "EmulatorConfig",
    "EmulatorContext",
    "FaultConfig",
    "create_emulator_app",
]

log = logging.getLogger("dsm.emulator")

EMULATOR_HEADER = "X-DSM-Emulator"
# Large enough for a 4 MiB value inside a v2 JSON body with escaping; the value limit itself
# is checked by the routes so the answer is Open Cloud's error, not aiohttp's 413.
MAX_BODY = 16 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_response(error: EmulatorError, family: Family) -> web.Response:
    return json_response(error.body(family), status=error.status, headers=error.headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    family = family_for_path(request.path)
    try:
        response = await handler(request)
    except EmulatorError as error:
        response = _error_response(error, family)
    except web.HTTPNotFound:
        response = _error_response(
            EmulatorError("NOT_FOUND", f"No Open Cloud route matches {request.path}."),
            Family.GATEWAY if family is Family.GATEWAY else family,
        )
    except web.HTTPMethodNotAllowed:
        response = _error_response(
            EmulatorError("NOT_IMPLEMENTED", f"{request.method} is not allowed here.", status=405),
            family,
        )
    except web.HTTPRequestEntityTooLarge:
        response = _error_response(
            invalid("The request body is too large.", "ContentTooBig"), family
        )
    except Exception:
        log.exception("emulator bug while handling %s %s", request.method, request.path)
        response = _error_response(EmulatorError("INTERNAL", "Internal emulator error."), family)
    for name, value in request.get(RATELIMIT_HEADERS, {}).items():
        response.headers.setdefault(name, value)
    response.headers[EMULATOR_HEADER] = __version__
    return response


def wall_middleware(port: Callable[[], int]) -> Middleware:
    @web.middleware
    async def wall(request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = wall_refusal(request, port(), service="the emulator")
        if refusal is not None:
            raise EmulatorError("PERMISSION_DENIED", refusal.message, status=403)
        return await handler(request)

    return wall


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/":
        return await handler(request)
    ctx = request.app[EMULATOR]
    grant = ctx.auth.identify(request.headers.get("x-api-key"))
    if grant is not None:
        request[GRANT] = grant
    return await handler(request)


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = request.app[EMULATOR]
    faults = ctx.faults
    if request.path == "/" or request.path.startswith("/_emulator/"):
        return await handler(request)
    if faults.latency_ms > 0:
        await asyncio.sleep(faults.latency_ms / 1000)
    if faults.drop_rate > 0 and ctx.rng.random() < faults.drop_rate:
        ctx.fault_counts["drop"] += 1
        return _abort(request)
    if faults.error_rate > 0 and ctx.rng.random() < faults.error_rate:
        ctx.fault_counts["error"] += 1
        status = ctx.rng.choice(faults.error_statuses)
        code = {429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}.get(status, "INTERNAL")
        headers = {"retry-after": "1"} if status == 429 else None
        raise EmulatorError(code, f"Injected fault: HTTP {status}.", status=status, headers=headers)
    response = await handler(request)
    if (
        request.method in ("POST", "PATCH", "PUT", "DELETE")
        and faults.lost_response_rate > 0
        and response.status < 400
        and ctx.rng.random() < faults.lost_response_rate
    ):
        ctx.fault_counts["lost_response"] += 1
        return _abort(request)
    return response


def _abort(request: web.Request) -> web.StreamResponse:
    """Close the connection without an answer, as a network failure would."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


async def index(request: web.Request) -> web.Response:
    ctx = request.app[EMULATOR]
    return json_response(
        {
            "service": "DataStore Manager Pro - local Open Cloud emulator",
            "emulator": True,
            "version": __version__,
            "notice": "Everything here is local emulator data, not a live Roblox experience.",
            "stands_in_for": "https://apis.roblox.com",
            "data": str(ctx.config.data_dir) if ctx.config.data_dir else "temporary (lost on exit)",
            "auth": "open: any non-empty x-api-key has full access"
            if ctx.auth.open_mode
            else "keys file: per-key universes and scopes",
            "limits": ctx.config.limits.mode,
            "ccu": ctx.config.limits.ccu,
        }
    )


async def list_universes(request: web.Request) -> web.Response:
    """Emulator extension (not Open Cloud): universes that hold standard data stores."""
    return json_response({"universes": request.app[EMULATOR].standard.universes()})


async def get_faults(request: web.Request) -> web.Response:
    ctx = request.app[EMULATOR]
    return json_response({"settings": ctx.faults.__dict__, "injected": ctx.fault_counts})


async def set_faults(request: web.Request) -> web.Response:
    ctx = request.app[EMULATOR]
    changes = parse_json_body(await request.read())
    if not isinstance(changes, dict):
        raise invalid("The body must be a JSON object of fault settings.")
    ctx.faults.update(changes)
    return json_response({"settings": ctx.faults.__dict__, "injected": ctx.fault_counts})


async def get_sample_game(request: web.Request) -> web.Response:
    """Emulator extension: what sample game is loaded (docs/sample-game.md)."""
    ctx = request.app[EMULATOR]
    return json_response(
        {
            "loaded": [info.to_json() for info in sample_game.loaded(ctx)],
            "empty": sample_game.is_empty(ctx),
            "loading": running.to_json() if (running := sample_game.loading(ctx)) else None,
        }
    )


async def load_sample_game(request: web.Request) -> web.Response:
    """Emulator extension: generate the labelled sample game, {universe?, seed?, players?}."""
    ctx = request.app[EMULATOR]
    body = parse_json_body(await request.read())
    if not isinstance(body, dict):
        raise invalid("The body must be a JSON object.")
    try:
        universe = str(int(body.get("universe", 1)))
        seed = int(body.get("seed", 1))
        players = int(body.get("players", 500))
    except (TypeError, ValueError):
        raise invalid("universe, seed and players must be whole numbers.") from None
    if not 10 <= players <= 20000:
        raise invalid("players must be from 10 to 20000.")
    try:
        info = await sample_game.load_async(ctx, universe=universe, seed=seed, players=players)
    except sample_game.SampleGameBusy as busy:
        raise EmulatorError("ABORTED", str(busy)) from None
    return json_response(info.to_json())


def create_emulator_app(config: EmulatorConfig | None = None) -> web.Application:
    config = config or EmulatorConfig()
    guards = [] if config.guard_port is None else [wall_middleware(config.guard_port)]
    app = web.Application(
        middlewares=[error_middleware, *guards, auth_middleware, fault_middleware],
        client_max_size=MAX_BODY,
    )
    ctx = EmulatorContext(config)
    app[EMULATOR] = ctx
    app.router.add_get("/", index)
    app.router.add_get("/_emulator/faults", get_faults)
    app.router.add_get("/_emulator/universes", list_universes)
    app.router.add_post("/_emulator/faults", set_faults)
    app.router.add_get("/_emulator/sample-game", get_sample_game)
    app.router.add_post("/_emulator/sample-game", load_sample_game)
    for module in (routes_v1, routes_v2, routes_ordered, routes_memorystore, routes_messaging):
        module.setup(app, ctx)

    async def close_ctx(_: web.Application) -> None:
        ctx.close()

    app.on_cleanup.append(close_ctx)
    return app
