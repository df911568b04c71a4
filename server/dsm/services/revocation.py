"""Revoking a token ends what it holds open: its event streams and its team sessions.

Tokens are revoked in this process (`DELETE /api/v1/tokens/{id}`) or in another one
(`dsm tokens revoke` writes the same SQLite file). The first is seen at once through the token
store's listener; the second by a watch that, every POLL_SECONDS, asks SQLite whether another
connection committed (PRAGMA data_version, nearly free) and only then looks up the tokens that
hold streams or sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from .sessions import SessionRegistry
from .streams import StreamRegistry
from .tokens import TokenStore

__all__ = ["POLL_SECONDS", "RevocationWatch", "watched_streams"]

log = logging.getLogger("dsm.revocation")

POLL_SECONDS = 0.5


class RevocationWatch:
    def __init__(
        self,
        tokens: TokenStore,
        streams: StreamRegistry,
        sessions: SessionRegistry | None = None,
        *,
        interval: float = POLL_SECONDS,
    ) -> None:
        self._tokens = tokens
        self._streams = streams
        self._sessions = sessions
        self._interval = interval
        self._seen_version = tokens.data_version()
        self._unsubscribe: Callable[[], None] = tokens.on_revoke(self.revoked)

    def revoked(self, token_id: str) -> None:
        """End everything the token holds (called once per revocation, from either path)."""
        streams = self._streams.revoke(token_id)
        sessions = self._sessions.end_token_sessions(token_id) if self._sessions else 0
        if streams or sessions:
            log.info(
                "token %s revoked: closed %d event stream(s), ended %d session(s)",
                token_id,
                streams,
                sessions,
            )

    def check(self) -> None:
        """One look for revocations made by another process."""
        version = self._tokens.data_version()
        if version == self._seen_version:
            return
        self._seen_version = version
        holders = self._streams.token_ids()
        if self._sessions is not None:
            holders |= self._sessions.token_ids()
        for token_id in self._tokens.revoked_among(holders):
            self.revoked(token_id)

    async def run(self) -> None:
        """Watch until cancelled."""
        try:
            while True:
                await asyncio.sleep(self._interval)
                try:
                    self.check()
                except Exception:  # a busy or locked file: look again next time
                    log.warning("could not check for revoked tokens", exc_info=True)
        finally:
            self._unsubscribe()


@contextlib.asynccontextmanager
async def watched_streams(
    tokens: TokenStore, sessions: SessionRegistry | None, *, total: int
) -> AsyncIterator[StreamRegistry]:
    """The event streams' registry (at most `total` open), with revocations watched while it
    is open: a revoked token's streams and sessions end at once."""
    streams = StreamRegistry(total=total, is_active=tokens.is_active, version=tokens.data_version)
    watch = RevocationWatch(tokens, streams, sessions)
    task = asyncio.create_task(watch.run(), name="dsm-revocation-watch")
    try:
        yield streams
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
