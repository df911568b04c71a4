"""Bulk jobs: the durable, budget-aware engine behind delete, copy, move, export, import,
transform, set-metadata and rollback; file uploads for imports; the Open Cloud budget per universe.

The life of a job:

1. `POST /jobs` with `{kind, selection, params, dry_run, confirm?, idempotency_key}`. The server
   plans it: it counts the selected entries (listing keys where the selection is a prefix or a
   whole scope), estimates the Open Cloud requests and how long they take at this server's
   budget share, and reads up to five entries for sample before/after diffs. With `dry_run`
   (the default) the job stays `planned`; `POST /jobs/{id}/start` queues it. A large selection
   is still being counted when the answer comes back (`plan.complete` false): `job.progress`
   events with phase `planning` follow, and a `job.state` event when the plan is done.
2. `queued` -> `running`: items go through the one journaled write path, each with an
   idempotency key derived from the job and the item, so a crash never applies an item twice.
   `job.progress` events report done/total/failed, the rate and the ETA.
3. `pause` / `resume` / `cancel` at any time; a crashed server resumes running jobs from their
   durable cursor when it starts again (paused jobs stay paused).
4. It ends `succeeded` (every item applied, skipped with a reason, or failed with a code),
   `failed` (the job itself could not go on: see `failure`) or `cancelled`.
5. `POST /jobs/{id}/rollback` plans a rollback job that restores every entry the job wrote to
   its journaled before-image, conditionally: entries changed since by anyone else are skipped
   and listed, never overwritten. When it succeeds the original job becomes `rolled_back`.

A selection is explicit keys, a key prefix, or every key, of some (or all) data stores; with
`search` it is exactly the entries a search of the local index matches (docs/search.md): the plan
says the index's coverage and as-of time, and every item is re-read live before anything is
written (an entry that no longer matches is skipped, `no_longer_matches`). Crawls of the search
index are jobs too (`crawl`, `crawl_history`): they write only the local index, never Open Cloud,
so they have nothing to roll back.

Values a game developer sees (sample values) travel as raw JSON text, like entry values.
Response models are open (a newer server may add fields); `JobView.kind` is a plain string so
an older plugin keeps working when a newer server adds a job kind (crawl, backup, ...).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints, ValidationError, model_validator

from .base import QueryParams, RequestBody, ResponseBody
from .common import Backend
from .constraints import (
    Attributes,
    Cursor,
    IdempotencyKey,
    LuauPattern,
    Name,
    NonNegativeInt,
    PositiveInt,
    Sha256Hex,
    UserIds,
    UtcDateTime,
    WireInt,
)
from .entries import JsonPatchOperation, StoreKind
from .errors import ErrorCode
from .identity import Person
from .index import MAX_HISTORY_SAMPLE, MAX_REVISIONS_PER_KEY
from .search import EntryFilter

# ------------------------------------------------------------------------------------ identity

JobId = Annotated[
    str,
    StringConstraints(min_length=16, max_length=16, pattern=r"^job_[0-9a-f]{12}$"),
    LuauPattern("^job_[0-9a-f]+$"),
    Field(description="A job's id: `job_` and 12 hex digits."),
]
UploadId = Annotated[
    str,
    StringConstraints(min_length=20, max_length=20, pattern=r"^upl_[0-9a-f]{16}$"),
    LuauPattern("^upl_[0-9a-f]+$"),
    Field(description="An upload's id: `upl_` and 16 hex digits."),
]
SelectionKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63),
    Field(description="An entry key (1-50 bytes of UTF-8) or an ordered entry id (1-63 chars)."),
]
ExportFileName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"),
    LuauPattern("^[%w][%w%._%-]*$"),
    Field(description="A file name (no folders): letters, digits, `.`, `_`, `-`."),
]

# Bounds the server enforces (and the plugin can show before sending).
MAX_SELECTED_KEYS = 10_000
MAX_SELECTED_STORES = 100
MAX_SELECTED_SCOPES = 100
MAX_PROGRAM_CHARS = 20_000
MAX_SAMPLES = 5
MAX_CCU = 10_000_000  # as dsm.opencloud.ratelimit.MAX_CCU
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
DEFAULT_CHUNK_BYTES = 1024 * 1024
MAX_CHUNK_BYTES = 4 * 1024 * 1024
# base64 of MAX_CHUNK_BYTES, rounded up to whole 4-character groups.
MAX_CHUNK_BASE64_CHARS = 4 * ((MAX_CHUNK_BYTES + 2) // 3)


class JobKind(StrEnum):
    DELETE = "delete"  # delete the selected entries
    COPY = "copy"  # copy to another scope, data store or universe
    MOVE = "move"  # copy, then delete the source
    EXPORT = "export"  # write the entries to a file on the server's machine
    IMPORT = "import"  # write the entries of an uploaded JSON Lines or CSV file
    TRANSFORM = "transform"  # apply a jq program to each value
    SET_METADATA = "set_metadata"  # set or remove attributes and user ids
    ROLLBACK = "rollback"  # undo another job (created with POST /jobs/{id}/rollback)
    CRAWL = "crawl"  # read the selected entries into the local search index
    CRAWL_HISTORY = "crawl_history"  # read the revision history of a sample of indexed keys
    BACKUP = "backup"  # entries into an encrypted archive (created with POST /backups)
    RESTORE = "restore"  # an archive, or the state at a moment, written back (POST /restores)
    ERASE_USER = "erase_user"  # a player's data found and erased (POST /erasures)


class JobState(StrEnum):
    PLANNED = "planned"  # dry-run done (or still counting: plan.complete false); not started
    QUEUED = "queued"  # waiting for the runner
    RUNNING = "running"
    PAUSED = "paused"  # stays paused across server restarts
    CANCELLED = "cancelled"
    FAILED = "failed"  # the job itself could not go on; `failure` says why
    SUCCEEDED = "succeeded"  # every item has an outcome (some may be skipped or failed)
    ROLLED_BACK = "rolled_back"  # a rollback job undid every write this job made


TERMINAL_STATES = frozenset(
    {JobState.CANCELLED, JobState.FAILED, JobState.SUCCEEDED, JobState.ROLLED_BACK}
)


class JobAction(StrEnum):
    """What can be done to a job now (`JobView.actions`); the plugin enables these buttons."""

    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    ROLLBACK = "rollback"


class JobPhase(StrEnum):
    PLANNING = "planning"  # counting the selection
    RUNNING = "running"  # applying items


class ItemState(StrEnum):
    PENDING = "pending"  # not done yet (or a held entry waiting for its retry)
    APPLIED = "applied"
    SKIPPED = "skipped"  # nothing written; `skip_code` and `message` say why
    FAILED = "failed"  # not written; `error_code` and `message` say why


class SkipCode(StrEnum):
    NOT_FOUND = "not_found"  # the entry does not exist (any more)
    UNCHANGED = "unchanged"  # it already is as the job would leave it
    EXISTS = "exists"  # the target key exists and on_exists/mode says to leave it
    SESSION_HELD = "session_held"  # a game server holds its session lock
    CHANGED_SINCE = "changed_since"  # rollback: someone wrote it after the job; left alone
    PRECISION = "precision"  # transform: jq would round numbers the program did not compute
    NOTHING_TO_UNDO = "nothing_to_undo"  # rollback: the job's write did not land
    ALREADY_UNDONE = "already_undone"  # rollback: an earlier rollback (or undo) already undid it
    CANNOT_UNDO = "cannot_undo"  # rollback: the write cannot be undone (e.g. its data was erased)
    NO_LONGER_MATCHES = "no_longer_matches"  # search selection: changed since it was indexed
    UNKNOWN_STATE = "unknown_state"  # restore: no source knows the key's state then
    SOURCES_DISAGREE = "sources_disagree"  # restore: the sources disagree about its state then
    LEFT_ALONE = "left_alone"  # restore: it did not exist then; delete_absent was not asked


class HeldSessions(StrEnum):
    """What to do with an entry a game server holds the session lock of (ProfileStore, ...)."""

    SKIP = "skip"  # skip it and report it
    RETRY = "retry"  # retry it after the other items until released (or held_wait_seconds)


class OnExists(StrEnum):
    SKIP = "skip"  # leave the target as it is; the item is skipped
    OVERWRITE = "overwrite"  # replace it (conditionally on what was just read)
    FAIL = "fail"  # stop the job at the first existing target key


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    SQLITE = "sqlite"


class ImportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


class ImportMode(StrEnum):
    CREATE_ONLY = "create_only"  # create missing keys; existing keys are skipped
    OVERWRITE = "overwrite"  # the file's value replaces the stored one
    MERGE = "merge"  # the file's value is merged into the stored one (JSON Merge Patch)


class WrappedEdit(StrEnum):
    """How a transform treats session-locked saves (ProfileStore, ProfileService, Lapis)."""

    DATA = "data"  # run the program on the data part only; keep the wrapper byte for byte
    WHOLE = "whole"  # run it on the whole stored value


# ----------------------------------------------------------------------------------- selection


class SelectedKey(RequestBody):
    key: SelectionKey
    scope: Name = Field(default="global", description="The key's scope.")


class Selection(RequestBody):
    """Which entries a job works on: explicit keys, a key prefix, or every key, in one or more
    (or all) data stores (or ordered data stores) of one universe, in one, several or all
    scopes; or, with `search`, the entries a search of the local index matches there."""

    universe_id: PositiveInt
    store_kind: StoreKind = Field(
        default=StoreKind.STANDARD, description="Standard or ordered data stores."
    )
    datastores: list[Name] = Field(
        default_factory=list,
        max_length=MAX_SELECTED_STORES,
        description="The data stores (or ordered data stores) to work on; empty with "
        "all_datastores.",
    )
    all_datastores: bool = Field(
        default=False,
        description="Every data store of the universe (standard stores only), listed when the "
        "job is planned; with `search`, every store the index holds.",
    )
    keys: list[SelectedKey] | None = Field(
        default=None,
        max_length=MAX_SELECTED_KEYS,
        description="Explicit keys (each with its scope), looked up in every listed store. "
        "Leave out to select by prefix or every key.",
    )
    prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description="Only keys starting with this. Ordered stores have no prefix filter in "
        "Open Cloud: their entries are listed and filtered here.",
    )
    scopes: list[Name] = Field(
        default_factory=lambda: ["global"],
        min_length=1,
        max_length=MAX_SELECTED_SCOPES,
        description="Scopes to list (ignored with `keys`, which name their own).",
    )
    all_scopes: bool = Field(
        default=False, description="Every scope of each data store (standard stores only)."
    )
    min_value: int | None = Field(
        default=None, description="Ordered stores only: entries with value >= min_value."
    )
    max_value: int | None = Field(
        default=None, description="Ordered stores only: entries with value <= max_value."
    )
    search: EntryFilter | None = Field(
        default=None,
        description="Only the entries a search of the local index matches (its key pattern and "
        "value query; docs/search.md) in the selected stores and scopes. Each is re-read live "
        "before anything is written; one that no longer matches is skipped.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Selection:
        given = self.model_fields_set
        if not self.datastores and not self.all_datastores:
            raise ValueError("name the data stores in datastores, or set all_datastores")
        if self.datastores and self.all_datastores:
            raise ValueError("give either datastores or all_datastores, not both")
        if self.search is not None:
            clash = sorted(given & {"keys", "prefix", "min_value", "max_value"})
            if clash:
                raise ValueError(
                    f"search cannot be combined with {', '.join(clash)}: use its key_pattern"
                )
            if self.search.query is None and self.search.key_pattern is None:
                raise ValueError("search needs a query, a key_pattern, or both")
        if self.keys is not None:
            if not self.keys:
                raise ValueError("keys is empty: select at least one key, or leave keys out")
            clash = sorted(given & {"prefix", "scopes", "all_scopes", "min_value", "max_value"})
            if clash:
                raise ValueError(
                    f"keys cannot be combined with {', '.join(clash)}: each key names its scope"
                )
        if self.all_scopes and "scopes" in given:
            raise ValueError("give either scopes or all_scopes, not both")
        if self.store_kind is StoreKind.ORDERED:
            if self.all_scopes:
                raise ValueError(
                    "ordered data stores cannot list their scopes; name them in scopes"
                )
            if self.all_datastores:
                raise ValueError("ordered data stores cannot be listed; name them in datastores")
            if self.search is not None:
                raise ValueError("the search index holds standard data stores only")
        elif "min_value" in given or "max_value" in given:
            raise ValueError("min_value and max_value apply to ordered data stores only")
        if (
            self.min_value is not None
            and self.max_value is not None
            and self.min_value > self.max_value
        ):
            raise ValueError("min_value is greater than max_value, so nothing can match")
        return self


# -------------------------------------------------------------------------------------- params


class DeleteParams(RequestBody):
    held_sessions: HeldSessions = HeldSessions.SKIP


class CopyTarget(RequestBody):
    """Where copies go; what is left out stays as the source's (at least one must differ)."""

    universe_id: PositiveInt | None = Field(default=None, description="Another universe.")
    datastore: Name | None = Field(default=None, description="Another data store.")
    scope: Name | None = Field(default=None, description="One scope for every copied key.")


class CopyParams(RequestBody):
    """For `copy` and `move`: attributes and user ids are copied with each value."""

    target: CopyTarget
    on_exists: OnExists = Field(
        default=OnExists.SKIP, description="What to do when the target key exists."
    )
    held_sessions: HeldSessions = HeldSessions.SKIP


class ExportParams(RequestBody):
    format: ExportFormat = ExportFormat.JSONL
    file_name: ExportFileName | None = Field(
        default=None,
        description="Name of the file in the server's exports folder; left out: one is made "
        "from the job. An existing file is never overwritten.",
    )


class ImportParams(RequestBody):
    upload_id: UploadId = Field(description="A completed upload (POST /uploads ...).")
    format: ImportFormat | None = Field(
        default=None, description="Left out: from the upload's file name (.csv, else JSON Lines)."
    )
    mode: ImportMode = ImportMode.CREATE_ONLY
    skip_bad_lines: bool = Field(
        default=False,
        description="Import the valid lines of a file that has bad ones (otherwise a file with "
        "any bad line cannot be started).",
    )
    held_sessions: HeldSessions = HeldSessions.SKIP


class TransformParams(RequestBody):
    program: str = Field(
        min_length=1,
        max_length=MAX_PROGRAM_CHARS,
        description="A jq program run on each value, e.g. `.coins *= 2 | del(.legacy)`.",
    )
    wrapped: WrappedEdit = Field(
        default=WrappedEdit.DATA,
        description="For session-locked saves: run on the data part only (default) or the "
        "whole value.",
    )
    held_sessions: HeldSessions = HeldSessions.SKIP


class SetMetadataParams(RequestBody):
    """Change attributes and user ids without touching values; at least one change."""

    set_attributes: Attributes | None = Field(
        default=None, description="Attributes to add or replace (others are kept)."
    )
    remove_attributes: list[str] = Field(
        default_factory=list, max_length=50, description="Attribute names to remove."
    )
    clear_attributes: bool = Field(
        default=False, description="Remove every attribute first (then set_attributes)."
    )
    user_ids: UserIds | None = Field(
        default=None, description="Replace the user ids with these ([] removes them all)."
    )
    add_user_ids: list[NonNegativeInt] = Field(default_factory=list, max_length=4)
    remove_user_ids: list[NonNegativeInt] = Field(default_factory=list, max_length=4)
    held_sessions: HeldSessions = HeldSessions.SKIP

    @model_validator(mode="after")
    def _changes_something(self) -> SetMetadataParams:
        if not (
            self.set_attributes
            or self.remove_attributes
            or self.clear_attributes
            or self.user_ids is not None
            or self.add_user_ids
            or self.remove_user_ids
        ):
            raise ValueError("set-metadata needs at least one change")
        if self.user_ids is not None and (self.add_user_ids or self.remove_user_ids):
            raise ValueError("give either user_ids or add_user_ids/remove_user_ids, not both")
        return self


class CrawlParams(RequestBody):
    """A crawl reads the selection's entries into the search index; it has no other settings."""


class CrawlHistoryParams(RequestBody):
    """Read the revision history of a sample of the selection's indexed keys (for progression
    and sudden jumps). The selection names one data store."""

    sample_size: int = Field(
        default=50, ge=1, le=MAX_HISTORY_SAMPLE, description="Keys to sample from the index."
    )
    max_revisions_per_key: int = Field(
        default=30, ge=1, le=MAX_REVISIONS_PER_KEY, description="Newest revisions read per key."
    )
    seed: int = Field(
        default=0, ge=0, le=2**31 - 1, description="Which keys are sampled (same seed, same keys)."
    )


JobParams = (
    DeleteParams
    | CopyParams
    | ExportParams
    | ImportParams
    | TransformParams
    | SetMetadataParams
    | CrawlParams
    | CrawlHistoryParams
)

# The params model of each kind a client may create with POST /jobs.
PARAMS_BY_KIND: dict[JobKind, type[RequestBody]] = {
    JobKind.DELETE: DeleteParams,
    JobKind.COPY: CopyParams,
    JobKind.MOVE: CopyParams,
    JobKind.EXPORT: ExportParams,
    JobKind.IMPORT: ImportParams,
    JobKind.TRANSFORM: TransformParams,
    JobKind.SET_METADATA: SetMetadataParams,
    JobKind.CRAWL: CrawlParams,
    JobKind.CRAWL_HISTORY: CrawlHistoryParams,
}


# Kinds made by routes of their own, with a request model of their own.
CREATED_ELSEWHERE: dict[JobKind, str] = {
    JobKind.ROLLBACK: "POST /jobs/{id}/rollback",
    JobKind.BACKUP: "POST /backups",
    JobKind.RESTORE: "POST /restores",
    JobKind.ERASE_USER: "POST /erasures",
}


def _params_problem(kind: JobKind, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:3]:
        where = ".".join(str(p) for p in err["loc"])
        problem = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"params.{where}: {problem}" if where else f"params: {problem}")
    return f"{kind.value} job: " + "; ".join(parts)


class JobCreateRequest(RequestBody):
    """Plan a job (and, with `dry_run: false`, start it at once)."""

    kind: JobKind
    selection: Selection
    params: JobParams | None = Field(
        default=None,
        description="The kind's parameters (DeleteParams for delete, CopyParams for copy and "
        "move, ...); left out: the kind's defaults.",
    )
    dry_run: bool = Field(
        default=True, description="Plan only (the default); false starts the job at once."
    )
    confirm: str | None = Field(
        default=None,
        max_length=300,
        description="Production universes: the universe's label as configured (see "
        "`plan.confirmation`), needed to start a job that writes there.",
    )
    skip_backup: bool = Field(
        default=False,
        description="Production universes: start without the backup of the entries the job "
        "writes (see `plan.backup` for what it costs).",
    )
    idempotency_key: IdempotencyKey

    @model_validator(mode="before")
    @classmethod
    def _params_of_kind(cls, data: Any) -> Any:
        # Each kind has its own params model; a union alone would accept another kind's.
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
            return data
        try:
            kind = JobKind(data["kind"])
        except ValueError:
            return data  # the field validation names the unknown kind
        if kind not in PARAMS_BY_KIND:
            where = CREATED_ELSEWHERE.get(kind, "its own route")
            raise ValueError(f"a {kind.value} job is made with {where}")
        params = data.get("params")
        if params is None or params == []:  # Luau sends an empty table as []
            params = {}
        if isinstance(params, dict):
            try:
                # Validated as the JSON it arrived as (strict, closed), like the body itself.
                parsed = PARAMS_BY_KIND[kind].model_validate_json(json.dumps(params))
                data = {**data, "params": parsed}
            except ValidationError as exc:
                raise ValueError(_params_problem(kind, exc)) from None
        return data

    @model_validator(mode="after")
    def _params_match_kind(self) -> JobCreateRequest:
        expected = PARAMS_BY_KIND.get(self.kind)
        if expected is not None and not isinstance(self.params, expected):
            raise ValueError(f"params for a {self.kind.value} job must be {expected.__name__}")
        return self


class JobStartRequest(RequestBody):
    confirm: str | None = Field(
        default=None, max_length=300, description="See JobCreateRequest.confirm."
    )
    skip_backup: bool = Field(default=False, description="See JobCreateRequest.skip_backup.")


class JobRollbackRequest(RequestBody):
    """Plan a rollback of a finished job (and start it at once with `dry_run: false`)."""

    dry_run: bool = True
    confirm: str | None = Field(
        default=None, max_length=300, description="See JobCreateRequest.confirm."
    )
    skip_backup: bool = Field(default=False, description="See JobCreateRequest.skip_backup.")
    idempotency_key: IdempotencyKey


# ------------------------------------------------------------------------------------ retention

# `older_than` of a prune: a whole number and a unit.
AGE_UNITS = {"h": 3600, "d": 86_400, "w": 7 * 86_400}
MIN_AGE_SECONDS = 3600
MAX_AGE_SECONDS = 3650 * 86_400
MAX_PRUNE_LISTED = 100


def parse_age(text: str) -> int:
    """`30d` -> seconds; a ValueError says what is wrong in the user's terms."""
    value = text.strip().lower()
    number, unit = value[:-1], value[-1:]
    if not value or not number.lstrip("+-").isdigit():
        raise ValueError(
            f"{text!r} is not an age: write a whole number and a unit, e.g. 30d (h = hours, "
            "d = days, w = weeks)"
        )
    if unit not in AGE_UNITS:
        raise ValueError(f"unknown unit {unit!r} in {text!r}: use h (hours), d (days) or w (weeks)")
    if number.startswith("-"):
        raise ValueError(f"{text!r} is negative: an age counts back from now, e.g. 30d")
    seconds = int(number) * AGE_UNITS[unit]
    if seconds < MIN_AGE_SECONDS:
        raise ValueError(f"{text!r} is too short: at least 1h (a job that just ended stays)")
    if seconds > MAX_AGE_SECONDS:
        raise ValueError(f"{text!r} is too long: at most 3650d (10 years)")
    return seconds


AgeText = Annotated[
    str,
    StringConstraints(min_length=2, max_length=12),
    Field(description="An age: a whole number and a unit (h, d or w), e.g. `30d`; 1h-3650d."),
]


class JobPruneRequest(RequestBody):
    """Remove finished jobs (and their items) that ended longer ago than `older_than`."""

    older_than: AgeText
    dry_run: bool = Field(default=True, description="List what would go (the default).")
    include_rollbackable: bool = Field(
        default=False,
        description="Also remove finished jobs that could still be rolled back: their writes "
        "stay in the write journal (each entry can still be undone on its own), but the job's "
        "one-step rollback is gone.",
    )

    @model_validator(mode="after")
    def _age_parses(self) -> JobPruneRequest:
        parse_age(self.older_than)
        return self


class PruneKeepReason(StrEnum):
    ROLLBACKABLE = "rollbackable"  # could still be rolled back (include_rollbackable prunes it)
    LINKED = "linked"  # its rollback, the job it rolls back, or its pre-job backup stays
    OUTPUT_FILE = "output_file"  # its export file or backup archive is still on disk
    SCHEDULE = "schedule"  # a backup schedule's last run
    ERASURE_REPORT = "erasure_report"  # an erasure whose report was not yet taken and forgotten


class JobPruneKept(ResponseBody):
    reason: PruneKeepReason
    jobs: NonNegativeInt
    note: str = Field(description="Why these stay, in words.")


class JobPruneEntry(ResponseBody):
    id: JobId
    kind: str = Field(min_length=1)
    state: JobState
    finished_at: UtcDateTime
    items: NonNegativeInt
    rollbackable: bool = Field(description="It could still be rolled back until pruned.")


class JobPruneReport(ResponseBody):
    """What a prune removed (or, as a dry run, would remove) and what it kept."""

    dry_run: bool
    cutoff: UtcDateTime = Field(description="Jobs that finished before this go.")
    jobs: NonNegativeInt = Field(description="Jobs removed (would be, for a dry run).")
    items: NonNegativeInt = Field(description="Their items (per-entry outcomes).")
    oldest_finished_at: UtcDateTime | None = None
    newest_finished_at: UtcDateTime | None = None
    by_kind: dict[str, NonNegativeInt] = Field(default_factory=dict)
    rollbackable: NonNegativeInt = Field(
        description="How many of them could still be rolled back (pruning removes that)."
    )
    data_bytes: NonNegativeInt | None = Field(
        default=None,
        description="The size of their stored rows (keys, outcomes, plans), measured; the file "
        "shrinks by about this much.",
    )
    file_bytes_before: NonNegativeInt | None = Field(
        default=None, description="The jobs file's size before (a real run)."
    )
    file_bytes_after: NonNegativeInt | None = Field(
        default=None, description="... and after, once the freed space went back to the disk."
    )
    listed: list[JobPruneEntry] = Field(
        default_factory=list, description=f"The oldest {MAX_PRUNE_LISTED} of them."
    )
    kept: list[JobPruneKept] = Field(
        default_factory=list, description="Jobs old enough that stay, by reason."
    )
    notes: list[str] = Field(default_factory=list, description="What to know, in words.")


# ---------------------------------------------------------------------------------- the budget


class CcuSource(StrEnum):
    UNIVERSE = "universe"  # set for this universe (dsm budget set, PUT .../budget)
    DEFAULT = "default"  # the server default (dsm serve --ccu)


class BudgetCategoryView(ResponseBody):
    category: str = Field(min_length=1, description="The limiter's budget, e.g. `write`.")
    label: str
    formula: str = Field(description="Roblox's documented formula, e.g. `300 + 20 × CCU`.")
    documented_rpm: float = Field(ge=0, description="The formula at the CCU, per minute.")
    share_rpm: NonNegativeInt = Field(description="What this server may use (minus the reserve).")
    pace_rpm: NonNegativeInt = Field(
        description="What it uses now: the share, lowered by Open Cloud's headers if they say so."
    )
    paused_seconds: float = Field(ge=0, description="Seconds a 429 still holds this budget back.")
    source: str = Field(description="Where Roblox documents it.")


class BudgetView(ResponseBody):
    """The Open Cloud budget in force for one universe (status bar and job plans)."""

    universe_id: PositiveInt
    ccu: NonNegativeInt = Field(description="The concurrent users the budgets assume.")
    ccu_source: CcuSource
    reserve_share: float = Field(ge=0, le=1, description="Share left to the game's servers.")
    headline: str = Field(description="One line for the status bar.")
    description: str = Field(description="A few lines for plans: every budget and why.")
    categories: list[BudgetCategoryView]
    backend: Backend


class BudgetSetRequest(RequestBody):
    ccu: WireInt = Field(
        ge=0, le=MAX_CCU, description="The game's concurrent users when jobs run (0-10,000,000)."
    )


# ------------------------------------------------------------------------------------ the plan


class SampleAction(StrEnum):
    WRITE = "write"  # the value or metadata would be written
    DELETE = "delete"
    SKIP = "skip"
    FAIL = "fail"
    READ = "read"  # export: read and written to the file


class SampleImage(ResponseBody):
    value_json: str | None = Field(
        default=None, description="The value as JSON text; absent when over 64 KiB (see size)."
    )
    size_bytes: NonNegativeInt
    attributes: dict[str, Any] | None = None
    user_ids: list[NonNegativeInt] = Field(default_factory=list)


class JobSample(ResponseBody):
    """What the job would do to one entry, read during planning."""

    datastore: str = Field(min_length=1)
    scope: str
    key: str = Field(min_length=1)
    action: SampleAction
    summary: str = Field(description="One line, e.g. `would create in Staging/global`.")
    before: SampleImage | None = Field(default=None, description="Absent: no such entry.")
    after: SampleImage | None = Field(default=None, description="Absent: deleted or skipped.")
    patch: list[JsonPatchOperation] = Field(
        default_factory=list, description="RFC 6902 from before to after (at most 50)."
    )
    session: str | None = Field(
        default=None, description="Who holds the entry's session lock, when it is a save wrapper."
    )


class BadLineView(ResponseBody):
    line: PositiveInt
    message: str


class JobEstimate(ResponseBody):
    requests: dict[str, NonNegativeInt] = Field(
        description="Open Cloud requests by budget category (read, write, list, remove, ...)."
    )
    seconds: float = Field(ge=0, description="At the budget share in force, latency aside.")
    note: str = Field(description="How the figures were made.")


class PreJobBackup(ResponseBody):
    """`JobPlan.backup`: the backup taken before a job writes to a production universe."""

    required: bool = Field(description="The job writes to a universe configured as production.")
    skipped: bool = Field(default=False, description="The start request set skip_backup.")
    entries: NonNegativeInt = Field(description="Entries backed up: those the job writes.")
    requests: dict[str, NonNegativeInt] = Field(
        description="What the backup costs in Open Cloud requests, by budget category."
    )
    seconds: float = Field(ge=0, description="At the budget share in force, latency aside.")
    note: str
    job_ids: list[JobId] = Field(default_factory=list, description="The backup jobs, once run.")
    archive_ids: list[str] = Field(default_factory=list, description="Their archives, once made.")


class JobPlan(ResponseBody):
    complete: bool = Field(description="False while the selection is still being counted.")
    items: NonNegativeInt = Field(description="Entries selected (so far, while counting).")
    estimate: JobEstimate | None = Field(default=None, description="Once complete.")
    budget: BudgetView | None = Field(
        default=None, description="The budget and CCU the estimate assumes."
    )
    samples: list[JobSample] = Field(default_factory=list, max_length=MAX_SAMPLES)
    warnings: list[str] = Field(
        default_factory=list,
        description="What can go wrong, e.g. the race of ordered data stores, session locks.",
    )
    notes: list[str] = Field(default_factory=list, description="What the job will do.")
    blocking: list[str] = Field(
        default_factory=list, description="Why the job cannot be started; empty when it can."
    )
    bad_lines: list[BadLineView] = Field(
        default_factory=list, description="Import: the first bad lines, by line number."
    )
    bad_line_count: NonNegativeInt = 0
    confirmation: str | None = Field(
        default=None,
        description="Writes to a production universe: the text to send as `confirm`.",
    )
    planned_at: UtcDateTime
    backup: PreJobBackup | None = Field(
        default=None,
        description="Production universes: the backup taken first, unless skip_backup.",
    )


# --------------------------------------------------------------------------- job views and items


class JobProgress(ResponseBody):
    total: NonNegativeInt | None = Field(default=None, description="Absent while counting.")
    done: NonNegativeInt = Field(description="Items with an outcome (applied+skipped+failed).")
    applied: NonNegativeInt
    skipped: NonNegativeInt
    failed: NonNegativeInt
    deferred: NonNegativeInt = Field(
        default=0, description="Held entries waiting for their retry (held_sessions=retry)."
    )
    rate_per_second: float | None = Field(
        default=None, ge=0, description="Items per second recently; absent before any."
    )
    eta_seconds: float | None = Field(
        default=None, ge=0, description="At the recent rate; absent when unknown."
    )


class JobFailure(ResponseBody):
    code: ErrorCode
    message: str


PROPOSED_BY = (
    "Set when an AI assistant proposed the job (the assistant token's name): it was planned "
    "only, and runs when a person starts it."
)
APPROVED_BY = "For an assistant's proposal: the token name of the person who started it."
CREATOR = (
    "Who created it: the Studio user the token's plugin announced when it was created, or "
    "unknown (a script's token); the journal names them for the job's writes."
)
APPROVER = "For an assistant's proposal: who started it, with their Studio user."
ROLLBACK_INCOMPLETE = (
    "A rollback of it ran and ended, but some of its writes are not undone (changed since, "
    "failed, or the rollback was cancelled): the job view's `rollback_note` says which and why."
)


class JobSummary(ResponseBody):
    id: JobId
    kind: str = Field(min_length=1, description="A JobKind value, or a newer kind.")
    state: JobState
    universe_id: PositiveInt
    description: str = Field(description="One line, e.g. `Delete 120 keys from PlayerData`.")
    created_by: str = Field(description="The token name that created it.")
    creator: Person = Field(description=CREATOR)
    proposed_by: str | None = Field(default=None, description=PROPOSED_BY)
    approved_by: str | None = Field(default=None, description=APPROVED_BY)
    approver: Person | None = Field(default=None, description=APPROVER)
    created_at: UtcDateTime
    updated_at: UtcDateTime
    progress: JobProgress
    actions: list[JobAction] = Field(description="What can be done to it now.")
    failure: JobFailure | None = None
    output_path: str | None = Field(
        default=None, description="Export: the file on the server's machine."
    )
    rollback_incomplete: bool = Field(default=False, description=ROLLBACK_INCOMPLETE)


class JobView(ResponseBody):
    id: JobId
    kind: str = Field(min_length=1, description="A JobKind value, or a newer kind.")
    state: JobState
    universe_id: PositiveInt
    store_kind: StoreKind
    description: str
    selection: dict[str, Any] | None = Field(
        default=None, description="The Selection as given (absent for a rollback)."
    )
    params: dict[str, Any] = Field(description="The kind's params, defaults filled in.")
    created_by: str
    creator: Person = Field(description=CREATOR)
    proposed_by: str | None = Field(default=None, description=PROPOSED_BY)
    approved_by: str | None = Field(default=None, description=APPROVED_BY)
    approver: Person | None = Field(default=None, description=APPROVER)
    created_at: UtcDateTime
    updated_at: UtcDateTime
    started_at: UtcDateTime | None = None
    finished_at: UtcDateTime | None = None
    plan: JobPlan | None = None
    progress: JobProgress
    actions: list[JobAction]
    failure: JobFailure | None = None
    output_path: str | None = Field(
        default=None, description="Export: the file on the server's machine."
    )
    writes: bool = Field(description="Whether it writes to Open Cloud (and can be rolled back).")
    rollback_of: JobId | None = Field(default=None, description="The job a rollback undoes.")
    rolled_back_by: JobId | None = Field(default=None, description="Its rollback job, if any.")
    rollback_note: str | None = Field(
        default=None,
        description="Where its rollback stands, in words (for a job that has one, and for a "
        "rollback job): whether every write is undone, and if not how many and why.",
    )
    backend: Backend = Field(description="EMULATOR or LIVE: whose data the job works on.")
    rollback_incomplete: bool = Field(default=False, description=ROLLBACK_INCOMPLETE)


class JobListQuery(QueryParams):
    state: JobState | None = None
    kind: str | None = Field(default=None, max_length=40)
    universe: PositiveInt | None = None  # an id SQLite can hold, or a 400
    limit: int = Field(default=50, ge=1, le=200, description="Page size (1-200).")
    cursor: Cursor | None = Field(default=None, description="next_cursor of the previous page.")


class JobPage(ResponseBody):
    """Newest first."""

    jobs: list[JobSummary]
    next_cursor: str | None = Field(default=None, description="Absent on the last page.")


class JobItemQuery(QueryParams):
    state: ItemState | None = Field(default=None, description="Only items in this state.")
    after: int | None = Field(default=None, ge=0, description="next_after of the previous page.")
    limit: int = Field(default=100, ge=1, le=500, description="Page size (1-500).")


class JobItemView(ResponseBody):
    seq: PositiveInt = Field(description="The item's place in the job, from 1.")
    datastore: str = Field(min_length=1)
    scope: str
    key: str = Field(min_length=1)
    state: ItemState
    skip_code: SkipCode | None = None
    error_code: ErrorCode | None = None
    message: str | None = Field(default=None, description="Why skipped or failed, in words.")
    line: PositiveInt | None = Field(default=None, description="Import: the file's line.")
    journal_ids: list[PositiveInt] = Field(
        default_factory=list, description="The journal items of its writes."
    )
    attempts: NonNegativeInt = 0


class JobItemPage(ResponseBody):
    items: list[JobItemView]
    next_after: NonNegativeInt | None = Field(
        default=None, description="Pass as `after` for more; absent at the end."
    )


# -------------------------------------------------------------------------------------- events


class JobProgressPayload(ResponseBody):
    """`job.progress`: at most a few times a second per job, and once at the end of a phase."""

    job_id: JobId
    kind: str = Field(min_length=1)
    universe_id: PositiveInt
    state: JobState
    phase: JobPhase
    progress: JobProgress
    counted: NonNegativeInt | None = Field(
        default=None, description="Planning: entries counted so far."
    )


class JobStatePayload(ResponseBody):
    """`job.state`: a job changed state (or its plan is complete)."""

    job_id: JobId
    kind: str = Field(min_length=1)
    universe_id: PositiveInt
    state: JobState
    previous: JobState | None = Field(default=None, description="Absent for a new job.")
    actions: list[JobAction]
    actor: str | None = Field(default=None, description="Who caused it; absent for the runner.")
    person: Person | None = Field(
        default=None, description="Who caused it, with their Studio user; absent for the runner."
    )
    message: str | None = None


# ------------------------------------------------------------------------------------- uploads


class UploadState(StrEnum):
    OPEN = "open"  # chunks are arriving
    COMPLETE = "complete"  # every chunk arrived and the checks passed: usable by an import


class UploadCreateRequest(RequestBody):
    """Announce a file the plugin will send in chunks (read with File:GetBinaryContents)."""

    file_name: str = Field(min_length=1, max_length=200, description="For display and format.")
    size_bytes: WireInt = Field(
        ge=1, le=MAX_UPLOAD_BYTES, description="The whole file's size (at most 512 MiB)."
    )
    sha256: Sha256Hex | None = Field(
        default=None, description="Of the whole file; checked when the upload is completed."
    )
    chunk_bytes: int = Field(
        default=DEFAULT_CHUNK_BYTES,
        ge=64 * 1024,
        le=MAX_CHUNK_BYTES,
        description="Every chunk but the last has exactly this many bytes.",
    )


class UploadChunkRequest(RequestBody):
    data_base64: str = Field(
        min_length=4,
        max_length=MAX_CHUNK_BASE64_CHARS,
        description="The chunk's bytes, base64 (RFC 4648, with padding).",
    )
    sha256: Sha256Hex | None = Field(default=None, description="Of the chunk's bytes.")


class UploadInfo(ResponseBody):
    upload_id: UploadId
    file_name: str
    state: UploadState
    size_bytes: PositiveInt
    chunk_bytes: PositiveInt
    chunks: PositiveInt = Field(description="How many chunks the file is sent in.")
    received_chunks: NonNegativeInt
    missing: list[NonNegativeInt] = Field(
        default_factory=list, description="The first (up to 100) chunk indexes not received yet."
    )
    sha256: Sha256Hex | None = Field(default=None, description="Of the whole file, once complete.")
    created_at: UtcDateTime
    expires_at: UtcDateTime = Field(description="Unused uploads are deleted after this time.")
