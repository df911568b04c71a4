"""Bind handlers to the protocol's route table, so every route validates and answers alike.

The table in shared_schema.registry is the single description of the API: method, path, role,
query, body and response models, and how each is served (no-store, large bodies, aliases,
WebSocket). `bind_routes` registers a handler for each operation id it is given: the view it
makes validates path parameters, query and body with the route's models, enforces its role
(open routes need none), and turns the handler's result into the response: a protocol model
(JSON, the route's status), None (an empty answer with the route's status), or a ready
aiohttp response (a WebSocket, Prometheus text).

Adding a route: add a `Route` to shared_schema/registry.py, write `async def handler(call)`
in the http/routes_*.py module of its area, and list it in that module's HANDLERS.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.helpers import ChainMapProxy
from pydantic import BaseModel, TypeAdapter, ValidationError

from shared_schema.errors import ErrorCode
from shared_schema.registry import PATH_PARAMS, ROUTES_BY_ID, Route

from ..services.errors import ServiceError
from ..services.tokens import Principal
from .auth import require_role
from .guards import allow_large_body

_PARAM = re.compile(r"\{(\w+)\}")
_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    name: TypeAdapter(param.type) for name, param in PATH_PARAMS.items()
}


def _path_param(name: str, value: str) -> Any:
    try:
        return _ADAPTERS[name].validate_python(value)
    except ValidationError as exc:
        problem = exc.errors(include_url=False, include_input=False)[0]["msg"]
        raise ServiceError(
            ErrorCode.BAD_REQUEST,
            f"Invalid request: {name} in the path: {problem}",
            details={"problems": [{"field": name, "problem": problem}]},
        ) from None


@dataclass
class Call:
    """One validated request, as a handler sees it."""

    request: web.Request
    route: Route
    path: dict[str, Any]
    query: Any
    body: Any
    principal: Principal | None

    @property
    def app(self) -> ChainMapProxy:
        return self.request.config_dict

    @property
    def caller(self) -> Principal:
        if self.principal is None:
            raise ServiceError(ErrorCode.UNAUTHENTICATED, "This route needs a token.")
        return self.principal


Result = BaseModel | web.StreamResponse | None
Handler = Callable[[Call], Awaitable[Result]]


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(exclude_none=True),
        status=status,
        content_type="application/json",
    )


def _respond(route: Route, result: Result) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        response = result
    elif result is None:
        response = web.Response(status=route.status)
    else:
        response = model_response(result, route.status)
    if route.no_store and not response.prepared:
        response.headers["Cache-Control"] = "no-store"
    return response


def view_for(route: Route, handler: Handler) -> Callable[[web.Request], Awaitable[Any]]:
    """The aiohttp view serving `route` with `handler`."""

    async def view(request: web.Request) -> web.StreamResponse:
        caller = require_role(request, route.role) if route.role is not None else None
        path = {name: _path_param(name, value) for name, value in request.match_info.items()}
        query = route.query.model_validate(dict(request.query)) if route.query else None
        body = None
        if route.body is not None:
            # Bytes, not text: pydantic reports a body that is not UTF-8 as invalid JSON (400).
            body = route.body.model_validate_json(await request.read() or b"{}")
        return _respond(route, await handler(Call(request, route, path, query, body, caller)))

    view.route = route  # type: ignore[attr-defined]  # lets tests check every route is bound here
    if route.large_body:
        allow_large_body(view)
    return view


def bind_routes(app: web.Application, handlers: Mapping[str, Handler]) -> None:
    """Register `handlers` (operation id -> handler) under their routes from the table."""
    for operation_id, handler in handlers.items():
        route = ROUTES_BY_ID[operation_id]
        view = view_for(route, handler)
        for path in (route.full_path, *route.aliases):
            name = operation_id if path == route.full_path else None
            pattern = any_segment(path)
            if route.method == "GET":
                app.router.add_get(pattern, view, name=name)
            else:
                app.router.add_route(route.method, pattern, view, name=name)


def any_segment(path: str) -> str:
    """`{key}` -> `{key:[^/]+}`: aiohttp's default pattern refuses `{` and `}`, which keys
    may hold; the path parameter's own type validates the text afterwards."""
    return _PARAM.sub(r"{\1:[^/]+}", path)
