"""Caps on what team sync spends of the game's own memory store.

The memory store's quota is the game's (64 KB + 1.2 KB per player online, and 1000 + 120 per
player request units a minute, shared by every game server); past it every memory store call
fails, the game's included. So each server keeps to its own caps, and shows both:

- requests a minute (sliding 60 s window); background sync keeps a fifth of it free for the
  user's own actions (taking a lock), and waits for a slot rather than exceed it;
- bytes of its items that have not expired yet (presence, locks, change batches), and the size
  of any one item; change batches wait while they would not fit;
- the TTL of each kind of item, so nothing it writes outlives a crashed server for long.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

DEFAULT_MAX_RPM = 60
DEFAULT_MAX_BYTES = 4096
BACKGROUND_SHARE = 0.8  # of max_rpm; the rest stays free for interactive requests


@dataclass(frozen=True)
class Caps:
    max_rpm: int = DEFAULT_MAX_RPM
    max_bytes: int = DEFAULT_MAX_BYTES
    max_item_bytes: int = 1024
    presence_ttl: float = 30.0
    lock_ttl: float = 60.0
    change_ttl: float = 30.0


class Governor:
    def __init__(
        self,
        caps: Caps,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.caps = caps
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._items: dict[str, tuple[int, float]] = {}
        self.held_back = 0

    # ------------------------------------------------------------------ requests

    def used_last_minute(self) -> int:
        self._prune(self._clock())
        return len(self._sent)

    def _limit(self, background: bool) -> int:
        cap = self.caps.max_rpm
        return max(1, int(cap * BACKGROUND_SHARE)) if background else cap

    def _prune(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - 60.0:
            self._sent.popleft()

    async def slot(self, *, background: bool, wait_at_most: float | None = None) -> bool:
        """Take one request slot, waiting for one to free up; False if none came in time."""
        waited = False
        deadline = None if wait_at_most is None else self._clock() + wait_at_most
        while True:
            now = self._clock()
            self._prune(now)
            if len(self._sent) < self._limit(background):
                self._sent.append(now)
                return True
            if not waited:
                self.held_back += 1
                waited = True
            free_at = self._sent[0] + 60.0
            if deadline is not None and free_at > deadline:
                return False
            await self._sleep(max(0.05, free_at - now))

    # ------------------------------------------------------------------ bytes

    def bytes_stored(self) -> int:
        now = self._clock()
        for item_id in [i for i, (_, until) in self._items.items() if until <= now]:
            del self._items[item_id]
        return sum(size for size, _ in self._items.values())

    def fits(self, item_id: str, size: int) -> bool:
        if size > self.caps.max_item_bytes:
            return False
        replaced = self._items.get(item_id, (0, 0.0))[0]
        return self.bytes_stored() - replaced + size <= self.caps.max_bytes

    def stored(self, item_id: str, size: int, ttl: float) -> None:
        self._items[item_id] = (size, self._clock() + ttl)

    def removed(self, item_id: str) -> None:
        self._items.pop(item_id, None)
