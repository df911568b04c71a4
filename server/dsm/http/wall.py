"""The browser and DNS-rebinding wall every loopback server of ours stands behind.

Loopback is not access control: any web page can make the browser send requests to
127.0.0.1. Studio's HttpService (and our own Open Cloud client) never sends `Origin` or
`Sec-Fetch-*`, always names our loopback address in `Host`, and always sends an origin-form
target (`/path`), so a request that does otherwise came from a browser, directly or through a
rebound DNS name, or from a proxy-style client, and is refused. The companion server's guard
and the embedded emulator both install this; each answers a refusal in its own envelope.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import hdrs, web

from shared_schema.errors import ErrorCode

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


@dataclass(frozen=True)
class Refusal:
    code: ErrorCode  # FORBIDDEN_HOST or FORBIDDEN_ORIGIN, both 403
    message: str


def host_allowed(host: str | None, port: int) -> bool:
    """Only our loopback names with our exact port; anything else may be a rebound DNS name.

    Exact string comparison (case-insensitive, as host names are) rejects `localhost.`,
    `evil@127.0.0.1:port`, extra whitespace and a missing port. Clients omit the port only when
    it is 80, so only then is a bare name accepted.
    """
    if host is None or port <= 0:
        return False
    allowed = {f"{name}:{port}" for name in LOOPBACK_NAMES}
    if port == 80:
        allowed.update(LOOPBACK_NAMES)
    return host.lower() in allowed


def _shown(value: str) -> str:
    return repr(value[:100])


def wall_refusal(request: web.BaseRequest, port: int, *, service: str) -> Refusal | None:
    """Why this request must not be served (None when it may); `service` names us in messages."""
    hosts = request.headers.getall(hdrs.HOST, [])
    host = hosts[0] if len(hosts) == 1 else None
    if not request.raw_path.startswith("/"):
        # Absolute-form (`GET http://evil/...`, any scheme or case), authority-form (CONNECT)
        # or asterisk-form: only proxies are sent those, and we are no proxy.
        return Refusal(
            ErrorCode.FORBIDDEN_HOST,
            f"Refused the request target {_shown(request.raw_path)}: {service} answers only "
            "paths such as /api/v1/hello, never a full URL (it is not a proxy).",
        )
    if not host_allowed(host, port):
        got = "no Host header" if not hosts else f"Host {', '.join(_shown(h) for h in hosts)}"
        return Refusal(
            ErrorCode.FORBIDDEN_HOST,
            f"Refused {got}: {service} answers only at localhost:{port} or 127.0.0.1:{port}. "
            "(This blocks web pages that point their own domain name at your computer.)",
        )
    if hdrs.ORIGIN in request.headers or any(
        name.lower().startswith("sec-fetch-") for name in request.headers
    ):
        return Refusal(
            ErrorCode.FORBIDDEN_ORIGIN,
            "Refused a request from a web browser (it carries an Origin or Sec-Fetch header). "
            f"{service[:1].upper()}{service[1:]} only talks to the DataStore Manager Pro "
            "plugin and its companion server.",
        )
    return None
