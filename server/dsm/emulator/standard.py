"""Standard data stores: the state behind both the v1 and the v2 HTTP surfaces.

Semantics follow Roblox's documentation (opencloud-api.md §2, §4.3, §6):
- every write yields a new version id; the first write to a key in each UTC hour is kept as
  a versioned backup and later writes in that hour overwrite the one before them, except that
  after a snapshot the next write always keeps the previous data;
- superseded versions live 30 days after being superseded; the latest never expires;
- delete leaves a tombstone version and keeps the version it replaced (RemoveAsync "creates a
  tombstone version while retaining the previous version"), even inside one UTC hour; the key is
  purged 30 days after the tombstone;
- a deleted data store is inaccessible at once and purged 30 days later (name reusable);
- metadata (attributes, user ids) omitted on a write is cleared.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

from .clock import Clock
from .db import Database
from .errors import EmulatorError, invalid, not_found
from .timefmt import utc_day, utc_hour, version_id
from .validation import INT64_MAX, INT64_MIN

RETENTION = timedelta(days=30)
# Hiding deleted data stores, a List Data Stores call checks at most this many (documented).
LIST_SCAN_LIMIT = 512
# How often (in emulator time) a request may trigger the global expiry sweep.
SWEEP_INTERVAL = timedelta(minutes=1)

SCHEMA = """
CREATE TABLE IF NOT EXISTS datastores (
    universe TEXT NOT NULL,
    name TEXT NOT NULL,
    create_time TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'ACTIVE',
    expire_time TEXT,
    PRIMARY KEY (universe, name)
);
CREATE TABLE IF NOT EXISTS entries (
    universe TEXT NOT NULL,
    datastore TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    created_time TEXT NOT NULL,
    head_seq INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    deleted_time TEXT,
    PRIMARY KEY (universe, datastore, scope, key)
);
CREATE TABLE IF NOT EXISTS revisions (
    universe TEXT NOT NULL,
    datastore TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    version TEXT NOT NULL,
    entry_created TEXT NOT NULL,
    revision_time TEXT NOT NULL,
    value TEXT,
    attributes TEXT,
    user_ids TEXT NOT NULL DEFAULT '[]',
    deleted INTEGER NOT NULL DEFAULT 0,
    superseded_time TEXT,
    PRIMARY KEY (universe, datastore, scope, key, seq)
);
CREATE INDEX IF NOT EXISTS revisions_by_version
    ON revisions (universe, datastore, scope, key, version);
CREATE INDEX IF NOT EXISTS revisions_superseded ON revisions (superseded_time);
CREATE TABLE IF NOT EXISTS snapshots (
    universe TEXT PRIMARY KEY,
    taken_time TEXT NOT NULL
);
"""


def _iso(when: datetime) -> str:
    return when.isoformat()


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class DataStoreInfo:
    universe: str
    name: str
    create_time: datetime
    state: str  # ACTIVE | DELETED
    expire_time: datetime | None


@dataclass(frozen=True)
class Revision:
    scope: str
    key: str
    seq: int
    version: str
    entry_created: datetime
    revision_time: datetime
    value: str | None  # raw JSON text; None on a tombstone
    attributes: str | None  # JSON object text
    user_ids: tuple[int, ...]
    deleted: bool

    @property
    def content_length(self) -> int:
        return len(self.value.encode("utf-8")) if self.value is not None else 0

    @property
    def content_md5(self) -> str:
        raw = (self.value or "").encode("utf-8")
        return base64.b64encode(hashlib.md5(raw).digest()).decode("ascii")


@dataclass(frozen=True)
class ListedKey:
    scope: str
    key: str
    deleted: bool


class PreconditionFailed(Exception):
    """A conditional write did not match; carries the current head (None if no entry)."""

    def __init__(self, current: Revision | None, message: str) -> None:
        super().__init__(message)
        self.current = current
        self.message = message


def _datastore_deleted(name: str) -> EmulatorError:
    return not_found(f"The data store {name!r} is deleted.", "DatastoreNotFound")


class StandardStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        db.ensure_schema(SCHEMA)
        self._last_sweep: datetime | None = None

    # ------------------------------------------------------------------ expiry

    def sweep(self, *, force: bool = False) -> None:
        """Purge expired versions, tombstoned keys and deleted data stores."""
        now = self.clock.now()
        if not force and self._last_sweep and now - self._last_sweep < SWEEP_INTERVAL:
            return
        self._last_sweep = now
        cutoff = _iso(now - RETENTION)
        with self.db.transaction() as conn:
            conn.execute(
                "DELETE FROM revisions WHERE superseded_time IS NOT NULL AND superseded_time <= ?",
                (cutoff,),
            )
            purged = conn.execute(
                "SELECT universe, datastore, scope, key FROM entries "
                "WHERE deleted = 1 AND deleted_time <= ?",
                (cutoff,),
            ).fetchall()
            for row in purged:
                self._purge_key(conn, *row)
            stores = conn.execute(
                "SELECT universe, name FROM datastores WHERE state = 'DELETED' AND expire_time <= ?",
                (_iso(now),),
            ).fetchall()
            for universe, name in stores:
                conn.execute(
                    "DELETE FROM revisions WHERE universe = ? AND datastore = ?", (universe, name)
                )
                conn.execute(
                    "DELETE FROM entries WHERE universe = ? AND datastore = ?", (universe, name)
                )
                conn.execute(
                    "DELETE FROM datastores WHERE universe = ? AND name = ?", (universe, name)
                )

    @staticmethod
    def _purge_key(conn: sqlite3.Connection, universe: str, ds: str, scope: str, key: str) -> None:
        args = (universe, ds, scope, key)
        where = "universe = ? AND datastore = ? AND scope = ? AND key = ?"
        conn.execute(f"DELETE FROM revisions WHERE {where}", args)
        conn.execute(f"DELETE FROM entries WHERE {where}", args)

    # ------------------------------------------------------------- data stores

    def _store_row(self, universe: str, name: str) -> DataStoreInfo | None:
        row = self.db.conn.execute(
            "SELECT * FROM datastores WHERE universe = ? AND name = ?", (universe, name)
        ).fetchone()
        return _to_store(row) if row else None

    def universes(self) -> list[str]:
        """Every universe that holds a data store, in order."""
        rows = self.db.conn.execute("SELECT DISTINCT universe FROM datastores ORDER BY universe")
        return [row[0] for row in rows]

    def get_datastore(self, universe: str, name: str) -> DataStoreInfo | None:
        self.sweep()
        return self._store_row(universe, name)

    def require_active(self, universe: str, name: str) -> DataStoreInfo:
        store = self.get_datastore(universe, name)
        if store is None:
            raise not_found(f"Data store {name!r} was not found.", "DatastoreNotFound")
        if store.state == "DELETED":
            raise _datastore_deleted(name)
        return store

    def list_datastores(
        self,
        universe: str,
        *,
        prefix: str = "",
        after: str | None = None,
        limit: int,
        show_deleted: bool = False,
    ) -> tuple[list[DataStoreInfo], str | None]:
        """One page of data stores by name. Hiding deleted stores, a call checks at most
        LIST_SCAN_LIMIT of them, as Open Cloud's does (List Data Stores): when they are all
        deleted the page is empty but still carries a token to go on from."""
        self.sweep()
        sql = "SELECT * FROM datastores WHERE universe = ? AND name >= ? AND substr(name, 1, ?) = ?"
        args: list[object] = [universe, prefix, len(prefix), prefix]
        if after is not None:
            sql += " AND name > ?"
            args.append(after)
        sql += " ORDER BY name LIMIT ?"
        args.append((limit if show_deleted else LIST_SCAN_LIMIT) + 1)
        rows = [_to_store(r) for r in self.db.conn.execute(sql, args).fetchall()]
        if show_deleted:
            more = len(rows) > limit
            rows = rows[:limit]
            return rows, (rows[-1].name if more and rows else None)
        checked = rows[:LIST_SCAN_LIMIT]
        found: list[DataStoreInfo] = []
        for store in checked:
            if store.state != "ACTIVE":
                continue
            if len(found) == limit:
                return found, found[-1].name
            found.append(store)
        if len(rows) > LIST_SCAN_LIMIT:
            return found, checked[-1].name
        return found, None

    def delete_datastore(self, universe: str, name: str) -> DataStoreInfo:
        store = self.get_datastore(universe, name)
        if store is None:
            raise not_found(f"Data store {name!r} was not found.", "DatastoreNotFound")
        if store.state == "DELETED":
            return store  # documented: deleting a deleted store is a no-op
        expire = self.clock.now() + RETENTION
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE datastores SET state = 'DELETED', expire_time = ? "
                "WHERE universe = ? AND name = ?",
                (_iso(expire), universe, name),
            )
        return DataStoreInfo(universe, name, store.create_time, "DELETED", expire)

    def undelete_datastore(self, universe: str, name: str) -> DataStoreInfo:
        store = self.get_datastore(universe, name)
        if store is None:
            raise not_found(f"Data store {name!r} was not found.", "DatastoreNotFound")
        if store.state == "ACTIVE":
            # The v2 error table has no FAILED_PRECONDITION: its nearest code is INVALID_ARGUMENT.
            raise invalid(f"Data store {name!r} is not deleted, so there is nothing to undelete.")
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE datastores SET state = 'ACTIVE', expire_time = NULL "
                "WHERE universe = ? AND name = ?",
                (universe, name),
            )
        return DataStoreInfo(universe, name, store.create_time, "ACTIVE", None)

    def snapshot(self, universe: str) -> tuple[bool, datetime]:
        """One snapshot per UTC day per experience; later calls that day are no-ops."""
        now = self.clock.now()
        row = self.db.conn.execute(
            "SELECT taken_time FROM snapshots WHERE universe = ?", (universe,)
        ).fetchone()
        if row and utc_day(_dt(row[0])) == utc_day(now):
            return False, _dt(row[0])
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO snapshots (universe, taken_time) VALUES (?, ?) "
                "ON CONFLICT (universe) DO UPDATE SET taken_time = excluded.taken_time",
                (universe, _iso(now)),
            )
        return True, now

    def _last_snapshot(self, universe: str) -> datetime | None:
        row = self.db.conn.execute(
            "SELECT taken_time FROM snapshots WHERE universe = ?", (universe,)
        ).fetchone()
        return _dt(row[0]) if row else None

    # ----------------------------------------------------------------- entries

    def list_keys(
        self,
        universe: str,
        datastore: str,
        *,
        scope: str | None,
        prefix: str = "",
        after: tuple[str, str] | None = None,
        limit: int,
        include_deleted: bool,
    ) -> tuple[list[ListedKey], tuple[str, str] | None]:
        """Keys in (scope, key) order; scope None lists every scope."""
        self.require_active(universe, datastore)
        sql = (
            "SELECT scope, key, deleted FROM entries WHERE universe = ? AND datastore = ? "
            "AND substr(key, 1, ?) = ?"
        )
        args: list[object] = [universe, datastore, len(prefix), prefix]
        if scope is not None:
            sql += " AND scope = ?"
            args.append(scope)
        if after is not None:
            sql += " AND (scope > ? OR (scope = ? AND key > ?))"
            args += [after[0], after[0], after[1]]
        if not include_deleted:
            sql += " AND deleted = 0"
        sql += " ORDER BY scope, key LIMIT ?"
        args.append(limit + 1)
        rows = self.db.conn.execute(sql, args).fetchall()
        keys = [ListedKey(r["scope"], r["key"], bool(r["deleted"])) for r in rows[:limit]]
        more = len(rows) > limit
        return keys, ((keys[-1].scope, keys[-1].key) if more and keys else None)

    def head(self, universe: str, datastore: str, scope: str, key: str) -> Revision | None:
        """The latest revision, which may be a tombstone; None if the key never existed."""
        self.require_active(universe, datastore)
        return self._head(universe, datastore, scope, key)

    def _head(self, universe: str, datastore: str, scope: str, key: str) -> Revision | None:
        row = self.db.conn.execute(
            "SELECT r.* FROM entries e JOIN revisions r ON r.universe = e.universe "
            "AND r.datastore = e.datastore AND r.scope = e.scope AND r.key = e.key "
            "AND r.seq = e.head_seq "
            "WHERE e.universe = ? AND e.datastore = ? AND e.scope = ? AND e.key = ?",
            (universe, datastore, scope, key),
        ).fetchone()
        return _to_revision(row) if row else None

    def get(self, universe: str, datastore: str, scope: str, key: str) -> Revision:
        """The live value; NOT_FOUND if missing or deleted."""
        current = self.head(universe, datastore, scope, key)
        if current is None or current.deleted:
            raise not_found(f"Entry {key!r} was not found.", "EntryNotFound")
        return current

    def get_version(
        self, universe: str, datastore: str, scope: str, key: str, version: str
    ) -> Revision:
        self.require_active(universe, datastore)
        row = self.db.conn.execute(
            "SELECT * FROM revisions WHERE universe = ? AND datastore = ? AND scope = ? "
            "AND key = ? AND version = ?",
            (universe, datastore, scope, key, version),
        ).fetchone()
        if row is None:
            raise not_found(
                f"Version {version!r} of entry {key!r} was not found.", "VersionNotFound"
            )
        return _to_revision(row)

    def get_at(self, universe: str, datastore: str, scope: str, key: str, at: datetime) -> Revision:
        """The revision that was current at `at` (latest revision created at or before it)."""
        self.require_active(universe, datastore)
        row = self.db.conn.execute(
            "SELECT * FROM revisions WHERE universe = ? AND datastore = ? AND scope = ? "
            "AND key = ? AND revision_time <= ? ORDER BY seq DESC LIMIT 1",
            (universe, datastore, scope, key, _iso(at)),
        ).fetchone()
        if row is None:
            raise not_found(f"Entry {key!r} had no value at {at.isoformat()}.", "VersionNotFound")
        return _to_revision(row)

    def list_versions(
        self,
        universe: str,
        datastore: str,
        scope: str,
        key: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        descending: bool = False,
        after_seq: int | None = None,
        limit: int,
    ) -> tuple[list[Revision], int | None]:
        self.require_active(universe, datastore)
        sql = (
            "SELECT * FROM revisions WHERE universe = ? AND datastore = ? AND scope = ? AND key = ?"
        )
        args: list[object] = [universe, datastore, scope, key]
        if start is not None:
            sql += " AND revision_time >= ?"
            args.append(_iso(start))
        if end is not None:
            sql += " AND revision_time <= ?"
            args.append(_iso(end))
        if after_seq is not None:
            sql += " AND seq < ?" if descending else " AND seq > ?"
            args.append(after_seq)
        sql += f" ORDER BY seq {'DESC' if descending else 'ASC'} LIMIT ?"
        args.append(limit + 1)
        rows = self.db.conn.execute(sql, args).fetchall()
        revisions = [_to_revision(r) for r in rows[:limit]]
        more = len(rows) > limit
        return revisions, (revisions[-1].seq if more and revisions else None)

    # ------------------------------------------------------------------ writes

    def write(
        self,
        universe: str,
        datastore: str,
        scope: str,
        key: str,
        value: str,
        *,
        attributes: str | None,
        user_ids: list[int],
        match_version: str | None = None,
        exclusive_create: bool = False,
        must_exist: bool = False,
    ) -> tuple[Revision, bool]:
        """Store a new value. Returns (revision, created_new_entry).

        Preconditions raise PreconditionFailed with the current head, so v1 can answer
        412 with the current value and v2 can answer its own conflict error.
        """
        self._ensure_writable_store(universe, datastore)
        current = self._head(universe, datastore, scope, key)
        live = current if current is not None and not current.deleted else None
        if exclusive_create and live is not None:
            raise PreconditionFailed(live, f"Entry {key!r} already exists.")
        if match_version is not None and (live is None or live.version != match_version):
            raise PreconditionFailed(
                live, f"Entry {key!r} does not match version {match_version!r}."
            )
        if must_exist and live is None:
            raise not_found(f"Entry {key!r} was not found.", "EntryNotFound")
        revision = self._append(
            universe, datastore, scope, key, current, value, attributes, user_ids
        )
        return revision, live is None

    def increment(
        self,
        universe: str,
        datastore: str,
        scope: str,
        key: str,
        amount: int,
        *,
        attributes: str | None,
        user_ids: list[int],
        clamp: tuple[int, int] | None = None,
    ) -> Revision:
        """Add `amount` to an integer value, creating the entry with `amount` if missing.

        Without `clamp` the result must fit int64 (v1 answers 400 otherwise); with it the
        result is clamped into the range, as v2 does with its double-precision numbers.
        """
        self._ensure_writable_store(universe, datastore)
        current = self._head(universe, datastore, scope, key)
        base = 0
        if current is not None and not current.deleted and current.value is not None:
            parsed = json.loads(current.value)
            if isinstance(parsed, float) and parsed.is_integer():
                parsed = int(parsed)
            if not isinstance(parsed, int) or isinstance(parsed, bool):
                raise invalid(
                    f"Entry {key!r} holds a value that is not an integer, so it cannot be "
                    "incremented.",
                    "ExistingValueNotNumeric",
                )
            base = parsed
        total = base + amount
        if clamp is not None:
            total = max(clamp[0], min(clamp[1], total))
        elif total > INT64_MAX:
            raise invalid("The incremented value would be too large.", "IncrementValueTooLarge")
        elif total < INT64_MIN:
            raise invalid("The incremented value would be too small.", "IncrementValueTooSmall")
        return self._append(
            universe, datastore, scope, key, current, str(total), attributes, user_ids
        )

    def delete(self, universe: str, datastore: str, scope: str, key: str) -> Revision:
        """Write a tombstone; NOT_FOUND if there is no live entry."""
        self.require_active(universe, datastore)
        current = self._head(universe, datastore, scope, key)
        if current is None or current.deleted:
            raise not_found(f"Entry {key!r} was not found.", "EntryNotFound")
        return self._append(
            universe, datastore, scope, key, current, None, None, [], tombstone=True
        )

    def _ensure_writable_store(self, universe: str, datastore: str) -> None:
        """Refuse writes to a deleted store; a missing one is created by `_append`."""
        store = self.get_datastore(universe, datastore)
        if store is not None and store.state == "DELETED":
            raise _datastore_deleted(datastore)

    def _append(
        self,
        universe: str,
        datastore: str,
        scope: str,
        key: str,
        current: Revision | None,
        value: str | None,
        attributes: str | None,
        user_ids: list[int],
        *,
        tombstone: bool = False,
    ) -> Revision:
        now = self.clock.now()
        # Version times must strictly increase so time-travel reads stay unambiguous.
        if current is not None and now <= current.revision_time:
            now = current.revision_time + timedelta(microseconds=1)
        fresh = current is None or current.deleted
        entry_created = now if fresh or current is None else current.entry_created
        seq = (current.seq + 1) if current is not None else 1
        version = version_id(entry_created, seq, now)
        ids = (universe, datastore, scope, key)
        with self.db.transaction() as conn:
            # Created in the same transaction as its first entry, so a refused write never
            # leaves an empty data store behind.
            conn.execute(
                "INSERT OR IGNORE INTO datastores (universe, name, create_time) VALUES (?, ?, ?)",
                (universe, datastore, _iso(now)),
            )
            if current is not None:
                if not tombstone and self._overwritten_in_hour(conn, ids, current, now):
                    conn.execute(
                        "DELETE FROM revisions WHERE universe = ? AND datastore = ? AND scope = ? "
                        "AND key = ? AND seq = ?",
                        (*ids, current.seq),
                    )
                else:
                    conn.execute(
                        "UPDATE revisions SET superseded_time = ? WHERE universe = ? "
                        "AND datastore = ? AND scope = ? AND key = ? AND seq = ?",
                        (_iso(now), *ids, current.seq),
                    )
            conn.execute(
                "INSERT INTO revisions (universe, datastore, scope, key, seq, version, "
                "entry_created, revision_time, value, attributes, user_ids, deleted) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    *ids,
                    seq,
                    version,
                    _iso(entry_created),
                    _iso(now),
                    value,
                    attributes,
                    json.dumps(user_ids),
                    int(tombstone),
                ),
            )
            conn.execute(
                "INSERT INTO entries (universe, datastore, scope, key, created_time, head_seq, "
                "deleted, deleted_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (universe, datastore, scope, key) DO UPDATE SET "
                "created_time = excluded.created_time, head_seq = excluded.head_seq, "
                "deleted = excluded.deleted, deleted_time = excluded.deleted_time",
                (*ids, _iso(entry_created), seq, int(tombstone), _iso(now) if tombstone else None),
            )
        return Revision(
            scope,
            key,
            seq,
            version,
            entry_created,
            now,
            value,
            attributes,
            tuple(user_ids),
            tombstone,
        )

    def _overwritten_in_hour(
        self,
        conn: sqlite3.Connection,
        ids: tuple[str, str, str, str],
        current: Revision,
        now: datetime,
    ) -> bool:
        """True when `current` is a same-hour successor that the new write replaces.

        The first write of each UTC hour is kept; later writes in the hour replace each
        other. Tombstones are never collapsed, a delete never replaces the version it deletes
        (the caller skips this check for tombstones), and a snapshot taken after `current` was
        written forces the next write to keep it.
        """
        if current.deleted or utc_hour(current.revision_time) != utc_hour(now):
            return False
        snapshot = self._last_snapshot(ids[0])
        if snapshot is not None and snapshot >= current.revision_time:
            return False
        earlier_same_hour = conn.execute(
            "SELECT 1 FROM revisions WHERE universe = ? AND datastore = ? AND scope = ? "
            "AND key = ? AND seq < ? AND revision_time >= ? LIMIT 1",
            (*ids, current.seq, _iso(utc_hour(now))),
        ).fetchone()
        return earlier_same_hour is not None


def _to_store(row: sqlite3.Row) -> DataStoreInfo:
    return DataStoreInfo(
        universe=row["universe"],
        name=row["name"],
        create_time=_dt(row["create_time"]),
        state=row["state"],
        expire_time=_dt(row["expire_time"]) if row["expire_time"] else None,
    )


def _to_revision(row: sqlite3.Row) -> Revision:
    return Revision(
        scope=row["scope"],
        key=row["key"],
        seq=row["seq"],
        version=row["version"],
        entry_created=_dt(row["entry_created"]),
        revision_time=_dt(row["revision_time"]),
        value=row["value"],
        attributes=row["attributes"],
        user_ids=tuple(json.loads(row["user_ids"])),
        deleted=bool(row["deleted"]),
    )
