"""The HTTP core of the Open Cloud client: one pooled session, auth, pacing, retries, metrics.

Reads (and other requests that are safe to repeat) are retried with jittered exponential
back-off on 5xx, connection failures and timeouts. Writes are only re-sent when the request
provably never left (connection refused) or the server refused it unprocessed (429); when a
write's answer is lost, ``_write`` re-reads the target to decide what happened instead of
repeating it blindly.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Self

import aiohttp
from multidict import CIMultiDictProxy
from pydantic import SecretStr
from yarl import URL

from .. import __version__
from .errors import (
    Conflict,
    ErrorContext,
    InvalidArgument,
    NetworkError,
    OpenCloudError,
    ServerError,
    WriteOutcomeUnknown,
    error_from_response,
    parse_envelope,
)
from .models import Page
from .ops import PROBE, Op
from .retry import (
    RETRYABLE_STATUSES,
    RetryPolicy,
    failure_fatal,
    failure_not_sent,
    parse_retry_after,
)

log = logging.getLogger("dsm.opencloud")

ROBLOX_BASE_URL = "https://apis.roblox.com"
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
EMULATOR_HEADER = "X-DSM-Emulator"
Backend = Literal["EMULATOR", "LIVE"]
# on_call(operation, status, latency_s, backend): status is the HTTP status, or "timeout" /
# "network_error" when no answer arrived; backend is "EMULATOR", "LIVE" or "UNKNOWN".
OnCall = Callable[[str, int | str, float, str], None]


class RateLimiterLike(Protocol):
    """What the client needs from dsm.opencloud.ratelimit.ClientRateLimiter."""

    async def acquire(self, universe_id: str, category: str) -> float: ...

    def penalize(self, universe_id: str, category: str, retry_after: float) -> None: ...

    def observe(self, universe_id: str, category: str, headers: Mapping[str, str]) -> None: ...


@dataclass(frozen=True)
class Response:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8")


class AnswerLost(Exception):
    """Internal: a write was sent but no usable answer came back."""

    def __init__(self, error: OpenCloudError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class Resolution[T]:
    """What re-reading after a lost write answer showed."""

    kind: Literal["applied", "not_applied", "unknown"]
    result: T | None = None  # the entry showing our write, when applied
    current: Any = None  # what the re-read found
    reason: str = ""  # why the outcome is unknown, for the error message


def universe_str(universe_id: int | str) -> str:
    text = str(universe_id).strip()
    if not text.isdigit():
        raise InvalidArgument(f"Universe id {universe_id!r} is not a number.")
    return text


class ClientCore:
    """Session, pacing, retries and error mapping shared by every client method."""

    def __init__(
        self,
        *,
        api_key: str | SecretStr,
        base_url: str = ROBLOX_BASE_URL,
        limiter: RateLimiterLike | None = None,
        retry: RetryPolicy | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
        on_call: OnCall | None = None,
        session: aiohttp.ClientSession | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        secret = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        if not secret.get_secret_value().strip():
            raise ValueError("An Open Cloud API key is required.")
        self._api_key = secret
        self._base_url = base_url.rstrip("/")
        parsed = URL(self._base_url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}.")
        if parsed.scheme == "http" and parsed.host not in _LOOPBACK:
            log.warning(
                "Open Cloud base URL %s is plain HTTP: the API key will cross the network "
                "unencrypted. Use https unless this is a local emulator.",
                self._base_url,
            )
        self._limiter = limiter
        self._retry = retry or RetryPolicy()
        self._timeout = timeout or aiohttp.ClientTimeout(total=60, connect=10, sock_read=30)
        self._on_call = on_call
        self._session = session
        self._owns_session = session is None
        if session is not None:
            _disable_hidden_retries(session)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._backend: Backend | None = None

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        self._ensure_session()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        if self._owns_session:
            self._session = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise RuntimeError("The aiohttp session given to the client is closed.")
            # The API key is added per request so it never sits in session defaults. Open Cloud
            # authenticates by that key alone: cookies it may set are not kept (a jar costs
            # ~30 us on every request, measured by benchmarks/server_latency.py's part b).
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"User-Agent": f"DataStoreManagerPro/{__version__}"},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            _disable_hidden_retries(self._session)
        return self._session

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base_url!r}, backend={self._backend!r})"

    __str__ = __repr__

    # ------------------------------------------------------------------- backend

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def backend(self) -> Backend | None:
        """Either "EMULATOR" or "LIVE" once any answer has been seen (see detect_backend)."""
        return self._backend

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._retry

    async def detect_backend(self) -> Backend:
        """GET / on the base URL: the emulator marks every answer with X-DSM-Emulator."""
        # Any status will do: only the presence of the emulator's header matters.
        await self._request(PROBE, "GET", "/", universe=None, ok=range(100, 600))
        assert self._backend is not None
        return self._backend

    async def emulator_universes(self) -> list[int]:
        """The universes an emulator holds data for (`/_emulator/universes`, an emulator-only
        extra): lets `--upstream` list an emulator's universes the way the embedded one does."""
        if self._backend != "EMULATOR":
            return []
        session = self._ensure_session()
        async with session.get(
            self._base_url + "/_emulator/universes",
            headers={"x-api-key": self._api_key.get_secret_value()},
        ) as resp:
            body = await resp.json()
        return [int(u) for u in body.get("universes", []) if str(u).isdigit()]

    def _service(self) -> str:
        return "the local emulator" if self._backend == "EMULATOR" else "Roblox"

    def _redact(self, text: str) -> str:
        key = self._api_key.get_secret_value()
        return text.replace(key, "[redacted]") if len(key) >= 4 else text

    def _notify(self, op: Op, status: int | str, latency: float, backend: str) -> None:
        if self._on_call is None:
            return
        try:
            self._on_call(op.name, status, latency, backend)
        except Exception:  # a metrics bug must not break Open Cloud calls
            log.exception("on_call hook failed for %s", op.name)

    # ------------------------------------------------------------------ requests

    def _error_context(self, op: Op, universe: str | None, subject: str | None) -> ErrorContext:
        return ErrorContext(op, universe, subject, self._service(), self._redact)

    async def _request(
        self,
        op: Op,
        method: str,
        path: str,
        *,
        universe: str | None,
        subject: str | None = None,
        params: Mapping[str, str | int | bool | None] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        write: bool = False,
        ok: Any = range(200, 300),
        current_from: Callable[[Response], Any] | None = None,
    ) -> Response:
        """Send with pacing and retries; return a response whose status is in ``ok``.

        ``write=True`` means repeating the request could apply it twice: lost answers raise
        AnswerLost for ``_write`` to resolve instead of being retried here.
        """
        session = self._ensure_session()
        url = URL(self._base_url + path, encoded=True)
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        if query:
            url = url.with_query(query)
        request_headers = {"x-api-key": self._api_key.get_secret_value()}
        if body is not None:
            request_headers["Content-Type"] = "application/json"
        request_headers.update(headers or {})
        policy = self._retry
        attempt = 0
        while True:
            attempt += 1
            last_try = attempt >= policy.max_attempts
            if self._limiter is not None and universe is not None:
                await self._limiter.acquire(universe, op.category)
            started = time.monotonic()
            try:
                async with session.request(
                    method, url, data=body, headers=request_headers, allow_redirects=False
                ) as raw:
                    payload = await raw.read()
                    response = Response(raw.status, raw.headers, payload)
            except (aiohttp.ClientError, TimeoutError) as exc:
                latency = time.monotonic() - started
                timed_out = isinstance(exc, TimeoutError)
                self._notify(
                    op,
                    "timeout" if timed_out else "network_error",
                    latency,
                    self._backend or "UNKNOWN",
                )
                error = self._network_error(exc, op, universe, subject, method, url)
                if failure_fatal(exc):
                    raise error from None
                if write and not failure_not_sent(exc):
                    raise AnswerLost(error) from None
                if last_try:
                    raise error from None
                await self._backoff(attempt, op, f"{type(exc).__name__}", url)
                continue
            latency = time.monotonic() - started
            backend: Backend = "EMULATOR" if EMULATOR_HEADER in response.headers else "LIVE"
            if self._backend is None:
                self._backend = backend
            self._notify(op, response.status, latency, backend)
            if self._limiter is not None and universe is not None:
                self._limiter.observe(universe, op.category, response.headers)
            if response.status in ok:
                return response
            # Built per answer so messages name the backend that actually answered.
            ctx = self._error_context(op, universe, subject)
            if response.status == 429:
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                wait = (
                    retry_after if retry_after is not None else policy.backoff(attempt, self._rng)
                )
                if self._limiter is not None and universe is not None:
                    self._limiter.penalize(universe, op.category, wait)
                if not last_try and wait <= policy.max_retry_after:
                    log.info(
                        "429 from %s %s; retrying in %.2f s (attempt %d of %d)",
                        method,
                        url.path,
                        wait,
                        attempt + 1,
                        policy.max_attempts,
                    )
                    if self._limiter is None or universe is None:
                        await self._sleep(wait)
                    continue
                raise self._status_error(response, ctx, retry_after=retry_after)
            if response.status in RETRYABLE_STATUSES:
                server_error = self._status_error(response, ctx)
                if write:
                    raise AnswerLost(server_error)
                if not last_try:
                    await self._backoff(attempt, op, f"HTTP {response.status}", url)
                    continue
                raise server_error
            current = current_from(response) if current_from is not None else None
            raise self._status_error(response, ctx, current=current)

    def _status_error(
        self,
        response: Response,
        ctx: ErrorContext,
        *,
        retry_after: float | None = None,
        current: Any = None,
    ) -> OpenCloudError:
        return error_from_response(
            response.status,
            parse_envelope(response.body),
            ctx,
            retry_after=retry_after,
            current=current,
        )

    def _network_error(
        self,
        exc: BaseException,
        op: Op,
        universe: str | None,
        subject: str | None,
        method: str,
        url: URL,
    ) -> NetworkError:
        where = f"{url.scheme}://{url.host}:{url.port}"
        if isinstance(exc, TimeoutError):
            what = "timed out waiting for an answer"
        else:
            detail = self._redact(str(exc)) or "no details"
            what = f"lost the connection ({type(exc).__name__}: {detail})"
        target = f" ({subject})" if subject else ""
        return NetworkError(
            f"The request to {op.action}{target} {what} [{method} {where}{url.path}]. Check the "
            f"network connection and that {self._service()} is reachable.",
            operation=op.name,
            universe_id=universe,
        )

    async def _backoff(self, attempt: int, op: Op, reason: str, url: URL) -> None:
        delay = self._retry.backoff(attempt, self._rng)
        log.info(
            "%s for %s (%s); retrying in %.2f s (attempt %d of %d)",
            reason,
            op.name,
            url.path,
            delay,
            attempt + 1,
            self._retry.max_attempts,
        )
        await self._sleep(delay)

    def _bad_body(self, op: Op, universe: str | None, exc: Exception) -> ServerError:
        return ServerError(
            f"{self._service().capitalize()} sent an answer the client cannot read while trying to "
            f"{op.action}: {exc}",
            operation=op.name,
            universe_id=universe,
        )

    # -------------------------------------------------------------------- writes

    async def _write[T](
        self,
        op: Op,
        *,
        universe: str,
        subject: str,
        send: Callable[[], Awaitable[T]],
        reconcile: Callable[[], Awaitable[Resolution[T]]] | None,
    ) -> T:
        """Send a write; if its answer is lost, re-read to learn its outcome.

        Applied -> return what the re-read shows. Provably not applied (the target is still in
        the state the write was conditioned on) -> re-send, up to ``max_write_resends`` times.
        Anything else -> WriteOutcomeUnknown carrying what was read. ``reconcile=None`` means
        the target cannot be re-read (queue adds, messages): a lost answer is always unknown.
        """
        resends = 0
        lost: OpenCloudError | None = None
        while True:
            try:
                return await send()
            except AnswerLost as exc:
                lost = exc.error
            except Conflict:
                if lost is None or reconcile is None:
                    raise
                # A re-send conflicted: the earlier attempt may have landed after our re-read.
                late = await self._resolve(op, universe, subject, reconcile, lost)
                if late.kind == "applied" and late.result is not None:
                    return late.result
                raise
            if reconcile is None:
                raise WriteOutcomeUnknown(
                    f"The answer to the request to {op.action} ({subject}) was lost "
                    f"({lost.message}). It cannot be checked by re-reading, so it may or may not "
                    "have been applied; it was not repeated.",
                    cause=lost,
                    operation=op.name,
                    universe_id=universe,
                )
            resolution = await self._resolve(op, universe, subject, reconcile, lost)
            if resolution.kind == "applied" and resolution.result is not None:
                log.info("lost answer to %s (%s): re-read shows it was applied", op.name, subject)
                return resolution.result
            if resolution.kind == "not_applied" and resends < self._retry.max_write_resends:
                resends += 1
                log.info("lost answer to %s (%s): not applied, re-sending", op.name, subject)
                await self._sleep(self._retry.backoff(resends, self._rng))
                continue
            reason = resolution.reason or "it was still not applied after re-sending"
            raise WriteOutcomeUnknown(
                f"The answer to the request to {op.action} ({subject}) was lost "
                f"({lost.message}), and re-reading could not prove whether it was applied: "
                f"{reason}. Check the current value before trying again.",
                current=resolution.current,
                cause=lost,
                operation=op.name,
                universe_id=universe,
            )

    async def _resolve[T](
        self,
        op: Op,
        universe: str,
        subject: str,
        reconcile: Callable[[], Awaitable[Resolution[T]]],
        lost: OpenCloudError,
    ) -> Resolution[T]:
        try:
            return await reconcile()
        except OpenCloudError as read_error:
            raise WriteOutcomeUnknown(
                f"The answer to the request to {op.action} ({subject}) was lost "
                f"({lost.message}), and re-reading it to check failed too "
                f"({read_error.message}). It may or may not have been applied.",
                cause=lost,
                operation=op.name,
                universe_id=universe,
            ) from None


async def paginate[T](fetch: Callable[[str | None], Awaitable[Page[T]]]) -> AsyncIterator[T]:
    """Yield every item of a paged list, following page tokens until none is returned.

    A short (even empty) page does not mean the end: Open Cloud may read one partition per
    call. A token equal to the one just used would loop forever, so it is an error.
    """
    token: str | None = None
    while True:
        page = await fetch(token)
        for item in page.items:
            yield item
        if not page.next_page_token:
            return
        if page.next_page_token == token:
            raise ServerError(
                "The server returned the same page token twice; stopping to avoid an endless "
                "listing."
            )
        token = page.next_page_token


def _disable_hidden_retries(session: aiohttp.ClientSession) -> None:
    """Stop aiohttp from silently re-sending DELETE/PUT/GET when a pooled connection drops.

    aiohttp (3.9+) repeats "idempotent" methods once on ServerDisconnectedError. A DELETE whose
    answer was lost would then be applied twice, hidden from on_call, the limiter and the
    lost-answer resolution. There is no public switch, so the session's private flag is
    cleared; tests/test_client_faults.py fails loudly if aiohttp renames it.
    """
    if not hasattr(session, "_retry_connection"):
        raise RuntimeError("this aiohttp version has no _retry_connection flag; update the client")
    session._retry_connection = False


def _query_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
