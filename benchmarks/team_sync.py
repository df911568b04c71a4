"""What team sync costs and how fast it is, measured (not part of the test run).

Everything is real: `dsm emulator` in a child process (limits off, so nothing is throttled), and
companion servers started in this process exactly as `dsm serve --upstream URL` starts them
(tools/testing/server.py), each with one connected plugin session (a Studio user), driven over
their HTTP API.

(a) Presence delay: a new plugin session opens on server B; the time until server A's
    `GET /team/{u}` lists that person. One sample per new session, 10 s apart.
(b) Change-feed delay: an entry is written through server A; the time until server B's event
    stream delivers the `entry.changed` it relays from the change feed (`via_team`).
(c) Requests a minute for a team of 5: five servers in one team, each with one plugin session.
    Counted by each server's own call counter (the Monitor view's figures) over a measured
    window, split into memory-store calls (presence, locks, change feed) and data-store calls:
    - idle: nobody writes; every call is team sync's;
    - busy: every member writes one entry every 10 s (staggered by 2 s); team sync's share is
      the difference from the same run with team sync off (the writes cost the same in both).

    .venv/bin/python -m benchmarks.team_sync [--samples 20] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from benchmarks.support import running_emulator
from dsm.http.appkeys import METRICS
from shared_schema.common import Role
from tools.testing.server import Server, entry_path, idem, running_server

U = 7
MEMORY = "memory"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@asynccontextmanager
async def team(
    url: str, root: Path, size: int, *, enabled: bool = True
) -> AsyncIterator[list[tuple[Server, str]]]:
    """`size` servers in one team on universe U; each phase has an emulator of its own."""
    async with AsyncExitStack() as stack:
        members: list[tuple[Server, str]] = []
        for n in range(size):
            server = await stack.enter_async_context(
                running_server(root / f"m{n}", upstream_url=url)
            )
            token = await server.pair(f"member {n}", role=Role.ADMIN)
            members.append((server, token))
        if enabled:
            first, first_token = members[0]
            status, _ = await first.call("POST", f"/team/{U}/enable", first_token)
            assert status == 200
            for server, token in members[1:]:
                _, invite = await first.call("POST", f"/team/{U}/invites", first_token, json={})
                status, joined = await server.call(
                    "POST", "/team/join", token, json={"code": invite["code"]}
                )
                assert status == 200, joined
        for n, (server, token) in enumerate(members):
            await open_session(server, token, 9000 + n, f"Member{n}")

        async def keep_alive() -> None:
            # What each plugin does while connected: heartbeats keep its session (and so the
            # server's connected pace) alive.
            while True:
                for server, token in members:
                    _, sessions = await server.call("GET", "/sessions", token)
                    for s in sessions["sessions"]:
                        await server.call("POST", f"/sessions/{s['session_id']}/heartbeat", token)
                await asyncio.sleep(10)

        beating = asyncio.create_task(keep_alive())
        try:
            yield members
        finally:
            beating.cancel()


async def open_session(server: Server, token: str, user_id: int, name: str) -> str:
    status, body = await server.call(
        "POST",
        "/sessions",
        token,
        json={"client_name": "bench", "studio_user_id": user_id, "studio_user_name": name},
    )
    assert status == 200, body
    session_id: str = body["session_id"]
    return session_id


async def presence_delays(url: str, root: Path, samples: int) -> list[float]:
    delays = []
    async with team(url, root, 2) as [(a, a_token), (b, b_token)]:
        for n in range(samples):
            name = f"Visitor{n}"
            began = time.monotonic()
            session_id = await open_session(b, b_token, 5000 + n, name)
            while True:
                _, status = await a.call("GET", f"/team/{U}", a_token)
                if any(t["person"]["label"] == name for t in status["teammates"]):
                    break
                await asyncio.sleep(0.02)
            delays.append(time.monotonic() - began)
            await b.call("DELETE", f"/sessions/{session_id}", b_token)
            # A person joins every 10 s (far more often than a real team): presence is written
            # at most every 5 s, so joins closer together than that wait for the next write.
            await asyncio.sleep(10.0)
    return delays


async def change_delays(url: str, root: Path, samples: int) -> list[float]:
    delays = []
    async with team(url, root, 2) as [(a, a_token), (b, b_token)]:
        _, start = await b.call("GET", "/events?timeout=0", b_token)
        cursor = start["next_cursor"]
        for n in range(samples):
            key = f"change_{n}"
            began = time.monotonic()
            status, _ = await a.call(
                "POST",
                entry_path(U, "bench", key),
                a_token,
                json={"value_json": str(n), "idempotency_key": idem()},
            )
            assert status == 200
            seen = False
            while not seen:
                _, batch = await b.call("GET", f"/events?cursor={cursor}&timeout=5", b_token)
                cursor = batch["next_cursor"]
                seen = any(
                    e["type"] == "entry.changed"
                    and e["payload"].get("via_team")
                    and e["payload"]["key"] == key
                    for e in batch["events"]
                )
            delays.append(time.monotonic() - began)
            await asyncio.sleep(0.7)
    return delays


def counted(server: Server, window: int) -> dict[str, int]:
    series = server.app[METRICS].traffic.series(window, 1, budget=[], backend=None)
    return dict(series.totals.by_category)


async def team_cost(
    url: str, root: Path, seconds: int, *, busy: bool, enabled: bool, show_operations: bool = False
) -> dict[str, float]:
    async with team(url, root, 5, enabled=enabled) as members:
        await asyncio.sleep(12)  # warm-up: first presence writes, first audit sync

        async def writer(server: Server, token: str, n: int) -> None:
            i = 0
            await asyncio.sleep(2 * n)  # people do not all save at the same instant
            while True:
                await asyncio.sleep(10)
                i += 1
                await server.call(
                    "POST",
                    entry_path(U, "bench", f"busy_{n}_{i}"),
                    token,
                    json={"value_json": str(i), "idempotency_key": idem()},
                )

        tasks = []
        if busy:
            tasks += [asyncio.create_task(writer(s, t, n)) for n, (s, t) in enumerate(members)]
        began = time.time()
        await asyncio.sleep(seconds)
        window = int(time.time() - began)
        for task in tasks:
            task.cancel()
        memory = other = 0
        if show_operations:
            totals: dict[str, int] = {}
            for server, _ in members:
                series = server.app[METRICS].traffic.series(window, 1, budget=[], backend=None)
                for op, n in series.totals.by_operation.items():
                    totals[op] = totals.get(op, 0) + n
            print("    by operation:", dict(sorted(totals.items())))
        for server, _ in members:
            categories = counted(server, window)
            memory += categories.get(MEMORY, 0)
            other += sum(v for k, v in categories.items() if k != MEMORY)
        per_minute = 60.0 / window
        return {"memory": memory * per_minute, "datastore": other * per_minute}


async def main(samples: int, seconds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="dsm-bench-team-") as tmp:
        root = Path(tmp)
        async with running_emulator(["--limits", "off"]) as url:
            presence = await presence_delays(url, root / "p", samples)
        async with running_emulator(["--limits", "off"]) as url:
            changes = await change_delays(url, root / "c", samples)
        async with running_emulator(["--limits", "off"]) as url:
            idle = await team_cost(url, root / "idle", seconds, busy=False, enabled=True)
        async with running_emulator(["--limits", "off"]) as url:
            busy = await team_cost(url, root / "busy", seconds, busy=True, enabled=True)
        async with running_emulator(["--limits", "off"]) as url:
            baseline = await team_cost(url, root / "base", seconds, busy=True, enabled=False)

    def show(name: str, values: list[float]) -> None:
        print(
            f"{name}: median {statistics.median(values):.2f} s, p95 {percentile(values, 0.95):.2f} s,"
            f" max {max(values):.2f} s ({len(values)} samples)"
        )

    show("(a) presence delay", presence)
    show("(b) change-feed delay", changes)
    print(
        f"(c) team of 5, requests a minute for the whole team (each server's own count, {seconds} s):"
    )
    print(
        f"    idle: memory store {idle['memory']:.0f}/min, data stores {idle['datastore']:.0f}/min"
    )
    team_share = busy["datastore"] - baseline["datastore"]
    print(
        f"    busy (each member writes every 10 s): memory store {busy['memory']:.0f}/min; data "
        f"stores {busy['datastore']:.0f}/min with team sync, {baseline['datastore']:.0f}/min "
        f"without: team sync adds {team_share:.0f}/min (audit appends and reads)"
    )
    print(
        f"    per member: idle {idle['memory'] / 5:.1f} memory-store requests/min; the game's "
        "memory-store quota is 1000 + 120 x CCU request units a minute for the experience"
    )


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    asyncio.run(main(args.samples, args.seconds))


if __name__ == "__main__":
    run()
