"""Hello latency while the server is flooded (not part of the test run; issue 8's load).

Three processes, so that no figure measures the load generator's own congestion: the server
runs in a child exactly as `dsm serve` runs it (serve.run_server: the GuardedAppRunner with its
connection cap, header timeout and throttled logs, on the embedded emulator), with its
descriptor limit set by `resource.setrlimit` before it starts; a second child generates the
load; this process only times hello. All on 127.0.0.1, the load is:

- 500 long polls (`GET /api/v1/events`, re-polled as each answers), spread over 32 tokens;
- 500 WebSockets (`/api/v1/events/ws`), spread over 32 other tokens;
- 400 slow senders, each writing one byte of a request's headers a second and reconnecting
  when the server closes it;
- a teammate opening and closing a session every 5 s (--event-interval), so events reach
  every stream: each one answers 500 long polls (which poll again) and 500 sockets at once.

Meanwhile `GET /api/v1/hello` is timed on a fresh connection each time (a new client arriving),
before the load, during it and after it; every probe's outcome is counted, so "answering
throughout" means every probe got an HTTP answer. Each run is bounded in time and stops the
child. Figures are nearest-rank percentiles of real timings.

    .venv/bin/python -m benchmarks.hostile_load [--nofile 1024] [--seconds 20]

Without --nofile it runs twice: at a 1,024 descriptor limit (the common default; the cap then
admits what fits and refuses the rest with 503) and at 8,192 (everything admitted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from benchmarks.support import free_port
from dsm.services.tokens import TokenStore
from shared_schema.common import Role

LONG_POLLS = 500
SOCKETS = 500
SLOW = 400
TOKENS_PER_KIND = 32  # 16 streams per token at most: 32 tokens carry 500 streams
PROBES_BEFORE_AFTER = 300
PROBE_INTERVAL = 0.05
SETTLE_SECONDS = 5.0  # for the streams to connect before "during" is measured


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


@dataclass
class Probe:
    latencies: list[float] = field(default_factory=list)  # HTTP 200 answers only
    outcomes: Counter[str] = field(default_factory=Counter)

    def line(self, name: str) -> str:
        ms = [s * 1000 for s in self.latencies]
        answered = sum(n for k, n in self.outcomes.items() if k.isdigit())
        total = sum(self.outcomes.values())
        return (
            f"  {name:<7} n={total:<5} answered={answered}/{total}  "
            f"p50={percentile(ms, 0.5):7.2f} ms  p99={percentile(ms, 0.99):7.2f} ms  "
            f"outcomes={dict(sorted(self.outcomes.items()))}"
        )


async def hello(port: int, timeout: float = 5.0) -> tuple[str, float]:
    """One GET /api/v1/hello on a new connection: (status or error name, seconds)."""
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__, time.perf_counter() - started
    try:
        writer.write(
            f"GET /api/v1/hello HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        raw = await asyncio.wait_for(reader.read(), timeout)
        elapsed = time.perf_counter() - started
        if not raw.startswith(b"HTTP/1.1 "):
            return "no-answer", elapsed
        return raw.split(b" ", 2)[1].decode(), elapsed
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__, time.perf_counter() - started
    finally:
        writer.close()


async def probe(port: int, result: Probe, *, count: int | None, until: float | None) -> None:
    done = 0
    while (count is None or done < count) and (until is None or time.monotonic() < until):
        outcome, seconds = await hello(port)
        result.outcomes[outcome] += 1
        if outcome == "200":
            result.latencies.append(seconds)
        done += 1
        await asyncio.sleep(PROBE_INTERVAL)


@dataclass
class Load:
    port: int
    long_poll_tokens: list[str]
    socket_tokens: list[str]
    teammate: str
    event_interval: float = 5.0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stats: Counter[str] = field(default_factory=Counter)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def long_poll(self, http: aiohttp.ClientSession, token: str) -> None:
        cursor: int | None = None
        headers = {"Authorization": f"Bearer {token}"}
        while not self.stop.is_set():
            params = {"timeout": "25"} | ({} if cursor is None else {"cursor": str(cursor)})
            try:
                async with http.get(
                    self.url("/api/v1/events"), params=params, headers=headers
                ) as r:
                    self.stats[f"long poll {r.status}"] += 1
                    if r.status == 200:
                        cursor = (await r.json())["next_cursor"]
                    else:
                        await r.read()
                        await asyncio.sleep(1.0)
            except (aiohttp.ClientError, TimeoutError):
                self.stats["long poll connection error"] += 1
                await asyncio.sleep(1.0)

    async def socket(self, http: aiohttp.ClientSession, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        while not self.stop.is_set():
            try:
                async with http.ws_connect(self.url("/api/v1/events/ws"), headers=headers) as ws:
                    self.stats["socket open"] += 1
                    await ws.send_json({"cursor": None})
                    async for message in ws:
                        if message.type is aiohttp.WSMsgType.TEXT:
                            self.stats["socket batches"] += 1
                        if self.stop.is_set():
                            break
            except aiohttp.WSServerHandshakeError as exc:
                self.stats[f"socket refused {exc.status}"] += 1
                await asyncio.sleep(1.0)
            except (aiohttp.ClientError, TimeoutError):
                self.stats["socket connection error"] += 1
                await asyncio.sleep(1.0)

    async def slow_sender(self) -> None:
        head = f"GET /api/v1/hello HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n".encode()
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.stats["slow connect error"] += 1
                await asyncio.sleep(1.0)
                continue
            self.stats["slow connections"] += 1
            try:
                for byte in head:
                    if self.stop.is_set() or reader.at_eof():
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        answer = await asyncio.wait_for(reader.read(64), 1.0)
                        if answer.startswith(b"HTTP/1.1 "):
                            self.stats[f"slow closed with {answer.split(b' ')[1].decode()}"] += 1
                            break
                        if not answer:
                            self.stats["slow closed"] += 1
                            break
            except OSError:
                self.stats["slow reset"] += 1
            finally:
                writer.close()

    async def teammate_activity(self, http: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {self.teammate}"}
        while not self.stop.is_set():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError):
                async with http.post(
                    self.url("/api/v1/sessions"), json={"client_name": "teammate"}, headers=headers
                ) as opened:
                    session = (await opened.json())["session_id"]
                async with http.delete(self.url(f"/api/v1/sessions/{session}"), headers=headers):
                    pass
            await asyncio.sleep(self.event_interval)

    async def run(self) -> None:
        """Generate the load until `stop` is set."""
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            tasks: list[Awaitable[None]] = []
            tasks += [
                self.long_poll(http, self.long_poll_tokens[i % TOKENS_PER_KIND])
                for i in range(LONG_POLLS)
            ]
            tasks += [
                self.socket(http, self.socket_tokens[i % TOKENS_PER_KIND]) for i in range(SOCKETS)
            ]
            tasks += [self.slow_sender() for _ in range(SLOW)]
            tasks.append(self.teammate_activity(http))
            running = [asyncio.ensure_future(t) for t in tasks]
            await self.stop.wait()
            await asyncio.sleep(0.5)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)


SERVE = """
import asyncio, resource, sys
from pathlib import Path
from dsm.config import ServerConfig
from dsm.serve import Unlocked, run_server
from dsm.storage.crypto import new_key
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
config = ServerConfig(data_dir=Path(sys.argv[1]), port=int(sys.argv[2]), emulator_limits="off")
asyncio.run(run_server(config, Unlocked([], new_key(), persistent=False)))
"""


async def start_server(data_dir: Path, port: int, nofile: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVE,
        str(data_dir),
        str(port),
        str(nofile),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=open(data_dir / "server.log", "wb"),  # noqa: SIM115 - the child owns it
    )
    for _ in range(200):
        outcome, _ = await hello(port, timeout=1)
        if outcome == "200":
            return proc
        await asyncio.sleep(0.05)
    proc.terminate()
    raise RuntimeError("the server did not start within 10 s")


def issue_tokens(data_dir: Path, count: int) -> list[str]:
    store = TokenStore.open(data_dir)  # as pairing would; tokens need no console here
    try:
        return [store.issue(f"load {i}", Role.VIEWER)[0] for i in range(count)]
    finally:
        store.close()


async def generate_load(port: int, tokens_file: Path, event_interval: float) -> None:
    """The load child: run until stdin closes, then print what happened as JSON."""
    tokens = tokens_file.read_text().split()
    load = Load(
        port, tokens[:TOKENS_PER_KIND], tokens[TOKENS_PER_KIND:-1], tokens[-1], event_interval
    )
    runner = asyncio.ensure_future(load.run())
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    load.stop.set()
    await runner
    print(json.dumps(dict(load.stats)), flush=True)


async def run_once(nofile: int, seconds: float, event_interval: float) -> None:
    with tempfile.TemporaryDirectory(prefix="dsm-load-") as tmp:
        data_dir = Path(tmp)
        tokens_file = data_dir / "tokens.txt"
        tokens_file.write_text("\n".join(issue_tokens(data_dir, 2 * TOKENS_PER_KIND + 1)))
        port = free_port()
        proc = await start_server(data_dir, port, nofile)
        stats: dict[str, int] = {}
        try:
            before, during, after = Probe(), Probe(), Probe()
            await probe(port, before, count=PROBES_BEFORE_AFTER, until=None)
            loader = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks.hostile_load",
                "--generate-load",
                str(port),
                str(tokens_file),
                str(event_interval),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            await asyncio.sleep(SETTLE_SECONDS)
            await probe(port, during, count=None, until=time.monotonic() + seconds)
            out, _ = await asyncio.wait_for(loader.communicate(b""), 60)
            stats = json.loads(out.decode().strip().splitlines()[-1])
            await asyncio.sleep(1.0)
            await probe(port, after, count=PROBES_BEFORE_AFTER, until=None)
            alive = proc.returncode is None
        finally:
            proc.terminate()
            await proc.wait()
        log_size = (data_dir / "server.log").stat().st_size
        log_tail = (data_dir / "server.log").read_text(errors="replace").splitlines()[-3:]
        print(
            f"descriptor limit {nofile} (server child), {seconds:g} s of load, a teammate "
            f"session every {event_interval:g} s:"
        )
        print(before.line("before"))
        print(during.line("during"))
        print(after.line("after"))
        print(f"  server alive at the end: {alive}; its log: {log_size} bytes, ending {log_tail}")
        print(f"  load: {dict(sorted(stats.items()))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nofile", type=int, help="the server's descriptor limit (default: both)")
    parser.add_argument("--seconds", type=float, default=20.0, help="load duration measured")
    parser.add_argument(
        "--event-interval", type=float, default=5.0, help="seconds between teammate sessions"
    )
    parser.add_argument("--generate-load", nargs=3, metavar=("PORT", "TOKENS", "INTERVAL"))
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    if args.generate_load:
        port, tokens, interval = args.generate_load
        asyncio.run(generate_load(int(port), Path(tokens), float(interval)))
        return
    print(
        f"loopback; this process may open {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} "
        f"descriptors; cores: {os.cpu_count()}"
    )
    for nofile in [args.nofile] if args.nofile else [1024, 8192]:
        asyncio.run(run_once(nofile, args.seconds, args.event_interval))


if __name__ == "__main__":
    main()
