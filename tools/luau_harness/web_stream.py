"""Real WebSockets for HttpService:CreateWebStreamClient, run on one background event loop.

Each client's happenings are queued as (client id, kind, args) and handed to Luau when the
harness next pumps (like finished HTTP), where they fire the WebStreamClient's events:
"opened" (status, headers text), "message" (text), "error" (status, message) and "closed".
Roblox documents Error as firing "if an error is received while establishing the connection or
during the connection lifetime" and Closed when "the server closes the connection successfully or
the user calls Close()"; a refused connection is reported as Error(400, "HttpError: ConnectFail")
then Closed, as plugins have observed in Studio.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from typing import Any

import aiohttp

Event = tuple[int, str, tuple[Any, ...]]


class WebStreamHub:
    """The WebSocket clients of one harness (started on first use, stopped by close())."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sockets: dict[int, aiohttp.ClientWebSocketResponse] = {}
        self._tasks: dict[int, asyncio.Future[None]] = {}
        self._closing: set[int] = set()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=loop.run_forever, name="luau-webstream", daemon=True
            )
            self._thread.start()
            self._loop = loop
        return self._loop

    def open(self, client_id: int, url: str, headers: dict[str, str]) -> None:
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(self._run(client_id, url, headers), loop)
        self._tasks[client_id] = future  # type: ignore[assignment]

    def send(self, client_id: int, text: str) -> None:
        ws = self._sockets.get(client_id)
        if ws is not None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(ws.send_str(text), self._loop)

    def close(self, client_id: int) -> None:
        self._closing.add(client_id)
        ws = self._sockets.get(client_id)
        if ws is not None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(ws.close(), self._loop)
        else:
            task = self._tasks.get(client_id)
            if task is not None:
                task.cancel()
            self._events.put((client_id, "closed", ()))

    def drain(self) -> list[Event]:
        events: list[Event] = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    async def _run(self, client_id: int, url: str, headers: dict[str, str]) -> None:
        put = self._events.put
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                ws = await session.ws_connect(url, headers=headers, autoping=True)
            except aiohttp.WSServerHandshakeError as exc:
                put((client_id, "error", (exc.status, f"HTTP {exc.status} ({exc.message})")))
                put((client_id, "closed", ()))
                return
            except (aiohttp.ClientError, OSError, TimeoutError):
                put((client_id, "error", (400, "HttpError: ConnectFail")))
                put((client_id, "closed", ()))
                return
            self._sockets[client_id] = ws
            put((client_id, "opened", (101, "")))
            failed: str | None = None
            try:
                async for message in ws:
                    if message.type is aiohttp.WSMsgType.TEXT:
                        put((client_id, "message", (message.data,)))
                    elif message.type is aiohttp.WSMsgType.BINARY:
                        put((client_id, "message", (message.data.decode("utf-8", "replace"),)))
                    elif message.type is aiohttp.WSMsgType.ERROR:
                        failed = str(ws.exception())
                        break
            except (aiohttp.ClientError, OSError) as exc:
                failed = str(exc)
            finally:
                self._sockets.pop(client_id, None)
            if failed is not None and client_id not in self._closing:
                put((client_id, "error", (400, f"Failed ws recv: {failed}")))
            put((client_id, "closed", ()))

    def shutdown(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def stop_all() -> None:
            for ws in list(self._sockets.values()):
                with contextlib.suppress(Exception):
                    await ws.close()
            # The clients' tasks end by themselves once their socket closed; cancel the rest
            # (still connecting) and let their sessions close cleanly.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop_all(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        loop.close()
