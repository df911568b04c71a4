"""The sample game offer: only on the server's own embedded emulator, never on live data."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from shared_schema.common import Backend
from shared_schema.errors import ErrorCode
from shared_schema.index import SampleGameLoading, SampleGameRequest, SampleGameStatus

from ...emulator import sample_game
from ...emulator.context import EMULATOR, EmulatorContext
from ..errors import ServiceError
from ..upstream import Upstream

log = logging.getLogger("dsm.sample_game")


@dataclass
class SampleGameService:
    upstream: Upstream
    _task: asyncio.Task[sample_game.SampleGameInfo] | None = field(default=None, init=False)
    _starting: sample_game.SampleGameLoading | None = field(default=None, init=False)

    def _context(self) -> EmulatorContext | None:
        emulator = self.upstream.emulator
        if emulator is None or self.upstream.backend is not Backend.EMULATOR:
            return None
        return emulator.runner.app[EMULATOR]

    def status(self) -> SampleGameStatus:
        ctx = self._context()
        if ctx is None:
            reason = (
                "The server talks to live Open Cloud; the sample game exists only in the emulator."
                if self.upstream.backend is Backend.LIVE
                else "The server uses another emulator (--upstream); start that one with "
                "`dsm emulator --sample-game`."
            )
            return SampleGameStatus(
                backend=self.upstream.backend,
                available=False,
                loaded=False,
                emulator_empty=False,
                reason=reason,
            )
        loaded = sample_game.loaded(ctx)
        first = loaded[0] if loaded else None
        running = self._running(ctx)
        return SampleGameStatus(
            backend=Backend.EMULATOR,
            available=True,
            loaded=first is not None,
            emulator_empty=sample_game.is_empty(ctx),
            universe_id=int(first.universe) if first else None,
            seed=first.seed if first else None,
            players=first.players if first else None,
            datastores=first.datastores if first else [],
            loading=None
            if running is None
            else SampleGameLoading(
                universe_id=int(running.universe),
                seed=running.seed,
                players=running.players,
                players_written=running.written,
            ),
        )

    def load_on_start(self, seed: int) -> None:
        """`dsm serve --sample-game`: load it in the background unless it is there already
        (never on live data); the server answers meanwhile and `status` says how far it got."""
        status = self.status()
        if not status.available:
            log.warning("--sample-game ignored: %s", status.reason)
        elif not status.loaded and status.loading is None:
            self._start(SampleGameRequest(seed=seed)).add_done_callback(_log_outcome)

    async def load(self, request: SampleGameRequest) -> SampleGameStatus:
        """Load it and answer when it is in. The load goes on if the caller goes away."""
        try:
            await asyncio.shield(self._start(request))
        except sample_game.SampleGameBusy as busy:  # one started through /_emulator first
            raise ServiceError(ErrorCode.CONFLICT, str(busy)) from None
        return self.status()

    async def close(self) -> None:
        """Server shutdown: stop a load under way (its sample game is not recorded as loaded)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _running(self, ctx: EmulatorContext) -> sample_game.SampleGameLoading | None:
        """The load under way; ours claims the emulator only at its task's first step."""
        running = sample_game.loading(ctx)
        if running is None and self._task is not None and not self._task.done():
            running = self._starting
        return running

    def _start(self, request: SampleGameRequest) -> asyncio.Task[sample_game.SampleGameInfo]:
        ctx = self._context()
        if ctx is None:
            raise ServiceError(ErrorCode.BAD_REQUEST, self.status().reason or "Not available.")
        running = self._running(ctx)
        if running is not None:
            raise ServiceError(ErrorCode.CONFLICT, str(sample_game.SampleGameBusy(running)))
        self._starting = sample_game.SampleGameLoading(
            str(request.universe_id), request.seed, request.players
        )
        self._task = asyncio.create_task(
            sample_game.load_async(
                ctx, universe=str(request.universe_id), seed=request.seed, players=request.players
            ),
            name="dsm sample game",
        )
        return self._task


def _log_outcome(task: asyncio.Task[sample_game.SampleGameInfo]) -> None:
    if task.cancelled():
        return
    if (error := task.exception()) is not None:
        log.error("sample game load failed: %s", error)
    else:
        info = task.result()
        log.info("sample game loaded into the embedded emulator (seed %d)", info.seed)
