"""Studio sessions: who is connected to this server right now (team presence)."""

from __future__ import annotations

from pydantic import Field

from .base import RequestBody, ResponseBody
from .common import Source
from .constraints import Label, NonNegativeInt, PositiveInt, UtcDateTime
from .identity import Person
from .team import EntryRef


class SessionOpenRequest(RequestBody):
    studio_user_id: PositiveInt | None = Field(
        default=None, description="StudioService:GetUserId(), when known."
    )
    place_id: NonNegativeInt | None = Field(
        default=None, description="game.PlaceId; 0 for a place never published."
    )
    client_name: Label = Field(description="Shown to teammates, e.g. the Studio user's name.")
    studio_user_name: Label | None = Field(
        default=None,
        description="Players:GetNameFromUserIdAsync(studio_user_id), when the plugin could get it.",
    )


class SessionInfo(ResponseBody):
    session_id: str = Field(min_length=1)
    token_id: str = Field(min_length=1, description="The token that opened the session.")
    display_name: str = Field(description="How the session is shown to others.")
    studio_user_id: PositiveInt | None = None
    studio_user_name: str | None = None
    person: Person | None = Field(
        default=None, description="Who the session belongs to, as the plugin reported."
    )
    viewing: EntryRef | None = Field(default=None, description="What the plugin shows now.")
    place_id: NonNegativeInt | None = None
    client_name: str
    connected_at: UtcDateTime
    last_seen_at: UtcDateTime
    expires_at: UtcDateTime = Field(description="Without a heartbeat the session ends here.")
    heartbeat_interval_seconds: float = Field(
        gt=0, description="Send POST /sessions/{session_id}/heartbeat this often."
    )


class SessionOpened(SessionInfo):
    """The new session, and where its event stream starts."""

    event_cursor: NonNegativeInt = Field(
        description="The event stream's position as the session opened: a fresh stream polls from "
        "here, so no change made after this answer is missed while the stream starts."
    )


class SessionList(ResponseBody):
    sessions: list[SessionInfo]
    source: Source
