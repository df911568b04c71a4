"""The write journal: a durable record of every write the server makes to Open Cloud.

Each write is journaled in two steps around the remote call. `record_intent` is committed (WAL,
synchronous=FULL) *before* the request is sent, with the before-image the user saw; the outcome
is recorded after the response. So after a crash every write is either finished in the journal
or left as INTENT/UNKNOWN for `pending()`, to be reconciled by re-reading the key, never by
repeating the write. Roblox keeps at most one version per key per hour, so the sealed
before-images here are what makes undo possible at all.

Images are sealed with AES-GCM; the associated data names the record id, the entry and the image
role, so an image copied onto another record or key does not open. Value hashes stay in clear
so audit lists and reconciliation need no decryption.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Self

from dsm.storage.crypto import IntegrityError, RecordCipher, slot
from dsm.storage.sqlite import (
    RecordFormatError,
    SqliteFile,
    StorageFileError,
    is_disk_error,
    pack,
    rewrite_securely,
    unpack,
)

log = logging.getLogger(__name__)

JOURNAL_FILENAME = "journal.sqlite3"
# The key a record is left with once a right-to-erasure request removed its entry's data.
ERASED_KEY = "(erased)"
SCHEMA_VERSION = 3
MAX_LIST_LIMIT = 1000

# What a write did; the store it went to is the separate `store_kind` column.
OPERATIONS = frozenset({"create", "update", "delete", "increment", "revert", "undo"})
STORE_KINDS = frozenset({"standard", "ordered"})

SCHEMA = """
CREATE TABLE IF NOT EXISTS writes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- AUTOINCREMENT: ids are never reused
    at_ms INTEGER NOT NULL,
    store_kind TEXT NOT NULL DEFAULT 'standard' CHECK (store_kind IN ('standard', 'ordered')),
    actor_id TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    universe TEXT NOT NULL,
    datastore TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    operation TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    job_id TEXT,
    undoes INTEGER REFERENCES writes (id),
    status TEXT NOT NULL CHECK (status IN ('INTENT', 'APPLIED', 'FAILED', 'UNKNOWN')),
    reason TEXT,
    outcome_ms INTEGER,
    base_revision TEXT,
    before_exists INTEGER NOT NULL,
    before_sha256 TEXT,
    before_blob BLOB,
    intended_sha256 TEXT,
    delta INTEGER,                          -- an increment's amount: undo adds -delta
    after_exists INTEGER,
    after_sha256 TEXT,
    after_revision TEXT,
    after_blob BLOB,
    actor_user_id INTEGER,                  -- the Studio user the plugin announced (a label)
    actor_user_name TEXT
);
CREATE INDEX IF NOT EXISTS writes_entry ON writes (universe, datastore, key);
CREATE INDEX IF NOT EXISTS writes_actor ON writes (actor_id);
CREATE INDEX IF NOT EXISTS writes_job ON writes (job_id);
CREATE INDEX IF NOT EXISTS writes_undoes ON writes (undoes);
CREATE INDEX IF NOT EXISTS writes_open ON writes (status) WHERE status IN ('INTENT', 'UNKNOWN');
"""

# Version 1 spelled ordered writes "ordered-<operation>"; version 2 names the store kind.
MIGRATIONS = {
    1: """
ALTER TABLE writes ADD COLUMN store_kind TEXT NOT NULL DEFAULT 'standard'
    CHECK (store_kind IN ('standard', 'ordered'));
ALTER TABLE writes ADD COLUMN delta INTEGER;
UPDATE writes SET store_kind = 'ordered', operation = substr(operation, 9)
    WHERE operation LIKE 'ordered-%';
""",
    # Version 3 names the Studio user behind each write (docs/team.md, "Identity").
    2: """
ALTER TABLE writes ADD COLUMN actor_user_id INTEGER;
ALTER TABLE writes ADD COLUMN actor_user_name TEXT;
""",
}

_COLUMNS = (
    "id, at_ms, actor_id, actor_name, universe, datastore, scope, key, operation,"
    " idempotency_key, job_id, undoes, status, reason, outcome_ms, base_revision,"
    " before_exists, before_sha256, intended_sha256, after_exists, after_sha256, after_revision,"
    " store_kind, delta, actor_user_id, actor_user_name"
)


class Status(StrEnum):
    INTENT = "INTENT"
    APPLIED = "APPLIED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"


class JournalError(Exception):
    """The journal cannot do what was asked; the message says why in the user's terms."""


class JournalUnavailable(JournalError):
    """The journal file cannot be opened, read or written."""


class UnknownRecord(JournalError):
    pass


class InvalidTransition(JournalError):
    pass


class UndoNotPossible(JournalError):
    pass


class NothingToUndo(UndoNotPossible):
    """The write left nothing behind to undo (it failed, or deleted a key that did not exist)."""


class AlreadyUndone(UndoNotPossible):
    """A later write (an earlier rollback, or an undo by hand) already undid it."""


class UndoUnsettled(UndoNotPossible):
    """An undo of it was sent but its outcome is not known yet."""


class IdempotencyConflict(JournalError):
    """The idempotency key was already used; `existing` is the first write made with it."""

    def __init__(self, existing: JournalRecord) -> None:
        super().__init__(
            f"idempotency key already used by write #{existing.id} ({existing.status})"
        )
        self.existing = existing


def value_sha256(value_json: str) -> str:
    """The hash of a value's exact text (images are checked against it)."""
    return hashlib.sha256(value_json.encode("utf-8")).hexdigest()


def content_sha256(value_json: str) -> str:
    """The hash of a JSON value's content, whatever its spelling.

    Open Cloud stores compact JSON, so the text a write sent and the text a re-read returns
    differ when the request was not compact; this hash is the same for both. Text that is not
    JSON is hashed as it is.
    """
    try:
        parsed = json.loads(value_json, parse_float=_exact_number)
    except ValueError:
        return value_sha256(value_json)
    canonical = json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return value_sha256(canonical)


def _exact_number(text: str) -> int | float:
    # 1.0 and 1 are the same JSON number; servers may re-encode one as the other.
    number = float(text)
    return int(number) if number.is_integer() and abs(number) < 2**63 else number


@dataclass(frozen=True)
class EntryImage:
    """An entry as it was (before) or became (after): raw JSON value text plus its metadata."""

    value_json: str
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @cached_property
    def sha256(self) -> str:
        return value_sha256(self.value_json)

    @cached_property
    def content_sha256(self) -> str:
        return content_sha256(self.value_json)


@dataclass(frozen=True)
class JournalRecord:
    """One journaled write, without its images (nothing here needed decryption)."""

    id: int
    at: float
    actor_id: str
    actor_name: str
    universe: str
    datastore: str
    scope: str
    key: str
    operation: str
    idempotency_key: str | None
    job_id: str | None
    undoes: int | None
    status: Status
    reason: str | None
    outcome_at: float | None
    base_revision: str | None
    before_exists: bool
    before_sha256: str | None
    intended_sha256: str | None
    after_exists: bool | None  # None until the outcome is known
    after_sha256: str | None
    after_revision: str | None
    store_kind: str = "standard"  # standard | ordered
    delta: int | None = None  # an increment's amount
    # The Studio user behind the write, as their plugin announced it (None: unknown).
    actor_user_id: int | None = None
    actor_user_name: str | None = None


@dataclass(frozen=True)
class JournalDetail:
    record: JournalRecord
    before: EntryImage | None
    after: EntryImage | None
    # Images that exist but cannot be read (tampered, moved, damaged); empty when all is well.
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class JournalProblem:
    record_id: int
    problem: str


@dataclass(frozen=True)
class UndoPlan:
    """What to write to put an entry back as it was before journaled write `record_id`.

    The undo must be conditional: the key must still hold what the write left (`left`, compared
    by content; `expected_revision` is the revision the write answered), or still be absent
    when `must_be_absent`; otherwise someone changed it since and the user must decide. An
    increment is undone by adding `amount` (its negated delta), never by writing an image.
    """

    record_id: int
    universe: str
    datastore: str
    scope: str
    key: str
    operation: str  # of the write being undone
    action: Literal["write", "delete", "compensate"]
    value_json: str | None
    metadata: dict[str, Any] | None
    expected_revision: str | None
    expected_sha256: str | None
    must_be_absent: bool
    store_kind: str = "standard"
    # What the write left, to compare by content with what the key holds now: a later undo
    # of an older edit finds the key at a new revision with that same content.
    left: EntryImage | None = None
    # "compensate": add this amount (minus the increment's delta) instead of writing an image,
    # so writes made after the increment are kept.
    amount: int | None = None


class WriteJournal:
    """Append-only journal in `<directory>/journal.sqlite3`. Thread-safe; synchronous."""

    def __init__(
        self,
        directory: Path,
        cipher: RecordCipher,
        *,
        clock: Callable[[], float] = time.time,
        check_on_open: bool = True,
    ) -> None:
        self.path = Path(directory) / JOURNAL_FILENAME
        self._cipher = cipher
        self._clock = clock
        self._lock = threading.RLock()
        try:
            self._db = SqliteFile(
                self.path,
                schema=SCHEMA,
                version=SCHEMA_VERSION,
                synchronous="FULL",  # an intent must survive power loss before we send the write
                verify=check_on_open,
                migrations=MIGRATIONS,
            )
        except StorageFileError as exc:
            # Never replaced automatically: it holds the only copy of the before-images.
            raise JournalUnavailable(
                f"the write journal {self.path} cannot be opened ({exc.problem}). It was left "
                "untouched; move it aside to start a new journal (undo history in it is lost)."
            ) from exc
        self._db.conn.execute("PRAGMA foreign_keys=ON")

    # ---- writing -------------------------------------------------------------------------------

    def record_intent(
        self,
        *,
        actor_id: str,
        actor_name: str,
        universe: str | int,
        datastore: str,
        scope: str,
        key: str,
        operation: str,
        before: EntryImage | None,
        intended: EntryImage | None = None,
        base_revision: str | None = None,
        idempotency_key: str | None = None,
        job_id: str | None = None,
        undoes: int | None = None,
        store_kind: str = "standard",
        delta: int | None = None,
        actor_user_id: int | None = None,
        actor_user_name: str | None = None,
    ) -> JournalRecord:
        """Durably note a write about to be sent. Call before the request, never after.

        `before` is the entry as the user saw it (None: the key did not exist). `intended` is the
        value the write should leave, when known in advance (not for deletes); its content hash
        lets reconciliation tell whether a write whose response was lost landed. `delta` is an
        increment's amount, so undo can add it back negated.
        Raises IdempotencyConflict when `idempotency_key` was used before.
        """
        if operation not in OPERATIONS:
            raise ValueError(
                f"unknown write operation {operation!r}; expected one of {sorted(OPERATIONS)}"
            )
        if store_kind not in STORE_KINDS:
            raise ValueError(f"unknown store kind {store_kind!r}")
        universe = str(universe)
        before_packed = _pack_image(before)
        with self._guard(), self._db.transaction() as conn:
            if idempotency_key is not None:
                existing = self._select_one(conn, "idempotency_key = ?", (idempotency_key,))
                if existing is not None:
                    raise IdempotencyConflict(existing)
            if undoes is not None and self._select_one(conn, "id = ?", (undoes,)) is None:
                raise UnknownRecord(
                    f"write #{undoes} is not in the journal, so it cannot be undone"
                )
            cursor = conn.execute(
                "INSERT INTO writes (at_ms, actor_id, actor_name, universe, datastore, scope, key,"
                " operation, idempotency_key, job_id, undoes, status, base_revision,"
                " before_exists, before_sha256, intended_sha256, store_kind, delta,"
                " actor_user_id, actor_user_name)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'INTENT', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self._now_ms(),
                    actor_id,
                    actor_name,
                    universe,
                    datastore,
                    scope,
                    key,
                    operation,
                    idempotency_key,
                    job_id,
                    undoes,
                    base_revision,
                    int(before is not None),
                    None if before is None else before.sha256,
                    None if intended is None else intended.content_sha256,
                    store_kind,
                    delta,
                    actor_user_id,
                    actor_user_name,
                ),
            )
            record_id = int(cursor.lastrowid or 0)
            if before_packed is not None:
                # The id is part of the associated data, so the image is sealed once it exists.
                aad = _image_aad(record_id, universe, datastore, scope, key, "before")
                conn.execute(
                    "UPDATE writes SET before_blob = ? WHERE id = ?",
                    (self._cipher.seal(before_packed, aad), record_id),
                )
            record = self._select_one(conn, "id = ?", (record_id,))
        assert record is not None
        return record

    def mark_applied(
        self, record_id: int, after_image: EntryImage | None, revision: str | None
    ) -> JournalRecord:
        """The write landed. `after_image` None means the key no longer exists (a delete).

        Calling it again with the same outcome is a no-op, so reconciliation may run twice.
        """
        after_packed = _pack_image(after_image)
        after_sha = None if after_image is None else after_image.sha256
        with self._guard(), self._db.transaction() as conn:
            record = self._require(conn, record_id)
            if record.status is Status.APPLIED:
                if record.after_sha256 == after_sha and record.after_revision == revision:
                    return record
                raise InvalidTransition(
                    f"write #{record_id} was already recorded as applied with another outcome"
                )
            self._check_open_status(record, "applied")
            blob = None
            if after_packed is not None:
                aad = _image_aad(
                    record_id, record.universe, record.datastore, record.scope, record.key, "after"
                )
                blob = self._cipher.seal(after_packed, aad)
            conn.execute(
                "UPDATE writes SET status = 'APPLIED', reason = NULL, outcome_ms = ?,"
                " after_exists = ?, after_sha256 = ?, after_revision = ?, after_blob = ?"
                " WHERE id = ?",
                (
                    self._now_ms(),
                    int(after_image is not None),
                    after_sha,
                    revision,
                    blob,
                    record_id,
                ),
            )
            updated = self._require(conn, record_id)
        return updated

    def mark_failed(self, record_id: int, reason: str) -> JournalRecord:
        """Open Cloud rejected the write: it did not happen."""
        return self._close_with(record_id, Status.FAILED, reason)

    def mark_unknown(self, record_id: int, reason: str) -> JournalRecord:
        """The response was lost (timeout, reset, 5xx): the write may or may not have landed."""
        return self._close_with(record_id, Status.UNKNOWN, reason)

    def _close_with(self, record_id: int, status: Status, reason: str) -> JournalRecord:
        with self._guard(), self._db.transaction() as conn:
            record = self._require(conn, record_id)
            if record.status is status:
                return record
            if status is Status.UNKNOWN and record.status is not Status.INTENT:
                raise InvalidTransition(
                    f"write #{record_id} is {record.status}; only a write in flight can become "
                    "UNKNOWN"
                )
            self._check_open_status(record, status.lower())
            conn.execute(
                "UPDATE writes SET status = ?, reason = ?, outcome_ms = ? WHERE id = ?",
                (status.value, reason, self._now_ms(), record_id),
            )
            updated = self._require(conn, record_id)
        return updated

    @staticmethod
    def _check_open_status(record: JournalRecord, target: str) -> None:
        if record.status not in (Status.INTENT, Status.UNKNOWN):
            raise InvalidTransition(
                f"write #{record.id} is already {record.status}; it cannot be marked {target}"
            )

    # ---- reading -------------------------------------------------------------------------------

    def get(self, record_id: int) -> JournalDetail:
        """The record with its images decrypted; unreadable images are listed in `problems`."""
        with self._guard():
            row = self._db.conn.execute(
                f"SELECT {_COLUMNS}, before_blob, after_blob FROM writes WHERE id = ?",
                (record_id,),
            ).fetchone()
        if row is None:
            raise UnknownRecord(f"write #{record_id} is not in the journal")
        record = _record(row)
        problems: list[str] = []
        before = self._open_image(record, "before", row[-2], record.before_sha256, problems)
        after = self._open_image(record, "after", row[-1], record.after_sha256, problems)
        erased = record.key == ERASED_KEY
        if record.before_exists and row[-2] is None and not erased:
            problems.append("before-image is missing")
        if record.after_exists and row[-1] is None and not erased:
            problems.append("after-image is missing")
        for problem in problems:
            log.warning("journal record #%d: %s", record.id, problem)
        return JournalDetail(record=record, before=before, after=after, problems=tuple(problems))

    def list(
        self,
        *,
        universe: str | int | None = None,
        datastore: str | None = None,
        key: str | None = None,
        actor: str | None = None,
        job_id: str | None = None,
        status: Status | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> builtins.list[JournalRecord]:
        """Newest first; page with `before_id` = the last id of the previous page."""
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        for column, value in (
            ("universe", None if universe is None else str(universe)),
            ("datastore", datastore),
            ("key", key),
            ("actor_id", actor),
            ("job_id", job_id),
            ("status", None if status is None else Status(status).value),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        where = " AND ".join(clauses) or "1 = 1"
        params.append(max(1, min(int(limit), MAX_LIST_LIMIT)))
        with self._guard():
            rows = self._db.conn.execute(
                f"SELECT {_COLUMNS} FROM writes WHERE {where} ORDER BY id DESC LIMIT ?", params
            ).fetchall()
        return [_record(row) for row in rows]

    def unknown_for(
        self, universe: str | int, datastore: str, key: str
    ) -> builtins.list[JournalRecord]:
        """This key's writes whose outcome is unknown, newest first. Every fresh read asks, so
        it goes by the index of open writes: a key written thousands of times costs no more."""
        with self._guard():
            rows = self._db.conn.execute(
                f"SELECT {_COLUMNS} FROM writes INDEXED BY writes_open"
                " WHERE status IN ('INTENT', 'UNKNOWN') AND status = 'UNKNOWN'"
                " AND universe = ? AND datastore = ? AND key = ? ORDER BY id DESC",
                (str(universe), datastore, key),
            ).fetchall()
        return [_record(row) for row in rows]

    def find_by_idempotency_key(self, idempotency_key: str) -> JournalRecord | None:
        """The write made with this idempotency key, so a retried request reports its outcome."""
        with self._guard():
            return self._select_one(self._db.conn, "idempotency_key = ?", (idempotency_key,))

    def pending(self) -> builtins.list[JournalRecord]:
        """Writes whose outcome is not known (a crash or a lost response), oldest first."""
        with self._guard():
            rows = self._db.conn.execute(
                f"SELECT {_COLUMNS} FROM writes WHERE status IN ('INTENT', 'UNKNOWN') ORDER BY id"
            ).fetchall()
        return [_record(row) for row in rows]

    def undo_plan(self, record_id: int) -> UndoPlan:
        """How to restore the entry to its before-image; raises UndoNotPossible with the reason."""
        detail = self.get(record_id)
        record = detail.record
        if record.key == ERASED_KEY:
            raise UndoNotPossible(
                f"write #{record_id} cannot be undone: its entry's data was erased for a "
                f"right-to-erasure request ({record.reason})"
            )
        if record.status is Status.FAILED:
            raise NothingToUndo(f"write #{record_id} failed, so there is nothing to undo")
        if record.status is not Status.APPLIED:
            raise UndoNotPossible(
                f"the outcome of write #{record_id} is not known yet ({record.status}); "
                "re-read the key to settle it before undoing"
            )
        if detail.problems:
            raise UndoNotPossible(
                f"write #{record_id} cannot be undone: " + "; ".join(detail.problems)
            )
        with self._guard():
            later = self._db.conn.execute(
                "SELECT id, status FROM writes WHERE undoes = ? AND status != 'FAILED'"
                " ORDER BY id DESC LIMIT 1",
                (record_id,),
            ).fetchone()
        if later is not None:
            if later[1] == Status.APPLIED:
                raise AlreadyUndone(f"write #{record_id} was already undone by write #{later[0]}")
            raise UndoUnsettled(
                f"an undo of write #{record_id} (write #{later[0]}) has not finished; "
                "settle it first"
            )
        before = detail.before
        existed_after = bool(record.after_exists)
        if record.operation == "increment" or record.delta is not None:
            if record.delta is None:
                raise UndoNotPossible(
                    f"write #{record_id} is an increment journaled without its amount (by an "
                    "older version of the server), so it cannot be undone safely"
                )
            action: Literal["write", "delete", "compensate"] = "compensate"
        elif before is None and not existed_after:
            raise NothingToUndo(
                f"write #{record_id} deleted a key that did not exist; nothing to undo"
            )
        else:
            # The key did not exist before: undo deletes it. Otherwise write the old image back.
            action = "delete" if before is None else "write"
        return UndoPlan(
            record_id=record_id,
            universe=record.universe,
            datastore=record.datastore,
            scope=record.scope,
            key=record.key,
            operation=record.operation,
            action=action,
            value_json=None if before is None else before.value_json,
            metadata=None if before is None else dict(before.metadata),
            expected_revision=record.after_revision if existed_after else None,
            expected_sha256=record.after_sha256 if existed_after else None,
            must_be_absent=not existed_after,
            store_kind=record.store_kind,
            left=detail.after if existed_after else None,
            amount=None if record.delta is None else -record.delta,
        )

    def verify(self) -> builtins.list[JournalProblem]:
        """Open every image and check it against its recorded hash; returns what is damaged."""
        found: builtins.list[JournalProblem] = []
        with self._guard():
            ids = [int(r[0]) for r in self._db.conn.execute("SELECT id FROM writes ORDER BY id")]
        for record_id in ids:
            for problem in self.get(record_id).problems:
                found.append(JournalProblem(record_id, problem))
        return found

    # ---- erasure (right to be forgotten) ---------------------------------------------------------

    def redact(self, record_id: int, note: str) -> None:
        """Remove what identifies one record's entry: images, value hashes, key (ERASED_KEY).

        The record stays (who wrote when, to which data store) so the audit trail keeps its
        shape; undo of it is refused from now on. Call `compact()` after a batch, so no freed
        page of the file still holds the old bytes.
        """
        with self._guard(), self._db.transaction() as conn:
            self._require(conn, record_id)
            conn.execute(
                "UPDATE writes SET key = ?, reason = ?, before_blob = NULL, after_blob = NULL,"
                " before_sha256 = NULL, after_sha256 = NULL, intended_sha256 = NULL"
                " WHERE id = ?",
                (ERASED_KEY, note, record_id),
            )

    def rewrite_images(self, record_id: int, change: Callable[[EntryImage], EntryImage]) -> bool:
        """Re-seal one record's images after `change` (e.g. a user id removed from metadata).

        The value text must stay the same: its hash is what reconciliation and undo check.
        Returns whether an image changed.
        """
        detail = self.get(record_id)
        record = detail.record
        changed = False
        with self._guard(), self._db.transaction() as conn:
            for role, image in (("before", detail.before), ("after", detail.after)):
                if image is None:
                    continue
                new = change(image)
                if new.value_json != image.value_json:
                    raise ValueError("rewrite_images may change metadata only, not the value")
                if dict(new.metadata) == dict(image.metadata):
                    continue
                aad = _image_aad(
                    record_id, record.universe, record.datastore, record.scope, record.key, role
                )
                packed = _pack_image(new)
                assert packed is not None
                conn.execute(
                    f"UPDATE writes SET {role}_blob = ? WHERE id = ?",
                    (self._cipher.seal(packed, aad), record_id),
                )
                changed = True
        return changed

    def compact(self) -> None:
        """Rewrite the file so no free page or write-ahead log keeps bytes of removed data."""
        with self._guard():
            rewrite_securely(self._db.conn)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals -----------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except Exception as exc:
                if not is_disk_error(exc):
                    raise
                raise JournalUnavailable(
                    f"the write journal {self.path} could not be read or written: {exc}"
                ) from exc

    def _select_one(
        self, conn: sqlite3.Connection, where: str, params: tuple[Any, ...]
    ) -> JournalRecord | None:
        row = conn.execute(f"SELECT {_COLUMNS} FROM writes WHERE {where}", params).fetchone()
        return None if row is None else _record(row)

    def _require(self, conn: sqlite3.Connection, record_id: int) -> JournalRecord:
        record = self._select_one(conn, "id = ?", (record_id,))
        if record is None:
            raise UnknownRecord(f"write #{record_id} is not in the journal")
        return record

    def _open_image(
        self,
        record: JournalRecord,
        role: str,
        blob: bytes | None,
        expected_sha: str | None,
        problems: builtins.list[str],
    ) -> EntryImage | None:
        if blob is None:
            return None
        aad = _image_aad(
            record.id, record.universe, record.datastore, record.scope, record.key, role
        )
        try:
            document = unpack(self._cipher.open(bytes(blob), aad))
            if (
                not isinstance(document, dict)
                or not isinstance(document.get("v"), str)
                or not isinstance(document.get("m"), dict)
            ):
                raise RecordFormatError("unexpected shape")
        except IntegrityError:
            problems.append(f"{role}-image failed authentication (tampered or moved)")
            return None
        except RecordFormatError:
            problems.append(f"{role}-image is malformed")
            return None
        image = EntryImage(value_json=document["v"], metadata=document["m"])
        if image.sha256 != expected_sha:
            problems.append(f"{role}-image does not match its recorded hash")
            return None
        return image


def _image_aad(
    record_id: int, universe: str, datastore: str, scope: str, key: str, role: str
) -> bytes:
    return slot("journal", record_id, universe, datastore, scope, key, role)


def _pack_image(image: EntryImage | None) -> bytes | None:
    if image is None:
        return None
    return pack({"v": image.value_json, "m": dict(image.metadata)})


def _ms_to_s(value: Any) -> float | None:
    return None if value is None else int(value) / 1000


def _record(row: tuple[Any, ...]) -> JournalRecord:
    return JournalRecord(
        id=int(row[0]),
        at=int(row[1]) / 1000,
        actor_id=row[2],
        actor_name=row[3],
        universe=row[4],
        datastore=row[5],
        scope=row[6],
        key=row[7],
        operation=row[8],
        idempotency_key=row[9],
        job_id=row[10],
        undoes=row[11],
        status=Status(row[12]),
        reason=row[13],
        outcome_at=_ms_to_s(row[14]),
        base_revision=row[15],
        before_exists=bool(row[16]),
        before_sha256=row[17],
        intended_sha256=row[18],
        after_exists=None if row[19] is None else bool(row[19]),
        after_sha256=row[20],
        after_revision=row[21],
        store_kind=row[22],
        delta=row[23],
        actor_user_id=row[24],
        actor_user_name=row[25],
    )
