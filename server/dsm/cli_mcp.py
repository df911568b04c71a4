"""`dsm mcp`: serve AI assistants over the Model Context Protocol (docs/assistants.md).

stdio by default (desktop assistants start it themselves); `--http` serves the SDK's
streamable HTTP transport on loopback, refusing foreign Host and any browser Origin, and
requiring the same bearer token the MCP server uses to reach the companion server.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import os
import sys
from typing import Any

from .assistants.api import ApiError, CompanionApi
from .assistants.results import DEFAULT_MAX_VALUE_CHARS
from .cli_server import add_server_option

ALLOWED_ROLES = ("assistant", "viewer")
LOOPBACK = "127.0.0.1"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "mcp",
        help="a Model Context Protocol server for AI assistants",
        description="Let an AI assistant read, search and analyse your data stores and "
        "propose changes a person approves in Studio. Needs a running `dsm serve` and a token "
        "made with `dsm tokens create --role assistant --label NAME` (docs/assistants.md).",
    )
    add_server_option(parser)
    parser.add_argument(
        "--token",
        default=os.environ.get("DSM_TOKEN"),
        help="an assistant token (default $DSM_TOKEN); prefer the variable: arguments show "
        "in process lists",
    )
    parser.add_argument(
        "--http",
        action="store_true",
        help="serve streamable HTTP on 127.0.0.1 instead of stdio; clients send the same "
        "token as `Authorization: Bearer ...`",
    )
    parser.add_argument("--port", type=int, default=0, help="with --http (default: any free)")
    parser.add_argument(
        "--max-value-chars",
        type=int,
        default=DEFAULT_MAX_VALUE_CHARS,
        help="longer text (an entry's value) is summarised, not returned (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    if not args.token:
        print(
            "error: a token is needed: set DSM_TOKEN (make one with `dsm tokens create --role "
            "assistant --label 'my assistant'`).",
            file=sys.stderr,
        )
        return 2
    api = CompanionApi(args.server, args.token)
    try:
        me = asyncio.run(api.call("GET", "/me"))
    except ApiError as exc:
        print(f"error: {exc.message or exc.code}", file=sys.stderr)
        return 1
    if me.get("role") not in ALLOWED_ROLES:
        print(
            f"error: this token has the {me.get('role')} role; give an assistant a token of "
            "its own with `dsm tokens create --role assistant` (it can propose, never apply).",
            file=sys.stderr,
        )
        return 2
    from .assistants.server import build_server  # the SDK loads only for `dsm mcp`

    server = build_server(api, max_value_chars=args.max_value_chars)
    if not args.http:
        asyncio.run(server.run_stdio_async())
        return 0
    asyncio.run(serve_http(server, args.token, args.port))
    return 0


async def serve_http(server: Any, token: str, port: int) -> None:
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    guards = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{LOOPBACK}:*", "localhost:*"],
        allowed_origins=[],  # no browser page may drive it
    )
    app = BearerGuard(server.streamable_http_app(transport_security=guards, host=LOOPBACK), token)
    config = uvicorn.Config(app, host=LOOPBACK, port=port, log_level="warning")
    http = uvicorn.Server(config)
    await http.serve()


class BearerGuard:
    """ASGI: every HTTP request must carry the MCP server's own token."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                body = (
                    b'{"error":{"code":"UNAUTHORIZED","message":"Send the assistant token as '
                    b'Authorization: Bearer ...","retryable":false}}'
                )
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
