"""The shared audit log of one universe: appending, keeping a local copy, verifying.

Appends are the team's own records, not game data, so they do not go through the write journal
(there is nothing to undo, and journaling them would audit the audit). They are still safe the
same way: every append is a create-only write of the next record key, so two teammates' servers
appending at once never overwrite each other: the loser reads the winner's record, links after
it and tries the next key. They go through the same Open Cloud client and budget as every call.

Erasing a player rewrites existing records in place (`redact`): only their `redactable` part
changes, each rewrite is conditional on the etag read (a teammate's concurrent redaction is
re-read and redone; appends write other keys), and the chain and its hashes stay as they were.
A teammate's server re-reads a record it already copied only when it verifies the chain
(`verify` adopts the redacted text of a record whose hash it already holds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared_schema.entries import StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.team import (
    ActivityItem,
    ActivityPage,
    ActivityQuery,
    AuditHead,
    AuditProblem,
    AuditVerifyReport,
)

from ...opencloud.models import DataStoreEntry
from ..errors import ServiceError
from ..provenance import fresh
from ..upstream import Upstream
from .chain import (
    GENESIS,
    MAX_EVENTS_PER_RECORD,
    AuditEvent,
    ChainFormatError,
    ItemPicker,
    Record,
    build_record,
    parse_record,
    person_from,
    redact_record,
    redacted_events,
    verify,
)
from .names import AUDIT_STORE, SCOPE, audit_key, audit_seq
from .store import Head, TeamStore

log = logging.getLogger("dsm.team.audit")

# Appends are batched: one record carries every event of a short window.
FLUSH_SECONDS = 2.0
# Conditional rewrites of one record raced by teammates' rewrites before giving up.
REDACT_ATTEMPTS = 5


@dataclass
class Redaction:
    """What a redaction did: in the shared data store, this server's copy, the pending events."""

    shared_records: int = 0
    shared_items: int = 0
    local_records: int = 0
    local_items: int = 0
    pending_items: int = 0
    shared_left: int = 0  # records that may still hold items in the shared store
    problem: str | None = None  # why the shared store was not (fully) rewritten


def redact_copy(
    store: TeamStore, universe_id: int, picks: ItemPicker
) -> tuple[list[int], int, int]:
    """Rewrite this server's copy of a universe's log: (seqs of the records that hold or held
    redacted items, so the shared ones are checked too; records rewritten now; items removed)."""
    hashes = store.kept_hashes(universe_id)
    seqs: list[int] = []
    records = items = 0
    for seq, text in list(store.records(universe_id)):
        found = redact_record(text, picks)
        if found is not None:
            store.keep_record(universe_id, seq, hashes[seq], found[0])
            items += found[1]
            records += 1
            seqs.append(seq)
            continue
        try:  # redacted here before (maybe while the shared store could not be reached)
            if redacted_events(parse_record(text)):
                seqs.append(seq)
        except ChainFormatError:
            continue
    return sorted(seqs), records, items


class AuditLog:
    def __init__(
        self,
        universe_id: int,
        upstream: Upstream,
        store: TeamStore,
        server_id: str,
        *,
        on_appended: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.universe_id = universe_id
        self._upstream = upstream
        self._store = store
        self._server_id = server_id
        self.on_appended = on_appended
        # Called when the newest record known here changes (appended here or read from a
        # teammate's): the Activity view reloads on the team.status event it leads to.
        self.on_head: Callable[[], None] | None = None
        self._clock = clock
        self._pending: list[AuditEvent] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.announced_seq = 0
        self.synced_at: datetime | None = None
        self.problem: str | None = None

    # ---------------------------------------------------------------- appending

    def add(self, event: AuditEvent) -> None:
        self._pending.append(event)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def pending_events(self) -> list[AuditEvent]:
        return list(self._pending)

    def announced(self, seq: int) -> None:
        """A teammate's server says it appended record `seq`. Nothing is read now: records are
        read when the log is viewed or verified (and before an append), so a busy team does
        not pay one read per record per teammate."""
        if seq > self.announced_seq:
            self.announced_seq = seq
            if self.on_head is not None:
                self.on_head()

    async def run(self) -> None:
        """Append what is pending every FLUSH_SECONDS (cancel to stop)."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_SECONDS)
            self._wake.clear()
            if self._pending and not await self._attempt(self.flush):
                self._wake.set()
                await asyncio.sleep(10.0)

    async def _attempt(self, step: Callable[[], Awaitable[int]]) -> bool:
        try:
            await step()
        except ServiceError as exc:
            self.problem = exc.message
            log.warning("audit log of universe %s: %s", self.universe_id, exc.message)
            return False
        return True

    async def flush(self) -> int:
        """Append every pending event (in records of up to MAX_EVENTS_PER_RECORD); returns how
        many records were written."""
        written = 0
        async with self._lock:
            while self._pending:
                batch = self._pending[:MAX_EVENTS_PER_RECORD]
                await self._append(batch)
                del self._pending[: len(batch)]
                written += 1
        return written

    async def _append(self, events: list[AuditEvent]) -> None:
        head = await self._tail()
        while True:
            seq = head.seq + 1
            text, digest = build_record(
                seq, head.hash, int(self._clock() * 1000), self._server_id, events
            )
            try:
                await self._create(seq, text)
            except ServiceError as exc:
                if exc.code not in (ErrorCode.ALREADY_EXISTS, ErrorCode.CONFLICT):
                    raise
                # A teammate appended this one first: link after theirs.
                head = await self._adopt(seq, head)
                continue
            self._keep(seq, digest, text)
            self.problem = None
            if self.on_appended is not None:
                self.on_appended(seq)
            if self.on_head is not None:
                self.on_head()
            return

    async def _tail(self) -> Head:
        """The newest record known, to link the next one after. A record a teammate announced
        on the change feed is read directly (one read), so a busy team does not collide on
        every key in between; the local copy fills such gaps when the log is viewed."""
        head = self._store.head(self.universe_id)
        if head is None:
            await self._sync_locked()
            head = self._store.head(self.universe_id)
        head = head or Head(0, GENESIS)
        if self.announced_seq > head.seq:
            text = await self._read(self.announced_seq)
            if text is not None:
                try:
                    record = parse_record(text)
                except ChainFormatError:
                    return head
                if record.seq == self.announced_seq and not record.problems:
                    self._keep(record.seq, record.hash, text)
                    head = Head(record.seq, record.hash)
        return head

    async def _adopt(self, seq: int, head: Head) -> Head:
        text = await self._read(seq)
        if text is None:
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"Audit record #{seq} exists but cannot be read; run `dsm audit verify`.",
            )
        record = self._parse_linked(seq, text, head)
        self._keep(seq, record.hash, text)
        return Head(seq, record.hash)

    # ---------------------------------------------------------------- redacting

    async def redact(
        self, picks: ItemPicker, pending: Callable[[AuditEvent], AuditEvent]
    ) -> Redaction:
        """Take a player out: `pending` rewrites each event waiting to be appended; `picks`
        chooses the redactable items to null in this server's copy and in the shared store."""
        async with self._lock:
            result = Redaction()
            rewritten = [pending(event) for event in self._pending]
            result.pending_items = sum(
                a != b for a, b in zip(rewritten, self._pending, strict=True)
            )
            self._pending[:] = rewritten
            try:
                await self._sync_locked()
            except ServiceError as exc:
                result.problem = exc.message
            seqs, result.local_records, result.local_items = redact_copy(
                self._store, self.universe_id, picks
            )
            hashes = self._store.kept_hashes(self.universe_id)
            for index, seq in enumerate(seqs):
                if result.problem is not None:
                    result.shared_left = len(seqs) - index
                    break
                try:
                    items = await self._redact_shared(seq, hashes[seq], picks)
                except ServiceError as exc:
                    result.problem = exc.message
                    result.shared_left = len(seqs) - index
                    break
                result.shared_items += items
                result.shared_records += 1 if items else 0
            return result

    async def _redact_shared(self, seq: int, kept_hash: str, picks: ItemPicker) -> int:
        """Null the picked items of record `seq` in the shared store, conditional on the etag
        read; returns how many were removed (0: none there, a teammate took them out)."""
        for _ in range(REDACT_ATTEMPTS):
            entry = await self._read_entry(audit_key(seq))
            if entry is None:
                raise self._broken(seq, "is missing (it was removed)")
            value = entry.value_json or ""
            try:
                record = parse_record(value)
            except ChainFormatError as exc:
                raise self._broken(seq, f"is unreadable ({exc})") from None
            if record.seq != seq or record.problems or record.hash != kept_hash:
                raise self._broken(seq, "differs from this server's copy (it was rewritten)")
            found = redact_record(value, picks)
            if found is None:
                return 0
            text, items = found
            try:
                await self._rewrite(seq, text, entry)
            except ServiceError as exc:
                if exc.code is ErrorCode.CONFLICT:
                    continue  # a teammate rewrote it meanwhile: read it and redo
                raise
            self._store.keep_record(self.universe_id, seq, kept_hash, text)
            return items
        raise ServiceError(
            ErrorCode.CONFLICT,
            f"Audit record #{seq} kept changing while it was being redacted; run the erasure "
            "again.",
        )

    # ---------------------------------------------------------------- local copy

    async def sync(self) -> int:
        """Read the records teammates appended since the local copy; returns how many."""
        async with self._lock:
            return await self._sync_locked()

    async def _sync_locked(self) -> int:
        kept = self._store.kept_hashes(self.universe_id)
        last_kept = max(kept, default=0)
        previous = Head(0, GENESIS)
        read = 0
        seq = 1
        while True:
            if seq in kept:
                previous = Head(seq, kept[seq])
                seq += 1
                continue
            text = await self._read(seq)
            if text is None:
                if seq < last_kept:
                    raise self._broken(seq, "is missing (it was removed)")
                break
            record = self._parse_linked(seq, text, previous)
            self._keep(seq, record.hash, text)
            previous = Head(seq, record.hash)
            read += 1
            seq += 1
        self.synced_at = datetime.now(UTC)
        if read and self.on_head is not None:
            self.on_head()
        return read

    def _parse_linked(self, seq: int, text: str, previous: Head) -> Record:
        try:
            record = parse_record(text)
        except ChainFormatError as exc:
            raise self._broken(seq, f"is unreadable ({exc})") from None
        if record.seq != seq or record.problems:
            raise self._broken(seq, "; ".join(record.problems) or "holds another record")
        if record.prev != previous.hash:
            raise self._broken(seq, "does not follow the record before it")
        return record

    def _broken(self, seq: int, what: str) -> ServiceError:
        self.problem = (
            f"Audit record #{seq} {what}. The shared audit log may have been tampered with; run "
            f"`dsm audit verify --universe {self.universe_id}`."
        )
        return ServiceError(ErrorCode.CONFLICT, self.problem)

    def _keep(self, seq: int, digest: str, text: str) -> None:
        self._store.keep_record(self.universe_id, seq, digest, text)
        self._store.note_head(self.universe_id, Head(seq, digest))

    # ---------------------------------------------------------------- reading

    def head(self) -> AuditHead | None:
        head = self._store.head(self.universe_id)
        return None if head is None else AuditHead(seq=head.seq, hash=head.hash)

    def activity(self, query: ActivityQuery) -> ActivityPage:
        """The local copy as activity items, newest first, filtered; reads no Open Cloud."""
        items: list[ActivityItem] = []
        next_before: int | None = None
        for seq, text in self._store.records(self.universe_id, before=query.before):
            try:
                record = parse_record(text)
            except ChainFormatError:
                continue
            matching = [i for i in _items(record) if _matches(i, query)]
            items.extend(reversed(matching))
            if len(items) >= query.limit:
                next_before = seq if seq > 1 else None
                break
        backend = self._upstream.binding(self.universe_id).backend
        return ActivityPage(
            universe_id=self.universe_id,
            items=items,
            next_before=next_before,
            records=self._store.kept_count(self.universe_id),
            head=self.head(),
            synced_at=self.synced_at,
            source=fresh(backend, self.synced_at),
        )

    async def verify(self) -> AuditVerifyReport:
        """Read the whole chain from Open Cloud and check it against the newest head seen."""
        async with self._lock:
            keys: list[str] = []
            token: str | None = None
            while True:
                page = await self._list_page(token)
                keys.extend(item.key for item in page.items)
                token = page.next_page_token
                if not token:
                    break
            stored = [(key, await self._read_key(key)) for key in sorted(keys)]
            known = self._store.head(self.universe_id)
            verdict = verify(stored, None if known is None else (known.seq, known.hash))
            if verdict.ok and verdict.head is not None:
                self._store.note_head(self.universe_id, Head(*verdict.head))
            if verdict.ok:
                self._adopt_redactions(stored)
        backend = self._upstream.binding(self.universe_id).backend
        return AuditVerifyReport(
            universe_id=self.universe_id,
            ok=verdict.ok,
            records=verdict.records,
            redacted_events=verdict.redacted,
            head=None
            if verdict.head is None
            else AuditHead(seq=verdict.head[0], hash=verdict.head[1]),
            known_head=None if known is None else AuditHead(seq=known.seq, hash=known.hash),
            problems=[AuditProblem(seq=s, problem=p) for s, p in verdict.problems],
            checked_at=datetime.now(UTC),
            source=fresh(backend),
        )

    def _adopt_redactions(self, stored: list[tuple[str, str | None]]) -> None:
        """Drop from this server's copy the items a teammate's erasure nulled in the shared
        records (same hash, so the shared record differs only by its nulled items)."""
        hashes = self._store.kept_hashes(self.universe_id)
        local = dict(self._store.records(self.universe_id))
        for key, text in stored:
            seq = audit_seq(key)
            if seq is None or text is None or seq not in local or text == local[seq]:
                continue
            try:
                shared = parse_record(text)
            except ChainFormatError:
                continue
            if shared.hash != hashes.get(seq):
                continue
            found = redact_record(local[seq], _not_in(shared.redactable))
            if found is not None:
                self._store.keep_record(self.universe_id, seq, shared.hash, found[0])

    # ---------------------------------------------------------------- Open Cloud

    async def _create(self, seq: int, text: str) -> None:
        await self._upstream.call(
            self.universe_id,
            lambda c: c.create_entry(
                self.universe_id, AUDIT_STORE, audit_key(seq), text, scope=SCOPE
            ),
        )

    async def _rewrite(self, seq: int, text: str, read: DataStoreEntry) -> None:
        """Replace record `seq`, only if it is still at the etag read."""
        await self._upstream.call(self.universe_id,
            lambda c: c.update_entry(
                self.universe_id, AUDIT_STORE, audit_key(seq), text,
                attributes=read.attributes, user_ids=read.user_ids, etag=read.etag, scope=SCOPE,
            )
        )  # fmt: skip

    async def _list_page(self, token: str | None) -> Any:
        return await self._upstream.call(
            self.universe_id,
            lambda c: c.list_entries_page(
                self.universe_id, AUDIT_STORE, scope=SCOPE, prefix="r", page_token=token
            ),
        )

    async def _read(self, seq: int) -> str | None:
        return await self._read_key(audit_key(seq))

    async def _read_key(self, key: str) -> str | None:
        entry = await self._read_entry(key)
        return None if entry is None else entry.value_json

    async def _read_entry(self, key: str) -> DataStoreEntry | None:
        try:
            entry = await self._upstream.call(
                self.universe_id,
                lambda c: c.get_entry(self.universe_id, AUDIT_STORE, key, scope=SCOPE),
            )
        except ServiceError as exc:
            if exc.code is ErrorCode.NOT_FOUND:
                return None
            raise
        return entry if entry.state != "DELETED" and entry.value_json is not None else None


def _not_in(redactable: list[Any]) -> ItemPicker:
    """Picks the items a teammate's redaction took out of a shared record."""
    remaining = [item for item in redactable if isinstance(item, dict)]
    return lambda _event, item: item not in remaining


def _items(record: Record) -> list[ActivityItem]:
    at = datetime.fromtimestamp(int(record.chained.get("at", 0)) / 1000, UTC)
    server = str(record.chained.get("server", ""))
    items = []
    for index, event in enumerate(record.events):
        item = record.redactable[index] if index < len(record.redactable) else None
        key = item.get("key") if isinstance(item, dict) else None
        ids = item.get("user_ids") if isinstance(item, dict) else None
        store_kind = event.get("store_kind")
        journal_id = event.get("journal_id")
        items.append(
            ActivityItem(
                seq=record.seq,
                index=index,
                at=at,
                person=person_from(event.get("by")),
                server_id=server,
                kind=str(event.get("kind", "write")),
                operation=str(event.get("op", "")),
                store_kind=StoreKind(store_kind) if store_kind in ("standard", "ordered") else None,
                datastore=_text(event.get("datastore")),
                scope=_text(event.get("scope")),
                key=key if isinstance(key, str) else None,
                user_ids=[i for i in ids if isinstance(i, int) and i >= 0]
                if isinstance(ids, list)
                else None,
                redacted="subject" in event and not isinstance(item, dict),
                status=_text(event.get("status")),
                revision=_text(event.get("revision")),
                journal_id=journal_id if isinstance(journal_id, int) and journal_id > 0 else None,
                job_id=_text(event.get("job_id")),
                summary=_text(event.get("summary")),
            )
        )
    return items


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _matches(item: ActivityItem, query: ActivityQuery) -> bool:
    if query.person and query.person.lower() not in item.person.label.lower():
        return False
    if query.datastore and item.datastore != query.datastore:
        return False
    if query.key and item.key != query.key:
        return False
    return not (query.operation and item.operation != query.operation)
