"""Team presence: which paired Studio plugins are connected to this server right now.

A session exists only while its plugin shows signs of life: a heartbeat, or an open event
stream (long-poll or WebSocket) made with the same token. Without either for `ttl_seconds` it
ends and a `session.left` event (reason `expired`) goes out. Expiry is checked by a periodic
sweep (see `run_sweeper`) and again before every read, so a list never shows a dead session even
between sweeps.

Who a session belongs to comes only from the token that opened it: the display name is the
token's name. The client's `client_name` is shown as a label next to it, never as identity.
The Studio user the plugin announces (id and name) is kept as a label too (`person`): what the
plugin reports, shown to teammates, never a permission.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared_schema.common import Backend, Source, SourceKind
from shared_schema.errors import ErrorCode
from shared_schema.events import (
    EventType,
    SessionJoinedPayload,
    SessionLeftPayload,
    SessionLeftReason,
)
from shared_schema.identity import Person, make_person
from shared_schema.sessions import SessionInfo, SessionList
from shared_schema.team import EntryRef

from .errors import ServiceError
from .events import EventBus, utc_now
from .tokens import Principal

__all__ = ["MAX_SESSIONS_PER_TOKEN", "SessionRegistry"]

# A plugin that keeps reopening without closing (crash loops, reloads) must not grow the list
# without bound; beyond this the token's least recently seen session is closed.
MAX_SESSIONS_PER_TOKEN = 16


@dataclass
class _Session:
    session_id: str
    token_id: str
    display_name: str
    studio_user_id: int | None
    place_id: int | None
    client_name: str
    connected_at: datetime
    last_seen_at: datetime
    studio_user_name: str | None = None
    viewing: EntryRef | None = None

    @property
    def person(self) -> Person:
        return make_person(self.studio_user_id, self.studio_user_name, self.display_name)


class SessionRegistry:
    def __init__(
        self,
        ttl_seconds: float,
        *,
        bus: EventBus | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("session_ttl_seconds must be positive")
        self.ttl_seconds = ttl_seconds
        # Three beats per TTL: one lost heartbeat does not end a session.
        self.heartbeat_interval_seconds = ttl_seconds / 3
        self._ttl = timedelta(seconds=ttl_seconds)
        self._bus = bus
        self._clock = clock
        self._sessions: dict[str, _Session] = {}
        self._streams: Counter[str] = Counter()  # open event streams per token id

    # ------------------------------------------------------------------ client actions

    def open(
        self,
        principal: Principal,
        *,
        studio_user_id: int | None,
        place_id: int | None,
        client_name: str,
        studio_user_name: str | None = None,
    ) -> SessionInfo:
        self.sweep()
        now = self._clock()
        mine = sorted(
            (s for s in self._sessions.values() if s.token_id == principal.token_id),
            key=lambda s: s.last_seen_at,
        )
        for stale in mine[: max(0, len(mine) - MAX_SESSIONS_PER_TOKEN + 1)]:
            self._end(stale, SessionLeftReason.CLOSED)
        session = _Session(
            session_id="ses_" + secrets.token_urlsafe(12),
            token_id=principal.token_id,
            display_name=principal.name,
            studio_user_id=studio_user_id,
            place_id=place_id,
            client_name=client_name,
            connected_at=now,
            last_seen_at=now,
            studio_user_name=studio_user_name if studio_user_id is not None else None,
        )
        self._sessions[session.session_id] = session
        info = self._info(session)
        if self._bus is not None:
            self._bus.publish(EventType.SESSION_JOINED, SessionJoinedPayload(session=info))
        return info

    def heartbeat(self, session_id: str, principal: Principal) -> SessionInfo:
        session = self._owned(session_id, principal)
        session.last_seen_at = self._clock()
        return self._info(session)

    def set_viewing(
        self, session_id: str, principal: Principal, viewing: EntryRef | None
    ) -> SessionInfo:
        """What the session's plugin shows now (teammates see it); also a sign of life."""
        session = self._owned(session_id, principal)
        session.viewing = viewing
        session.last_seen_at = self._clock()
        return self._info(session)

    def close(self, session_id: str, principal: Principal) -> None:
        self._end(self._owned(session_id, principal), SessionLeftReason.CLOSED)

    def list(self) -> list[SessionInfo]:
        """Live sessions, oldest connection first."""
        self.sweep()
        ordered = sorted(self._sessions.values(), key=lambda s: (s.connected_at, s.session_id))
        return [self._info(s) for s in ordered]

    def listing(self, backend: Backend) -> SessionList:
        """The live sessions as the protocol shows them."""
        # Presence is this server's own real-time state, read just now: LIVE, not a cached copy.
        source = Source(kind=SourceKind.LIVE, backend=backend, fetched_at=datetime.now(UTC))
        return SessionList(sessions=self.list(), source=source)

    # ------------------------------------------------------------------ liveness

    def touch_token(self, token_id: str) -> None:
        """Activity on the event stream with this token keeps its sessions alive.

        A session already past its TTL stays ended: it would have been swept by now.
        """
        self._touch(token_id, self._clock(), revive=False)

    @contextlib.contextmanager
    def streaming(self, token_id: str) -> Iterator[None]:
        """Held while an event stream of this token is open: its sessions do not expire.

        A long-poll can outlast a short TTL, and a WebSocket may stay quiet for minutes; both
        still show the plugin is there.
        """
        self.touch_token(token_id)
        self._streams[token_id] += 1
        try:
            yield
        finally:
            self._streams[token_id] -= 1
            if self._streams[token_id] <= 0:
                del self._streams[token_id]
            self.touch_token(token_id)

    def token_ids(self) -> set[str]:
        """Tokens that have a session open now."""
        return {s.token_id for s in self._sessions.values()}

    def end_token_sessions(self, token_id: str) -> int:
        """End every session of a revoked token (reason `revoked`); returns how many."""
        ended = [s for s in self._sessions.values() if s.token_id == token_id]
        for session in ended:
            self._end(session, SessionLeftReason.REVOKED)
        return len(ended)

    def sweep(self) -> builtins.list[str]:
        """End sessions whose TTL passed without a sign of life; returns their ids."""
        now = self._clock()
        for token_id in self._streams:
            # The stream has been open all along, however long ago the last sweep ran.
            self._touch(token_id, now, revive=True)
        expired = [s for s in self._sessions.values() if self._expired(s, now)]
        for session in expired:
            self._end(session, SessionLeftReason.EXPIRED)
        return [s.session_id for s in expired]

    @contextlib.asynccontextmanager
    async def sweeping(self) -> AsyncIterator[SessionRegistry]:
        """The registry with its sweeper running (the server's lifecycle for it)."""
        sweeper = asyncio.create_task(self.run_sweeper(), name="dsm-session-sweeper")
        try:
            yield self
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    async def run_sweeper(self, interval: float | None = None) -> None:
        """Sweep forever (cancel to stop), so `session.left` goes out soon after expiry."""
        period = interval if interval is not None else min(self.heartbeat_interval_seconds, 5.0)
        while True:
            await asyncio.sleep(period)
            self.sweep()

    # ------------------------------------------------------------------ helpers

    def _owned(self, session_id: str, principal: Principal) -> _Session:
        self.sweep()
        session = self._sessions.get(session_id)
        if session is None:
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                f"Session {session_id!r} does not exist or has ended (no heartbeat within "
                f"{self.ttl_seconds:g} s); open a new session.",
            )
        if session.token_id != principal.token_id:
            raise ServiceError(
                ErrorCode.FORBIDDEN,
                f"Session {session_id!r} belongs to another paired plugin; only the token that "
                "opened a session can keep it alive or close it.",
            )
        return session

    def _touch(self, token_id: str, now: datetime, *, revive: bool) -> None:
        for session in self._sessions.values():
            if session.token_id == token_id and (revive or not self._expired(session, now)):
                session.last_seen_at = now

    def _expired(self, session: _Session, now: datetime) -> bool:
        return session.last_seen_at + self._ttl <= now

    def _end(self, session: _Session, reason: SessionLeftReason) -> None:
        if self._sessions.pop(session.session_id, None) is None:
            return
        if self._bus is not None:
            self._bus.publish(
                EventType.SESSION_LEFT,
                SessionLeftPayload(
                    session_id=session.session_id,
                    display_name=session.display_name,
                    reason=reason,
                    person=session.person,
                ),
            )

    def _info(self, session: _Session) -> SessionInfo:
        return SessionInfo(
            session_id=session.session_id,
            token_id=session.token_id,
            display_name=session.display_name,
            studio_user_id=session.studio_user_id,
            studio_user_name=session.studio_user_name,
            person=session.person,
            viewing=session.viewing,
            place_id=session.place_id,
            client_name=session.client_name,
            connected_at=session.connected_at,
            last_seen_at=session.last_seen_at,
            expires_at=session.last_seen_at + self._ttl,
            heartbeat_interval_seconds=self.heartbeat_interval_seconds,
        )
