"""The per-token caps of AI assistants (services/assistant_caps.py), applied to every request
an assistant-role token makes, after auth has named the caller. Each answer says what the token
has used of its caps in the last minute, in the `DSM-Assistant-Caps` header, so `dsm mcp` can
tell the assistant what is left."""

from __future__ import annotations

from aiohttp import web

from shared_schema.common import Role

from ..services.assistant_caps import WINDOW_SECONDS, Usage
from .appkeys import ASSISTANT_CAPS, PRINCIPAL
from .guards import Handler

CAPS_HEADER = "DSM-Assistant-Caps"


def caps_header(usage: Usage) -> str:
    """`requests=12/120; opencloud=3/60; window=60`: used/cap over the sliding window."""
    return (
        f"requests={usage.requests}/{usage.requests_per_minute}; "
        f"opencloud={usage.opencloud}/{usage.opencloud_per_minute}; "
        f"window={WINDOW_SECONDS:.0f}"
    )


@web.middleware
async def assistant_caps_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    caller = request.get(PRINCIPAL)
    if caller is None or caller.role is not Role.ASSISTANT:
        return await handler(request)
    caps = request.config_dict[ASSISTANT_CAPS]
    meter = caps.admit(caller)  # 429 RATE_LIMITED, in the envelope, when a window is full
    with caps.charging(meter):
        response = await handler(request)
    if not response.prepared:  # a stream has sent its headers already
        response.headers[CAPS_HEADER] = caps_header(caps.usage(caller.token_id))
    return response
