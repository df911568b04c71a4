"""The per-token caps of AI assistants (services/assistant_caps.py), applied to every request
an assistant-role token makes, after auth has named the caller."""

from __future__ import annotations

from aiohttp import web

from shared_schema.common import Role

from .appkeys import ASSISTANT_CAPS, PRINCIPAL
from .guards import Handler


@web.middleware
async def assistant_caps_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    caller = request.get(PRINCIPAL)
    if caller is None or caller.role is not Role.ASSISTANT:
        return await handler(request)
    caps = request.config_dict[ASSISTANT_CAPS]
    meter = caps.admit(caller)  # 429 RATE_LIMITED, in the envelope, when a window is full
    with caps.charging(meter):
        return await handler(request)
