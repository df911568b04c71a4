"""The connection layer under routing: what aiohttp does before any middleware can run.

Every local process is a possible flood, so the server bounds what a connection may hold:

- **Every answer is the envelope.** aiohttp's own HTTP parser refusals (a URL or header over
  8,190 bytes, too many headers, a duplicate Content-Type, a bad Content-Length, bytes that are
  not HTTP) come back as `{error: {...}}` like everything else, never as plain text.
- **Header timeout.** A request's headers must arrive within HEADER_TIMEOUT_SECONDS of its
  first byte (or of the connection opening): a client sending a byte at a time gets 408 and the
  connection closes. Idle keep-alive connections close after KEEPALIVE_TIMEOUT_SECONDS.
- **A connection cap below the descriptor limit.** At the cap, the oldest connection that is
  idle or still sending headers is closed to make room; when every connection is busy with a
  request the newcomer gets 503 SERVER_BUSY and is closed. Accepting past the descriptor limit
  is what made the server stop answering, so the cap keeps a reserve for SQLite files, the
  embedded emulator and its client.
- **Logging that cannot flood the disk.** Repeated protocol errors and accept errors are
  logged once per interval with a count of the ones left out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from shared_schema.errors import ErrorBody, ErrorCode, ErrorEnvelope

from ..services.errors import ServiceError
from .errors import STATUS, error_response

log = logging.getLogger("dsm.connections")

HEADER_TIMEOUT_SECONDS = 10.0
KEEPALIVE_TIMEOUT_SECONDS = 15.0
LINGERING_SECONDS = 1.0
# Hard ceiling however many descriptors the system allows: a loopback server for a few Studio
# windows has no use for more.
MAX_CONNECTIONS_CEILING = 4096
LOG_INTERVAL_SECONDS = 10.0


def descriptor_limit() -> int | None:
    """The soft RLIMIT_NOFILE, None where there is none (Windows) or it is unlimited."""
    try:
        import resource
    except ImportError:  # Windows: no per-process descriptor limit to stay under
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(limit: int | None = None) -> int:
    """Connections to accept: 3/8 of the descriptors (at least 64) stay in reserve.

    The reserve covers what else the process holds: the embedded emulator's connections and
    its client's pool (up to 100 each), SQLite files, and the up to 100 sockets asyncio
    accepts in one go before the cap can refuse them (a quarter was not enough at 1,024).
    """
    soft = descriptor_limit() if limit is None else limit
    if soft is None:
        return MAX_CONNECTIONS_CEILING
    return max(16, min(MAX_CONNECTIONS_CEILING, soft - max(64, soft * 3 // 8)))


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout: float = HEADER_TIMEOUT_SECONDS
    keepalive_timeout: float = KEEPALIVE_TIMEOUT_SECONDS

    @classmethod
    def for_this_process(cls) -> ConnectionLimits:
        return cls(max_connections=connection_cap())


class ThrottledLog(logging.Filter):
    """Pass each kind of message at most once per interval, then say how many were left out.

    A kind is the logger and the message template, so one flood cannot hide another.
    """

    def __init__(self, interval: float = LOG_INTERVAL_SECONDS) -> None:
        super().__init__()
        self._interval = interval
        self._last: dict[tuple[str, str], float] = {}
        self._dropped: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._dropped[kind] = self._dropped.get(kind, 0) + 1
            return False
        self._last[kind] = now
        dropped = self._dropped.pop(kind, 0)
        if dropped:
            record.msg = f"{record.msg} ({dropped} more like this in the last {self._interval:g} s)"
        return True


_THROTTLE = ThrottledLog()
# asyncio logs "socket.accept() out of system resource" on every retry; aiohttp.server logs
# every protocol error; both are free for any local process to trigger.
THROTTLED_LOGGERS = ("asyncio", "aiohttp.server", "aiohttp.access", log.name)


def install_log_throttle() -> None:
    """Rate-limit the loggers a flood can reach (idempotent)."""
    for name in THROTTLED_LOGGERS:
        logger = logging.getLogger(name)
        if _THROTTLE not in logger.filters:
            logger.addFilter(_THROTTLE)


def _raw_answer(error: ServiceError, reason: str) -> bytes:
    """A complete HTTP/1.1 answer for the protocol level, where no Response can be sent."""
    body = (
        ErrorEnvelope(
            error=ErrorBody(code=error.code, message=error.message, retryable=error.retryable)
        )
        .model_dump_json(exclude_none=True)
        .encode()
    )
    status = STATUS[error.code]
    retry = "Retry-After: 1\r\n" if error.retryable else ""
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n{retry}"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


BUSY_ANSWER = _raw_answer(
    ServiceError(
        ErrorCode.SERVER_BUSY,
        "The server has too many open connections right now; try again in a moment.",
    ),
    "Service Unavailable",
)


def slow_headers_answer(seconds: float) -> bytes:
    return _raw_answer(
        ServiceError(
            ErrorCode.REQUEST_TIMEOUT,
            f"The request headers did not arrive within {seconds:g} s; the connection is closed.",
        ),
        "Request Timeout",
    )


def protocol_error(status: int, exc: BaseException | None) -> ServiceError:
    """aiohttp's parser refusal in words, without echoing the bytes (they may hold a token)."""
    if status == 413:
        return ServiceError(ErrorCode.PAYLOAD_TOO_LARGE, "The request is too large.")
    if status >= 500:
        return ServiceError(ErrorCode.INTERNAL, "Internal server error; see the server's log.")
    text = str(getattr(exc, "message", "") or "").lower()
    if isinstance(exc, LineTooLong):
        problem = (
            "a request line or header is longer than 8,190 bytes (send long data in a JSON "
            "body instead)"
        )
    elif "too many headers" in text:
        problem = "it has too many headers"
    elif "duplicate" in text:
        problem = "a header that may appear once appears twice (for example Content-Type)"
    elif "chunk" in text or "transfer-encoding" in text:
        problem = "its chunked body or Transfer-Encoding is malformed"
    elif "content-length" in text:
        problem = "its Content-Length is not a single whole number matching the body"
    elif isinstance(exc, BadHttpMethod) or "method" in text or "pri/upgrade" in text:
        problem = "it is not an HTTP/1.1 request"
    else:
        problem = f"it is malformed ({type(exc).__name__ if exc else 'unknown'})"
    return ServiceError(ErrorCode.BAD_REQUEST, f"The request is not valid HTTP: {problem}.")


class GuardedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol with the header timeout, the cap and the envelope."""

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager
        self._header_timer: asyncio.TimerHandle | None = None
        self.opened_at = 0.0
        self.partial_request = False  # bytes of a request whose headers are not complete

    # -- connection life

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.make_room():
            self._guard.refused += 1
            log.warning(
                "refusing connections: %d open, the cap is %d (see docs/limits.md)",
                len(self._guard.connections),
                self._guard.limits.max_connections,
            )
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(BUSY_ANSWER)
            transport.close()
            self._manager = None  # never registered: connection_lost has nothing to undo
            return
        super().connection_made(transport)
        self.opened_at = self._loop.time()
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self.partial_request = False
            self._disarm_header_timer()
        elif data and not self._request_in_progress and not self._upgraded:
            self.partial_request = True
            self._arm_header_timer()

    @property
    def evictable(self) -> bool:
        """Idle, or still sending headers: closing it loses no request in progress."""
        return not (self._request_in_progress or self._messages or self._upgraded)

    def evict(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.partial_request and isinstance(transport, asyncio.WriteTransport):
            transport.write(BUSY_ANSWER)
        self.force_close()
        transport.close()

    # -- header timeout

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self._loop.call_later(
                self._guard.limits.header_timeout, self._headers_too_slow
            )

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport is None or transport.is_closing() or not self.evictable:
            return
        self._guard.timed_out += 1
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(self._guard.slow_headers_answer)
        self.force_close()
        transport.close()

    # -- parser refusals

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("internal error on a connection", exc_info=exc)
        else:
            log.info("refused a malformed request: %s", type(exc).__name__ if exc else status)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already being sent; closing the connection")
        if isinstance(exc, HttpProcessingError) and exc.code in (413, 431):
            status = 413
        response = error_response(protocol_error(status, exc))
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.force_close()
        return response


class GuardedServer(web.Server):
    """web.Server whose connections are GuardedRequestHandlers sharing one cap."""

    def __init__(self, handler: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits
        self.slow_headers_answer = slow_headers_answer(limits.header_timeout)
        self.refused = 0  # connections turned away at the cap
        self.evicted = 0  # idle or slow connections closed to make room
        self.timed_out = 0  # connections closed for slow headers

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)

    def make_room(self) -> bool:
        """True when a new connection fits, closing the oldest evictable one if needed."""
        if len(self._connections) < self.limits.max_connections:
            return True
        candidates = [
            h for h in self._connections if isinstance(h, GuardedRequestHandler) and h.evictable
        ]
        if not candidates:
            return False
        oldest = min(candidates, key=lambda h: h.opened_at)
        self._connections.pop(oldest, None)
        oldest.evict()
        self.evicted += 1
        return True


class GuardedAppRunner(web.AppRunner):
    """An AppRunner serving through GuardedServer: use it wherever an app is served."""

    def __init__(
        self, app: web.Application, *, limits: ConnectionLimits | None = None, **kwargs: Any
    ) -> None:
        self.limits = limits or ConnectionLimits.for_this_process()
        kwargs.setdefault("keepalive_timeout", self.limits.keepalive_timeout)
        # After answering a request whose body never finished, read on for at most this long
        # (aiohttp's default, 10 s, lets a trickling client keep its connection).
        kwargs.setdefault("lingering_time", LINGERING_SECONDS)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        return GuardedServer(
            base.request_handler,
            limits=self.limits,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            **base._kwargs,
        )
