"""Team sync across machines: presence, soft locks, the shared audit log and the team workspace.

Teammates' servers meet in the universe's own Open Cloud: a memory-store sorted map (presence,
locks, change feed, all with short TTLs) and two data stores (the hash-chained audit log, the
workspace). See docs/team.md for what each costs and what it cannot protect against.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .base import QueryParams, RequestBody, ResponseBody
from .common import Role, Source
from .constraints import Label, Name, NonNegativeInt, PositiveInt, Sha256Hex, UtcDateTime
from .entries import StoreKind
from .identity import Person


class TeamState(StrEnum):
    OFF = "OFF"  # not enabled for this universe on this server
    ON = "ON"  # enabled and the last sync worked
    UNAVAILABLE = "UNAVAILABLE"  # enabled, but it cannot work now (see reason)


class EntryRef(ResponseBody):
    universe_id: PositiveInt
    datastore: str = Field(min_length=1)
    scope: str = Field(min_length=1)
    key: str | None = Field(default=None, description="Absent when a whole data store is shown.")


class Teammate(ResponseBody):
    person: Person
    server_id: str = Field(min_length=1, description="The teammate's server (one per machine).")
    viewing: EntryRef | None = Field(default=None, description="What they have open, if known.")
    last_seen_at: UtcDateTime
    expires_at: UtcDateTime = Field(description="Without a new heartbeat they are gone here.")
    this_server: bool = Field(description="Connected to this server (not a teammate's).")


class TeamLock(ResponseBody):
    """A soft lock: someone is editing this entry. It never blocks a write; saves stay
    conditional on the revision the user saw."""

    datastore: str = Field(min_length=1)
    scope: str = Field(min_length=1)
    key: str = Field(min_length=1)
    holder: Person
    server_id: str = Field(min_length=1)
    since: UtcDateTime
    expires_at: UtcDateTime
    mine: bool = Field(description="Held by the caller (same server and token).")


class TeamCaps(ResponseBody):
    """The limits team sync keeps to in the game's own memory store, and what it uses now."""

    max_requests_per_minute: PositiveInt
    requests_last_minute: NonNegativeInt
    held_back: NonNegativeInt = Field(description="Requests delayed by the cap since start.")
    max_bytes: PositiveInt = Field(description="Bytes this server may keep stored at once.")
    bytes_stored: NonNegativeInt = Field(description="Bytes of this server's items not expired.")
    max_item_bytes: PositiveInt
    presence_ttl_seconds: float = Field(gt=0)
    lock_ttl_seconds: float = Field(gt=0)
    change_ttl_seconds: float = Field(gt=0)


class TeamNames(ResponseBody):
    """The prefixed names team sync uses in the universe (game servers could read them)."""

    sorted_map: str
    audit_store: str
    workspace_store: str


class AuditHead(ResponseBody):
    seq: NonNegativeInt = Field(description="Records in the chain up to and including this one.")
    hash: Sha256Hex


class TeamStatus(ResponseBody):
    universe_id: PositiveInt
    state: TeamState
    reason: str | None = Field(default=None, description="Why it is OFF or UNAVAILABLE.")
    role: Role | None = Field(default=None, description="This server's team role, once enabled.")
    server_id: str = Field(min_length=1, description="This server's id in the team.")
    names: TeamNames
    caps: TeamCaps | None = None
    teammates: list[Teammate] = Field(description="Everyone present, this server's users too.")
    locks: list[TeamLock]
    last_sync_at: UtcDateTime | None = None
    audit_head: AuditHead | None = Field(
        default=None, description="The newest audit record this server has seen."
    )
    audit_announced: PositiveInt | None = Field(
        default=None,
        description="The newest record a teammate's server announced on the change feed (read "
        "when the log is viewed).",
    )
    source: Source


class TeamOverview(ResponseBody):
    server_id: str = Field(min_length=1)
    spaces: list[TeamStatus]


class TeamEnableRequest(RequestBody):
    max_requests_per_minute: int | None = Field(
        default=None, ge=10, le=600, description="Memory-store requests a minute (default 60)."
    )
    max_bytes: int | None = Field(
        default=None,
        ge=1024,
        le=32768,
        description="Bytes this server may keep in the memory store at once (default 4096).",
    )


class TeamInviteRequest(RequestBody):
    role: Role = Role.EDITOR
    expires_in_seconds: int = Field(default=86400, ge=60, le=604800)


class TeamInvite(ResponseBody):
    code: str = Field(min_length=1, description="Single use; shown once.")
    universe_id: PositiveInt
    role: Role
    expires_at: UtcDateTime


class TeamJoinRequest(RequestBody):
    code: str = Field(min_length=8, max_length=200)
    name: Label | None = Field(default=None, description="How the team lists this member.")


class LockRequest(RequestBody):
    datastore: Name
    scope: Name = "global"
    key: Name


class LockQuery(QueryParams):
    datastore: Name
    scope: Name = "global"
    key: Name


class LockAnswer(ResponseBody):
    held: bool = Field(description="The caller holds the lock now.")
    lock: TeamLock | None = Field(default=None, description="Who holds it, if anyone.")
    message: str


class ActivityQuery(QueryParams):
    person: str | None = Field(default=None, max_length=100, description="Part of the name.")
    datastore: Name | None = None
    key: Name | None = None
    operation: str | None = Field(default=None, max_length=30)
    limit: int = Field(default=50, ge=1, le=200)
    before: int | None = Field(default=None, ge=1, description="Only records older than this.")


class ActivityItem(ResponseBody):
    seq: PositiveInt = Field(description="The audit record.")
    index: NonNegativeInt = Field(description="The event within the record.")
    at: UtcDateTime
    person: Person
    server_id: str
    kind: str = Field(description="write, job or team.")
    operation: str
    store_kind: StoreKind | None = None
    datastore: str | None = None
    scope: str | None = None
    key: str | None = Field(default=None, description="Absent once erased (redacted).")
    user_ids: list[NonNegativeInt] | None = None
    redacted: bool = False
    status: str | None = None
    revision: str | None = None
    journal_id: PositiveInt | None = None
    job_id: str | None = None
    summary: str | None = None


class ActivityPage(ResponseBody):
    universe_id: PositiveInt
    items: list[ActivityItem]
    next_before: PositiveInt | None = None
    records: NonNegativeInt = Field(description="Audit records this server has read.")
    head: AuditHead | None = None
    synced_at: UtcDateTime | None = Field(
        default=None, description="When the local copy was last brought up to date."
    )
    source: Source


class AuditProblem(ResponseBody):
    seq: NonNegativeInt | None = None
    problem: str


class AuditVerifyReport(ResponseBody):
    universe_id: PositiveInt
    ok: bool
    records: NonNegativeInt
    redacted_events: NonNegativeInt
    head: AuditHead | None = Field(default=None, description="The chain's last record as read.")
    known_head: AuditHead | None = Field(
        default=None, description="The newest head this server had seen before."
    )
    problems: list[AuditProblem]
    checked_at: UtcDateTime
    source: Source


class Bookmark(ResponseBody):
    datastore: str
    scope: str
    key: str
    label: str | None = None
    by: Person
    at: UtcDateTime


class KeyNote(ResponseBody):
    datastore: str
    scope: str
    key: str
    text: str
    by: Person
    at: UtcDateTime


class TeamMember(ResponseBody):
    server_id: str
    name: str
    role: Role
    joined_at: UtcDateTime
    invited_by: str | None = None


class Workspace(ResponseBody):
    universe_id: PositiveInt
    members: list[TeamMember]
    bookmarks: list[Bookmark]
    notes: list[KeyNote]
    source: Source


class BookmarkRequest(RequestBody):
    datastore: Name
    scope: Name = "global"
    key: Name
    label: Label | None = None
    remove: bool = False


class NoteRequest(RequestBody):
    datastore: Name
    scope: Name = "global"
    key: Name
    text: str = Field(max_length=1000, description="Empty removes the note.")


class SessionViewingRequest(RequestBody):
    """What the plugin shows now, for teammates' presence lists (all absent: nothing)."""

    universe_id: PositiveInt | None = None
    datastore: Name | None = None
    scope: Name | None = None
    key: Name | None = None


# -- events ---------------------------------------------------------------------------------------


class TeamPresencePayload(ResponseBody):
    universe_id: PositiveInt
    teammates: list[Teammate]
    locks: list[TeamLock]


class TeamActivityPayload(ResponseBody):
    """Something a teammate's server did that is not one entry: a job, many changes at once."""

    universe_id: PositiveInt
    person: Person
    kind: str = Field(description="job or batch.")
    summary: str
    at: UtcDateTime
    job_id: str | None = None
    datastore: str | None = None
