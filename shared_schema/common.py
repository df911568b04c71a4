"""Types shared by many messages: where a value came from, roles, backends."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Backend(StrEnum):
    EMULATOR = "EMULATOR"  # the embedded local Open Cloud emulator: never a live game's data
    LIVE = "LIVE"  # https://apis.roblox.com


class SourceKind(StrEnum):
    LIVE = "LIVE"
    EMULATOR = "EMULATOR"
    CACHED = "CACHED"
    UNAVAILABLE = "UNAVAILABLE"


class Source(BaseModel):
    """Where a value shown to the user came from. Every data response carries one."""

    # Open like every response model: a later minor version may add fields.
    model_config = ConfigDict(extra="ignore")

    kind: SourceKind
    backend: Backend
    fetched_at: datetime | None = Field(
        default=None, description="When the value was read from Open Cloud (or the emulator)."
    )
    age_seconds: float | None = Field(
        default=None, description="For CACHED: how old the cached value is."
    )
    reason: str | None = Field(
        default=None, description="For CACHED and UNAVAILABLE: why a fresh read was not possible."
    )


class Role(StrEnum):
    """What a token may do; each role may do everything the roles before it may."""

    VIEWER = "viewer"  # read only
    # An AI assistant (`dsm mcp`): reads like a viewer and may *propose* jobs (dry runs) that a
    # person starts; never writes, starts, resumes or rolls back anything itself.
    ASSISTANT = "assistant"
    EDITOR = "editor"  # read and write entries
    ADMIN = "admin"  # everything, including destructive data store actions and token admin

    def allows(self, needed: Role) -> bool:
        order = [Role.VIEWER, Role.ASSISTANT, Role.EDITOR, Role.ADMIN]
        return order.index(self) >= order.index(needed)
