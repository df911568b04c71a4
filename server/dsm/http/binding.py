"""Bind handlers to the protocol's route table, so every view validates and answers alike.

The table in shared_schema.registry is the single description of the API: method, path, role,
query, body and response models. `bind` looks a route up by its operation id, validates path
parameters, query and body with its models, enforces its role, and serializes the result.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from shared_schema.errors import ErrorCode
from shared_schema.registry import PATH_PARAMS, ROUTES_BY_ID

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
    request: web.Request
    caller: Principal
    path: dict[str, Any]
    query: Any
    body: Any


Handler = Callable[[Call], Awaitable[BaseModel | web.StreamResponse | None]]


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(exclude_none=True),
        status=status,
        content_type="application/json",
    )


def bind(
    app: web.Application, operation_id: str, handler: Handler, *, large_body: bool = False
) -> None:
    route = ROUTES_BY_ID[operation_id]
    needed = route.role
    if needed is None:
        raise ValueError(f"{operation_id} needs no token; bind it directly, not through bind()")

    async def view(request: web.Request) -> web.StreamResponse:
        caller = require_role(request, needed)
        path = {name: _path_param(name, value) for name, value in request.match_info.items()}
        query = route.query.model_validate(dict(request.query)) if route.query else None
        body = None
        if route.body is not None:
            # Bytes, not text: pydantic reports a body that is not UTF-8 as invalid JSON (400).
            body = route.body.model_validate_json(await request.read() or b"{}")
        result = await handler(Call(request, caller, path, query, body))
        if isinstance(result, web.StreamResponse):
            return result
        if result is None:
            return web.Response(status=route.status)
        return model_response(result, route.status)

    if large_body:
        allow_large_body(view)
    app.router.add_route(route.method, any_segment(route.full_path), view, name=operation_id)


def any_segment(path: str) -> str:
    """`{key}` -> `{key:[^/]+}`: aiohttp's default pattern refuses `{` and `}`, which keys
    may hold; the path parameter's own type validates the text afterwards."""
    return _PARAM.sub(r"{\1:[^/]+}", path)
