"""The client's throughput against a configured budget, with 50 ms injected latency.

The emulator runs in its own process with documented limits and a custom v2 read budget
(`--budget v2.standard.read=N`) and 50 ms added latency. The client is configured with the
same budget and no reserve share, and many workers read as fast as the limiter lets them.

Reported: requests per minute achieved against the budget, the most requests the client sent
in any sliding 60 s window (must not exceed the budget), and how many 429s the emulator
answered (must be 0: the emulator enforces the same window, so a 429 means we went over).

    .venv/bin/python -m benchmarks.client_throughput [--budget 600] [--seconds 150]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import time

from benchmarks.support import running_emulator
from dsm.opencloud.client import OpenCloudClient
from dsm.opencloud.errors import RateLimited
from dsm.opencloud.ratelimit import ClientBudget, ClientRateLimiter
from dsm.opencloud.retry import RetryPolicy


def max_in_window(stamps: list[float], window: float = 60.0) -> int:
    best = 0
    for i, start in enumerate(stamps):
        best = max(best, bisect.bisect_left(stamps, start + window) - i)
    return best


class RecordingLimiter(ClientRateLimiter):
    """Records when each request is released, i.e. when the client sends it."""

    def __init__(self, budget: ClientBudget) -> None:
        super().__init__(budget)
        self.sent: list[float] = []

    async def acquire(self, universe_id: str, category: str) -> float:
        waited = await super().acquire(universe_id, category)
        self.sent.append(time.monotonic())
        return waited


async def main(budget: int, seconds: float, workers: int) -> None:
    args = ["--limits", "documented", "--budget", f"v2.standard.read={budget}"]
    args += ["--latency-ms", "50"]
    async with running_emulator(args) as base:
        limiter = RecordingLimiter(ClientBudget(read=budget, reserve_share=0.0))
        throttled = 0

        def on_call(operation: str, status: int | str, latency: float, backend: str) -> None:
            nonlocal throttled
            if status == 429:
                throttled += 1

        async with OpenCloudClient(
            api_key="bench",
            base_url=base,
            limiter=limiter,
            on_call=on_call,
            retry=RetryPolicy(max_attempts=1),
        ) as client:
            await client.create_entry("1", "bench", "k", '{"coins": 1}')
            limiter.sent.clear()
            begun = time.monotonic()
            deadline = begun + seconds
            rate_limited = 0

            async def worker() -> None:
                nonlocal rate_limited
                while time.monotonic() < deadline:
                    try:
                        await client.get_entry("1", "bench", "k")
                    except RateLimited:
                        rate_limited += 1

            await asyncio.gather(*(worker() for _ in range(workers)))
            elapsed = time.monotonic() - begun
        sent = [t for t in limiter.sent if t <= deadline]
    sent.sort()
    achieved_per_min = len(sent) / elapsed * 60
    print(f"budget {budget}/min, 50 ms latency, {workers} workers, {elapsed:.1f} s")
    print(f"  requests sent          : {len(sent)}")
    print(
        f"  achieved rate          : {achieved_per_min:.1f}/min = {achieved_per_min / budget:.1%} of budget"
    )
    print(f"  max in any 60 s window : {max_in_window(sent)} (budget {budget})")
    print(f"  429 answers            : {throttled} (RateLimited raised: {rate_limited})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--workers", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.budget, args.seconds, args.workers))
