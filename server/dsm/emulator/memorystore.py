"""Memory store state: sorted maps, queues and flush operations (opencloud-api.md §5.2-5.4, §8.2).

Choices where Roblox does not document behaviour (each is also noted where it is applied):
- Sorted-map order is Roblox's documented one: items with a numeric sort key first (by number,
  then id), then items with a string sort key (by string, then id), then items without a sort
  key (by id). Strings compare by Unicode code point. `id desc` reverses that whole order.
- A filter clause is a predicate, compared in that same order: `sortKey > 5` keeps numeric
  keys above 5 *and* every string-keyed or unkeyed item, exactly as an engine
  `GetRangeAsync` lower bound of `{sortKey = 5}` would.
- TTL expiry is lazy: an expired item is invisible at once and its row is deleted the next
  time its structure is touched, so expiry follows the injected clock, not wall time.
- Expiry falls on a whole second, the resolution of Open Cloud's `expireTime`: the end of the
  TTL is rounded up to the next second, so an item never expires before its TTL ran out.
- Memory quotas (64 KB + 1.2 KB x CCU per universe; 1,000,000 items and 100 MB per
  structure) are enforced only when the emulator's limits mode is "documented". Item sizes
  are the UTF-8 bytes of the id, the value JSON and a string sort key; Roblox does not
  publish its exact accounting.
- Open Cloud's item endpoints address the LIVE memory store. TEST is Studio's separate
  store, which the emulator does not hold, so a TEST flush completes with nothing to remove.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .clock import Clock
from .db import Database
from .errors import EmulatorError, not_found
from .throttle import LimitsConfig

MAX_TTL = timedelta(seconds=3_888_000)  # 45 days: the maximum and the default
MAX_VALUE_BYTES = 32 * 1024
MAX_ITEM_ID_CHARS = 127
MAX_SORT_KEY_CHARS = 128
MAX_STRUCTURE_ITEMS = 1_000_000
MAX_STRUCTURE_BYTES = 100 * 1024 * 1024
QUOTA_BASE_BYTES = 64 * 1024
QUOTA_PER_USER_BYTES = 1.2 * 1024

# Sort-key kinds, numbered in Roblox's ascending order.
NUMERIC, STRING, NO_SORT_KEY = 0, 1, 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS ms_sorted_items (
    universe TEXT NOT NULL,
    map_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    value TEXT NOT NULL,
    sort_kind INTEGER NOT NULL,
    -- Non-null placeholders (0.0 / '') keep row-value comparisons total across kinds.
    num_key REAL NOT NULL,
    str_key TEXT NOT NULL,
    etag TEXT NOT NULL,
    expire_us INTEGER NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (universe, map_id, item_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ms_sorted_order
    ON ms_sorted_items (universe, map_id, sort_kind, num_key, str_key, item_id);
CREATE INDEX IF NOT EXISTS ms_sorted_expiry ON ms_sorted_items (universe, map_id, expire_us);
CREATE TABLE IF NOT EXISTS ms_queue_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    universe TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    data TEXT NOT NULL,
    priority REAL NOT NULL,
    expire_us INTEGER NOT NULL,
    invisible_until_us INTEGER NOT NULL DEFAULT 0,
    read_id TEXT,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ms_queue_order ON ms_queue_items (universe, queue_id, priority DESC, seq);
CREATE INDEX IF NOT EXISTS ms_queue_expiry ON ms_queue_items (universe, queue_id, expire_us);
CREATE INDEX IF NOT EXISTS ms_queue_reads ON ms_queue_items (universe, queue_id, read_id);
CREATE TABLE IF NOT EXISTS ms_operations (
    universe TEXT NOT NULL,
    operation_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    create_us INTEGER NOT NULL,
    PRIMARY KEY (universe, operation_id)
);
CREATE TABLE IF NOT EXISTS ms_counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

SortKey = float | str | None
Position = tuple[int, float, str, str]  # (sort kind, number, string, id): a sorted-map slot


def to_us(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def json_size(text: str) -> int:
    return len(text.encode("utf-8"))


@dataclass(frozen=True)
class SortedItem:
    item_id: str
    value: Any
    sort_key: SortKey
    etag: str
    expire_time: datetime

    @property
    def position(self) -> Position:
        return _position(self.sort_key, self.item_id)


@dataclass(frozen=True)
class SortedWrite:
    """A validated sorted-map write: the whole new item apart from its id and etag."""

    value_json: str
    sort_key: SortKey
    ttl: timedelta


@dataclass(frozen=True)
class Condition:
    """One filter clause: `field op literal` with op `<` or `>`."""

    field: Literal["id", "sortKey"]
    op: Literal["<", ">"]
    value: float | str


@dataclass(frozen=True)
class QueueItem:
    item_id: str
    data: Any
    priority: float
    expire_time: datetime


@dataclass(frozen=True)
class Operation:
    operation_id: str
    scope: str
    create_time: datetime


def _expiry_us(now_us: int, ttl: timedelta) -> int:
    """When an item written now with `ttl` expires: rounded up to a whole second."""
    end = now_us + ttl // timedelta(microseconds=1)
    return -(-end // 1_000_000) * 1_000_000


def _position(sort_key: SortKey, item_id: str) -> Position:
    if sort_key is None:
        return (NO_SORT_KEY, 0.0, "", item_id)
    if isinstance(sort_key, str):
        return (STRING, 0.0, sort_key, item_id)
    return (NUMERIC, float(sort_key), "", item_id)


def _sorted_row(row: sqlite3.Row) -> SortedItem:
    kind = row["sort_kind"]
    sort_key: SortKey = (
        row["num_key"] if kind == NUMERIC else row["str_key"] if kind == STRING else None
    )
    return SortedItem(
        item_id=row["item_id"],
        value=json.loads(row["value"]),
        sort_key=sort_key,
        etag=row["etag"],
        expire_time=from_us(row["expire_us"]),
    )


def _queue_row(row: sqlite3.Row) -> QueueItem:
    return QueueItem(
        item_id=row["item_id"],
        data=json.loads(row["data"]),
        priority=row["priority"],
        expire_time=from_us(row["expire_us"]),
    )


def _condition_sql(cond: Condition) -> tuple[str, list[Any]]:
    """SQL for one clause; sortKey clauses compare (kind, key) row values in map order."""
    if cond.field == "id":
        return f"item_id {cond.op} ?", [cond.value]
    if isinstance(cond.value, str):
        return f"(sort_kind, str_key) {cond.op} (?, ?)", [STRING, cond.value]
    return f"(sort_kind, num_key) {cond.op} (?, ?)", [NUMERIC, float(cond.value)]


def _exhausted(name: str, message: str) -> EmulatorError:
    return EmulatorError("RESOURCE_EXHAUSTED", f"{name}: {message}")


class MemoryStore:
    """All memory-store state of one emulator; every public method is one transaction."""

    def __init__(self, db: Database, clock: Clock, limits: LimitsConfig) -> None:
        self.db = db
        self.clock = clock
        self.limits = limits
        db.ensure_schema(SCHEMA)

    def _now_us(self) -> int:
        return to_us(self.clock.now())

    def _next_etag(self, conn: sqlite3.Connection) -> str:
        # Live Roblox etags are small increasing integers ("10", "12", ...); a shared
        # counter gives the same shape and changes on every write.
        conn.execute(
            "INSERT INTO ms_counters (name, value) VALUES ('etag', 1) "
            "ON CONFLICT (name) DO UPDATE SET value = value + 1"
        )
        row = conn.execute("SELECT value FROM ms_counters WHERE name = 'etag'").fetchone()
        return str(row["value"])

    # ------------------------------------------------------------------ quotas

    def _check_memory(
        self,
        conn: sqlite3.Connection,
        universe: str,
        table: str,
        column: str,
        structure: str,
        growth: int,
        new_items: int,
        now: int,
    ) -> None:
        """Refuse a write that grows memory past a documented quota (documented mode only).

        Expired rows of other structures may not be purged yet; they hold no memory.
        """
        if self.limits.mode != "documented" or (growth <= 0 and new_items <= 0):
            return
        row = conn.execute(
            f"SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM {table} "
            f"WHERE universe = ? AND {column} = ? AND expire_us > ?",
            (universe, structure, now),
        ).fetchone()
        if row["n"] + new_items > MAX_STRUCTURE_ITEMS:
            raise _exhausted(
                "DataStructureItemsOverLimit",
                f"{structure!r} already holds {MAX_STRUCTURE_ITEMS:,} items, the most one "
                "sorted map or queue can hold. Remove items or let them expire.",
            )
        if row["bytes"] + growth > MAX_STRUCTURE_BYTES:
            raise _exhausted(
                "DataStructureMemoryOverLimit",
                f"{structure!r} would exceed the 100 MB limit for one sorted map or queue.",
            )
        used = 0
        for name in ("ms_sorted_items", "ms_queue_items"):
            used += conn.execute(
                f"SELECT COALESCE(SUM(size), 0) AS bytes FROM {name} "
                "WHERE universe = ? AND expire_us > ?",
                (universe, now),
            ).fetchone()["bytes"]
        quota = int(QUOTA_BASE_BYTES + QUOTA_PER_USER_BYTES * self.limits.ccu)
        if used + growth > quota:
            raise _exhausted(
                "TotalMemoryOverLimit",
                f"universe {universe} would use {used + growth:,} bytes of memory store, over "
                f"its quota of {quota:,} bytes (64 KB + 1.2 KB x {self.limits.ccu} concurrent "
                "users). Remove items, shorten TTLs, or run the emulator with a higher --ccu.",
            )

    # ------------------------------------------------------------- sorted maps

    def _purge_map(self, conn: sqlite3.Connection, universe: str, map_id: str, now: int) -> None:
        conn.execute(
            "DELETE FROM ms_sorted_items WHERE universe = ? AND map_id = ? AND expire_us <= ?",
            (universe, map_id, now),
        )

    def _sorted_current(
        self, conn: sqlite3.Connection, universe: str, map_id: str, item_id: str
    ) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM ms_sorted_items WHERE universe = ? AND map_id = ? AND item_id = ?",
            (universe, map_id, item_id),
        ).fetchone()
        return row

    def get_sorted(self, universe: str, map_id: str, item_id: str) -> SortedItem:
        with self.db.transaction() as conn:
            self._purge_map(conn, universe, map_id, self._now_us())
            row = self._sorted_current(conn, universe, map_id, item_id)
        if row is None:
            raise not_found(f"Item {item_id!r} does not exist in sorted map {map_id!r}.")
        return _sorted_row(row)

    def create_sorted(
        self, universe: str, map_id: str, item_id: str, write: SortedWrite
    ) -> SortedItem:
        with self.db.transaction() as conn:
            now = self._now_us()
            self._purge_map(conn, universe, map_id, now)
            if self._sorted_current(conn, universe, map_id, item_id) is not None:
                # 409 as the rblx-open-cloud client expects, with a code from the v2 error table
                # (which has no ALREADY_EXISTS; ABORTED is its conflict code).
                raise EmulatorError(
                    "ABORTED",
                    f"Item {item_id!r} already exists in sorted map {map_id!r}; update it "
                    "with PATCH instead.",
                )
            return self._put_sorted(conn, universe, map_id, item_id, write, now, None)

    def update_sorted(
        self,
        universe: str,
        map_id: str,
        item_id: str,
        write: SortedWrite,
        *,
        allow_missing: bool,
        etag: str | None,
    ) -> SortedItem:
        """Replace the item's value, sort key and TTL, as the engine's SetAsync does."""
        with self.db.transaction() as conn:
            now = self._now_us()
            self._purge_map(conn, universe, map_id, now)
            current = self._sorted_current(conn, universe, map_id, item_id)
            if current is None and not allow_missing:
                raise not_found(
                    f"Item {item_id!r} does not exist in sorted map {map_id!r}. Pass "
                    "allowMissing=true to create it."
                )
            if etag is not None and (current is None or current["etag"] != etag):
                have = "does not exist" if current is None else f"has etag {current['etag']!r}"
                # v2 answers a failed etag precondition with 409 ABORTED (opencloud-api.md §4.3).
                raise EmulatorError(
                    "ABORTED",
                    f"The etag {etag!r} does not match: item {item_id!r} {have}. Read the "
                    "item again and retry with its current etag.",
                )
            return self._put_sorted(conn, universe, map_id, item_id, write, now, current)

    def _put_sorted(
        self,
        conn: sqlite3.Connection,
        universe: str,
        map_id: str,
        item_id: str,
        write: SortedWrite,
        now: int,
        current: sqlite3.Row | None,
    ) -> SortedItem:
        kind, num, text, _ = _position(write.sort_key, item_id)
        size = json_size(item_id) + json_size(write.value_json) + json_size(text)
        old_size = current["size"] if current is not None else 0
        self._check_memory(
            conn,
            universe,
            "ms_sorted_items",
            "map_id",
            map_id,
            size - old_size,
            0 if current is not None else 1,
            now,
        )
        etag = self._next_etag(conn)
        expire = _expiry_us(now, write.ttl)
        conn.execute(
            "INSERT OR REPLACE INTO ms_sorted_items (universe, map_id, item_id, value, "
            "sort_kind, num_key, str_key, etag, expire_us, size) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (universe, map_id, item_id, write.value_json, kind, num, text, etag, expire, size),
        )
        return SortedItem(
            item_id, json.loads(write.value_json), write.sort_key, etag, from_us(expire)
        )

    def delete_sorted(self, universe: str, map_id: str, item_id: str) -> None:
        """Idempotent, like the engine's RemoveAsync: a missing item is not an error."""
        with self.db.transaction() as conn:
            self._purge_map(conn, universe, map_id, self._now_us())
            conn.execute(
                "DELETE FROM ms_sorted_items WHERE universe = ? AND map_id = ? AND item_id = ?",
                (universe, map_id, item_id),
            )

    def list_sorted(
        self,
        universe: str,
        map_id: str,
        *,
        conditions: Sequence[Condition],
        descending: bool,
        after: Position | None,
        limit: int,
    ) -> tuple[list[SortedItem], Position | None]:
        """One page in map order; returns the items and the last position if more remain."""
        clauses = ["universe = ?", "map_id = ?"]
        params: list[Any] = [universe, map_id]
        for cond in conditions:
            sql, values = _condition_sql(cond)
            clauses.append(sql)
            params.extend(values)
        if after is not None:
            clauses.append(
                f"(sort_kind, num_key, str_key, item_id) {'<' if descending else '>'} (?, ?, ?, ?)"
            )
            params.extend(after)
        direction = "DESC" if descending else "ASC"
        order = ", ".join(
            f"{col} {direction}" for col in ("sort_kind", "num_key", "str_key", "item_id")
        )
        with self.db.transaction() as conn:
            self._purge_map(conn, universe, map_id, self._now_us())
            rows = conn.execute(
                f"SELECT * FROM ms_sorted_items WHERE {' AND '.join(clauses)} "
                f"ORDER BY {order} LIMIT ?",
                [*params, limit + 1],
            ).fetchall()
        items = [_sorted_row(row) for row in rows[:limit]]
        more = len(rows) > limit
        return items, (items[-1].position if more and items else None)

    # ------------------------------------------------------------------ queues

    def _purge_queue(
        self, conn: sqlite3.Connection, universe: str, queue_id: str, now: int
    ) -> None:
        conn.execute(
            "DELETE FROM ms_queue_items WHERE universe = ? AND queue_id = ? AND expire_us <= ?",
            (universe, queue_id, now),
        )

    def add_queue_item(
        self, universe: str, queue_id: str, data_json: str, priority: float, ttl: timedelta
    ) -> QueueItem:
        with self.db.transaction() as conn:
            now = self._now_us()
            self._purge_queue(conn, universe, queue_id, now)
            size = json_size(data_json)
            self._check_memory(conn, universe, "ms_queue_items", "queue_id", queue_id, size, 1, now)
            item_id = uuid.uuid4().hex
            expire = _expiry_us(now, ttl)
            conn.execute(
                "INSERT INTO ms_queue_items (universe, queue_id, item_id, data, priority, "
                "expire_us, size) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (universe, queue_id, item_id, data_json, priority, expire, size),
            )
        return QueueItem(item_id, json.loads(data_json), priority, from_us(expire))

    def read_queue(
        self,
        universe: str,
        queue_id: str,
        *,
        count: int,
        all_or_nothing: bool,
        window: timedelta,
        charge: Callable[[int], None],
    ) -> tuple[str, list[QueueItem]]:
        """Hide the first `count` visible items (highest priority, then oldest) for `window`.

        `charge(n)` runs before anything is committed so a throttled read hides nothing.
        """
        with self.db.transaction() as conn:
            now = self._now_us()
            self._purge_queue(conn, universe, queue_id, now)
            rows = conn.execute(
                "SELECT * FROM ms_queue_items WHERE universe = ? AND queue_id = ? "
                "AND invisible_until_us <= ? ORDER BY priority DESC, seq ASC LIMIT ?",
                (universe, queue_id, now, count),
            ).fetchall()
            if all_or_nothing and len(rows) < count:
                raise not_found(
                    f"Queue {queue_id!r} has {len(rows)} visible item(s) but {count} were "
                    "requested with allOrNothing=true; nothing was read."
                )
            charge(max(1, len(rows)))
            read_id = uuid.uuid4().hex
            until = now + window // timedelta(microseconds=1)
            conn.executemany(
                "UPDATE ms_queue_items SET invisible_until_us = ?, read_id = ? WHERE seq = ?",
                [(until, read_id, row["seq"]) for row in rows],
            )
        return read_id, [_queue_row(row) for row in rows]

    def discard_queue_items(self, universe: str, queue_id: str, read_id: str) -> int:
        """Remove the items still held by `read_id`; once its window has ended they are
        visible again (and may belong to a newer read), so they stay."""
        with self.db.transaction() as conn:
            now = self._now_us()
            self._purge_queue(conn, universe, queue_id, now)
            cursor = conn.execute(
                "DELETE FROM ms_queue_items WHERE universe = ? AND queue_id = ? AND read_id = ? "
                "AND invisible_until_us > ?",
                (universe, queue_id, read_id, now),
            )
            return cursor.rowcount

    # ------------------------------------------------------------------- flush

    def flush(self, universe: str, scope: str) -> Operation:
        """Remove every sorted map and queue of the universe's LIVE store at once."""
        with self.db.transaction() as conn:
            now = self._now_us()
            if scope == "LIVE":
                conn.execute("DELETE FROM ms_sorted_items WHERE universe = ?", (universe,))
                conn.execute("DELETE FROM ms_queue_items WHERE universe = ?", (universe,))
            operation_id = secrets.token_urlsafe(30)
            conn.execute(
                "INSERT INTO ms_operations (universe, operation_id, scope, create_us) "
                "VALUES (?, ?, ?, ?)",
                (universe, operation_id, scope, now),
            )
        return Operation(operation_id, scope, from_us(now))

    def get_operation(self, universe: str, operation_id: str) -> Operation:
        row = self.db.conn.execute(
            "SELECT * FROM ms_operations WHERE universe = ? AND operation_id = ?",
            (universe, operation_id),
        ).fetchone()
        if row is None:
            raise not_found(
                f"No memory store operation {operation_id!r} exists for universe {universe}."
            )
        return Operation(row["operation_id"], row["scope"], from_us(row["create_us"]))
