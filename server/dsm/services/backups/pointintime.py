"""Point in time: the newest state of each key at or before a moment T, from the best source.

Three sources know past states, each as *observations*: "this state held from `held_from` to
`held_until`" (a single instant when that is all that is known):

- the server's **journal**: the before-image of each write (held when the write was sent; a
  conditional write proves it was still current) and its after-image (at the write);
- its **archives**: each entry as read, which held from its revision's creation to the read;
- **Roblox's revision history**: the revision current at T (`@latest:T`), exact unless Roblox
  may have dropped a write in T's UTC hour (see below); back 30 days.

Two observations of the same revision id are one unbroken span: Open Cloud changes the
revision id on every write, so nothing was written between them. That is how a journal entry
and a later archive read, or a Roblox revision, prove a state held *through* T.

The choice for a key (`decide`, pure):

1. a span that contains T: **exact**, from the best source in it (journal, then archive, then
   Roblox); two different states that both claim T are a **conflict**, never resolved by guess;
2. else the span that ends last before T: **as of** that moment, with the gap to T (writes in
   the gap are not ruled out);
3. else **unknown**, with what each source knew. Unknown keys are listed, never filled in.

Roblox's hourly rule. Open Cloud keeps one version per key per UTC hour: a write is only lost
when a later write *in the same UTC hour* overwrites it. So if a kept revision exists after T
in T's own hour, writes between the start of that hour (or the revision current at T, if
later) and T may be lost, and Roblox's answer is only as of that moment. Otherwise the
revision current at T is exact. With no revision at or before T, the key did not exist at T
if T is within the 30 days Roblox keeps superseded versions (a current version is never
purged); older than that, Roblox cannot say.

Times are compared as given: the journal's are this server's clock, Roblox's are its own. Keep
the server's clock synchronised (NTP); a skew of seconds matters only for writes that close to T.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from shared_schema.entries import StoreKind

from ...opencloud import errors as oc
from ...opencloud.client import OpenCloudClient
from ...opencloud.models import DataStoreEntry, EntryRevision
from ...opencloud.wire import attributes_equal
from ...storage.journal import EntryImage, JournalRecord, Status, WriteJournal, content_sha256
from .archive import ArchiveReader, EntryName

# Superseded versions live 30 days; an hour of margin keeps "absent" claims away from the edge.
ROBLOX_RETENTION = timedelta(days=30)
ROBLOX_MARGIN = timedelta(hours=1)
_TICK = timedelta(microseconds=1)


class PitSource(StrEnum):
    JOURNAL = "journal"
    ARCHIVE = "archive"
    ROBLOX = "roblox"


_RANK = {PitSource.JOURNAL: 0, PitSource.ARCHIVE: 1, PitSource.ROBLOX: 2}


class Precision(StrEnum):
    EXACT = "exact"  # the state at T itself
    AS_OF = "as_of"  # the state at an earlier moment; writes between it and T are not ruled out
    UNKNOWN = "unknown"  # no source knows a state at or before T
    CONFLICT = "conflict"  # sources disagree about T; nothing is chosen


@dataclass(frozen=True)
class PitState:
    """An entry's state: absent, or a value with its metadata."""

    exists: bool
    value_json: str | None = None
    attributes: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    user_ids: tuple[int, ...] = ()

    def same_as(self, other: PitState) -> bool:
        if self.exists != other.exists:
            return False
        if not self.exists:
            return True
        return (
            content_sha256(self.value_json or "") == content_sha256(other.value_json or "")
            and attributes_equal(self.attributes, other.attributes)
            and self.user_ids == other.user_ids
        )


ABSENT = PitState(exists=False)


@dataclass(frozen=True)
class Observation:
    source: PitSource
    state: PitState
    held_from: datetime
    held_until: datetime
    revision_id: str | None
    evidence: str  # where it comes from, for the plan ("journal write #12, after")


@dataclass(frozen=True)
class PitDecision:
    name: EntryName
    at: datetime
    precision: Precision
    state: PitState | None  # None when unknown or in conflict
    source: PitSource | None  # the source the state is taken from
    known_at: datetime | None  # T when exact; the last moment the state is proven when as-of
    revision_id: str | None
    evidence: tuple[str, ...]  # every observation that supports (or, in a conflict, disputes) it
    reason: str

    @property
    def gap(self) -> timedelta | None:
        return None if self.known_at is None else self.at - self.known_at


@dataclass
class _Span:
    state: PitState
    held_from: datetime
    held_until: datetime
    revision_id: str | None
    observations: list[Observation]
    disputed: bool = False

    @property
    def best(self) -> Observation:
        return min(self.observations, key=lambda o: _RANK[o.source])


def _spans(observations: Iterable[Observation]) -> list[_Span]:
    """Observations of one revision id join into one span; the others stay alone."""
    by_revision: dict[str, _Span] = {}
    spans: list[_Span] = []
    for obs in observations:
        span = by_revision.get(obs.revision_id) if obs.revision_id else None
        if span is None:
            span = _Span(obs.state, obs.held_from, obs.held_until, obs.revision_id, [obs])
            spans.append(span)
            if obs.revision_id:
                by_revision[obs.revision_id] = span
            continue
        span.observations.append(obs)
        span.held_from = min(span.held_from, obs.held_from)
        span.held_until = max(span.held_until, obs.held_until)
        if not span.state.same_as(obs.state):
            span.disputed = True  # one revision, two contents: a source is wrong
    for span in spans:
        span.state = span.best.state
    return spans


def decide(
    name: EntryName, at: datetime, observations: Sequence[Observation], notes: Sequence[str] = ()
) -> PitDecision:
    """The state of `name` at `at` (see the module docs); `notes` explain an unknown."""
    spans = _spans(observations)
    containing = [s for s in spans if s.held_from <= at <= s.held_until]
    if containing:
        return _choose(name, at, containing, Precision.EXACT, at)
    before = [s for s in spans if s.held_until <= at]
    if before:
        last = max(s.held_until for s in before)
        return _choose(name, at, [s for s in before if s.held_until == last], Precision.AS_OF, last)
    reason = "no source knows a state of this key at or before that time"
    if notes:
        reason += ": " + "; ".join(notes)
    return PitDecision(name, at, Precision.UNKNOWN, None, None, None, None, (), reason)


def _choose(
    name: EntryName, at: datetime, spans: list[_Span], precision: Precision, known_at: datetime
) -> PitDecision:
    evidence = tuple(o.evidence for s in spans for o in s.observations)
    first = spans[0]
    if any(s.disputed for s in spans) or any(not s.state.same_as(first.state) for s in spans):
        return PitDecision(
            name,
            at,
            Precision.CONFLICT,
            None,
            None,
            None,
            None,
            evidence,
            "the sources disagree about this key's state; check them and restore it by hand",
        )
    best = min((s.best for s in spans), key=lambda o: _RANK[o.source])
    revision = next((s.revision_id for s in spans if s.revision_id), None)
    if precision is Precision.EXACT:
        reason = f"exact: {best.evidence}"
    else:
        reason = (
            f"as of {known_at.isoformat()} ({_duration(at - known_at)} before the requested "
            f"time): {best.evidence}; later writes are not ruled out"
        )
    return PitDecision(
        name, at, precision, best.state, best.source, known_at, revision, evidence, reason
    )


def _duration(gap: timedelta) -> str:
    seconds = int(gap.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


# ------------------------------------------------------------------------------- the sources


def _utc(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


def _image_state(image: EntryImage | None) -> PitState:
    if image is None:
        return ABSENT
    meta = image.metadata
    return PitState(
        True,
        image.value_json,
        meta.get("attributes") or None,
        tuple(int(u) for u in meta.get("user_ids") or ()),
    )


class JournalObservations:
    """Past states from the write journal: every applied write's before- and after-image."""

    def __init__(self, journal: WriteJournal) -> None:
        self._journal = journal

    def records(self, universe_id: int, name: EntryName) -> list[JournalRecord]:
        found: list[JournalRecord] = []
        before_id: int | None = None
        while True:
            page = self._journal.list(
                universe=universe_id,
                datastore=name.datastore,
                key=name.key,
                limit=1000,
                before_id=before_id,
            )
            found += [
                r
                for r in page
                if r.scope == name.scope
                and r.store_kind == name.kind.value
                and r.status is Status.APPLIED
            ]
            if len(page) < 1000:
                return found
            before_id = page[-1].id

    def observe(self, universe_id: int, name: EntryName) -> list[Observation]:
        out: list[Observation] = []
        for record in self.records(universe_id, name):
            detail = self._journal.get(record.id)
            if detail.problems:
                continue  # an image that cannot be trusted is no evidence
            sent = _utc(record.at)
            if not record.before_exists or detail.before is not None:
                out.append(
                    Observation(
                        PitSource.JOURNAL,
                        _image_state(detail.before),
                        sent,
                        sent,
                        record.base_revision,
                        f"journal write #{record.id} at {sent.isoformat()} (the entry before it)",
                    )
                )
            if record.after_exists is None or (record.after_exists and detail.after is None):
                continue
            written = _written_at(detail.after, record)
            out.append(
                Observation(
                    PitSource.JOURNAL,
                    _image_state(detail.after),
                    written,
                    written,
                    record.after_revision if record.after_exists else None,
                    f"journal write #{record.id} at {written.isoformat()} ({record.operation})",
                )
            )
        return out


def _written_at(after: EntryImage | None, record: JournalRecord) -> datetime:
    """When the write's revision was made: Roblox's own time for it when the image has it."""
    text = after.metadata.get("updated_at") if after is not None else None
    if isinstance(text, str):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    return _utc(record.outcome_at if record.outcome_at is not None else record.at)


class ArchiveObservations:
    """Past states from backup archives: each archived entry held from its revision to its read.

    An archive that lacks a key says nothing about it (its listing ran over a span of time).
    """

    def __init__(self, readers: Sequence[ArchiveReader]) -> None:
        self._readers = readers

    def observe(self, names: Collection[EntryName]) -> dict[EntryName, list[Observation]]:
        wanted = set(names)
        out: dict[EntryName, list[Observation]] = {name: [] for name in wanted}
        for reader in self._readers:
            archive_id = reader.header.archive_id
            for item in reader.directory():
                if item.name not in wanted:
                    continue
                entry = reader.read(item)
                standard = entry.name.kind is StoreKind.STANDARD
                held_from = entry.updated_at if standard and entry.updated_at else entry.read_at
                out[item.name].append(
                    Observation(
                        PitSource.ARCHIVE,
                        PitState(True, entry.value_json, entry.attributes, entry.user_ids),
                        min(held_from, entry.read_at),
                        entry.read_at,
                        entry.revision_id if standard else None,
                        f"archive {archive_id} read at {entry.read_at.isoformat()}",
                    )
                )
        return out


class RevisionReader(Protocol):
    """Fresh reads of Roblox's revision history (never the cache: a past state is not cached)."""

    async def entry_at(
        self, universe_id: int, name: EntryName, at: datetime
    ) -> DataStoreEntry | None:
        """The revision current at `at` (`@latest:<at>`), a tombstone included; None if none."""
        ...

    async def revisions(
        self, universe_id: int, name: EntryName, start: datetime, end: datetime
    ) -> list[EntryRevision]:
        """Revisions created within [start, end] (one page is enough: any one answers)."""
        ...


Call = Callable[[int, Callable[[OpenCloudClient], Awaitable[Any]]], Awaitable[Any]]


class UpstreamRevisions:
    """RevisionReader over `Upstream.call` (the server's one way to make a fresh call)."""

    def __init__(self, call: Call) -> None:
        self._call = call

    async def entry_at(
        self, universe_id: int, name: EntryName, at: datetime
    ) -> DataStoreEntry | None:
        async def get(c: OpenCloudClient) -> DataStoreEntry | None:
            try:
                return await c.get_entry(
                    universe_id, name.datastore, name.key, scope=name.scope, at=at
                )
            except oc.NotFound:
                return None

        entry: DataStoreEntry | None = await self._call(universe_id, get)
        return entry

    async def revisions(
        self, universe_id: int, name: EntryName, start: datetime, end: datetime
    ) -> list[EntryRevision]:
        async def page(c: OpenCloudClient) -> list[EntryRevision]:
            try:
                found = await c.list_revisions_page(
                    universe_id,
                    name.datastore,
                    name.key,
                    scope=name.scope,
                    start_time=start,
                    end_time=end,
                    page_size=10,
                )
            except oc.NotFound:
                return []
            return found.items

        items: list[EntryRevision] = await self._call(universe_id, page)
        return items


def _hour_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


class RobloxObservations:
    """Past states from Roblox's revision history (standard data stores only)."""

    def __init__(
        self, reader: RevisionReader, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._reader = reader
        self._now = now

    async def observe(
        self, universe_id: int, name: EntryName, at: datetime
    ) -> tuple[list[Observation], str | None]:
        """The observations, and a note on what Roblox could not say."""
        if name.kind is not StoreKind.STANDARD:
            return [], "Roblox keeps no history of ordered data stores"
        hour = _hour_start(at)
        later = [
            r
            for r in await self._reader.revisions(
                universe_id, name, at + _TICK, hour + timedelta(hours=1) - _TICK
            )
            if r.revision_create_time is not None and r.revision_create_time > at
        ]
        current = await self._reader.entry_at(universe_id, name, at)
        if current is not None and current.revision_create_time is not None:
            created = current.revision_create_time
            deleted = current.state == "DELETED" or current.value_json is None
            state = (
                ABSENT
                if deleted
                else PitState(True, current.value_json, current.attributes, tuple(current.user_ids))
            )
            until = at if not later else max(created, hour - _TICK)
            what = f"Roblox revision {current.revision_id} created {created.isoformat()}"
            if later:
                what += f" (a later write in the same UTC hour may have replaced writes before {at.isoformat()})"
            return [
                Observation(PitSource.ROBLOX, state, created, until, current.revision_id, what)
            ], None
        window = self._now() - ROBLOX_RETENTION + ROBLOX_MARGIN
        if at < window:
            return [], (
                f"Roblox's history reaches back 30 days (to {window.isoformat()}), not to that time"
            )
        until = at if not later else hour - _TICK
        if until < window:
            return [], "Roblox may have dropped the write in that hour"
        what = "Roblox has no revision of this key at or before that time (history back to "
        what += f"{window.isoformat()})"
        return [Observation(PitSource.ROBLOX, ABSENT, window, until, None, what)], None


# ------------------------------------------------------------------------------------ a plan


@dataclass(frozen=True)
class PitPlan:
    at: datetime
    decisions: list[PitDecision]

    @property
    def unknown(self) -> list[PitDecision]:
        return [d for d in self.decisions if d.precision is Precision.UNKNOWN]

    @property
    def conflicts(self) -> list[PitDecision]:
        return [d for d in self.decisions if d.precision is Precision.CONFLICT]

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "keys": [
                {
                    "kind": d.name.kind.value,
                    "datastore": d.name.datastore,
                    "scope": d.name.scope,
                    "key": d.name.key,
                    "precision": d.precision.value,
                    "source": d.source.value if d.source else None,
                    "known_at": d.known_at.isoformat() if d.known_at else None,
                    "exists": d.state.exists if d.state else None,
                    "revision": d.revision_id,
                    "reason": d.reason,
                }
                for d in self.decisions
            ],
        }

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for d in self.decisions:
            label = d.precision.value + (f" from {d.source.value}" if d.source else "")
            counts[label] = counts.get(label, 0) + 1
        return ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))


def _coverage(source: str, none: str, found: Sequence[Observation]) -> str:
    if not found:
        return f"{source} {none}"
    earliest = min(o.held_from for o in found)
    return f"{source}: nothing about it before {earliest.isoformat()}"


async def plan_point_in_time(
    universe_id: int,
    names: Sequence[EntryName],
    at: datetime,
    *,
    journal: JournalObservations | None = None,
    archives: ArchiveObservations | None = None,
    roblox: RobloxObservations | None = None,
) -> PitPlan:
    """Gather every source's observations for each key and decide its state at `at`."""
    if at.tzinfo is None:
        raise ValueError("the point in time must be timezone-aware")
    archived = archives.observe(names) if archives is not None else {}
    decisions: list[PitDecision] = []
    for name in names:
        observations: list[Observation] = []
        notes: list[str] = []
        if journal is not None:
            found = journal.observe(universe_id, name)
            observations += found
            notes.append(_coverage("the journal", "has no write of it", found))
        observations += archived.get(name, [])
        if archives is not None:
            notes.append(_coverage("the archives", "do not hold it", archived.get(name, [])))
        if roblox is not None:
            found, note = await roblox.observe(universe_id, name, at)
            observations += found
            if note:
                notes.append(note)
        decisions.append(decide(name, at, observations, notes))
    return PitPlan(at, decisions)
