"""The longest time an event loop could not run a task while some work ran on it.

A ticker task wakes every millisecond on the same loop and records the longest gap between its
wake-ups: the longest a request would have waited for the loop. Shared by the benchmarks that
measure how long a piece of maintenance holds the server's loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def stalls(work: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """(seconds the work took, the longest the loop went without running the ticker)."""
    longest = 0.0
    stop = False

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await work()
    took = time.perf_counter() - started
    stop = True
    await task
    return took, longest
