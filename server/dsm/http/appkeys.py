"""Every key the companion server keeps in its aiohttp application or request, in one place.

Who sets each one: app.py's lifecycles (see `dsm.app`), at start-up; the auth middleware sets
PRINCIPAL on each request. Views only read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from shared_schema.common import Backend

from ..config import ServerConfig
from ..services.assistant_caps import AssistantCaps
from ..services.backups.api import BackupsService
from ..services.dataplane import DataPlane
from ..services.events import EventBus
from ..services.features import Features
from ..services.index.sample import SampleGameService
from ..services.index.service import IndexService
from ..services.jobs.service import JobService
from ..services.metrics import Metrics
from ..services.pairing import PairingService
from ..services.sessions import SessionRegistry
from ..services.streams import StreamRegistry
from ..services.team import TeamService
from ..services.tokens import Principal, TokenStore

CONFIG = web.AppKey("dsm.config", ServerConfig)
# One random id per server start, shared by hello, the event stream and the metrics summary.
INSTANCE_ID = web.AppKey("dsm.instance_id", str)

TOKEN_STORE = web.AppKey("dsm.token_store", TokenStore)
PAIRING = web.AppKey("dsm.pairing", PairingService)
EVENTS = web.AppKey("dsm.events", EventBus)
METRICS = web.AppKey("dsm.metrics", Metrics)
SESSIONS = web.AppKey("dsm.sessions", SessionRegistry)


@dataclass
class EventSockets:
    """The open event WebSockets, closed when the server shuts down."""

    open: set[web.WebSocketResponse] = field(default_factory=set)


EVENT_SOCKETS = web.AppKey("dsm.event_sockets", EventSockets)
# Open event streams (long polls and sockets) per token, capped, ended when a token is revoked.
STREAMS = web.AppKey("dsm.streams", StreamRegistry)

# The data plane: Upstream, cache, journal and the data services (once Open Cloud is up).
DATA = web.AppKey("dsm.data", DataPlane)
# Bulk jobs (delete, copy, export, import, ...), uploads for imports; needs the data plane.
JOBS = web.AppKey("dsm.jobs", JobService)
# Backups, their schedules, restores and erasure (jobs of JOBS); needs the jobs service.
BACKUPS = web.AppKey("dsm.backups", BackupsService)
# Which Open Cloud backend this server talks to now; every data response names it.
SERVER_BACKEND: web.AppKey[Callable[[], Backend]] = web.AppKey("dsm.server_backend")

# Team sync (services/team) and the feature availability checks; after the data plane.
TEAM = web.AppKey("dsm.team", TeamService)
FEATURES = web.AppKey("dsm.features", Features)
# The search index (search, analytics, crawls) and the emulator's sample game offer.
INDEX = web.AppKey("dsm.index", IndexService)
SAMPLE_GAME = web.AppKey("dsm.sample_game", SampleGameService)

# Per-token request and Open Cloud caps of AI assistants (`dsm mcp`).
ASSISTANT_CAPS = web.AppKey("dsm.assistant_caps", AssistantCaps)

PRINCIPAL = web.RequestKey("dsm.principal", Principal)
