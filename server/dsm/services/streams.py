"""Open event streams (long polls and WebSockets), counted per token and ended on revocation.

A stream holds a connection and a waiter for as long as it is open, so each token may hold
MAX_STREAMS_PER_TOKEN at once (one plugin needs one; several Studio windows share a token) and
all tokens together a share of the connection cap, leaving room for ordinary requests. Revoking
a token ends its streams at once: a long poll answers 401, a WebSocket closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from shared_schema.errors import ErrorCode

from .errors import ServiceError

__all__ = ["MAX_STREAMS_PER_TOKEN", "REVOKED_MESSAGE", "Stream", "StreamRegistry"]

T = TypeVar("T")

MAX_STREAMS_PER_TOKEN = 16
REVOKED_MESSAGE = "The token was revoked; pair the plugin with this server again."


class Stream:
    """One open stream; `until_revoked` races a wait against the token's revocation."""

    def __init__(self, token_id: str, is_active: Callable[[str], bool] | None = None) -> None:
        self.token_id = token_id
        self._is_active = is_active  # a cached check (StreamRegistry.is_active)
        self._revoked = asyncio.Event()
        self._callbacks: list[Callable[[], None]] = []

    def confirm(self) -> bool:
        """Re-check the token before delivering events: False (and revoked) once it is not.

        The revocation watch notices another process's revocation within a poll interval;
        this check closes that window, so not one event reaches a revoked token.
        """
        if not self.revoked and self._is_active is not None and not self._is_active(self.token_id):
            self.revoke()
        return not self.revoked

    @property
    def revoked(self) -> bool:
        return self._revoked.is_set()

    def on_revoke(self, callback: Callable[[], None]) -> None:
        if self.revoked:
            callback()
        else:
            self._callbacks.append(callback)

    def revoke(self) -> None:
        if self.revoked:
            return
        self._revoked.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    async def until_revoked(self, awaitable: Awaitable[T]) -> T:
        """The awaitable's result, or UNAUTHENTICATED as soon as the token is revoked."""
        work = asyncio.ensure_future(awaitable)
        revoked = asyncio.ensure_future(self._revoked.wait())
        try:
            await asyncio.wait({work, revoked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            revoked.cancel()
            if not work.done():
                work.cancel()
        if work.done() and not work.cancelled():
            return work.result()
        raise ServiceError(ErrorCode.UNAUTHENTICATED, REVOKED_MESSAGE)


class StreamRegistry:
    def __init__(
        self,
        *,
        per_token: int = MAX_STREAMS_PER_TOKEN,
        total: int,
        is_active: Callable[[str], bool] | None = None,
        version: Callable[[], int] | None = None,
    ) -> None:
        """`is_active(token_id)` reads the token row; `version()` changes whenever the token
        file does (PRAGMA data_version), so a delivery to 500 sockets reads each row once."""
        self.per_token = per_token
        self.total = total
        self._read_active = is_active
        self._version = version
        self._active_at: dict[str, int] = {}  # token -> file version it was last seen active
        self._streams: dict[str, set[Stream]] = {}
        self._counts: Counter[str] = Counter()

    def open_count(self) -> int:
        return sum(self._counts.values())

    def token_ids(self) -> set[str]:
        return set(self._streams)

    @contextlib.contextmanager
    def open(self, token_id: str) -> Iterator[Stream]:
        """Hold a stream slot for this token; refused past either cap."""
        if self._counts[token_id] >= self.per_token:
            raise ServiceError(
                ErrorCode.RATE_LIMITED,
                f"This token already has {self.per_token} event streams open; close one (a "
                "plugin needs only one) before opening another.",
                retry_after=5,
            )
        if self.open_count() >= self.total:
            raise ServiceError(
                ErrorCode.SERVER_BUSY,
                f"The server holds {self.total} event streams, its limit; try again shortly.",
                retry_after=5,
            )
        stream = Stream(token_id, self.is_active if self._read_active is not None else None)
        self._streams.setdefault(token_id, set()).add(stream)
        self._counts[token_id] += 1
        try:
            yield stream
        finally:
            self._counts[token_id] -= 1
            if self._counts[token_id] <= 0:
                del self._counts[token_id]
            mine = self._streams.get(token_id)
            if mine is not None:
                mine.discard(stream)
                if not mine:
                    del self._streams[token_id]

    def is_active(self, token_id: str) -> bool:
        if self._read_active is None:
            return True
        version = self._version() if self._version is not None else None
        if version is not None and self._active_at.get(token_id) == version:
            return True
        active = self._read_active(token_id)
        if active and version is not None:
            self._active_at[token_id] = version
        else:
            self._active_at.pop(token_id, None)
        return active

    def revoke(self, token_id: str) -> int:
        """End every stream of a revoked token now; returns how many there were."""
        self._active_at.pop(token_id, None)
        streams = list(self._streams.get(token_id, ()))
        for stream in streams:
            stream.revoke()
        return len(streams)
