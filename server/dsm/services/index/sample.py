"""The sample game offer: only on the server's own embedded emulator, never on live data."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared_schema.common import Backend
from shared_schema.errors import ErrorCode
from shared_schema.index import SampleGameRequest, SampleGameStatus

from ...emulator import sample_game
from ...emulator.context import EMULATOR, EmulatorContext
from ..errors import ServiceError
from ..upstream import Upstream

log = logging.getLogger("dsm.sample_game")


@dataclass
class SampleGameService:
    upstream: Upstream

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
        return SampleGameStatus(
            backend=Backend.EMULATOR,
            available=True,
            loaded=first is not None,
            emulator_empty=sample_game.is_empty(ctx),
            universe_id=int(first.universe) if first else None,
            seed=first.seed if first else None,
            players=first.players if first else None,
            datastores=first.datastores if first else [],
        )

    def load_on_start(self, seed: int) -> None:
        """`dsm serve --sample-game`: load it unless it is there already (never on live data)."""
        status = self.status()
        if not status.available:
            log.warning("--sample-game ignored: %s", status.reason)
        elif not status.loaded:
            self.load(SampleGameRequest(seed=seed))
            log.info("sample game loaded into the embedded emulator (seed %d)", seed)

    def load(self, request: SampleGameRequest) -> SampleGameStatus:
        ctx = self._context()
        if ctx is None:
            raise ServiceError(ErrorCode.BAD_REQUEST, self.status().reason or "Not available.")
        sample_game.load(
            ctx, universe=str(request.universe_id), seed=request.seed, players=request.players
        )
        return self.status()
