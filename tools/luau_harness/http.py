"""Real HTTP for HttpService:RequestAsync, performed on worker threads.

Failures become Roblox's error strings ("HttpError: ConnectFail", "HttpError: Timedout", ...).
`close()` aborts requests still in flight by shutting their sockets down, so no worker thread
outlives the harness.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field


@dataclass
class HttpRequest:
    url: str
    method: str
    headers: dict[str, str]
    body: bytes | None


@dataclass
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str]  # names lower-cased (see HttpClient)
    body: bytes


@dataclass
class HttpFailure:
    message: str  # Roblox's error string, e.g. "HttpError: ConnectFail"


@dataclass(eq=False)  # hashed by identity: kept in a set while in flight
class _Inflight:
    conn: http.client.HTTPConnection | None = None
    aborted: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class HttpClient:
    """One pool of worker threads per harness; each request is a fresh connection."""

    def __init__(self, timeout: float, max_workers: int = 8) -> None:
        self.timeout = timeout
        self._max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: set[_Inflight] = set()
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, request: HttpRequest) -> Future[HttpResponse | HttpFailure]:
        if self._closed:
            raise RuntimeError("the harness HTTP client is closed")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="luau-http")
        state = _Inflight()
        with self._lock:
            self._inflight.add(state)
        return self._pool.submit(self._run, request, state)

    def _run(self, request: HttpRequest, state: _Inflight) -> HttpResponse | HttpFailure:
        try:
            return self._perform(request, state)
        finally:
            with self._lock:
                self._inflight.discard(state)

    def _perform(self, request: HttpRequest, state: _Inflight) -> HttpResponse | HttpFailure:
        parts = urllib.parse.urlsplit(request.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return HttpFailure("HttpError: InvalidUrl")
        conn_cls = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        try:
            conn = conn_cls(parts.hostname, parts.port, timeout=self.timeout)
        except ValueError:
            return HttpFailure("HttpError: InvalidUrl")
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        try:
            conn.connect()
            # close() may have run while connecting: check under the lock it takes, so either it
            # sees this socket and shuts it down, or this thread sees the abort.
            with state.lock:
                if state.aborted:
                    return HttpFailure("HttpError: Aborted")
                state.conn = conn
            conn.request(request.method, target, body=request.body, headers=request.headers)
            resp = conn.getresponse()
            body = resp.read()
            # Header names lower-cased: Roblox hands back the names it received and HTTP names are
            # case-insensitive, so plugin code must not depend on their case anyway.
            headers = {k.lower(): v for k, v in resp.getheaders()}
            return HttpResponse(resp.status, resp.reason, headers, body)
        except ConnectionRefusedError:
            return HttpFailure("HttpError: ConnectFail")
        except TimeoutError:
            return HttpFailure("HttpError: Timedout")
        except socket.gaierror:
            return HttpFailure("HttpError: DnsResolve")
        except ssl.SSLError:
            return HttpFailure("HttpError: SslConnectFail")
        except (
            http.client.RemoteDisconnected,
            http.client.IncompleteRead,
            ConnectionResetError,
            BrokenPipeError,
            ConnectionAbortedError,
        ):
            return HttpFailure(
                "HttpError: Aborted" if state.aborted else "HttpError: ConnectionClosed"
            )
        except OSError:
            return HttpFailure("HttpError: Aborted" if state.aborted else "HttpError: NetFail")
        except http.client.HTTPException:
            return HttpFailure("HttpError: NetFail")
        finally:
            conn.close()

    def close(self) -> None:
        """Abort requests in flight and join the worker threads."""
        self._closed = True
        with self._lock:
            pending = list(self._inflight)
        for state in pending:
            with state.lock:
                state.aborted = True
                sock = state.conn.sock if state.conn is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
