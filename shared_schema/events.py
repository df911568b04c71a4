"""The ordered event stream (`GET /events`, long-poll) and its payloads.

`Event.type` is a plain string, not an enum: a newer server may add event types in a minor
version and the plugin ignores types it does not know. Known types and their payload models are
listed in EVENT_PAYLOADS; validate `payload` with the model for its type.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from .base import QueryParams, ResponseBody
from .common import Backend
from .constraints import NonNegativeInt, PositiveInt, UtcDateTime
from .data import DataStoreState
from .entries import EntryOperation, EntryState, StoreKind
from .identity import Person
from .jobs import JobProgressPayload, JobStatePayload
from .monitor import MonitorTickPayload
from .sessions import SessionInfo
from .team import TeamActivityPayload, TeamPresencePayload, TeamStatus


class EventType(StrEnum):
    ENTRY_CHANGED = "entry.changed"
    DATASTORE_CHANGED = "datastore.changed"
    JOB_PROGRESS = "job.progress"  # a job's progress (planning or running)
    JOB_STATE = "job.state"  # a job changed state, or its plan is complete
    SESSION_JOINED = "session.joined"
    SESSION_LEFT = "session.left"
    THROTTLE_CHANGED = "throttle.changed"
    BACKEND_CHANGED = "backend.changed"
    TEAM_STATUS = "team.status"  # team sync turned on/off or became (un)available
    TEAM_PRESENCE = "team.presence"  # who is present and which entries are locked changed
    TEAM_ACTIVITY = "team.activity"  # a teammate's job or many changes at once
    MONITOR_TICK = "monitor.tick"  # one finished second of Open Cloud traffic


# Longer polls risk Studio's HttpService request timeout.
MAX_POLL_SECONDS = 25.0


class EventsQuery(QueryParams):
    cursor: NonNegativeInt | None = Field(
        default=None,
        description="next_cursor of the previous batch; omit to start from now.",
    )
    timeout: float = Field(
        default=20.0, ge=0, le=25, description="Seconds to wait for an event (0-25)."
    )

    @field_validator("timeout", mode="before")
    @classmethod
    def _clamp_timeout(cls, value: Any) -> Any:
        # Out-of-range waits are clamped rather than refused; NaN is left for validation.
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            return value
        if seconds != seconds:
            return value
        return min(max(seconds, 0.0), MAX_POLL_SECONDS)


class Event(ResponseBody):
    seq: PositiveInt = Field(description="Rises by one per event within one instance_id.")
    instance_id: str = Field(min_length=1)
    type: str = Field(min_length=1, description="An EventType value, or a newer unknown one.")
    at: UtcDateTime
    payload: dict[str, Any] = Field(description="Shape given by the payload model for `type`.")
    backend: Backend | None = Field(
        default=None,
        description="EMULATOR or LIVE: which Open Cloud the server was using; absent only for "
        "events raised before the data plane started.",
    )


class EventBatch(ResponseBody):
    instance_id: str = Field(min_length=1)
    resync: Literal[False] = Field(default=False, description="Always false on a batch.")
    events: list[Event] = Field(description="Empty when the wait timed out.")
    next_cursor: NonNegativeInt = Field(description="Pass as `cursor` on the next poll.")


class EventResync(ResponseBody):
    """The cursor is older than the server's buffer (or from another instance)."""

    instance_id: str = Field(min_length=1)
    resync: Literal[True] = Field(description="Re-read open views, then poll from next_cursor.")
    next_cursor: NonNegativeInt
    reason: str = Field(description="Why the events could not be replayed.")


class EntryChangedPayload(ResponseBody):
    universe_id: PositiveInt
    store_kind: StoreKind
    datastore: str = Field(min_length=1)
    scope: str
    key: str = Field(min_length=1)
    operation: EntryOperation
    state: EntryState
    revision: str | None = Field(default=None, description="The revision written, when known.")
    actor: str | None = Field(default=None, description="The token name that wrote.")
    journal_id: PositiveInt | None = Field(
        default=None, description="Set when the write went through this server."
    )
    person: Person | None = Field(default=None, description="Who wrote, as far as it is known.")
    via_team: bool | None = Field(
        default=None, description="True: written through a teammate's server (change feed)."
    )


class DataStoreChangedPayload(ResponseBody):
    universe_id: PositiveInt
    datastore: str = Field(min_length=1)
    state: DataStoreState
    actor: str | None = Field(default=None, description="The token name that changed it.")
    person: Person | None = Field(default=None, description="Who changed it, as far as known.")


class SessionJoinedPayload(ResponseBody):
    session: SessionInfo


class SessionLeftReason(StrEnum):
    CLOSED = "closed"
    EXPIRED = "expired"  # no heartbeat in time
    REVOKED = "revoked"  # its token was revoked


class SessionLeftPayload(ResponseBody):
    session_id: str = Field(min_length=1)
    display_name: str
    reason: SessionLeftReason
    person: Person | None = None


class ThrottleChangedPayload(ResponseBody):
    """The server started or stopped holding back Open Cloud calls of one budget."""

    universe_id: PositiveInt | None = Field(default=None, description="Absent if server-wide.")
    category: str = Field(min_length=1, description="The request budget, e.g. `read`, `write`.")
    throttled: bool
    retry_after_seconds: float | None = Field(default=None, ge=0)
    message: str | None = Field(default=None, description="Human-readable explanation.")


class BackendChangedPayload(ResponseBody):
    backend: Backend
    reason: str | None = Field(default=None, description="E.g. 'API key added'.")


EVENT_PAYLOADS: dict[EventType, type[BaseModel]] = {
    EventType.ENTRY_CHANGED: EntryChangedPayload,
    EventType.DATASTORE_CHANGED: DataStoreChangedPayload,
    EventType.SESSION_JOINED: SessionJoinedPayload,
    EventType.SESSION_LEFT: SessionLeftPayload,
    EventType.THROTTLE_CHANGED: ThrottleChangedPayload,
    EventType.BACKEND_CHANGED: BackendChangedPayload,
    EventType.TEAM_STATUS: TeamStatus,
    EventType.TEAM_PRESENCE: TeamPresencePayload,
    EventType.TEAM_ACTIVITY: TeamActivityPayload,
    EventType.MONITOR_TICK: MonitorTickPayload,
    EventType.JOB_PROGRESS: JobProgressPayload,
    EventType.JOB_STATE: JobStatePayload,
}
