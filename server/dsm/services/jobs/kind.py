"""How a job kind plugs into the engine: a planner, an item executor and a rollback rule.

A kind is one module in `kinds/` defining a `JobKindHandler` subclass and registering it
(`register(MyKind())`). The engine does everything else: durable items and cursors, dry-run
plans, pacing to the budget, concurrency, pause/resume/cancel, crash recovery, progress events,
metrics and rollback.

- **Planner**: `enumerate` yields the items (the default lists the job's `Selection`),
  `sample` reads one item for the plan's before/after diffs, `requests` estimates Open Cloud
  requests per category, `plan_notes` adds warnings, notes and blocking problems.
- **Item executor**: `execute(ctx)` does one item and returns its `ItemResult`. Every write goes
  through the one journaled write path with `ctx.key(step)` as its idempotency key, after
  checking `ctx.applied(step)`: a step that already landed (before a crash) is never sent again.
- **Rollback rule**: `rollback = "journal"` (the default) undoes every journaled write of the
  job, newest first, conditionally; `"none"` for kinds that write nothing to Open Cloud.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel

from shared_schema.common import Role
from shared_schema.entries import StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.jobs import (
    BadLineView,
    ItemState,
    JobKind,
    JobSample,
    Selection,
    SkipCode,
)
from shared_schema.search import EntryFilter

from ...storage.journal import JournalRecord, Status
from ..backups.keyslots import ArchiveKeysSource
from ..dataplane import DataPlane
from ..errors import ServiceError
from .store import ItemRecord, JobRecord, JobStore, NewItem
from .uploads import UploadStore

if TYPE_CHECKING:
    from ..index.service import IndexService
    from ..team.service import TeamService

RollbackRule = Literal["journal", "none"]
# Attempts of one write step (each a new idempotency key) before the item fails.
MAX_ATTEMPTS = 6


@dataclass(frozen=True)
class JobEnv:
    """What kinds may use: the data plane (read and write paths), job state, files; the search
    index (crawls write it, search selections read it, an erasure scrubs it); for backups,
    restores and erasure the data dir and the archive keys; team sync (an erasure reports what
    the team audit log keeps)."""

    plane: DataPlane
    store: JobStore
    uploads: UploadStore
    exports_dir: Path
    data_dir: Path | None = None
    keys: ArchiveKeysSource | None = None
    index: IndexService | None = None
    team: TeamService | None = None  # an erasure reports what its audit log keeps

    def search_index(self) -> IndexService:
        if self.index is None:
            raise ServiceError(
                ErrorCode.UPSTREAM_UNAVAILABLE, "The search index is not open on this server."
            )
        return self.index


@dataclass(frozen=True)
class JobSpec:
    """A job as its kind sees it: the durable record with its request parsed."""

    record: JobRecord
    kind: JobKind
    selection: Selection | None
    params: Any  # the kind's params model

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def universe(self) -> int:
        return self.record.universe

    @property
    def store_kind(self) -> StoreKind:
        return StoreKind(self.record.store_kind)


@dataclass(frozen=True)
class JobActor:
    """Whom the journal names for a job's writes: its creator (and the Studio user behind
    their token, when announced), and the job."""

    token_id: str
    name: str
    studio_user_id: int | None = None
    studio_user_name: str | None = None


@dataclass(frozen=True)
class ItemResult:
    state: ItemState
    skip_code: SkipCode | None = None
    error_code: ErrorCode | None = None
    message: str | None = None
    deferred: bool = False  # a held session to retry later (the item stays pending)

    @classmethod
    def applied(cls, message: str | None = None) -> ItemResult:
        return cls(ItemState.APPLIED, message=message)

    @classmethod
    def skipped(cls, code: SkipCode, message: str) -> ItemResult:
        return cls(ItemState.SKIPPED, skip_code=code, message=message)

    @classmethod
    def failed(cls, code: ErrorCode, message: str) -> ItemResult:
        return cls(ItemState.FAILED, error_code=code, message=message)


class JobStop(Exception):
    """The job cannot go on (it ends `failed` with this code and message); `item` is the
    outcome of the item that stopped it, if it has one."""

    def __init__(self, code: ErrorCode, message: str, item: ItemResult | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.item = item


class NotSelected(Exception):
    """The item's entry, read live, no longer matches the job's search: it is skipped."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StepUnknown(Exception):
    """A write of this item was sent but its outcome is unknown: it is never sent again."""


@dataclass
class ItemContext:
    """One item being executed: its idempotency keys, and the journal items of its writes."""

    spec: JobSpec
    item: ItemRecord
    env: JobEnv
    actor: JobActor
    resources: Any = None  # what the kind's open_run made
    payload: Any = None  # what the kind's with_payloads attached
    final_pass: bool = False  # the last retry of held sessions: skip what is still held
    journal_ids: list[int] = field(default_factory=list)
    attempts: int = 0
    # Set once a write is about to be sent: from then on a pause lets the item finish; before,
    # it may be cut (nothing was sent, the item just stays pending).
    writing: bool = False

    @property
    def plane(self) -> DataPlane:
        return self.env.plane

    def key(self, step: str) -> str:
        """The idempotency key for the write this step is about to send."""
        self.writing = True
        return self._key(step)

    def _key(self, step: str) -> str:
        """The idempotency key of this step's current attempt.

        Attempt n's key is `<job>-<item>-<step><n>`. An attempt the journal records as FAILED
        (refused by Open Cloud, e.g. a game server wrote between our read and our write) moves
        on to the next; any other attempt is the current one. Derived, not stored: after a
        crash the journal alone tells which attempt a step is at.
        """
        journal = self.plane.writes.journal
        for attempt in range(MAX_ATTEMPTS):
            key = f"{self.spec.id}-{self.item.seq}-{step}{attempt}"
            record = journal.find_by_idempotency_key(key)
            if record is None or record.status is not Status.FAILED:
                self.attempts = max(self.attempts, attempt + 1)
                return key
            self._note(record)
        raise ServiceError(
            ErrorCode.CONFLICT,
            f"Gave up after {MAX_ATTEMPTS} attempts: the entry kept changing between this job's "
            "read and its write (a game server is writing it).",
        )

    async def applied(self, step: str) -> JournalRecord | None:
        """The journaled write of this step if it already landed (before a crash, say).

        A write whose outcome was left open is settled first by re-reading its key; one that
        still cannot be settled raises StepUnknown: it is never sent again.
        """
        journal = self.plane.writes.journal
        record = journal.find_by_idempotency_key(self._key(step))
        if record is None:
            return None
        if record.status in (Status.INTENT, Status.UNKNOWN):
            await self.plane.journal.settle(record)
            record = journal.get(record.id).record
        self._note(record)
        if record.status is Status.APPLIED:
            return record
        if record.status is Status.FAILED:
            return None  # it did not land: the next key(step) is a new attempt
        raise StepUnknown(
            f"Journal item {record.id} of this job was sent but its outcome is not known "
            f"({record.reason or record.status.value}); it is not sent again. Open the entry to "
            "settle it."
        )

    def note(self, record: JournalRecord) -> None:
        self._note(record)

    def _note(self, record: JournalRecord) -> None:
        if record.id not in self.journal_ids:
            self.journal_ids.append(record.id)


@dataclass(frozen=True)
class ItemPage:
    """Items found while planning, and where to go on (None with `complete`)."""

    items: list[NewItem]
    cursor: dict[str, Any] | None
    complete: bool


@dataclass
class PlanNotes:
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocking: list[str] = field(default_factory=list)
    bad_lines: list[BadLineView] = field(default_factory=list)
    bad_line_count: int = 0


class RunResources:
    """What a kind keeps open while a job runs (a jq worker pool, an export file)."""

    def checkpoint(self) -> dict[str, Any] | None:
        """Called before outcomes are committed; what it returns is committed with them."""
        return None

    async def close(self) -> None:
        return None


def category(store_kind: StoreKind | str, name: str) -> str:
    """The limiter's budget category for a request type on a store kind."""
    return f"ordered.{name}" if StoreKind(store_kind) is StoreKind.ORDERED else name


class JobKindHandler:
    """Defaults for a kind; subclasses set `kind`, `role`, `store_kinds` and `execute`."""

    kind: ClassVar[JobKind]
    params_model: ClassVar[type[BaseModel]]
    role: ClassVar[Role] = Role.EDITOR
    store_kinds: ClassVar[frozenset[StoreKind]] = frozenset({StoreKind.STANDARD})
    rollback: ClassVar[RollbackRule] = "journal"
    # The request type that paces the job (workers are sized to fill it).
    pace: ClassVar[str] = "write"
    # Whether it writes to Open Cloud; None: it does when it can be rolled back.
    writes_open_cloud: ClassVar[bool | None] = None
    # Whether its items are the entries it writes (the backup before a production job backs
    # up the items' keys); a copy's items are its sources.
    backs_up_items: ClassVar[bool] = True

    @property
    def writes(self) -> bool:
        if self.writes_open_cloud is not None:
            return self.writes_open_cloud
        return self.rollback != "none"

    # ------------------------------------------------------------------------ checking

    def check(self, spec: JobSpec, env: JobEnv) -> None:
        """Refuse a job that cannot work (ServiceError BAD_REQUEST, NOT_FOUND, ...)."""

    def role_for(self, spec: JobSpec, env: JobEnv) -> Role:
        """The least role that may create and start this job."""
        return self.role

    def written_universes(self, spec: JobSpec, env: JobEnv) -> set[int]:
        """Universes whose data the job writes (production ones need the typed confirmation)."""
        return {spec.universe} if self.writes else set()

    def confirmation(self, spec: JobSpec, env: JobEnv, production: Sequence[str]) -> str | None:
        """The text `confirm` must be to start it; `production` are the labels of the
        production universes it writes to (the default asks for those)."""
        return " + ".join(production) or None

    def describe(self, spec: JobSpec) -> str:
        return f"{spec.kind.value.replace('_', '-').capitalize()} {describe_selection(spec)}"

    # ------------------------------------------------------------------------ planning

    def enumerate(
        self, spec: JobSpec, env: JobEnv, cursor: dict[str, Any] | None
    ) -> AsyncIterator[ItemPage]:
        from .selection import enumerate_selection

        assert spec.selection is not None
        return enumerate_selection(spec.selection, env, cursor)

    def requests(self, spec: JobSpec, items: int) -> dict[int, dict[str, int]]:
        """Open Cloud requests to run `items` items, by universe and budget category."""
        return {}

    async def sample(self, spec: JobSpec, item: ItemRecord, env: JobEnv) -> JobSample:
        raise NotImplementedError

    async def samples(self, spec: JobSpec, items: list[ItemRecord], env: JobEnv) -> list[JobSample]:
        """The plan's samples (a kind may share one resource across them)."""
        return [await self.sample(spec, item, env) for item in items]

    def plan_notes(
        self, spec: JobSpec, env: JobEnv, final_cursor: dict[str, Any] | None
    ) -> PlanNotes:
        return PlanNotes()

    # ------------------------------------------------------------------------- running

    async def open_run(self, spec: JobSpec, env: JobEnv) -> RunResources:
        return RunResources()

    def with_payloads(
        self, spec: JobSpec, env: JobEnv, items: AsyncIterator[ItemRecord]
    ) -> AsyncIterator[tuple[ItemRecord, Any]]:
        """Attach what each item needs beyond its key (an import line); in seq order."""

        async def plain() -> AsyncIterator[tuple[ItemRecord, Any]]:
            async for item in items:
                yield item, None

        return plain()

    async def execute(self, ctx: ItemContext) -> ItemResult:
        raise NotImplementedError

    async def finish(self, spec: JobSpec, env: JobEnv, resources: RunResources) -> dict[str, Any]:
        """After the last item: job columns to set (e.g. output_path)."""
        return {}


KINDS: dict[JobKind, JobKindHandler] = {}


def register(handler: JobKindHandler) -> JobKindHandler:
    """Make a kind available to POST /jobs (one module per kind calls this once)."""
    KINDS[handler.kind] = handler
    return handler


def handler_for(kind: JobKind | str) -> JobKindHandler:
    from . import kinds  # noqa: F401  # registers every kind

    try:
        return KINDS[JobKind(kind)]
    except (KeyError, ValueError):
        raise ServiceError(
            ErrorCode.BAD_REQUEST, f"This server cannot run {kind!r} jobs."
        ) from None


def spec_of(record: JobRecord) -> JobSpec:
    """A stored job with its request parsed by its kind's models."""
    handler = handler_for(record.kind)
    selection = record.selection
    return JobSpec(
        record=record,
        kind=JobKind(record.kind),
        selection=None
        if selection is None
        else Selection.model_validate_json(json.dumps(selection)),
        params=handler.params_model.model_validate_json(json.dumps(record.params)),
    )


def describe_selection(spec: JobSpec) -> str:
    selection = spec.selection
    if selection is None:
        return ""
    kind = "ordered data store" if selection.store_kind is StoreKind.ORDERED else "data store"
    if selection.all_datastores:
        stores = f"every {kind}" + (" the index holds" if selection.search else "")
    else:
        names = ", ".join(selection.datastores[:3]) + (
            f" and {len(selection.datastores) - 3} more" if len(selection.datastores) > 3 else ""
        )
        stores = f"{kind}{'s' if len(selection.datastores) > 1 else ''} {names}"
    if selection.keys is not None:
        what = f"{len(selection.keys)} key{'s' if len(selection.keys) != 1 else ''}"
    elif selection.search is not None:
        what = f"the entries matching {search_text(selection.search)}"
    elif selection.prefix is not None:
        what = f"keys starting with {selection.prefix!r}"
    else:
        what = "every key"
    if selection.keys is not None:
        where = ""
    elif selection.all_scopes:
        where = ", every scope"
    else:
        where = f", scope{'s' if len(selection.scopes) > 1 else ''} {', '.join(selection.scopes)}"
    return f"{what} in {stores}{where} (universe {selection.universe_id})"


def search_text(search: EntryFilter) -> str:
    """A search selection in words: "`coins > 1e9` and keys by prefix 'Player_'"."""
    parts = []
    if search.query is not None:
        query = search.query if len(search.query) <= 80 else search.query[:77] + "..."
        parts.append(f"`{query}`")
    if search.key_pattern is not None:
        parts.append(f"keys by {search.key_match.value} {search.key_pattern!r}")
    return " and ".join(parts)
