"""Backups, restores (whole, in part, elsewhere, at a point in time) and player data erasure.

Backups, restores and erasures are jobs (`JobKind.BACKUP`, `RESTORE`, `ERASE_USER`): each is
created by its own route below, which answers the job's `JobView`; from then on the job routes
start, pause, resume, cancel and (for a restore) roll it back, and `job.state` / `job.progress`
events follow it, exactly as for the bulk jobs.

- `POST /backups` plans a backup of a universe (data stores, ordered data stores, scopes, a
  prefix) into one encrypted archive in the server's backups folder; `GET /backups` lists the
  archives, `GET /backups/{archive_id}` shows one's manifest, `POST .../verify` checks every
  checksum, `POST .../diff` compares it with another archive. A backup of a live store records
  each entry's revision and read time.
- `PUT /backup-schedules/{schedule}` keeps a backup every `every_seconds` while `dsm serve`
  runs, with retention (`keep` newest of that schedule).
- `POST /restores` plans a restore of an archive (whole or a part: stores, scopes, prefix,
  keys) or of the universe as it was at a moment (`at`), to the same place or elsewhere
  (`target`). The dry run reads every target entry: `GET /restores/{job_id}/plan` pages what
  would be created, changed (with a patch), deleted or left alone, and for `at` the source and
  precision of every key; keys whose state is unknown are listed, never guessed. Each write is
  conditional on the state the plan saw: an entry changed since is skipped and listed.
- `POST /erasures` finds a player's data (key patterns in every store and scope, configured
  ordered entries, entries listing the user id); `GET /erasures/{job_id}` shows what was found
  where; starting it needs the typed confirmation in `plan.confirmation`. The job deletes or
  edits through the one journaled write path, then scrubs the server's own copies; the report
  is taken with `GET /erasures/{job_id}/report` and forgotten with `DELETE`.
- Before a job writes to a universe configured as `production`, the server backs up the
  entries it will write (`JobPlan.backup` says what that costs in requests) unless the start
  request sets `skip_backup`.

Passphrases travel in request bodies only (never in a URL), are used at once and never stored.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from .base import QueryParams, RequestBody, ResponseBody
from .common import Backend
from .constraints import (
    IdempotencyKey,
    LuauPattern,
    Name,
    NonNegativeInt,
    PositiveInt,
    UtcDateTime,
)
from .entries import JsonPatchOperation, StoreKind
from .errors import ErrorCode
from .jobs import (
    MAX_SELECTED_KEYS,
    MAX_SELECTED_SCOPES,
    MAX_SELECTED_STORES,
    HeldSessions,
    ItemState,
    JobId,
    SelectionKey,
    SkipCode,
)

# ------------------------------------------------------------------------------------ identity

ArchiveId = Annotated[
    str,
    StringConstraints(min_length=16, max_length=16, pattern=r"^[0-9a-f]{16}$"),
    LuauPattern("^[0-9a-f]+$"),
    Field(description="An archive's id: 16 hex digits (from GET /backups)."),
]
ScheduleName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$"),
    LuauPattern("^[%w][%w_%-]*$"),
    Field(description="A schedule's name: letters, digits, `_` and `-` (e.g. `nightly`)."),
]
Passphrase = Annotated[
    str,
    StringConstraints(min_length=8, max_length=1024),
    Field(
        description="A backup passphrase (at least 8 characters). Sent in the body only, used "
        "at once and never stored."
    ),
]
Note = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Prefix = Annotated[str, StringConstraints(min_length=1, max_length=50)]

MAX_DIFF_ITEMS = 500
MAX_PLAN_PATCH_OPS = 20
MAX_ERASURE_FOUND = 1000
MIN_SCHEDULE_SECONDS = 900  # 15 minutes
MAX_SCHEDULE_SECONDS = 90 * 24 * 3600
MAX_KEEP = 1000


class Protection(StrEnum):
    """Who can open an archive: this server's vault, a passphrase (portable), or both."""

    VAULT = "vault"
    PASSPHRASE = "passphrase"


# -------------------------------------------------------------------------------- backing up


class BackupCreateRequest(RequestBody):
    """Plan a backup of a universe into one archive (and start it with `dry_run: false`).

    Left out, `datastores` means every data store of the universe and `scopes` every scope.
    Ordered data stores cannot be listed by Open Cloud: name them (their scopes default to
    `global`).
    """

    universe_id: PositiveInt
    datastores: list[Name] | None = Field(
        default=None,
        max_length=MAX_SELECTED_STORES,
        description="Standard data stores; left out: every one ([]: none, only ordered ones).",
    )
    ordered_datastores: list[Name] = Field(
        default_factory=list,
        max_length=MAX_SELECTED_STORES,
        description="Ordered data stores to include (Open Cloud cannot list them).",
    )
    scopes: list[Name] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SELECTED_SCOPES,
        description="Scopes; left out: every scope of each standard store, `global` for "
        "ordered stores.",
    )
    prefix: Prefix | None = Field(default=None, description="Only keys starting with this.")
    note: Note | None = Field(default=None, description="Kept in the manifest, e.g. `pre-v42`.")
    passphrase: Passphrase | None = Field(
        default=None,
        description="Also protect the archive with this passphrase (a portable archive that "
        "opens on another machine). Needed when the server has no vault.",
    )
    dry_run: bool = Field(default=True, description="Plan only (the default).")
    idempotency_key: IdempotencyKey

    @model_validator(mode="after")
    def _selects_something(self) -> BackupCreateRequest:
        if self.datastores == [] and not self.ordered_datastores:
            raise ValueError("nothing to back up: name data stores or ordered data stores")
        return self


class ArchiveStoreCount(ResponseBody):
    store_kind: StoreKind
    datastore: str
    entries: NonNegativeInt
    value_bytes: NonNegativeInt


class ArchiveSelectionView(ResponseBody):
    """What the backup was asked to read (absent lists: every one)."""

    datastores: list[str] | None = None
    ordered_datastores: list[str] = Field(default_factory=list)
    scopes: list[str] | None = None
    prefix: str | None = None
    keys: NonNegativeInt | None = Field(
        default=None, description="How many explicit keys (a backup before a job)."
    )


class ArchiveErasureNote(ResponseBody):
    """A rewrite that removed a player's data; the player is not named."""

    at: UtcDateTime
    request_id: str
    removed: NonNegativeInt
    changed: NonNegativeInt


class BackupSummary(ResponseBody):
    """One archive in the backups folder; absent fields could not be read (see `problem`)."""

    archive_id: str | None = Field(default=None, description="Absent: not an archive.")
    file_name: str
    size_bytes: NonNegativeInt
    readable: bool = Field(description="Whether this server can open it (see `problem`).")
    problem: str | None = Field(default=None, description="Why it cannot be read.")
    protection: list[Protection] = Field(default_factory=list)
    universe_id: PositiveInt | None = None
    backend: Backend | None = None
    started_at: UtcDateTime | None = None
    completed_at: UtcDateTime | None = None
    entries: NonNegativeInt | None = None
    value_bytes: NonNegativeInt | None = None
    schedule: str | None = Field(default=None, description="Absent: made by hand.")
    note: str | None = None
    job_id: str | None = Field(default=None, description="The backup job that made it.")
    erasures: NonNegativeInt = Field(default=0, description="Erasure rewrites it went through.")


class BackupList(ResponseBody):
    """Newest first; archives this server cannot read last, with the reason."""

    folder: str = Field(description="The backups folder on the server's machine.")
    archives: list[BackupSummary]


class BackupView(BackupSummary):
    """An archive's manifest: what, when, from where, and its checksums."""

    selection: ArchiveSelectionView | None = None
    stores: list[ArchiveStoreCount] = Field(default_factory=list)
    first_read_at: UtcDateTime | None = Field(
        default=None, description="When the backup read its first entry."
    )
    last_read_at: UtcDateTime | None = Field(
        default=None, description="And its last: the archive holds each entry as of its read."
    )
    content_sha256: str | None = None
    derived_from: str | None = Field(
        default=None, description="The archive id this one was rewritten from (erasure)."
    )
    erasure_notes: list[ArchiveErasureNote] = Field(default_factory=list)


class ArchiveKeyRequest(RequestBody):
    """Open an archive: with this server's vault (no passphrase) or with its passphrase."""

    passphrase: Passphrase | None = None


class ArchiveDamageView(ResponseBody):
    where: str = Field(description="file, header, footer, manifest, block, directory, entry...")
    message: str
    store_kind: StoreKind | None = None
    datastore: str | None = Field(default=None, description="The first entry that is lost.")
    scope: str | None = None
    key: str | None = None
    also_affected: NonNegativeInt = Field(default=0, description="More entries lost with it.")
    block: NonNegativeInt | None = None


class BackupVerifyReport(ResponseBody):
    archive_id: str
    ok: bool
    entries_checked: NonNegativeInt = Field(description="Entries found intact (before damage).")
    entries: NonNegativeInt | None = Field(default=None, description="As the manifest lists.")
    size_bytes: NonNegativeInt
    seconds: float = Field(ge=0)
    damage: ArchiveDamageView | None = None


class BackupDiffRequest(ArchiveKeyRequest):
    """Compare this archive (the older, the base) with another one (the newer)."""

    against: ArchiveId
    limit: int = Field(default=100, ge=1, le=MAX_DIFF_ITEMS, description="Items returned.")
    include_same: bool = Field(default=False, description="Also list unchanged entries.")


class DiffChange(StrEnum):
    CREATED = "created"
    CHANGED = "changed"
    DELETED = "deleted"
    SAME = "same"


class BackupDiffItem(ResponseBody):
    change: DiffChange
    store_kind: StoreKind
    datastore: str
    scope: str
    key: str
    value_patch: list[JsonPatchOperation] = Field(
        default_factory=list, description="RFC 6902 from base to other (at most 50)."
    )
    attributes_changed: bool = False
    user_ids_before: list[NonNegativeInt] | None = Field(
        default=None, description="When the user ids differ."
    )
    user_ids_after: list[NonNegativeInt] | None = None
    before_revision: str | None = None
    after_revision: str | None = None


class BackupDiffCounts(ResponseBody):
    created: NonNegativeInt
    changed: NonNegativeInt
    deleted: NonNegativeInt
    same: NonNegativeInt


class BackupDiff(ResponseBody):
    base: str = Field(description="The base archive's id.")
    other: str
    counts: BackupDiffCounts
    items: list[BackupDiffItem]
    truncated: bool = Field(description="More differences than `limit`: see the counts.")


# --------------------------------------------------------------------------------- schedules


class BackupScheduleRequest(RequestBody):
    """Create or replace a schedule (PUT /backup-schedules/{schedule}); the vault protects
    its archives (a scheduled backup cannot ask for a passphrase)."""

    universe_id: PositiveInt
    datastores: list[Name] | None = Field(default=None, max_length=MAX_SELECTED_STORES)
    ordered_datastores: list[Name] = Field(default_factory=list, max_length=MAX_SELECTED_STORES)
    scopes: list[Name] | None = Field(default=None, min_length=1, max_length=MAX_SELECTED_SCOPES)
    prefix: Prefix | None = None
    every_seconds: int = Field(
        ge=MIN_SCHEDULE_SECONDS,
        le=MAX_SCHEDULE_SECONDS,
        description="How often (15 minutes to 90 days), e.g. 86400 for `--every 24h`.",
    )
    keep: int = Field(
        ge=1, le=MAX_KEEP, description="Archives of this schedule kept; older ones are deleted."
    )
    enabled: bool = True

    @model_validator(mode="after")
    def _selects_something(self) -> BackupScheduleRequest:
        if self.datastores == [] and not self.ordered_datastores:
            raise ValueError("nothing to back up: name data stores or ordered data stores")
        return self


class BackupScheduleView(ResponseBody):
    name: str
    universe_id: PositiveInt
    datastores: list[str] | None = None
    ordered_datastores: list[str] = Field(default_factory=list)
    scopes: list[str] | None = None
    prefix: str | None = None
    every_seconds: PositiveInt
    keep: PositiveInt
    enabled: bool
    next_run_at: UtcDateTime | None = Field(default=None, description="Absent when disabled.")
    last_run_at: UtcDateTime | None = None
    last_job_id: str | None = None
    last_state: str | None = Field(default=None, description="The last run's job state.")
    last_archive_id: str | None = None
    archives: NonNegativeInt = Field(default=0, description="Archives of it in the folder.")
    message: str | None = Field(default=None, description="Why the last run did not happen.")


class BackupScheduleList(ResponseBody):
    """Schedules run while `dsm serve` runs; a run missed while it was stopped happens at the
    next start."""

    schedules: list[BackupScheduleView]


# ---------------------------------------------------------------------------------- restoring


class RestoreKey(RequestBody):
    store_kind: StoreKind = StoreKind.STANDARD
    datastore: Name
    scope: Name = "global"
    key: SelectionKey


class RestorePart(RequestBody):
    """Which part to restore; everything left out is included. With `at`, name at least data
    stores, ordered data stores or keys."""

    datastores: list[Name] | None = Field(
        default=None, max_length=MAX_SELECTED_STORES, description="Standard data stores."
    )
    ordered_datastores: list[Name] | None = Field(
        default=None, max_length=MAX_SELECTED_STORES, description="Ordered data stores."
    )
    scopes: list[Name] | None = Field(default=None, min_length=1, max_length=MAX_SELECTED_SCOPES)
    prefix: Prefix | None = None
    keys: list[RestoreKey] | None = Field(
        default=None, min_length=1, max_length=MAX_SELECTED_KEYS, description="Explicit keys."
    )


class RestoreTarget(RequestBody):
    """Where to restore to; what is left out is the source's own (restore production into a
    staging universe to inspect it)."""

    universe_id: PositiveInt | None = None
    datastore: Name | None = Field(default=None, description="One data store for every entry.")
    scope: Name | None = Field(default=None, description="One scope for every entry.")


class RestoreCreateRequest(RequestBody):
    """Plan a restore from an archive (`archive_id`) or of the state at a moment (`at`)."""

    universe_id: PositiveInt = Field(description="The universe the data comes from.")
    archive_id: ArchiveId | None = Field(default=None, description="Restore this archive.")
    at: UtcDateTime | None = Field(
        default=None,
        description="Restore each key as it was at this moment, from the best source: this "
        "server's journal, its archives, Roblox's revision history.",
    )
    part: RestorePart = Field(default_factory=RestorePart)
    target: RestoreTarget | None = None
    delete_absent: bool = Field(
        default=False,
        description="Delete keys of the restored part that exist now but did not then "
        "(otherwise they are left alone and listed).",
    )
    held_sessions: HeldSessions = HeldSessions.SKIP
    passphrase: Passphrase | None = Field(
        default=None, description="For an archive this server's vault cannot open."
    )
    dry_run: bool = True
    confirm: str | None = Field(
        default=None, max_length=300, description="See JobCreateRequest.confirm."
    )
    skip_backup: bool = Field(
        default=False,
        description="Production: do not back up the entries before writing (see JobPlan.backup).",
    )
    idempotency_key: IdempotencyKey

    @model_validator(mode="after")
    def _one_source(self) -> RestoreCreateRequest:
        if (self.archive_id is None) == (self.at is None):
            raise ValueError("give either archive_id or at")
        part = self.part
        if self.at is not None and not (part.datastores or part.ordered_datastores or part.keys):
            raise ValueError("a restore at a point in time needs data stores or keys in part")
        if part.keys is not None:
            clash = sorted(part.model_fields_set & {"prefix", "scopes"})
            if clash:
                raise ValueError(
                    f"part.keys cannot be combined with {', '.join(clash)}: each key names "
                    "its data store and scope"
                )
        return self


class RestoreAction(StrEnum):
    CREATE = "create"  # absent now: created (create-only)
    UPDATE = "update"  # differs now: replaced (conditional on the revision the plan saw)
    DELETE = "delete"  # exists now, did not then, and delete_absent
    UNCHANGED = "unchanged"  # already as it was: nothing written
    LEFT_ALONE = "left_alone"  # exists now, did not then, delete_absent false: listed only
    UNKNOWN = "unknown"  # no source knows its state then: listed, never guessed
    CONFLICT = "conflict"  # sources disagree about its state then: listed, never picked


class PitSourceName(StrEnum):
    ARCHIVE = "archive"  # a backup archive (exact at its read)
    JOURNAL = "journal"  # this server's write journal (exact)
    ROBLOX = "roblox"  # Roblox's revision history (one version an hour, 30 days)


class PitPrecision(StrEnum):
    EXACT = "exact"  # the state at the moment itself
    AS_OF = "as_of"  # the state at `known_at`, before the moment; later writes not ruled out
    UNKNOWN = "unknown"
    CONFLICT = "conflict"


class RestoreKeyPlan(ResponseBody):
    """One key of a restore: what the plan found and (once run) what happened."""

    seq: PositiveInt
    store_kind: StoreKind
    datastore: str = Field(description="Where the state comes from.")
    scope: str
    key: str
    target_universe_id: PositiveInt
    target_datastore: str
    target_scope: str
    action: RestoreAction
    source: PitSourceName | None = Field(default=None, description="Absent: unknown, conflict.")
    precision: PitPrecision
    known_at: UtcDateTime | None = Field(
        default=None, description="The moment the restored state is proven to hold."
    )
    gap_seconds: float | None = Field(
        default=None, ge=0, description="As-of: how long before the requested time."
    )
    revision: str | None = Field(default=None, description="The restored state's revision id.")
    exists_then: bool | None = Field(
        default=None, description="Whether the key existed then (absent when unknown)."
    )
    current_revision: str | None = Field(
        default=None, description="The target's revision when planned (absent: did not exist)."
    )
    reason: str = Field(description="Why, in words (the evidence for an at-time restore).")
    patch: list[JsonPatchOperation] = Field(
        default_factory=list, description="From now to then, at most 20 operations."
    )
    patch_truncated: bool = False
    attributes_change: bool = False
    user_ids_now: list[NonNegativeInt] | None = Field(
        default=None, description="When the user ids would change."
    )
    user_ids_then: list[NonNegativeInt] | None = None
    state: ItemState
    skip_code: SkipCode | None = None
    error_code: ErrorCode | None = None
    message: str | None = None


class RestoreCounts(ResponseBody):
    create: NonNegativeInt = 0
    update: NonNegativeInt = 0
    delete: NonNegativeInt = 0
    unchanged: NonNegativeInt = 0
    left_alone: NonNegativeInt = 0
    unknown: NonNegativeInt = 0
    conflict: NonNegativeInt = 0


class RestoreSummary(ResponseBody):
    archive_id: str | None = None
    at: UtcDateTime | None = None
    universe_id: PositiveInt
    target: str = Field(description="Where it writes, in words.")
    complete: bool = Field(description="False while the plan is still being made.")
    counts: RestoreCounts
    by_source: dict[str, NonNegativeInt] = Field(
        default_factory=dict, description="Keys by source (archive, journal, roblox)."
    )
    by_precision: dict[str, NonNegativeInt] = Field(default_factory=dict)


class RestorePlanQuery(QueryParams):
    action: RestoreAction | None = Field(default=None, description="Only keys with this action.")
    after: int | None = Field(default=None, ge=0, description="next_after of the previous page.")
    limit: int = Field(default=100, ge=1, le=500, description="Page size (1-500).")


class RestorePlanPage(ResponseBody):
    job_id: JobId
    summary: RestoreSummary
    keys: list[RestoreKeyPlan]
    next_after: NonNegativeInt | None = Field(default=None, description="Absent at the end.")


# ----------------------------------------------------------------------------------- erasure


class ErasureCreateRequest(RequestBody):
    """Find (dry run) and, once confirmed, erase a player's data in one universe."""

    universe_id: PositiveInt
    user_id: PositiveInt = Field(description="The player's Roblox user id.")
    held_sessions: HeldSessions = HeldSessions.SKIP
    dry_run: bool = True
    confirm: str | None = Field(
        default=None, max_length=300, description="The text in `plan.confirmation`."
    )
    skip_backup: bool = Field(
        default=False, description="Production: no backup before writing (see JobPlan.backup)."
    )
    idempotency_key: IdempotencyKey


class ErasureAction(StrEnum):
    DELETE_ENTRY = "delete_entry"  # the entry is the player's: deleted
    REMOVE_USER_ID = "remove_user_id"  # a shared entry: the id is taken out of its user ids


class ErasureReason(StrEnum):
    KEY_PATTERN = "key_pattern"
    USER_IDS = "user_ids"
    ORDERED_ID = "ordered_id"


class ErasureFound(ResponseBody):
    seq: PositiveInt
    store_kind: StoreKind
    datastore: str
    scope: str
    key: str
    action: ErasureAction
    reason: ErasureReason
    detail: str = Field(description="The pattern that matched, or `user ids`.")
    state: ItemState
    skip_code: SkipCode | None = None
    error_code: ErrorCode | None = None
    message: str | None = None


class ErasureView(ResponseBody):
    """What an erasure found (and did); its keys are redacted once it has finished."""

    job_id: JobId
    universe_id: PositiveInt
    user_id: PositiveInt | None = Field(default=None, description="Absent once redacted.")
    redacted: bool = Field(description="The job's own record no longer names the player.")
    found: list[ErasureFound] = Field(default_factory=list)
    found_total: NonNegativeInt
    searched: list[str] = Field(default_factory=list)
    not_searched: list[str] = Field(default_factory=list)
    scrubs: list[str] = Field(
        default_factory=list, description="This server's copies it scrubs after Open Cloud."
    )
    report_ready: bool = Field(description="The report can be taken (GET .../report).")


class ErasureScrub(ResponseBody):
    where: str = Field(description="cache, journal, backups, index, jobs, exports, uploads, ...")
    method: str
    at: UtcDateTime
    removed: NonNegativeInt = 0
    changed: NonNegativeInt = 0
    details: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list, description="What could not be scrubbed.")


class ErasureRobloxAction(ResponseBody):
    store_kind: StoreKind
    datastore: str
    scope: str
    key: str
    action: ErasureAction
    at: UtcDateTime
    outcome: str = Field(description="done, skipped or failed.")
    message: str = ""
    retained_until: UtcDateTime | None = Field(
        default=None, description="Until when Roblox keeps its earlier versions."
    )


class ErasureReportView(ResponseBody):
    """The studio's record of an erasure request. The server keeps it only until it is taken
    and forgotten (DELETE), never in clear."""

    request_id: str
    user_id: PositiveInt
    universe_id: PositiveInt
    backend: Backend
    requested_at: UtcDateTime
    completed_at: UtcDateTime
    searched: list[str]
    not_searched: list[str]
    roblox: list[ErasureRobloxAction]
    local: list[ErasureScrub]
    retained_by_roblox: list[str]
    text: str = Field(description="The same report as readable text.")


class ErasureOrderedTarget(RequestBody):
    scopes: list[Name] = Field(default_factory=lambda: ["global"], min_length=1, max_length=20)
    ids: list[str] = Field(
        default_factory=lambda: ["{userId}"], min_length=1, max_length=20,
        description="Entry id patterns with {userId}.",
    )  # fmt: skip


class ErasurePatternsRequest(RequestBody):
    """Which keys hold a player's data: key patterns with `{userId}` per data store (`*`: every
    store), and the ordered data stores (Open Cloud cannot list them) with their id patterns."""

    standard: dict[str, list[str]] = Field(
        description='e.g. {"*": ["Player_{userId}", "{userId}"], "Inventory": '
        '["{userId}_inventory"]}'
    )
    ordered: dict[str, ErasureOrderedTarget] = Field(default_factory=dict)


class ErasureOrderedView(ResponseBody):
    scopes: list[str]
    ids: list[str]


class ErasurePatternsView(ResponseBody):
    standard: dict[str, list[str]]
    ordered: dict[str, ErasureOrderedView]
    file: str = Field(description="Where they are kept on the server's machine.")


# Models for the registry, in order.
BACKUP_MODELS = (
    BackupCreateRequest,
    ArchiveStoreCount,
    ArchiveSelectionView,
    ArchiveErasureNote,
    BackupSummary,
    BackupList,
    BackupView,
    ArchiveKeyRequest,
    ArchiveDamageView,
    BackupVerifyReport,
    BackupDiffRequest,
    BackupDiffItem,
    BackupDiffCounts,
    BackupDiff,
    BackupScheduleRequest,
    BackupScheduleView,
    BackupScheduleList,
    RestoreKey,
    RestorePart,
    RestoreTarget,
    RestoreCreateRequest,
    RestoreKeyPlan,
    RestoreCounts,
    RestoreSummary,
    RestorePlanQuery,
    RestorePlanPage,
    ErasureCreateRequest,
    ErasureFound,
    ErasureView,
    ErasureScrub,
    ErasureRobloxAction,
    ErasureReportView,
    ErasureOrderedTarget,
    ErasurePatternsRequest,
    ErasureOrderedView,
    ErasurePatternsView,
)
