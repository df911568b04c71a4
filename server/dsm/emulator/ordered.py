"""Ordered data stores: the state behind both the legacy v1 and the Cloud v2 surfaces.

The model is universe -> ordered store name -> scope -> entry id -> int64 value, with no
versions, metadata or tombstones (opencloud-api.md §3, §5.1, §6): a delete removes the row.

Listing order is by value, and ties are broken by entry id ascending in *both* directions.
Roblox documents no tie order; a fixed one keeps keyset page tokens stable.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from .db import Database
from .errors import EmulatorError, invalid, not_found
from .validation import INT64_MAX, INT64_MIN

SCHEMA = """
CREATE TABLE IF NOT EXISTS ordered_entries (
    universe TEXT NOT NULL,
    store TEXT NOT NULL,
    scope TEXT NOT NULL,
    id TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (universe, store, scope, id)
);
CREATE INDEX IF NOT EXISTS ordered_entries_by_value
    ON ordered_entries (universe, store, scope, value, id);
"""

ENTRY_EXISTS_MESSAGE = "Entry already exists."  # clients match this text (OBS-PY)


@dataclass(frozen=True)
class StoredOrderedEntry:
    id: str
    value: int


@dataclass(frozen=True)
class ValueRange:
    """An inclusive value filter; None on a side means unbounded."""

    minimum: int | None = None
    maximum: int | None = None


def clamp_int64(value: int) -> int:
    return max(INT64_MIN, min(INT64_MAX, value))


# Roblox's filter grammar is exact: `entry >= N`, `entry <= N`, or one of each joined by
# ` && ` in either order, single spaces, case-sensitive (opencloud-api.md §3).
_TERM = r"entry (>=|<=) (-?[0-9]+)"
_FILTER = re.compile(rf"{_TERM}(?: && {_TERM})?")
FILTER_HELP = (
    "Supported filters are 'entry >= N', 'entry <= N' and 'entry >= N && entry <= M' "
    "(either order), with exactly one space between tokens."
)


def parse_filter(text: str | None) -> ValueRange:
    """Parse a list filter; an empty or absent filter matches every entry."""
    if text is None or text == "":
        return ValueRange()
    match = _FILTER.fullmatch(text)
    if match is None:
        raise invalid(f"Invalid filter {text!r}. {FILTER_HELP}")
    op1, num1, op2, num2 = match.groups()
    terms = [(op1, num1)] + ([(op2, num2)] if op2 is not None else [])
    if len(terms) == 2 and op1 == op2:
        raise invalid(
            f"Invalid filter {text!r}: '&&' must join one '>=' with one '<='. {FILTER_HELP}"
        )
    bounds: dict[str, int] = {}
    for op, number in terms:
        bound = int(number)
        if not INT64_MIN <= bound <= INT64_MAX:
            raise invalid(f"Invalid filter {text!r}: {number} is outside the 64-bit range.")
        bounds[op] = bound
    return ValueRange(minimum=bounds.get(">="), maximum=bounds.get("<="))


class OrderedStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)

    def get(
        self, universe: str, store: str, scope: str, entry_id: str
    ) -> StoredOrderedEntry | None:
        row = self.db.conn.execute(
            "SELECT value FROM ordered_entries "
            "WHERE universe = ? AND store = ? AND scope = ? AND id = ?",
            (universe, store, scope, entry_id),
        ).fetchone()
        return None if row is None else StoredOrderedEntry(entry_id, int(row["value"]))

    def require(self, universe: str, store: str, scope: str, entry_id: str) -> StoredOrderedEntry:
        entry = self.get(universe, store, scope, entry_id)
        if entry is None:
            raise missing(store, scope, entry_id)
        return entry

    def create(
        self, universe: str, store: str, scope: str, entry_id: str, value: int
    ) -> StoredOrderedEntry:
        with self.db.transaction() as conn:
            if self.get(universe, store, scope, entry_id) is not None:
                raise invalid(ENTRY_EXISTS_MESSAGE)
            _put(conn, universe, store, scope, entry_id, value)
        return StoredOrderedEntry(entry_id, value)

    def update(
        self,
        universe: str,
        store: str,
        scope: str,
        entry_id: str,
        value: int,
        *,
        allow_missing: bool,
    ) -> StoredOrderedEntry:
        with self.db.transaction() as conn:
            if not allow_missing and self.get(universe, store, scope, entry_id) is None:
                raise missing(store, scope, entry_id)
            _put(conn, universe, store, scope, entry_id, value)
        return StoredOrderedEntry(entry_id, value)

    def increment(
        self, universe: str, store: str, scope: str, entry_id: str, amount: int
    ) -> StoredOrderedEntry:
        """Add `amount`, creating a missing entry with `amount`.

        Roblox documents that increments may run past int64 in its backend while the value
        it *returns* is clamped. SQLite holds only int64, so the emulator saturates the stored
        value at the bounds; every response is then the clamped value Roblox would return.
        A missing entry is created, as the engine's IncrementAsync and v2 increments do.
        """
        with self.db.transaction() as conn:
            current = self.get(universe, store, scope, entry_id)
            total = clamp_int64((current.value if current else 0) + amount)
            _put(conn, universe, store, scope, entry_id, total)
        return StoredOrderedEntry(entry_id, total)

    def delete(self, universe: str, store: str, scope: str, entry_id: str) -> bool:
        """Remove the entry at once (no tombstone); True if it existed."""
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM ordered_entries "
                "WHERE universe = ? AND store = ? AND scope = ? AND id = ?",
                (universe, store, scope, entry_id),
            )
        return cursor.rowcount > 0

    def list(
        self,
        universe: str,
        store: str,
        scope: str,
        *,
        descending: bool,
        value_range: ValueRange,
        after: StoredOrderedEntry | None,
        limit: int,
    ) -> tuple[list[StoredOrderedEntry], bool]:
        """One page in (value, id) order after `after`; also whether more entries follow."""
        sql = "SELECT id, value FROM ordered_entries WHERE universe = ? AND store = ? AND scope = ?"
        args: list[object] = [universe, store, scope]
        if value_range.minimum is not None:
            sql += " AND value >= ?"
            args.append(value_range.minimum)
        if value_range.maximum is not None:
            sql += " AND value <= ?"
            args.append(value_range.maximum)
        beyond = "<" if descending else ">"
        if after is not None:
            sql += f" AND (value {beyond} ? OR (value = ? AND id > ?))"
            args += [after.value, after.value, after.id]
        sql += f" ORDER BY value {'DESC' if descending else 'ASC'}, id ASC LIMIT ?"
        args.append(limit + 1)
        rows = self.db.conn.execute(sql, args).fetchall()
        entries = [StoredOrderedEntry(r["id"], int(r["value"])) for r in rows[:limit]]
        return entries, len(rows) > limit


def _put(
    conn: sqlite3.Connection, universe: str, store: str, scope: str, entry_id: str, value: int
) -> None:
    conn.execute(
        "INSERT INTO ordered_entries (universe, store, scope, id, value) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (universe, store, scope, id) DO UPDATE SET value = excluded.value",
        (universe, store, scope, entry_id, value),
    )


def missing(store: str, scope: str, entry_id: str) -> EmulatorError:
    return not_found(
        f"Entry {entry_id!r} was not found in ordered data store {store!r} (scope {scope!r})."
    )
