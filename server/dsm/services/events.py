"""The one ordered event stream behind `GET /events` (long-poll) and `GET /events/ws`.

Every event gets the next `seq` (1, 2, 3, ...) of this server start, whose random `instance_id`
goes with it. The last `buffer_size` events are kept in a ring buffer so a client that polls
again with its `next_cursor` misses nothing; a client whose cursor fell out of the buffer, or
that holds a cursor this instance never issued (server restarted), is told to resync: re-read
its open views, then follow the stream from `next_cursor`.

Waiting is event-driven: each publish wakes every waiter of the current wake-up generation,
which is swapped for a fresh one, so any number of long-polls cost nothing while idle. Waiters
are woken WAKE_CHUNK at a time, one chunk per loop iteration: with a thousand streams open, an
event must not hold the loop for the whole fan-out while other requests (hello) wait.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_json

from shared_schema.common import Backend
from shared_schema.events import EVENT_PAYLOADS, Event, EventBatch, EventResync, EventType

__all__ = ["MAX_BATCH_EVENTS", "EventBus", "utc_now"]

log = logging.getLogger("dsm.events")

# A client that was away for a while gets the backlog in chunks, keeping each answer small
# enough for Studio's HttpService; it polls again at once with the returned next_cursor.
MAX_BATCH_EVENTS = 500
# Waiters woken per loop iteration after a publish (see the module docstring).
WAKE_CHUNK = 32


def utc_now() -> datetime:
    return datetime.now(UTC)


class EventBus:
    def __init__(
        self,
        buffer_size: int,
        *,
        instance_id: str | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if buffer_size < 1:
            raise ValueError("event_buffer_size must be at least 1")
        self.instance_id = instance_id or secrets.token_hex(8)
        # Set once the data plane knows whether it talks to the emulator or to Open Cloud;
        # every later event carries it so no event can be mistaken for live data.
        self.backend: Backend | None = None
        self.buffer_size = buffer_size
        self._clock = clock
        self._buffer: deque[Event] = deque(maxlen=buffer_size)
        self._seq = 0
        # publish() may be called from worker threads (e.g. code run in an executor); the lock
        # keeps seq assignment and buffer order identical.
        self._lock = threading.Lock()
        self._wakeup = _Wakeup()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._observers: list[Callable[[Event], None]] = []

    @property
    def latest_seq(self) -> int:
        """The seq of the newest event, 0 before the first one."""
        return self._seq

    @property
    def closed(self) -> bool:
        return self._closed

    def observe(self, observer: Callable[[Event], None]) -> Callable[[], None]:
        """Call `observer(event)` after every publish (in the publisher's thread); returns a
        function that stops it. Team sync uses it to pass jobs' events on to teammates."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def publish(self, type: EventType | str, payload: BaseModel | Mapping[str, Any]) -> Event:
        """Append an event and wake every waiter. Synchronous; safe from any thread.

        The payload is the model shared_schema.events lists for the type, or a mapping that
        validates against it (as the JSON the plugin will receive), so the plugin can rely on
        the shape. Fields the model does not define are dropped.
        """
        try:
            event_type = EventType(type)
        except ValueError:
            known = ", ".join(t.value for t in EventType)
            raise ValueError(f"Unknown event type {type!r}; known types: {known}.") from None
        expected = EVENT_PAYLOADS.get(event_type)
        if expected is None:
            raise ValueError(
                f"Event type {event_type.value!r} has no payload model yet; add one to "
                "shared_schema.events.EVENT_PAYLOADS before publishing it."
            )
        if isinstance(payload, BaseModel):
            if not isinstance(payload, expected):
                raise TypeError(
                    f"{event_type.value} events carry {expected.__name__}, "
                    f"got {payload.__class__.__name__}"
                )
        else:
            # Validated in JSON mode: enums and times as the wire carries them, no coercion of
            # "1" into 1.
            payload = expected.model_validate_json(to_json(dict(payload)))
        body = payload.model_dump(mode="json", exclude_none=True)
        with self._lock:
            self._seq += 1
            event = Event(
                seq=self._seq,
                instance_id=self.instance_id,
                type=event_type.value,
                at=self._clock(),
                payload=body,
                backend=self.backend,
            )
            self._buffer.append(event)
        self._wake_waiters()
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                log.exception("an event observer failed on %s", event.type)
        return event

    def close(self) -> None:
        """Answer every pending wait now (server shutdown); later waits return at once."""
        self._closed = True
        self._wake_waiters()

    def check(self, cursor: int | None, instance_id: str | None = None) -> EventBatch | EventResync:
        """What a poll with `cursor` gets right now, without waiting.

        `cursor=None` means "from now": an empty batch whose next_cursor is the latest seq.
        """
        with self._lock:
            latest = self._seq
            if cursor is None:
                return self._batch([], latest)
            problem = self._cursor_problem(cursor, instance_id, latest)
            if problem is not None:
                return EventResync(
                    instance_id=self.instance_id, resync=True, next_cursor=latest, reason=problem
                )
            if cursor == latest:
                return self._batch([], cursor)
            # seq values in the buffer are contiguous, so the first wanted one sits at a known
            # offset from the oldest.
            start = cursor + 1 - self._buffer[0].seq
            events = [
                self._buffer[i]
                for i in range(start, min(len(self._buffer), start + MAX_BATCH_EVENTS))
            ]
            return self._batch(events, events[-1].seq)

    async def wait(
        self, cursor: int | None, timeout: float, instance_id: str | None = None
    ) -> EventBatch | EventResync:
        """Events after `cursor` at once if there are any; otherwise wait up to `timeout` seconds
        for the next one. A timed-out wait answers an empty batch with the same next_cursor."""
        self._bind_loop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            # Take the wake-up handle before checking, so a publish between the check and the
            # await still wakes us.
            wakeup = self._wakeup
            answer = self.check(cursor, instance_id)
            if isinstance(answer, EventResync) or answer.events or cursor is None:
                return answer
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closed:
                return answer
            try:
                async with asyncio.timeout(remaining):
                    await wakeup.wait()
            except TimeoutError:
                return self.check(cursor, instance_id)

    def _cursor_problem(self, cursor: int, instance_id: str | None, latest: int) -> str | None:
        if instance_id is not None and instance_id != self.instance_id:
            return (
                "The server restarted since this cursor was issued; re-read what you show, "
                "then follow the stream from next_cursor."
            )
        if cursor < 0 or cursor > latest:
            return (
                f"Cursor {cursor} was not issued by this server run (its newest event is "
                f"{latest}); the server probably restarted. Re-read what you show, then follow "
                "the stream from next_cursor."
            )
        oldest = self._buffer[0].seq if self._buffer else latest + 1
        if cursor < oldest - 1:
            return (
                f"Events {cursor + 1}..{oldest - 1} are no longer kept (the server keeps the "
                f"last {self.buffer_size}); re-read what you show, then follow the stream from "
                "next_cursor."
            )
        return None

    def _batch(self, events: list[Event], next_cursor: int) -> EventBatch:
        return EventBatch(
            instance_id=self.instance_id, resync=False, events=events, next_cursor=next_cursor
        )

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("An EventBus serves one event loop.")

    def _wake_waiters(self) -> None:
        loop = self._loop
        if loop is None:  # nobody has ever waited
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._swap_wakeup()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._swap_wakeup)

    def _swap_wakeup(self) -> None:
        wakeup, self._wakeup = self._wakeup, _Wakeup()
        wakeup.release()


class _Wakeup:
    """One wake-up generation: the futures of the waiters that took it, released in chunks."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []
        self._released = False

    async def wait(self) -> None:
        if self._released:
            return  # like a set asyncio.Event: a generation already woken never blocks
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def release(self, start: int = 0) -> None:
        self._released = True
        chunk = self._waiters[start : start + WAKE_CHUNK]
        for waiter in chunk:
            if not waiter.done():
                waiter.set_result(None)
        if start + WAKE_CHUNK < len(self._waiters):
            chunk[-1].get_loop().call_soon(self.release, start + WAKE_CHUNK)
