"""Universes, data stores, keys and scopes: everything listed before an entry is opened."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .base import QueryParams, ResponseBody
from .common import Backend, Source
from .constraints import Cursor, Name, PositiveInt, UtcDateTime


class Environment(StrEnum):
    PRODUCTION = "production"
    STAGING = "staging"
    DEVELOPMENT = "development"


class DataStoreState(StrEnum):
    ACTIVE = "ACTIVE"
    DELETED = "DELETED"  # scheduled for purging; can be undeleted until expires_at


class UniverseInfo(ResponseBody):
    universe_id: PositiveInt
    label: str = Field(description="The name the user gave this universe in the server's config.")
    environment: Environment = Field(
        description="Production universes get extra confirmation before writes."
    )
    backend: Backend


class UniverseList(ResponseBody):
    universes: list[UniverseInfo]
    source: Source


class DataStoreInfo(ResponseBody):
    name: str = Field(min_length=1)
    created_at: UtcDateTime | None = Field(default=None, description="Absent when unknown.")
    state: DataStoreState
    expires_at: UtcDateTime | None = Field(
        default=None, description="For a DELETED store: when it is purged for good."
    )


class DataStoreListQuery(QueryParams):
    prefix: str | None = Field(default=None, max_length=50, description="Name prefix filter.")
    cursor: Cursor | None = None
    limit: int = Field(default=50, ge=1, le=100, description="Page size (1-100).")
    show_deleted: bool = Field(default=False, description="Include stores awaiting purge.")


class DataStorePage(ResponseBody):
    items: list[DataStoreInfo]
    next_cursor: str | None = Field(default=None, description="Absent on the last page.")
    source: Source


class KeyListQuery(QueryParams):
    scope: Name = Field(default="global", description="Ignored when all_scopes is true.")
    all_scopes: bool = Field(default=False, description="List keys of every scope.")
    prefix: str | None = Field(default=None, max_length=50, description="Key prefix filter.")
    cursor: Cursor | None = None
    limit: int = Field(default=100, ge=1, le=256, description="Page size (1-256).")
    show_deleted: bool = Field(default=False, description="Include deleted keys.")


class KeyItem(ResponseBody):
    scope: str
    key: str = Field(min_length=1)
    deleted: bool = Field(description="The key's latest revision is a deletion.")


class KeyPage(ResponseBody):
    """Open Cloud may return short pages: only a missing next_cursor means the end."""

    items: list[KeyItem]
    next_cursor: str | None = Field(default=None, description="Absent on the last page.")
    source: Source


class ScopeList(ResponseBody):
    """Open Cloud cannot list scopes; they are derived by listing the keys of every scope."""

    scopes: list[str]
    complete: bool = Field(
        description="False when listing stopped early (too many keys): more scopes may exist."
    )
    source: Source
