"""Read cache for data-store entries and list pages: a memory LRU in front of an encrypted SQLite file.

The cache is advisory. It never decides freshness for the caller: every hit carries when it was
fetched, so the server can label it CACHED with its age, and every edit still re-reads (or is
conditional on the revision the user saw). What it guarantees instead:

- Records are sealed with AES-GCM and the associated data names the slot (kind, universe, data
  store, scope, key, revision, fetch time), so a row copied onto another slot does not open.
- Names never reach the disk in clear: rows are found by HMAC tags under a per-file random
  index key, itself sealed in the file. A file written under another data key is unreadable as a
  whole and is replaced at start-up.
- Both tiers are bounded in bytes; the least recently used records go first.
- A damaged row is dropped with a log line and reported as a miss; a damaged file is moved aside
  and recreated. The caller never sees either.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

from dsm.storage.crypto import IntegrityError, RecordCipher, slot
from dsm.storage.sqlite import (
    RecordFormatError,
    SqliteFile,
    StorageFileError,
    is_disk_error,
    move_aside,
    pack,
    rewrite_securely,
    unpack,
)

log = logging.getLogger(__name__)

CACHE_FILENAME = "cache.sqlite3"
SCHEMA_VERSION = 1
MIB = 1024 * 1024
_INDEX_KEY_AAD = slot("cache", "index-key")
_TOUCH_FLUSH_EVERY = 256

Part = str | int
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    tag BLOB PRIMARY KEY,          -- HMAC of the slot identity
    universe_tag BLOB NOT NULL,    -- HMAC of the universe, for whole-universe invalidation
    datastore_tag BLOB,            -- HMAC of (universe, data store); NULL for universe lists
    kind TEXT NOT NULL CHECK (kind IN ('entry', 'list')),
    revision TEXT NOT NULL,        -- part of the associated data; '' for lists
    fetched_ms INTEGER NOT NULL,   -- part of the associated data
    used INTEGER NOT NULL,         -- LRU sequence number, larger = more recent
    size INTEGER NOT NULL,         -- bytes charged against the disk cap
    blob BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_used ON records (used);
CREATE INDEX IF NOT EXISTS records_universe ON records (universe_tag);
CREATE INDEX IF NOT EXISTS records_datastore ON records (datastore_tag);
CREATE INDEX IF NOT EXISTS records_fetched ON records (fetched_ms);
"""


@dataclass(frozen=True)
class CacheConfig:
    memory_bytes: int = 64 * MIB
    disk_bytes: int = 512 * MIB
    # Younger than this is "fresh"; older is still returned, flagged stale, for the caller to judge.
    fresh_seconds: float = 30.0
    # Older than this is deleted, not served: cached personal data must not live forever.
    max_age_seconds: float | None = 7 * 24 * 3600.0

    def __post_init__(self) -> None:
        if self.memory_bytes < 0 or self.disk_bytes < 0:
            raise ValueError("cache sizes must be zero (tier off) or a positive number of bytes")
        if self.fresh_seconds < 0:
            raise ValueError("fresh_seconds must not be negative")
        if self.max_age_seconds is not None and self.max_age_seconds <= 0:
            raise ValueError("max_age_seconds must be positive, or None to keep records")


@dataclass(frozen=True)
class CachedEntry:
    value_json: str
    metadata: dict[str, Any]
    revision: str
    fetched_at: float
    age_seconds: float
    stale: bool


@dataclass(frozen=True)
class CachedList:
    value: Any
    fetched_at: float
    age_seconds: float
    stale: bool


@dataclass(frozen=True)
class CacheStats:
    memory_hits: int
    disk_hits: int
    misses: int
    memory_evictions: int
    disk_evictions: int
    expired: int
    discarded: int  # rows dropped because they failed to open or decode
    invalidated: int
    memory_bytes: int
    memory_items: int
    disk_bytes: int
    disk_rows: int
    disk_enabled: bool

    @property
    def hits(self) -> int:
        return self.memory_hits + self.disk_hits


@dataclass(frozen=True)
class _Slot:
    kind: str
    tag: bytes
    universe_tag: bytes
    datastore_tag: bytes | None
    identity: tuple[Part, ...]

    def aad(self, revision: str, fetched_ms: int) -> bytes:
        return slot(*self.identity, revision, fetched_ms)


@dataclass(frozen=True)
class _Held:
    """A record in the memory tier, kept packed so callers cannot mutate the cached copy."""

    kind: str
    universe_tag: bytes
    datastore_tag: bytes | None
    revision: str
    fetched_ms: int
    packed: bytes


class _Counters:
    def __init__(self) -> None:
        self.memory_hits = 0
        self.disk_hits = 0
        self.misses = 0
        self.memory_evictions = 0
        self.disk_evictions = 0
        self.expired = 0
        self.discarded = 0
        self.invalidated = 0


class EntryCache:
    """Memory LRU over `<directory>/cache.sqlite3`. Thread-safe; all methods are synchronous."""

    def __init__(
        self,
        directory: Path,
        cipher: RecordCipher,
        config: CacheConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(directory) / CACHE_FILENAME
        self.config = config or CacheConfig()
        self._cipher = cipher
        self._clock = clock
        self._lock = threading.RLock()
        self._counters = _Counters()
        self._memory: OrderedDict[bytes, _Held] = OrderedDict()
        self._memory_bytes = 0
        self._db: SqliteFile | None = None
        self._disk_bytes = 0
        self._disk_rows = 0
        self._use_seq = 0
        self._touched: dict[bytes, int] = {}
        self._closed = False
        self._resetting = False
        self._generation = 0
        self._index_key = os.urandom(32)  # replaced by the file's key when the disk tier opens
        if self.config.disk_bytes > 0:
            self._open_disk()

    # ---- public API -------------------------------------------------------------------------

    def get_entry(self, universe: Part, datastore: str, scope: str, key: str) -> CachedEntry | None:
        found = self._lookup(self._entry_slot(universe, datastore, scope, key), _decode_entry)
        if found is None:
            return None
        (value_json, metadata), revision, fetched_ms = found
        age = self._age(fetched_ms)
        return CachedEntry(
            value_json=value_json,
            metadata=metadata,
            revision=revision,
            fetched_at=fetched_ms / 1000,
            age_seconds=age,
            stale=age > self.config.fresh_seconds,
        )

    def put_entry(
        self,
        universe: Part,
        datastore: str,
        scope: str,
        key: str,
        *,
        value_json: str,
        metadata: Mapping[str, Any],
        revision: str,
        if_generation: int | None = None,
    ) -> bool:
        """Remember an entry as just read; returns whether it was stored.

        Pass `if_generation` = `generation` taken before the read was sent: if any invalidation
        happened meanwhile (our own write may have overtaken the read), the result is dropped
        instead of caching a value older than that write.
        Raises ValueError only for metadata msgpack cannot hold.
        """
        packed = pack({"v": value_json, "m": dict(metadata)})
        target = self._entry_slot(universe, datastore, scope, key)
        return self._store(target, revision, packed, if_generation)

    def get_list(
        self, kind: str, universe: Part, datastore: str | None, *parts: Part
    ) -> CachedList | None:
        """A cached list result; `datastore` None means a universe-level list (e.g. data stores)."""
        found = self._lookup(self._list_slot(kind, universe, datastore, parts), _decode_list)
        if found is None:
            return None
        value, _, fetched_ms = found
        age = self._age(fetched_ms)
        return CachedList(
            value=value,
            fetched_at=fetched_ms / 1000,
            age_seconds=age,
            stale=age > self.config.fresh_seconds,
        )

    def put_list(
        self,
        kind: str,
        universe: Part,
        datastore: str | None,
        *parts: Part,
        value: Any,
        if_generation: int | None = None,
    ) -> bool:
        """Remember a list result (any msgpack-able value; tuples come back as lists).

        `if_generation` works as for put_entry.
        """
        packed = pack({"d": value})
        target = self._list_slot(kind, universe, datastore, parts)
        return self._store(target, "", packed, if_generation)

    def invalidate_entry(self, universe: Part, datastore: str, scope: str, key: str) -> int:
        """Forget an entry after our own write to it, with every list it may appear in.

        A write can create a key (key pages change), add a version (version pages change) or
        create the data store itself (the universe's data-store list changes), so the lists of
        that data store and of its universe go too. Returns how many records were dropped.
        """
        target = self._entry_slot(universe, datastore, scope, key)
        return self._invalidate(
            lambda tag, held: (
                tag == target.tag
                or (
                    held.kind == "list"
                    and (
                        held.datastore_tag == target.datastore_tag
                        or (held.universe_tag == target.universe_tag and held.datastore_tag is None)
                    )
                )
            ),
            "tag = ? OR (kind = 'list' AND (datastore_tag = ? OR"
            " (universe_tag = ? AND datastore_tag IS NULL)))",
            (target.tag, target.datastore_tag, target.universe_tag),
        )

    def invalidate_datastore(self, universe: Part, datastore: str) -> int:
        """Forget everything cached for one data store, and the universe's data-store lists."""
        universe_tag = self._tag(slot("universe", str(universe)))
        datastore_tag = self._tag(slot("datastore", str(universe), datastore))
        return self._invalidate(
            lambda _tag, held: (
                held.datastore_tag == datastore_tag
                or (
                    held.kind == "list"
                    and held.universe_tag == universe_tag
                    and held.datastore_tag is None
                )
            ),
            "datastore_tag = ? OR (kind = 'list' AND universe_tag = ? AND datastore_tag IS NULL)",
            (datastore_tag, universe_tag),
        )

    def invalidate_universe(self, universe: Part) -> int:
        universe_tag = self._tag(slot("universe", str(universe)))
        return self._invalidate(
            lambda _tag, held: held.universe_tag == universe_tag,
            "universe_tag = ?",
            (universe_tag,),
        )

    def clear(self) -> int:
        """Forget everything (logout, erasure request)."""
        return self._invalidate(lambda _tag, _held: True, "1 = 1", ())

    def compact(self) -> None:
        """Rewrite the file so no free page or write-ahead log keeps removed records' bytes."""
        with self._lock:
            self._check_open()
            if self._db is None:
                return
            with self._disk_guard():
                self._flush_touches()
                rewrite_securely(self._db.conn)

    def prune_expired(self) -> int:
        """Delete records older than max_age_seconds from both tiers; returns how many."""
        if self.config.max_age_seconds is None:
            return 0
        cutoff = self._now_ms() - int(self.config.max_age_seconds * 1000)
        removed = self._invalidate(
            lambda _tag, held: held.fetched_ms < cutoff, "fetched_ms < ?", (cutoff,), count=False
        )
        with self._lock:
            self._counters.expired += removed
        return removed

    @property
    def generation(self) -> int:
        """Changes on every invalidation; see put_entry(if_generation=...)."""
        with self._lock:
            return self._generation

    def stats(self) -> CacheStats:
        with self._lock:
            c = self._counters
            return CacheStats(
                memory_hits=c.memory_hits,
                disk_hits=c.disk_hits,
                misses=c.misses,
                memory_evictions=c.memory_evictions,
                disk_evictions=c.disk_evictions,
                expired=c.expired,
                discarded=c.discarded,
                invalidated=c.invalidated,
                memory_bytes=self._memory_bytes,
                memory_items=len(self._memory),
                disk_bytes=self._disk_bytes,
                disk_rows=self._disk_rows,
                disk_enabled=self._db is not None,
            )

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._db is not None:
                with self._disk_guard():
                    self._flush_touches()
                if self._db is not None:
                    self._db.close()
                    self._db = None
            self._memory.clear()
            self._memory_bytes = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- slots --------------------------------------------------------------------------------

    def _tag(self, identity: bytes) -> bytes:
        return hmac.new(self._index_key, identity, hashlib.sha256).digest()

    def _entry_slot(self, universe: Part, datastore: str, scope: str, key: str) -> _Slot:
        identity: tuple[Part, ...] = ("entry", str(universe), datastore, scope, key)
        return _Slot(
            kind="entry",
            tag=self._tag(slot(*identity)),
            universe_tag=self._tag(slot("universe", str(universe))),
            datastore_tag=self._tag(slot("datastore", str(universe), datastore)),
            identity=identity,
        )

    def _list_slot(
        self, kind: str, universe: Part, datastore: str | None, parts: tuple[Part, ...]
    ) -> _Slot:
        # The explicit level marker keeps a universe list apart from a store named "" and the
        # length-prefixed slot() keeps ("a/b", "c") apart from ("a", "b/c").
        level = "universe" if datastore is None else "datastore"
        identity: tuple[Part, ...] = (
            "list",
            kind,
            str(universe),
            level,
            datastore or "",
            *[str(p) for p in parts],
        )
        return _Slot(
            kind="list",
            tag=self._tag(slot(*identity)),
            universe_tag=self._tag(slot("universe", str(universe))),
            datastore_tag=(
                None
                if datastore is None
                else self._tag(slot("datastore", str(universe), datastore))
            ),
            identity=identity,
        )

    # ---- lookups and stores ---------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _age(self, fetched_ms: int) -> float:
        # A clock stepped backwards must not produce a negative age.
        return max(0.0, (self._now_ms() - fetched_ms) / 1000)

    def _is_expired(self, fetched_ms: int) -> bool:
        limit = self.config.max_age_seconds
        return limit is not None and self._now_ms() - fetched_ms > limit * 1000

    def _lookup(self, target: _Slot, decode: Callable[[Any], T]) -> tuple[T, str, int] | None:
        with self._lock:
            self._check_open()
            held = self._memory.get(target.tag)
            if held is not None:
                if self._is_expired(held.fetched_ms):
                    self._expire(target.tag)
                    return None
                self._memory.move_to_end(target.tag)
                self._touch(target.tag)
                self._counters.memory_hits += 1
                return decode(unpack(held.packed)), held.revision, held.fetched_ms
            row = self._read_row(target)
            if row is None:
                self._counters.misses += 1
                return None
            revision, fetched_ms, blob = row
            if self._is_expired(fetched_ms):
                self._expire(target.tag)
                return None
            try:
                packed = self._cipher.open(blob, target.aad(revision, fetched_ms))
                value = decode(unpack(packed))
            except (IntegrityError, RecordFormatError) as exc:
                log.warning(
                    "discarded an unreadable %s record from the cache: %s", target.kind, exc
                )
                self._counters.discarded += 1
                self._counters.misses += 1
                self._delete_tags([target.tag])
                return None
            self._counters.disk_hits += 1
            self._touch(target.tag)
            self._admit(target, revision, fetched_ms, packed)
            return value, revision, fetched_ms

    def _read_row(self, target: _Slot) -> tuple[str, int, bytes] | None:
        if self._db is None:
            return None
        row: tuple[Any, ...] | None = None  # stays None if the file failed and was reset
        with self._disk_guard():
            row = self._db.conn.execute(
                "SELECT revision, fetched_ms, blob FROM records WHERE tag = ? AND kind = ?",
                (target.tag, target.kind),
            ).fetchone()
        if row is None:
            return None
        return str(row[0]), int(row[1]), bytes(row[2])

    def _store(
        self, target: _Slot, revision: str, packed: bytes, if_generation: int | None
    ) -> bool:
        with self._lock:
            self._check_open()
            if if_generation is not None and if_generation != self._generation:
                return False
            fetched_ms = self._now_ms()
            self._admit(target, revision, fetched_ms, packed)
            if self._db is None:
                return True
            blob = self._cipher.seal(packed, target.aad(revision, fetched_ms))
            evicted = 0
            with self._disk_guard(), self._db.transaction() as conn:
                self._delete_tags_in(conn, [target.tag])
                if len(blob) > self.config.disk_bytes:
                    return True  # larger than the whole disk tier: memory only
                # Make room first, so the file never holds more than the cap, even mid-write.
                evicted = self._evict_disk(conn, room_for=len(blob))
                self._use_seq += 1
                self._touched.pop(target.tag, None)
                conn.execute(
                    "INSERT INTO records (tag, universe_tag, datastore_tag, kind, revision,"
                    " fetched_ms, used, size, blob) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        target.tag,
                        target.universe_tag,
                        target.datastore_tag,
                        target.kind,
                        revision,
                        fetched_ms,
                        self._use_seq,
                        len(blob),
                        blob,
                    ),
                )
                self._disk_bytes += len(blob)
                self._disk_rows += 1
            if evicted and self._db is not None:
                with self._disk_guard():
                    # Hand the freed pages back to the file system (the pragma runs per step).
                    self._db.conn.execute("PRAGMA incremental_vacuum").fetchall()
            return True

    def _admit(self, target: _Slot, revision: str, fetched_ms: int, packed: bytes) -> None:
        self._drop_memory(target.tag)
        if len(packed) > self.config.memory_bytes:
            return
        self._memory[target.tag] = _Held(
            kind=target.kind,
            universe_tag=target.universe_tag,
            datastore_tag=target.datastore_tag,
            revision=revision,
            fetched_ms=fetched_ms,
            packed=packed,
        )
        self._memory_bytes += len(packed)
        while self._memory_bytes > self.config.memory_bytes:
            _, oldest = self._memory.popitem(last=False)
            self._memory_bytes -= len(oldest.packed)
            self._counters.memory_evictions += 1

    def _drop_memory(self, tag: bytes) -> bool:
        held = self._memory.pop(tag, None)
        if held is None:
            return False
        self._memory_bytes -= len(held.packed)
        return True

    def _expire(self, tag: bytes) -> None:
        self._drop_memory(tag)
        self._delete_tags([tag])
        self._counters.expired += 1
        self._counters.misses += 1

    # ---- disk tier ------------------------------------------------------------------------------

    def _touch(self, tag: bytes) -> None:
        """Record a use; written to disk in batches so reads do not each cost a disk write."""
        self._use_seq += 1
        self._touched[tag] = self._use_seq
        if len(self._touched) >= _TOUCH_FLUSH_EVERY and self._db is not None:
            with self._disk_guard(), self._db.transaction():
                self._flush_touches()

    def _flush_touches(self) -> None:
        if self._db is None or not self._touched:
            return
        self._db.conn.executemany(
            "UPDATE records SET used = ? WHERE tag = ?",
            [(seq, tag) for tag, seq in self._touched.items()],
        )
        self._touched.clear()

    def _evict_disk(self, conn: sqlite3.Connection, room_for: int = 0) -> int:
        """Delete least recently used rows until `room_for` more bytes fit under the cap."""
        limit = self.config.disk_bytes - room_for
        if self._disk_bytes <= limit:
            return 0
        # Uses recorded only in memory so far must count, or a hot row would be evicted.
        self._flush_touches()
        evicted = 0
        while self._disk_bytes > limit:
            rows = conn.execute("SELECT tag, size FROM records ORDER BY used LIMIT 64").fetchall()
            if not rows:
                break
            for tag, size in rows:
                if self._disk_bytes <= limit:
                    break
                conn.execute("DELETE FROM records WHERE tag = ?", (tag,))
                self._disk_bytes -= int(size)
                self._disk_rows -= 1
                evicted += 1
        self._counters.disk_evictions += evicted
        return evicted

    def _delete_tags(self, tags: list[bytes]) -> None:
        if self._db is None:
            return
        with self._disk_guard(), self._db.transaction() as conn:
            self._delete_tags_in(conn, tags)

    def _delete_tags_in(self, conn: sqlite3.Connection, tags: list[bytes]) -> None:
        for tag in tags:
            self._touched.pop(tag, None)
            for (size,) in conn.execute(
                "DELETE FROM records WHERE tag = ? RETURNING size", (tag,)
            ).fetchall():
                self._disk_bytes -= int(size)
                self._disk_rows -= 1

    def _invalidate(
        self,
        in_memory: Callable[[bytes, _Held], bool],
        where: str,
        params: tuple[Any, ...],
        *,
        count: bool = True,
    ) -> int:
        with self._lock:
            self._check_open()
            self._generation += 1
            removed = {tag for tag, held in self._memory.items() if in_memory(tag, held)}
            for tag in removed:
                self._drop_memory(tag)
            if self._db is not None:
                with self._disk_guard(), self._db.transaction() as conn:
                    rows = conn.execute(
                        f"DELETE FROM records WHERE {where} RETURNING tag, size", params
                    ).fetchall()
                    for tag, size in rows:
                        self._touched.pop(bytes(tag), None)
                        self._disk_bytes -= int(size)
                        self._disk_rows -= 1
                        removed.add(bytes(tag))
            if count:
                self._counters.invalidated += len(removed)
            return len(removed)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the entry cache was closed")

    @contextmanager
    def _disk_guard(self) -> Iterator[None]:
        """Turn a failing cache file into an empty one instead of an error for the caller."""
        try:
            yield
        except Exception as exc:
            if not is_disk_error(exc):
                raise
            log.error("the cache file failed (%s); starting it again empty", exc)
            self._reset_disk()

    def _reset_disk(self) -> None:
        if self._resetting:
            # The fresh file failed too: stop trying rather than loop.
            log.error("the new cache file failed as well; disk cache is off")
            if self._db is not None:
                self._db.conn.close()
                self._db = None
            return
        if self._db is not None:
            try:
                self._db.conn.close()
            except Exception as exc:  # already failing; closing is best effort
                log.debug("closing the failed cache file: %s", exc)
            self._db = None
        self._touched.clear()
        self._disk_bytes = 0
        self._disk_rows = 0
        try:
            move_aside(self.path)
        except OSError as exc:
            log.error("cannot move the damaged cache file aside (%s); disk cache is off", exc)
            return
        self._resetting = True
        try:
            self._open_disk()
        finally:
            self._resetting = False

    def _open_disk(self) -> None:
        for attempt in (1, 2):
            try:
                db = SqliteFile(
                    self.path,
                    schema=SCHEMA,
                    version=SCHEMA_VERSION,
                    synchronous="NORMAL",  # a cache may lose its last writes on power loss
                    verify=True,
                    incremental_vacuum=True,
                )
            except StorageFileError as exc:
                problem = exc.problem
            except OSError as exc:
                log.error("cannot open the cache file %s (%s); disk cache is off", self.path, exc)
                return
            else:
                try:
                    self._adopt(db)
                except StorageFileError as exc:
                    db.conn.close()
                    problem = exc.problem
                except Exception as exc:
                    db.conn.close()
                    if not is_disk_error(exc):
                        raise
                    problem = str(exc)
                else:
                    self._tidy_after_open()
                    return
            if attempt == 2:
                break
            try:
                aside = move_aside(self.path)
            except OSError as exc:
                log.error("cannot move the cache file aside (%s); disk cache is off", exc)
                return
            log.warning(
                "cache file %s was unusable (%s); moved to %s and started empty",
                self.path,
                problem,
                aside,
            )
        log.error("cannot create the cache file %s (%s); disk cache is off", self.path, problem)

    def _adopt(self, db: SqliteFile) -> None:
        conn = db.conn
        row = conn.execute("SELECT value FROM meta WHERE name = 'index_key'").fetchone()
        if row is None:
            if conn.execute("SELECT 1 FROM records LIMIT 1").fetchone() is not None:
                raise StorageFileError(self.path, "records without an index key")
            index_key = os.urandom(32)
            with db.transaction():
                conn.execute(
                    "INSERT INTO meta (name, value) VALUES ('index_key', ?)",
                    (self._cipher.seal(index_key, _INDEX_KEY_AAD),),
                )
        else:
            try:
                index_key = self._cipher.open(bytes(row[0]), _INDEX_KEY_AAD)
            except IntegrityError:
                raise StorageFileError(self.path, "sealed under a different data key") from None
        count, total, last_used = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(used), 0) FROM records"
        ).fetchone()
        # Memory tags were computed under the old key (or none): they would never match again.
        self._memory.clear()
        self._memory_bytes = 0
        self._index_key = index_key
        self._db = db
        self._disk_rows = int(count)
        self._disk_bytes = int(total)
        self._use_seq = max(self._use_seq, int(last_used))

    def _tidy_after_open(self) -> None:
        self.prune_expired()
        if self._db is not None and self._disk_bytes > self.config.disk_bytes:
            # The cap was lowered since the last run.
            with self._disk_guard(), self._db.transaction() as txn:
                self._evict_disk(txn)
            if self._db is not None:
                with self._disk_guard():
                    self._db.conn.execute("PRAGMA incremental_vacuum").fetchall()


def _decode_entry(document: Any) -> tuple[str, dict[str, Any]]:
    if (
        not isinstance(document, dict)
        or not isinstance(document.get("v"), str)
        or not isinstance(document.get("m"), dict)
    ):
        raise RecordFormatError("stored entry has an unexpected shape")
    return document["v"], document["m"]


def _decode_list(document: Any) -> Any:
    if not isinstance(document, dict) or "d" not in document:
        raise RecordFormatError("stored list has an unexpected shape")
    return document["d"]
