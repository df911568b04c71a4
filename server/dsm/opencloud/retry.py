"""Retry policy: capped exponential back-off with full jitter, and `retry-after` parsing.

Full jitter (a uniform pick between 0 and the capped exponential delay) keeps many clients that
failed together from retrying together, which is what drains a shared budget again.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

# Statuses that mean "try again": the request was not (or may not have been) processed.
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5  # total tries per HTTP request, including the first
    base_delay: float = 0.25  # seconds before the first retry (before jitter)
    max_delay: float = 10.0  # cap on one back-off sleep
    max_retry_after: float = 120.0  # a longer retry-after is raised as RateLimited instead
    # How many times one write is re-sent after re-reading proved it was not applied.
    max_write_resends: int = 3

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("delays must be >= 0")
        if self.max_write_resends < 0:
            raise ValueError("max_write_resends must be >= 0")

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """Sleep before retry ``retry_number`` (1 for the first retry)."""
        exponent = min(retry_number - 1, 62)
        ceiling = min(self.max_delay, self.base_delay * math.pow(2.0, exponent))
        return rng.uniform(0.0, ceiling)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`retry-after` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


# Failures where the request provably never reached the server, so even a write may be resent.
_NOT_SENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
)
# Failures that will not improve by retrying.
_FATAL: tuple[type[BaseException], ...] = (
    aiohttp.ClientSSLError,
    aiohttp.InvalidURL,
    aiohttp.TooManyRedirects,
)


def failure_not_sent(exc: BaseException) -> bool:
    return isinstance(exc, _NOT_SENT) and not isinstance(exc, _FATAL)


def failure_fatal(exc: BaseException) -> bool:
    return isinstance(exc, _FATAL)
