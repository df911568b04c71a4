"""Right to erasure: find a player's data, scrub the server's own copies, report what was done.

The rules (`ErasureRules`) say what belongs to a player with user id U:

- a standard entry whose key is one of the store's patterns with U filled in (`Player_{userId}`,
  `{userId}`, `{userId}_inventory` ...; patterns for every store under "*", and per store):
  the whole entry is the player's, so it is **deleted**;
- any other standard entry whose user ids contain U: it is shared (a guild, a trade), so U is
  **removed from its user ids** and its value kept (the report asks for a human look at it);
- an ordered entry whose id is one of the ordered patterns (default `{userId}`): **deleted**.

Patterns live in `<data dir>/erasure-patterns.json`. The same rules drive every place:

- **Open Cloud** (`find_candidates`): each pattern key is listed with a prefix filter in all
  scopes of every data store; ordered entries are read by id in the configured ordered stores
  (Open Cloud cannot list ordered stores); entries listing U in their user ids come from a
  metadata source the caller gives (the index, a backup archive, or a crawl), since a listing
  does not show user ids. The deletes and metadata writes are jobs (journaled, conditional).
- **The cache**: cleared whole, then the file rewritten (`clear` + `compact`): it is only a
  cache, and a player's data can sit in list pages and other reads, not just under their keys.
- **The journal**: *rewritten*, not crypto-shredded. Every image in it is sealed under the one
  data key that also seals the cache and wraps the archive keys, so shredding one player's
  images would need a key per record (a format change to the file that holds the only undo
  history). Instead each record of a deleted entry is redacted (images, value hashes and the
  key removed; the record itself stays, so the trail of who wrote when keeps its shape, and
  undo of it is refused), U is removed from the metadata of shared entries' images, and the
  file is vacuumed with secure_delete so no free page or log keeps the old bytes.
- **Backup archives**: *rewritten* without the player's entries (and with U removed from shared
  entries), under the same archive key so every slot still opens them (`rewrite_archive`).
  An archive this server cannot open (a portable archive from elsewhere) is listed as not
  scrubbed; copies of archives outside the backups folder are beyond the server's reach.
- **Elsewhere**: the index drops the player's rows; export files and uploads are scrubbed by
  `jobs.erasure_files`; the team audit log has the player's redactable items nulled, in the
  shared records and this server's copy (`team.erasure`).

The report (`ErasureReport`, JSON and text) says what was removed where and when, and what
Roblox still keeps: a deleted entry's earlier versions and tombstone, and the versions a
metadata write superseded, for 30 days. It names the player (it is the studio's record of the
request), so the server hands it to the user and does not keep it in the data dir.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared_schema.common import Backend
from shared_schema.entries import StoreKind

from ..opencloud import errors as oc
from ..opencloud.client import OpenCloudClient
from ..storage.atomic import write_atomic
from ..storage.cache import EntryCache
from ..storage.journal import ERASED_KEY, MAX_LIST_LIMIT, EntryImage, WriteJournal
from .backups.archive import ArchiveEntry, ArchiveError, EntryName, read_header
from .backups.folder import PARTIAL_SUFFIX
from .backups.keyslots import ArchiveKeyError, ArchiveKeys
from .backups.rewrite import rewrite_archive

PATTERNS_FILENAME = "erasure-patterns.json"
PLACEHOLDER = "{userId}"
ROBLOX_RETENTION = timedelta(days=30)
_MAX_KEY_BYTES = 50
_LONGEST_USER_ID = "9" * 20


def utc_now() -> datetime:
    return datetime.now(UTC)


# -------------------------------------------------------------------------------------- rules


def _check_pattern(pattern: str) -> str:
    if PLACEHOLDER not in pattern:
        raise ValueError(f"pattern {pattern!r} must contain {PLACEHOLDER}")
    if re.search(r"[{}]", pattern.replace(PLACEHOLDER, "")):
        raise ValueError(f"pattern {pattern!r} may use no braces other than {PLACEHOLDER}")
    if len(pattern.replace(PLACEHOLDER, _LONGEST_USER_ID).encode()) > _MAX_KEY_BYTES:
        raise ValueError(f"pattern {pattern!r} makes keys longer than 50 bytes")
    return pattern


class OrderedTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scopes: list[str] = Field(default_factory=lambda: ["global"], min_length=1)
    ids: list[str] = Field(default_factory=lambda: [PLACEHOLDER], min_length=1)

    @field_validator("ids")
    @classmethod
    def _ids(cls, ids: list[str]) -> list[str]:
        return [_check_pattern(i) for i in ids]


class ErasurePatterns(BaseModel):
    """Which keys hold a player's data, per data store ("*": every store)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = 1
    standard: dict[str, list[str]] = Field(
        default_factory=lambda: {"*": [PLACEHOLDER, f"Player_{PLACEHOLDER}"]}
    )
    ordered: dict[str, OrderedTarget] = Field(default_factory=dict)

    @field_validator("standard")
    @classmethod
    def _standard(cls, stores: dict[str, list[str]]) -> dict[str, list[str]]:
        return {store: [_check_pattern(p) for p in patterns] for store, patterns in stores.items()}

    @classmethod
    def load(cls, data_dir: Path) -> ErasurePatterns:
        path = Path(data_dir) / PATTERNS_FILENAME
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return cls()
        except ValidationError as exc:
            raise ValueError(f"{path} is not valid: {exc.errors()[0]['msg']}") from None

    def save(self, data_dir: Path) -> None:
        write_atomic(
            Path(data_dir) / PATTERNS_FILENAME,
            self.model_dump_json(indent=2).encode(),
            mode=0o600,
        )


class Action(StrEnum):
    DELETE_ENTRY = "delete_entry"
    REMOVE_USER_ID = "remove_user_id"


class Reason(StrEnum):
    KEY_PATTERN = "key_pattern"
    USER_IDS = "user_ids"
    ORDERED_ID = "ordered_id"


@dataclass(frozen=True)
class Match:
    action: Action
    reason: Reason
    detail: str  # the pattern that matched, or "user ids"


class ErasureRules:
    """The patterns with one user id filled in."""

    def __init__(self, user_id: int, patterns: ErasurePatterns) -> None:
        if isinstance(user_id, bool) or user_id <= 0:
            raise ValueError("a Roblox user id is a positive whole number")
        self.user_id = user_id
        self.patterns = patterns

    def _render(self, pattern: str) -> str:
        return pattern.replace(PLACEHOLDER, str(self.user_id))

    def keys_for(self, datastore: str) -> dict[str, str]:
        """The exact keys the patterns give for one data store, each with its pattern."""
        patterns = [
            *self.patterns.standard.get("*", []),
            *self.patterns.standard.get(datastore, []),
        ]
        return {self._render(p): p for p in patterns}

    def ordered_ids_for(self, store: str) -> dict[str, str]:
        target = self.patterns.ordered.get(store) or self.patterns.ordered.get("*")
        ids = target.ids if target else [PLACEHOLDER]
        return {self._render(p): p for p in ids}

    def ordered_targets(self) -> list[tuple[str, str, str]]:
        """(store, scope, id) to read in the configured ordered data stores."""
        out: list[tuple[str, str, str]] = []
        for store, target in sorted(self.patterns.ordered.items()):
            if store == "*":
                continue
            for scope in target.scopes:
                out += [(store, scope, self._render(p)) for p in target.ids]
        return out

    def match(self, name: EntryName, user_ids: Iterable[int] = ()) -> Match | None:
        if name.kind is StoreKind.ORDERED:
            pattern = self.ordered_ids_for(name.datastore).get(name.key)
            return (
                None if pattern is None else Match(Action.DELETE_ENTRY, Reason.ORDERED_ID, pattern)
            )
        pattern = self.keys_for(name.datastore).get(name.key)
        if pattern is not None:
            return Match(Action.DELETE_ENTRY, Reason.KEY_PATTERN, pattern)
        if self.user_id in set(user_ids):
            return Match(Action.REMOVE_USER_ID, Reason.USER_IDS, "user ids")
        return None

    def scrubbed(self, entry: ArchiveEntry) -> ArchiveEntry | None:
        """An archived entry with the player taken out: None (dropped), changed, or as it was."""
        found = self.match(entry.name, entry.user_ids)
        if found is None:
            return entry
        if found.action is Action.DELETE_ENTRY:
            return None
        return ArchiveEntry(
            entry.name,
            entry.value_json,
            entry.read_at,
            entry.attributes,
            tuple(u for u in entry.user_ids if u != self.user_id),
            entry.revision_id,
            entry.created_at,
            entry.updated_at,
        )


# ------------------------------------------------------------------------- finding candidates


@dataclass(frozen=True)
class Candidate:
    name: EntryName
    match: Match


@dataclass(frozen=True)
class ErasurePlan:
    user_id: int
    universe_id: int
    candidates: list[Candidate]
    searched: list[str]  # what was looked at
    not_searched: list[str]  # what could not be, and why

    @property
    def deletes(self) -> list[Candidate]:
        return [c for c in self.candidates if c.match.action is Action.DELETE_ENTRY]

    @property
    def metadata_edits(self) -> list[Candidate]:
        return [c for c in self.candidates if c.match.action is Action.REMOVE_USER_ID]


class ErasurePlanner:
    """Collects candidates from listings and metadata as they arrive (pure; no I/O)."""

    def __init__(self, universe_id: int, rules: ErasureRules) -> None:
        self.universe_id = universe_id
        self.rules = rules
        self._found: dict[EntryName, Candidate] = {}
        self.searched: list[str] = []
        self.not_searched: list[str] = []

    def consider(self, name: EntryName, user_ids: Iterable[int] = ()) -> Candidate | None:
        found = self.rules.match(name, user_ids)
        if found is None:
            return None
        held = self._found.get(name)
        if held is not None and held.match.action is Action.DELETE_ENTRY:
            return held  # a delete covers a metadata edit
        candidate = Candidate(name, found)
        self._found[name] = candidate
        return candidate

    def plan(self) -> ErasurePlan:
        return ErasurePlan(
            self.rules.user_id,
            self.universe_id,
            sorted(self._found.values(), key=lambda c: c.name),
            list(self.searched),
            list(self.not_searched),
        )


Call = Callable[[int, Callable[[OpenCloudClient], Awaitable[Any]]], Awaitable[Any]]


async def find_candidates(
    call: Call,
    universe_id: int,
    rules: ErasureRules,
    *,
    metadata: AsyncIterator[tuple[EntryName, Sequence[int]]] | None = None,
    metadata_source: str = "",
) -> ErasurePlan:
    """Search Open Cloud for the player's entries (fresh reads through `call`, e.g. Upstream.call).

    `metadata` yields (entry, user ids) from wherever they are known (the index, an archive,
    a crawl); without it, entries that list the player only in their user ids are not found,
    and the plan says so.
    """
    planner = ErasurePlanner(universe_id, rules)

    async def stores(c: OpenCloudClient) -> list[str]:
        return [s.name async for s in c.iter_data_stores(universe_id)]

    async def listed(c: OpenCloudClient, datastore: str, key: str) -> list[str]:
        return [
            e.scope
            async for e in c.iter_entries(universe_id, datastore, scope="-", prefix=key)
            if e.key == key
        ]

    async def ordered(c: OpenCloudClient, store: str, scope: str, entry_id: str) -> bool:
        try:
            await c.ordered_get(universe_id, store, entry_id, scope=scope)
        except oc.NotFound:
            return False
        return True

    names: list[str] = await call(universe_id, stores)
    for datastore in names:
        for key in rules.keys_for(datastore):
            scopes: list[str] = await call(
                universe_id, partial(listed, datastore=datastore, key=key)
            )
            for scope in scopes:
                planner.consider(EntryName(StoreKind.STANDARD, datastore, scope, key))
    planner.searched.append(
        f"{len(names)} data stores, every scope, for the keys "
        + ", ".join(sorted({p for ps in rules.patterns.standard.values() for p in ps}))
    )
    for store, scope, entry_id in rules.ordered_targets():
        if await call(universe_id, partial(ordered, store=store, scope=scope, entry_id=entry_id)):
            planner.consider(EntryName(StoreKind.ORDERED, store, scope, entry_id))
    if rules.ordered_targets():
        planner.searched.append(
            "ordered data stores "
            + ", ".join(sorted(s for s in rules.patterns.ordered if s != "*"))
        )
    else:
        planner.not_searched.append(
            "ordered data stores: none configured (Open Cloud cannot list them; name them in "
            f"{PATTERNS_FILENAME})"
        )
    if metadata is None:
        planner.not_searched.append(
            "entries listing the player in their user ids: no index or backup was given to "
            "read user ids from (a key listing does not show them)"
        )
    else:
        async for name, user_ids in metadata:
            planner.consider(name, user_ids)
        planner.searched.append(f"user ids of entries from {metadata_source or 'the caller'}")
    return planner.plan()


async def metadata_from_entries(
    entries: Iterable[ArchiveEntry],
) -> AsyncIterator[tuple[EntryName, Sequence[int]]]:
    """User ids per entry from archived entries (e.g. the newest full backup)."""
    for entry in entries:
        yield entry.name, entry.user_ids


# ------------------------------------------------------------------------- the local scrubs


class ScrubOutcome(BaseModel):
    where: str  # cache | journal | backups | index | audit_log | ...
    method: str  # how: what was rewritten, cleared or redacted
    at: datetime
    removed: int = 0  # records or entries removed
    changed: int = 0  # records or entries kept with the player taken out
    details: list[str] = []
    problems: list[str] = []  # what could not be scrubbed, and why


def scrub_cache(cache: EntryCache, *, clock: Callable[[], datetime] = utc_now) -> ScrubOutcome:
    """Forget every cached record and rewrite the file (the cache refills on the next reads)."""
    removed = cache.clear()
    cache.compact()
    return ScrubOutcome(
        where="cache",
        method="cleared whole, file rewritten (VACUUM with secure_delete)",
        at=clock(),
        removed=removed,
    )


def scrub_journal(
    journal: WriteJournal,
    rules: ErasureRules,
    *,
    request_id: str,
    clock: Callable[[], datetime] = utc_now,
) -> ScrubOutcome:
    """Redact the records of the player's entries, take the id out of shared ones, compact."""
    note = f"erased on {clock():%Y-%m-%d} for right-to-erasure request {request_id}"
    removed = changed = 0
    problems: list[str] = []
    before_id: int | None = None
    while True:
        page = journal.list(limit=MAX_LIST_LIMIT, before_id=before_id)
        for record in page:
            if record.key == ERASED_KEY:
                continue
            name = EntryName(
                StoreKind(record.store_kind), record.datastore, record.scope, record.key
            )
            found = rules.match(name)
            if found is not None and found.action is Action.DELETE_ENTRY:
                journal.redact(record.id, note)
                removed += 1
                continue
            if name.kind is not StoreKind.STANDARD:
                continue
            detail = journal.get(record.id)
            listed = [
                i for i in (detail.before, detail.after) if i is not None and _lists(i, rules)
            ]
            if not listed:
                if detail.problems:
                    problems.append(f"write #{record.id}: {'; '.join(detail.problems)}")
                continue
            if journal.rewrite_images(record.id, lambda image: _without_user(image, rules.user_id)):
                changed += 1
        if len(page) < MAX_LIST_LIMIT:
            break
        before_id = page[-1].id
    journal.compact()
    return ScrubOutcome(
        where="journal",
        method="rewritten: records of deleted entries redacted (images, value hashes and key "
        "removed; undo refused), the user id removed from shared entries' images, file "
        "rewritten (VACUUM with secure_delete)",
        at=clock(),
        removed=removed,
        changed=changed,
        problems=problems,
    )


def _lists(image: EntryImage, rules: ErasureRules) -> bool:
    return rules.user_id in [int(u) for u in image.metadata.get("user_ids") or []]


def _without_user(image: EntryImage, user_id: int) -> EntryImage:
    metadata = dict(image.metadata)
    metadata["user_ids"] = [u for u in metadata.get("user_ids") or [] if int(u) != user_id]
    return EntryImage(image.value_json, metadata)


def scrub_archives(
    archives: Iterable[Path],
    keys: ArchiveKeys,
    rules: ErasureRules,
    *,
    request_id: str,
    clock: Callable[[], datetime] = utc_now,
) -> ScrubOutcome:
    """Rewrite every archive without the player; archives that cannot be opened are listed."""
    removed = changed = 0
    details: list[str] = []
    problems: list[str] = []
    for path in archives:
        if path.name.endswith(PARTIAL_SUFFIX):
            path.unlink(missing_ok=True)  # an interrupted backup's leftover
            details.append(f"{path.name}: interrupted backup file deleted")
            continue
        try:
            result = rewrite_archive(path, keys, rules.scrubbed, request_id=request_id, clock=clock)
        except (ArchiveError, ArchiveKeyError, OSError) as exc:
            ident = _archive_id(path)
            problems.append(f"archive {ident} ({path.name}) was not scrubbed: {exc}")
            continue
        removed += result.removed
        changed += result.changed
        if result.rewritten:
            assert result.manifest is not None
            details.append(
                f"archive {result.old_archive_id} rewritten as {result.manifest.archive_id}: "
                f"{result.removed} entries removed, {result.changed} changed"
            )
    return ScrubOutcome(
        where="backups",
        method="archives rewritten without the player's entries (same archive key, new "
        "archive id), old files replaced",
        at=clock(),
        removed=removed,
        changed=changed,
        details=details,
        problems=problems,
    )


def _archive_id(path: Path) -> str:
    try:
        return read_header(path).archive_id
    except (ArchiveError, OSError):
        return "?"


class ErasureHook(Protocol):
    """Another holder of player data plugs in here (the index, the team audit log)."""

    name: str

    async def erase(self, rules: ErasureRules, request_id: str) -> ScrubOutcome: ...


# Where the wiring helper must plug in before erasure is complete (docs/backups.md).
HOOKS_FOR_WIRING = (
    "index (issue 12): drop the player's rows (by ErasureRules.match on name and user ids) "
    "and rewrite its DuckDB file; return a ScrubOutcome(where='index')",
    "team audit log (issue 13): the report counts what it keeps (team.erasure); deleting the "
    "redactable items of the shared records naming the player is not done yet",
    "jobs: job-derived idempotency keys and job item tables must not hold key names in clear, "
    "or must be scrubbed here too",
    "order: Roblox deletes and metadata writes first (they add journal records), then the "
    "journal, cache, backups and hooks",
)


# ------------------------------------------------------------------------------- the report


class RobloxAction(BaseModel):
    kind: StoreKind
    datastore: str
    scope: str
    key: str
    action: Action
    at: datetime
    outcome: Literal["done", "skipped", "failed"]
    message: str = ""
    retained_until: datetime | None = None  # when Roblox's own copies expire

    @classmethod
    def done(cls, candidate: Candidate, at: datetime) -> RobloxAction:
        name = candidate.name
        keeps = name.kind is StoreKind.STANDARD  # Roblox keeps versions of standard entries only
        return cls(
            kind=name.kind,
            datastore=name.datastore,
            scope=name.scope,
            key=name.key,
            action=candidate.match.action,
            at=at,
            outcome="done",
            retained_until=at + ROBLOX_RETENTION if keeps else None,
        )


class ErasureReport(BaseModel):
    request_id: str
    user_id: int
    universe_id: int
    backend: Backend
    requested_at: datetime
    completed_at: datetime
    searched: list[str]
    not_searched: list[str]
    roblox: list[RobloxAction]
    local: list[ScrubOutcome]

    @property
    def retained(self) -> list[str]:
        """What Roblox still keeps, and until when."""
        out: list[str] = []
        deletes = [a for a in self.roblox if a.outcome == "done" and a.retained_until]
        for action in deletes:
            what = (
                "earlier versions and the deletion tombstone"
                if action.action is Action.DELETE_ENTRY
                else "earlier versions listing the user id"
            )
            out.append(
                f"{action.datastore}/{action.scope}/{action.key}: Roblox keeps {what} until "
                f"{action.retained_until:%Y-%m-%d %H:%M}Z (30 days), then purges them"
            )
        return out

    def as_json(self) -> dict[str, Any]:
        doc = self.model_dump(mode="json")
        doc["retained_by_roblox"] = self.retained
        return doc

    def text(self) -> str:
        lines = [
            f"Erasure report {self.request_id}",
            f"  player (user id)  {self.user_id}",
            f"  universe          {self.universe_id} ({self.backend.value})",
            f"  requested         {self.requested_at:%Y-%m-%d %H:%M:%S}Z",
            f"  completed         {self.completed_at:%Y-%m-%d %H:%M:%S}Z",
            "",
            "Searched:",
            *(f"  - {s}" for s in self.searched),
        ]
        if self.not_searched:
            lines += ["Not searched:", *(f"  - {s}" for s in self.not_searched)]
        lines += ["", "Removed from Open Cloud:"]
        if not self.roblox:
            lines.append("  (nothing found)")
        for action in self.roblox:
            verb = "deleted" if action.action is Action.DELETE_ENTRY else "user id removed from"
            where = f"{action.datastore}/{action.scope}/{action.key}"
            if action.kind is StoreKind.ORDERED:
                where = "ordered " + where
            line = f"  - {verb} {where} at {action.at:%Y-%m-%d %H:%M:%S}Z: {action.outcome}"
            lines.append(line + (f" ({action.message})" if action.message else ""))
            if action.action is Action.REMOVE_USER_ID:
                lines.append(
                    "    (shared entry: its value was kept; check it for the player's data)"
                )
        lines += ["", "Removed from this server:"]
        for scrub in self.local:
            lines.append(
                f"  - {scrub.where} at {scrub.at:%Y-%m-%d %H:%M:%S}Z: {scrub.removed} removed, "
                f"{scrub.changed} changed; {scrub.method}"
            )
            lines += [f"      {d}" for d in scrub.details]
            lines += [f"      NOT DONE: {p}" for p in scrub.problems]
        lines += ["", "Still kept by Roblox:"]
        lines += [f"  - {r}" for r in self.retained] or ["  (nothing)"]
        return "\n".join(lines)
