"""Messaging publish, v2 `:publishMessage` and v1 topics (opencloud-api.md §5.5), plus the
emulator-only `GET /_emulator/messages` that reads back what was published.

`/_emulator/messages` is an emulator extension, not part of Open Cloud: it answers
`{"messages": [{"id", "universe", "topic", "message", "publishTime", "api"}]}` with the
newest `limit` (default 100, max 1000) matching messages in publish order.

Limits (MSG-G): a topic holds at most 80 characters and a message at most 1,024 characters;
both are counted in characters, as the guide states them. Both fields are required and must
be non-empty strings.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .context import EMULATOR, EmulatorContext, json_response, universe_param
from .errors import invalid
from .messaging import MessageLog, Surface
from .validation import clamp_page_size, parse_json_body

SCOPE = "universe-messaging-service:publish"
MAX_TOPIC_CHARS = 80
MAX_MESSAGE_CHARS = 1024


def _ctx(request: web.Request) -> EmulatorContext:
    return request.app[EMULATOR]


def _log(ctx: EmulatorContext) -> MessageLog:
    return ctx.messages


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read() if request.can_read_body else b""
    if not raw.strip():
        raise invalid("The request body must be a JSON object with the message to publish.")
    body = parse_json_body(raw)
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    return body


def _check_topic(topic: Any) -> str:
    if not isinstance(topic, str) or topic == "":
        raise invalid("topic is required and must be a non-empty string.")
    if len(topic) > MAX_TOPIC_CHARS:
        raise invalid(f"topic is {len(topic)} characters; the limit is {MAX_TOPIC_CHARS}.")
    return topic


def _check_message(message: Any) -> str:
    if not isinstance(message, str) or message == "":
        raise invalid("message is required and must be a non-empty string.")
    if len(message) > MAX_MESSAGE_CHARS:
        raise invalid(
            f"message is {len(message)} characters; the limit is {MAX_MESSAGE_CHARS} (1 KiB)."
        )
    return message


def _publish(
    request: web.Request, universe: str, topic: str, message: str, api: Surface
) -> web.Response:
    ctx = _ctx(request)
    ctx.throttle(request, universe, ["gateway.messaging"])
    _log(ctx).record(universe, topic, message, api)
    return web.Response(status=200)


async def publish_v2(request: web.Request) -> web.Response:
    universe = universe_param(request)
    _ctx(request).require(request, universe, SCOPE)
    body = await _json_object(request)
    return _publish(
        request,
        universe,
        _check_topic(body.get("topic")),
        _check_message(body.get("message")),
        "v2",
    )


async def publish_v1(request: web.Request) -> web.Response:
    universe = universe_param(request, "universeId")
    _ctx(request).require(request, universe, SCOPE)
    topic = _check_topic(request.match_info["topic"])
    body = await _json_object(request)
    return _publish(request, universe, topic, _check_message(body.get("message")), "v1")


async def read_messages(request: web.Request) -> web.Response:
    """Emulator extension (not Open Cloud): what was published, for tests and the UI."""
    query = request.query
    universe = query.get("universe") or None
    if universe is not None and (not universe.isdigit() or len(universe) > 19):
        raise invalid(f"Invalid universe id {universe!r}.")
    limit = clamp_page_size(query.get("limit"), default=100, maximum=1000, name="limit")
    messages = _log(_ctx(request)).recent(
        universe=universe, topic=query.get("topic") or None, limit=limit
    )
    return json_response({"messages": [m.to_json() for m in messages]})


def setup(app: web.Application, ctx: EmulatorContext) -> None:
    del ctx  # handlers reach the context through the app
    # ':publishMessage' sits inside the universe segment; aiohttp matches it as a literal
    # suffix of that segment, so no /universes/{id}/... route can collide with it.
    app.router.add_post("/cloud/v2/universes/{universe_id}:publishMessage", publish_v2)
    app.router.add_post(
        "/messaging-service/v1/universes/{universeId}/topics/{topic:[^/]+}", publish_v1
    )
    app.router.add_get("/_emulator/messages", read_messages)
