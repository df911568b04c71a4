"""create_app(config) -> the companion server's aiohttp application.

This module only composes: each resource's lifecycle lives next to the resource (a context
manager in its service or storage module); here each is bound to its app key, in the order the
services need each other, and the route table is bound to its handlers.

Middleware order matters: the guards reject foreign Hosts, browser Origins, wrong media types
and oversized bodies before anything else runs; errors are rendered in the one envelope; the
auth middleware then requires a token everywhere the route table says so; an AI assistant's
token is held to its caps; only then is a body read, within its deadline (so only a paired
client's body is ever buffered).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, closing
from typing import Protocol

from aiohttp import web

from shared_schema.common import Role

from .config import ServerConfig
from .http.appkeys import (
    ASSISTANT_CAPS,
    BACKUPS,
    CONFIG,
    DATA,
    EVENTS,
    FEATURES,
    INDEX,
    INSTANCE_ID,
    JOBS,
    METRICS,
    PAIRING,
    SAMPLE_GAME,
    SERVER_BACKEND,
    SESSIONS,
    STREAMS,
    TEAM,
    TOKEN_STORE,
)
from .http.assistant import assistant_caps_middleware
from .http.auth import auth_middleware
from .http.connections import connection_cap
from .http.errors import error_middleware
from .http.guards import CLIENT_MAX_SIZE, BoundPort, body_deadline_middleware, guard_middleware
from .http.routes import bind_all
from .services.assistant_caps import AssistantCaps
from .services.assistant_usage import CapsInForce, UsageLog
from .services.backups.api import open_backups
from .services.backups.keyslots import ArchiveKeysSource
from .services.dataplane import open_data_plane
from .services.events import EventBus
from .services.features import Features
from .services.index.sample import SampleGameService
from .services.index.service import open_index
from .services.jobs.service import open_jobs
from .services.metrics import Metrics
from .services.pairing import DEFAULT_PAIRING_ROLE, Announce, announce_on_console, open_pairing
from .services.revocation import watched_streams
from .services.sessions import SessionRegistry
from .services.team import TeamService
from .services.tokens import TokenStore
from .services.traffic import MonitorTicker, budget_uses
from .storage.crypto import RecordCipher
from .storage.vault import ApiKeyRecord

Lifecycle = Callable[[web.Application], AsyncIterator[None]]


def provide[T](
    key: web.AppKey[T], opened: Callable[[web.Application], AbstractAsyncContextManager[T]]
) -> Lifecycle:
    """A cleanup_ctx entry that keeps the resource `opened` makes under `key` while serving."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with opened(app) as resource:
            app[key] = resource
            yield

    return lifecycle


class _Closeable(Protocol):
    def close(self) -> None: ...


@asynccontextmanager
async def _closing[C: _Closeable](resource: C) -> AsyncIterator[C]:
    """An async context for a resource with a synchronous close()."""
    try:
        yield resource
    finally:
        resource.close()


def tokens_and_pairing(
    config: ServerConfig,
    *,
    role: Role = DEFAULT_PAIRING_ROLE,
    announce: Announce = announce_on_console,
) -> Lifecycle:
    """The token store, and the pairing service that issues tokens into it (its attempt
    counters on disk beside the tokens, so a restart does not reset the pairing limits)."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        with (
            closing(TokenStore.open(config.data_dir)) as store,
            open_pairing(
                store,
                config.data_dir,
                ttl_seconds=config.pairing_code_ttl_seconds,
                role=role,
                announce=announce,
            ) as pairing,
        ):
            app[TOKEN_STORE] = store
            app[PAIRING] = pairing
            yield

    return lifecycle


# The event stream; the per-start id from hello, when the app has one, so the plugin sees one
# id everywhere.
event_stream = provide(
    EVENTS,
    lambda app: _closing(EventBus(app[CONFIG].event_buffer_size, instance_id=app.get(INSTANCE_ID))),
)
# Needs the event stream: throttle.changed goes on it, and the summary names its instance id.
metrics = provide(
    METRICS,
    lambda app: _closing(Metrics(instance_id=app[EVENTS].instance_id, bus=app[EVENTS])),
)
# Needs the event stream (sessions publish joined/left).
sessions = provide(
    SESSIONS,
    lambda app: SessionRegistry(app[CONFIG].session_ttl_seconds, bus=app[EVENTS]).sweeping(),
)
# Needs the token store and sessions: revoking a token ends its streams and sessions at once.
# Streams may take half the connections the server accepts, so ordinary requests find room.
event_streams = provide(
    STREAMS,
    lambda app: watched_streams(
        app[TOKEN_STORE], app[SESSIONS], total=max(1, connection_cap() // 2)
    ),
)


async def monitor_ticks(app: web.Application) -> AsyncIterator[None]:
    """Each finished second of Open Cloud traffic on the event stream (the Monitor view)."""
    metrics = app[METRICS]
    ticker = MonitorTicker(
        metrics.traffic, app[EVENTS], lambda: budget_uses(metrics.budget_snapshot())
    )
    async with ticker.running():
        yield


def assistant_caps(config: ServerConfig) -> Lifecycle:
    """The assistant tokens' caps, counted on disk beside the tokens (so a restart does not give
    an assistant a fresh minute, and `dsm tokens list` shows the usage against these caps)."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        with closing(UsageLog.open(config.data_dir)) as log:
            log.set_caps(
                CapsInForce(
                    config.assistant_requests_per_minute,
                    config.assistant_opencloud_per_minute,
                    config.assistant_proposals,
                )
            )
            app[ASSISTANT_CAPS] = AssistantCaps(
                config.assistant_requests_per_minute,
                config.assistant_opencloud_per_minute,
                log=log,
            )
            yield

    return lifecycle


def data_plane(config: ServerConfig, keys: list[ApiKeyRecord], data_key: bytes) -> Lifecycle:
    """Open Cloud (or the emulator), cache, journal and the data services; needs metrics."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with open_data_plane(
            config,
            keys=keys,
            data_key=data_key,
            events=app[EVENTS],
            metrics=app[METRICS],
            charge=app[ASSISTANT_CAPS].on_call,
        ) as plane:
            app[DATA] = plane
            app[SERVER_BACKEND] = lambda: plane.upstream.backend
            yield

    return lifecycle


def team_sync(config: ServerConfig, data_key: bytes) -> Lifecycle:
    """Team sync and the feature checks; needs the data plane and the sessions."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        plane = app[DATA]
        async with TeamService.opened(
            config.data_dir,
            RecordCipher(data_key),
            upstream=plane.upstream,
            events=app[EVENTS],
            cache=plane.cache,
            sessions=app[SESSIONS],
            writes=plane.writes,
        ) as team:
            app[TEAM] = team
            app[FEATURES] = Features(
                plane.upstream, team, index=lambda: app.get(INDEX), jobs=lambda: app.get(JOBS)
            )
            yield

    return lifecycle


def search_index(config: ServerConfig, data_key: bytes) -> Lifecycle:
    """The search index over the data plane's read path; follows its writes. Needs the plane."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        plane = app[DATA]
        app[SAMPLE_GAME] = sample = SampleGameService(plane.upstream)
        if config.sample_game_seed is not None:
            sample.load_on_start(config.sample_game_seed)
        async with open_index(
            config.data_dir,
            data_key,
            upstream=plane.upstream,
            reads=plane.reads,
            journal=plane.writes.journal,
            events=app[EVENTS],
        ) as index:
            app[INDEX] = index
            try:
                yield
            finally:
                await sample.close()

    return lifecycle


def jobs(keys: ArchiveKeysSource) -> Lifecycle:
    """Jobs: needs the data plane (the write path every job item goes through), events,
    metrics, the index (an erasure scrubs it) and team sync (an erasure reports its audit
    log); `keys` open and protect backup archives."""
    return provide(
        JOBS,
        lambda app: open_jobs(
            app[CONFIG].data_dir,
            app[DATA],
            app[EVENTS],
            app[METRICS],
            keys=keys,
            index=app[INDEX],
            team=app.get(TEAM),
            plan_wait=app[CONFIG].job_plan_wait_seconds,
            held_wait=app[CONFIG].job_held_wait_seconds,
            held_retry=app[CONFIG].job_held_retry_seconds,
            assistant_proposals=app[CONFIG].assistant_proposals,
        ),
    )


def backups(keys: ArchiveKeysSource) -> Lifecycle:
    """Backups, schedules, restores and erasure; needs the jobs service (they are its jobs)."""
    return provide(
        BACKUPS,
        lambda app: open_backups(
            app[CONFIG].data_dir, keys, app[JOBS], schedule=app[CONFIG].backup_schedules
        ),
    )


async def job_retention(app: web.Application) -> AsyncIterator[None]:
    """Automatic pruning of old jobs (`dsm serve --job-retention-days`); after backups, whose
    schedules name jobs a prune must keep."""
    days = app[CONFIG].job_retention_days
    task = app[JOBS].keep_pruning(days, app[CONFIG].job_retention_first_seconds) if days else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def create_app(
    config: ServerConfig,
    *,
    keys: list[ApiKeyRecord],
    data_key: bytes,
    port: BoundPort,
    announce: Announce | None = None,
    vault_persistent: bool = True,
) -> web.Application:
    """The server app; `keys` and `data_key` come from the unlocked vault (`vault_persistent`
    False: the data key lives only in memory for this run)."""
    app = web.Application(
        middlewares=[
            error_middleware,
            guard_middleware(port),
            auth_middleware,
            assistant_caps_middleware,
            body_deadline_middleware,
        ],
        client_max_size=CLIENT_MAX_SIZE,
    )
    app[CONFIG] = config
    app[INSTANCE_ID] = secrets.token_hex(8)
    archive_keys = ArchiveKeysSource(data_key, vault_persistent)
    app.cleanup_ctx.extend(
        [
            assistant_caps(config),
            tokens_and_pairing(
                config, role=config.pairing_role, announce=announce or announce_on_console
            ),
            event_stream,
            metrics,
            sessions,
            monitor_ticks,
            event_streams,
            data_plane(config, keys, data_key),
            team_sync(config, data_key),
            search_index(config, data_key),
            jobs(archive_keys),
            backups(archive_keys),
            job_retention,
        ]
    )
    bind_all(app)
    return app
