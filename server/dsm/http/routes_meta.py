"""`GET /api/v1/hello` (no token: what this server is) and `GET /api/v1/openapi.json`."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from shared_schema import PROTOCOL_MAJOR, PROTOCOL_MINOR
from shared_schema.hello import Hello
from shared_schema.registry import openapi_document, schema_hash

from .. import __version__
from .appkeys import INSTANCE_ID, SERVER_BACKEND
from .binding import Call, Handler

CAPABILITIES = [
    "events.long_poll",
    "events.websocket",
    "entries.conditional_write",
    "entries.idempotency",
    "entries.revisions",
    "entries.diff",
    "entries.revert",
    "journal.undo",
    "ordered.read_write",
    "memory.read",
    "sessions",
    "metrics",
    "budget",
    "jobs",
    "uploads",
]


async def hello(call: Call) -> BaseModel:
    return Hello(
        server_version=__version__,
        protocol_major=PROTOCOL_MAJOR,
        protocol_minor=PROTOCOL_MINOR,
        capabilities=CAPABILITIES,
        schema_hash=schema_hash(),
        instance_id=call.app[INSTANCE_ID],
        backend=call.app[SERVER_BACKEND](),
        pairing="required",
    )


async def openapi(call: Call) -> web.Response:
    # A plain JSON document, not a protocol model.
    return web.json_response(openapi_document(__version__))


HANDLERS: dict[str, Handler] = {"hello": hello, "openapi": openapi}
