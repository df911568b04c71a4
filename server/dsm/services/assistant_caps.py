"""Caps on what one AI assistant's token may spend (docs/assistants.md, "Limits").

An assistant in a loop must not drain the Open Cloud budget the game's own servers share. Each
token with the assistant role gets two sliding one-minute windows: the API requests it makes,
and the Open Cloud requests made on its behalf. The second is counted by the Open Cloud client's
call hook while one of its requests is handled, or a task that request started runs (a job's
planning inherits the context it was created in), every attempt included, since a refused or
retried call spends budget too.

A request is refused with 429 RATE_LIMITED, before anything runs, when either window is full.
A request once admitted finishes, so the Open Cloud count can pass its cap by what that one
request needed: one call for a read, a few list pages for scopes, five sample reads for a plan.

With a UsageLog every count is also written to disk (wall-clock times) and read back at start,
so restarting the server does not give an assistant a fresh minute, and `dsm tokens list` can
show each assistant's usage against the caps.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from shared_schema.auth import AssistantCapsUsage, CapUse, TokenInfo
from shared_schema.common import Role
from shared_schema.errors import ErrorCode

from .assistant_usage import Kind, UsageLog
from .errors import ServiceError
from .tokens import Principal

WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Usage:
    """One assistant token's use of its caps over the last minute."""

    requests: int
    requests_per_minute: int
    opencloud: int
    opencloud_per_minute: int

    @property
    def requests_left(self) -> int:
        return max(0, self.requests_per_minute - self.requests)

    @property
    def opencloud_left(self) -> int:
        return max(0, self.opencloud_per_minute - self.opencloud)

    def view(self) -> AssistantCapsUsage:
        return AssistantCapsUsage(
            window_seconds=round(WINDOW_SECONDS),
            api_requests=CapUse(
                used=self.requests, cap=self.requests_per_minute, left=self.requests_left
            ),
            opencloud_requests=CapUse(
                used=self.opencloud, cap=self.opencloud_per_minute, left=self.opencloud_left
            ),
        )


@dataclass
class TokenMeter:
    """One assistant token's recent API requests and Open Cloud calls (monotonic times)."""

    token_id: str
    requests: deque[float] = field(default_factory=deque)
    calls: deque[float] = field(default_factory=deque)


_CHARGED_TO: ContextVar[TokenMeter | None] = ContextVar("dsm_assistant_meter", default=None)


@contextmanager
def not_charged() -> Iterator[None]:
    """Open Cloud calls made inside, and in tasks started inside, count against no assistant:
    a job a person started runs on its own account, even when its planning (an assistant's
    proposal, still counting when it was started) is what launches it."""
    token = _CHARGED_TO.set(None)
    try:
        yield
    finally:
        _CHARGED_TO.reset(token)


def _trim(times: deque[float], now: float) -> None:
    while times and now - times[0] >= WINDOW_SECONDS:
        times.popleft()


class AssistantCaps:
    def __init__(
        self,
        requests_per_minute: int,
        opencloud_per_minute: int,
        *,
        clock: Callable[[], float] = time.time,
        log: UsageLog | None = None,
    ) -> None:
        """`clock` is wall-clock seconds when there is a `log` (its times outlive the process)."""
        self.requests_per_minute = requests_per_minute
        self.opencloud_per_minute = opencloud_per_minute
        self._clock = clock
        self._log = log
        self._meters: dict[str, TokenMeter] = {}
        if log is not None:
            now = clock()
            for token_id, kind, at in log.load(now - WINDOW_SECONDS):
                meter = self._meter(token_id)
                # A time ahead of the clock (it was set back) counts as now, not for longer.
                (meter.requests if kind == "request" else meter.calls).append(min(at, now))

    def _meter(self, token_id: str) -> TokenMeter:
        return self._meters.setdefault(token_id, TokenMeter(token_id))

    def _count(self, meter: TokenMeter, kind: Kind, now: float) -> None:
        (meter.requests if kind == "request" else meter.calls).append(now)
        if self._log is not None:
            self._log.record(meter.token_id, kind, now, forget_before=now - WINDOW_SECONDS)

    def admit(self, caller: Principal) -> TokenMeter:
        """Count one API request of an assistant token, or refuse it when a window is full."""
        now = self._clock()
        meter = self._meter(caller.token_id)
        _trim(meter.requests, now)
        _trim(meter.calls, now)
        if len(meter.requests) >= self.requests_per_minute:
            raise self._refusal(
                caller,
                meter.requests[0] + WINDOW_SECONDS - now,
                f"made {len(meter.requests)} requests in the last minute (its cap is "
                f"{self.requests_per_minute})",
            )
        if len(meter.calls) >= self.opencloud_per_minute:
            raise self._refusal(
                caller,
                meter.calls[0] + WINDOW_SECONDS - now,
                f"spent {len(meter.calls)} Open Cloud requests in the last minute (its cap is "
                f"{self.opencloud_per_minute}, so the game's own servers keep their budget)",
            )
        self._count(meter, "request", now)
        return meter

    @contextmanager
    def charging(self, meter: TokenMeter) -> Iterator[None]:
        """Open Cloud calls made inside, and in tasks started inside, count against `meter`."""
        token = _CHARGED_TO.set(meter)
        try:
            yield
        finally:
            _CHARGED_TO.reset(token)

    def on_call(self, operation: str, status: int | str, latency_s: float, backend: str) -> None:
        """The Open Cloud client's call hook: charge the call to the assistant in context."""
        meter = _CHARGED_TO.get()
        if meter is not None:
            self._count(meter, "opencloud", self._clock())

    def usage(self, token_id: str) -> Usage:
        """The token's API requests and Open Cloud calls in the last minute, with the caps."""
        requests = calls = 0
        meter = self._meters.get(token_id)
        if meter is not None:
            now = self._clock()
            _trim(meter.requests, now)
            _trim(meter.calls, now)
            requests, calls = len(meter.requests), len(meter.calls)
        return Usage(requests, self.requests_per_minute, calls, self.opencloud_per_minute)

    def with_usage(self, info: TokenInfo) -> TokenInfo:
        """An assistant token's info with its use of the caps now; others' as they are."""
        if info.role is not Role.ASSISTANT:
            return info
        return info.model_copy(update={"caps": self.usage(info.token_id).view()})

    def _refusal(self, caller: Principal, wait: float, what: str) -> ServiceError:
        wait = max(1.0, wait)
        return ServiceError(
            ErrorCode.RATE_LIMITED,
            f"The assistant token '{caller.name}' {what}. Try again in {wait:.0f} s. The caps "
            "are set with `dsm serve --assistant-requests-per-minute N "
            "--assistant-opencloud-per-minute N`.",
            details={
                "requests_per_minute": self.requests_per_minute,
                "opencloud_per_minute": self.opencloud_per_minute,
            },
            retry_after=wait,
        )


__all__ = ["WINDOW_SECONDS", "AssistantCaps", "TokenMeter", "Usage", "not_charged"]
