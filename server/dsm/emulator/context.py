"""The emulator's shared state and the helpers every route module uses.

Routes import this module, and app.py imports the routes: one direction, no cycle.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .auth import Authorizer, KeyGrant
from .clock import Clock, SystemClock
from .db import Database
from .errors import EmulatorError, invalid
from .faults import FaultSettingError, check_changes
from .memorystore import MemoryStore
from .messaging import MessageLog
from .ordered import OrderedStore
from .standard import StandardStore
from .throttle import LimitsConfig, Throttler


@dataclass
class FaultConfig:
    """Injected failures for tests and demos; rates are probabilities per request."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_statuses: list[int] = field(default_factory=lambda: [500, 503, 429])
    drop_rate: float = 0.0  # connection closed before the request is applied
    lost_response_rate: float = 0.0  # write applied, then the connection is closed
    seed: int | None = None

    def __post_init__(self) -> None:
        check_changes(dict(self.__dict__))  # FaultSettingError (a ValueError) when out of range

    def update(self, changes: dict[str, Any]) -> None:
        """Change some settings, each checked first (nothing changes if one is bad)."""
        try:
            checked = check_changes(changes)
        except FaultSettingError as bad:
            raise invalid(str(bad)) from None
        for name, value in checked.items():
            setattr(self, name, value)


@dataclass
class EmulatorConfig:
    data_dir: Path | None = None  # None: a fresh temporary store
    keys: list[KeyGrant] | None = None  # None: any non-empty key has full access
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    clock: Clock = field(default_factory=SystemClock)
    # The bound port, read per request: when set, the browser and DNS-rebinding wall the
    # companion server uses guards the emulator too (loopback Host, no Origin or Sec-Fetch).
    guard_port: Callable[[], int] | None = None


class EmulatorContext:
    """Everything a route handler needs; one per emulator app."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock = config.clock
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        data_dir = config.data_dir
        if data_dir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="dsm-emulator-")
            data_dir = Path(self._tempdir.name)
        self.data_dir = data_dir
        self.db = Database(data_dir / "emulator.sqlite3")
        self.standard = StandardStore(self.db, self.clock)
        self.ordered = OrderedStore(self.db)
        self.memory = MemoryStore(self.db, self.clock, config.limits)
        self.messages = MessageLog(self.db, self.clock)
        self.auth = Authorizer(config.keys)
        self.throttler = Throttler(config.limits, self.clock)
        self.faults = config.faults
        self.rng = random.Random(config.faults.seed)
        self.fault_counts: dict[str, int] = {"error": 0, "drop": 0, "lost_response": 0}

    def close(self) -> None:
        self.db.close()
        if self._tempdir is not None:
            self._tempdir.cleanup()

    # Helpers the routes share -------------------------------------------------

    def require(
        self, request: web.Request, universe: str, scope: str, datastore: str | None = None
    ) -> None:
        self.auth.require(request.get(GRANT), universe, scope, datastore)

    def throttle(
        self,
        request: web.Request,
        universe: str,
        budgets: Sequence[str],
        *,
        entry_key: str | None = None,
        request_bytes: int = 0,
        units: int = 1,
    ) -> None:
        """Charge the request to its budgets or answer 429 with retry-after."""
        decision = self.throttler.check(
            universe_id=universe,
            api_key=request.headers.get("x-api-key", ""),
            budgets=budgets,
            entry_key=entry_key,
            request_bytes=request_bytes,
            units=units,
        )
        if decision.limit is not None:
            request[RATELIMIT_HEADERS] = decision.headers()
        if not decision.allowed:
            raise EmulatorError(
                "RESOURCE_EXHAUSTED",
                f"Too many requests ({decision.reason}): the {decision.budget} budget is used up; "
                f"retry after {decision.retry_after:.0f} s.",
                v1_code=decision.reason,
                headers=decision.headers(),
            )


EMULATOR = web.AppKey("emulator", EmulatorContext)
GRANT = web.RequestKey("grant", KeyGrant)  # absent in open mode: full access
RATELIMIT_HEADERS = web.RequestKey("ratelimit_headers", dict[str, str])


def universe_param(request: web.Request, name: str = "universe_id") -> str:
    raw = request.match_info[name]
    if not raw.isdigit() or len(raw) > 19:
        raise invalid(f"Invalid universe id {raw!r}.", "InvalidUniverseId")
    return raw


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status=status,
        content_type="application/json",
        headers=headers,
    )
