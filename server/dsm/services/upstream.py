"""Which Open Cloud the server talks to, and the client that serves each universe.

With keys in the vault the server talks to https://apis.roblox.com, one client per key (a key
lists the universes it serves). With none it starts the embedded emulator on a loopback port
and points one client at it: the code path is the same, only the backend label differs.
`dsm serve --upstream URL` points the clients at another Open Cloud-compatible server instead
(the vault's keys, or a local key when it has none); its answers are labelled EMULATOR only
when it says it is one (the transport sees the X-DSM-Emulator header), otherwise LIVE.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp

from shared_schema.common import Backend
from shared_schema.errors import ErrorCode

from ..emulator.context import EmulatorConfig
from ..emulator.embedded import EmbeddedEmulator
from ..emulator.throttle import LimitsConfig
from ..opencloud import errors as oc
from ..opencloud.client import OpenCloudClient
from ..opencloud.ratelimit import ClientBudget, ClientRateLimiter
from ..storage.vault import ApiKeyRecord
from .errors import ServiceError
from .provenance import upstream_error

log = logging.getLogger("dsm.upstream")
T = TypeVar("T")

OnCall = Callable[[str, int | str, float, str], None]
# Requests that may go back to back before pacing starts: opening a view makes a few calls.
INTERACTIVE_BURST = 10
# How long reads skip an Open Cloud that just failed to answer, serving the cache instead.
BREAKER_SECONDS = 10.0


class UpstreamUnreachable(Exception):
    """`--upstream URL` did not answer at start-up, so no label can be given to its data."""


@dataclass(frozen=True)
class Skip:
    """Reads skip Open Cloud for now: it throttles (a 429 paused the budget) or just failed."""

    reason: str
    code: ErrorCode  # UPSTREAM_THROTTLED or UPSTREAM_UNAVAILABLE
    retry_after: float  # seconds until reads try Open Cloud again


@dataclass(frozen=True)
class UniverseBinding:
    universe_id: int
    label: str
    environment: str  # production | staging | development
    backend: Backend


class Upstream:
    def __init__(
        self,
        backend: Backend,
        clients: dict[int, OpenCloudClient],
        bindings: list[UniverseBinding],
        *,
        shared_client: OpenCloudClient | None = None,
        emulator: EmbeddedEmulator | None = None,
        limiter: ClientRateLimiter | None = None,
        remote_emulator: bool = False,
    ) -> None:
        self.backend = backend
        self._clients = clients
        self._bindings = {b.universe_id: b for b in bindings}
        self._shared = shared_client
        self.emulator = emulator
        self.limiter = limiter
        # `--upstream` at an emulator (no key): its universes are asked over HTTP.
        self._remote_emulator = remote_emulator
        self._down: dict[int, tuple[float, str]] = {}

    @classmethod
    async def start(
        cls,
        *,
        keys: list[ApiKeyRecord],
        base_url: str,
        emulator_dir: Path,
        emulator_universes: list[int],
        emulator_limits: str,
        reserve_share: float,
        on_call: OnCall | None = None,
        limiter: ClientRateLimiter | None = None,
        upstream_url: str | None = None,
        emulator_ccu: int = 0,
    ) -> Upstream:
        if limiter is None:
            limiter = ClientRateLimiter(
                ClientBudget(reserve_share=reserve_share), burst=INTERACTIVE_BURST
            )
        if upstream_url is not None:
            return await cls._start_upstream(
                upstream_url, keys, emulator_universes, on_call, limiter
            )
        if keys:
            clients: dict[int, OpenCloudClient] = {}
            bindings: list[UniverseBinding] = []
            for record in keys:
                client = OpenCloudClient(
                    api_key=record.api_key, base_url=base_url, limiter=limiter, on_call=on_call
                )
                for universe in record.universes:
                    clients[universe] = client
                    bindings.append(
                        UniverseBinding(universe, record.label, record.environment, Backend.LIVE)
                    )
            log.info("talking to %s for %d universe(s)", base_url, len(bindings))
            return cls(Backend.LIVE, clients, bindings, limiter=limiter)
        emulator = await EmbeddedEmulator.start(
            EmulatorConfig(
                data_dir=emulator_dir,
                limits=LimitsConfig.from_cli(mode=emulator_limits, ccu=emulator_ccu),
            )
        )
        # The emulator accepts any non-empty key in open mode; a per-start random one keeps
        # the code path identical to a real key without inventing a credential to store.
        emulator_key = secrets.token_urlsafe(16)
        client = OpenCloudClient(
            api_key=emulator_key,
            base_url=emulator.base_url,
            limiter=limiter,
            on_call=on_call,
        )
        bindings = [
            UniverseBinding(u, f"Emulator universe {u}", "development", Backend.EMULATOR)
            for u in emulator_universes
        ]
        log.info(
            "no Open Cloud key in the vault: using the embedded emulator at %s", emulator.base_url
        )
        return cls(
            Backend.EMULATOR,
            {},
            bindings,
            shared_client=client,
            emulator=emulator,
            limiter=limiter,
        )

    @classmethod
    async def _start_upstream(
        cls,
        url: str,
        keys: list[ApiKeyRecord],
        emulator_universes: list[int],
        on_call: OnCall | None,
        limiter: ClientRateLimiter,
    ) -> Upstream:
        """Clients for an Open Cloud-compatible server at ``url``, labelled by what it says."""
        local_key = None if keys else secrets.token_urlsafe(16)
        clients: dict[int, OpenCloudClient] = {}
        owned: list[OpenCloudClient] = []
        for record in keys:
            client = OpenCloudClient(
                api_key=record.api_key, base_url=url, limiter=limiter, on_call=on_call
            )
            owned.append(client)
            clients.update(dict.fromkeys(record.universes, client))
        shared = None
        if local_key is not None:
            shared = OpenCloudClient(
                api_key=local_key, base_url=url, limiter=limiter, on_call=on_call
            )
            owned.append(shared)
        try:
            detected = await owned[0].detect_backend()
        except oc.OpenCloudError as exc:
            for client in owned:
                await client.close()
            raise UpstreamUnreachable(
                f"The Open Cloud-compatible server at {url} did not answer ({exc.message}); "
                "start it first, or check the URL given to --upstream."
            ) from None
        backend = Backend.EMULATOR if detected == "EMULATOR" else Backend.LIVE
        environment = "development" if backend is Backend.EMULATOR else "production"
        if keys:
            bindings = [
                UniverseBinding(u, r.label, r.environment, backend)
                for r in keys
                for u in r.universes
            ]
        else:
            bindings = [
                UniverseBinding(u, f"Universe {u} at {url}", environment, backend)
                for u in emulator_universes
            ]
        log.info("using the %s Open Cloud-compatible server at %s", backend.value, url)
        return cls(
            backend,
            clients,
            bindings,
            shared_client=shared,
            limiter=limiter,
            remote_emulator=backend is Backend.EMULATOR and shared is not None,
        )

    async def close(self) -> None:
        closed: set[int] = set()
        for client in [*self._clients.values(), *([self._shared] if self._shared else [])]:
            if id(client) not in closed:
                closed.add(id(client))
                await client.close()
        if self.emulator is not None:
            await self.emulator.stop()

    def client_for(self, universe_id: int) -> OpenCloudClient:
        if self._shared is not None:
            return self._shared
        client = self._clients.get(universe_id)
        if client is None:
            raise ServiceError(
                ErrorCode.NO_API_KEY,
                f"No Open Cloud API key in the vault serves universe {universe_id}. Add one "
                "with `dsm key add --universe "
                f"{universe_id} ...` and restart `dsm serve`.",
            )
        return client

    async def call(self, universe_id: int, fn: Callable[[OpenCloudClient], Awaitable[T]]) -> T:
        """One Open Cloud call for a universe; failures become the protocol's typed errors."""
        client = self.client_for(universe_id)
        try:
            return await fn(client)
        except oc.OpenCloudError as exc:
            raise upstream_error(exc, self.binding(universe_id).backend) from exc

    def binding(self, universe_id: int) -> UniverseBinding:
        known = self._bindings.get(universe_id)
        if known is not None:
            return known
        if self.backend is Backend.EMULATOR:
            return UniverseBinding(
                universe_id, f"Emulator universe {universe_id}", "development", Backend.EMULATOR
            )
        if self._shared is not None:  # --upstream without keys: one local key serves them all
            return UniverseBinding(
                universe_id, f"Universe {universe_id}", "production", self.backend
            )
        self.client_for(universe_id)  # raises NO_API_KEY
        raise AssertionError("unreachable")

    async def universes(self) -> tuple[list[UniverseBinding], str | None]:
        """Configured universes; on the emulator also every universe that holds data there.

        The second value is why the emulator's own list could not be read (None when it was):
        the configured universes are still known and are listed anyway.
        """
        found = dict(self._bindings)
        problem = None
        if self.emulator is not None:
            try:
                for universe in self.emulator.universes():
                    found.setdefault(universe, self.binding(universe))
            except sqlite3.Error as exc:
                problem = f"the embedded emulator's data cannot be read ({exc})"
        elif self._remote_emulator and self._shared is not None:
            try:
                for universe in await self._shared.emulator_universes():
                    found.setdefault(universe, self.binding(universe))
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"the emulator is unreachable ({type(exc).__name__})"
        return [found[u] for u in sorted(found)], problem

    # Circuit breaker: after Open Cloud proved unreachable, reads go straight to the cache for
    # a short while instead of spending the client's whole retry budget on every request.
    def note_unreachable(self, universe_id: int, reason: str) -> None:
        self._down[universe_id] = (time.monotonic() + BREAKER_SECONDS, reason)

    def note_reachable(self, universe_id: int) -> None:
        self._down.pop(universe_id, None)

    def read_skip(self, universe_id: int, category: str = "read") -> Skip | None:
        """Why reads of this universe skip Open Cloud right now, None when they do not."""
        throttled = self.limiter.paused_for(str(universe_id), category) if self.limiter else 0.0
        if throttled > 0:
            where = "The embedded emulator" if self.backend is Backend.EMULATOR else "Open Cloud"
            return Skip(
                f"{where} is throttling {category} requests for universe {universe_id}; fresh "
                f"reads resume in {throttled:.0f} s.",
                ErrorCode.UPSTREAM_THROTTLED,
                throttled,
            )
        state = self._down.get(universe_id)
        if state is None:
            return None
        until, reason = state
        left = until - time.monotonic()
        if left <= 0:
            del self._down[universe_id]  # half-open: the next read tries Open Cloud again
            return None
        return Skip(reason, ErrorCode.UPSTREAM_UNAVAILABLE, left)
