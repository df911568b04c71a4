"""Pairing attempts on disk, so the pairing limits survive a restart of `dsm serve`.

A process that floods pairing must not get a fresh allowance by crashing or restarting the
server, so every counted start and complete is written to `pairing.sqlite3` (a file of its own:
the token file's schema stays as it is) with its wall-clock time, and read back at start-up.
Only the newest hour matters; older rows are dropped as new ones are written.
"""

from __future__ import annotations

from pathlib import Path

from ..storage.sqlite import SqliteFile

__all__ = ["DB_FILENAME", "KEEP_SECONDS", "AttemptLog"]

DB_FILENAME = "pairing.sqlite3"
KEEP_SECONDS = 3600.0  # no pairing limit has a window longer than this
SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    kind TEXT NOT NULL,
    at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_kind ON attempts (kind, at);
"""


class AttemptLog:
    def __init__(self, path: Path) -> None:
        self._db = SqliteFile(path, schema=SCHEMA, version=1)

    @classmethod
    def open(cls, data_dir: Path) -> AttemptLog:
        return cls(data_dir / DB_FILENAME)

    def close(self) -> None:
        self._db.close()

    def load(self, kind: str, since: float) -> list[float]:
        """Times of `kind` attempts at or after `since`, oldest first."""
        rows = self._db.conn.execute(
            "SELECT at FROM attempts WHERE kind = ? AND at >= ? ORDER BY at", (kind, since)
        ).fetchall()
        return [float(row[0]) for row in rows]

    def record(self, kind: str, at: float, forget_before: float) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM attempts WHERE kind = ? AND at < ?", (kind, forget_before))
            # Kinds per client name would otherwise stay after their name stops pairing.
            conn.execute("DELETE FROM attempts WHERE at < ?", (at - KEEP_SECONDS,))
            conn.execute("INSERT INTO attempts (kind, at) VALUES (?, ?)", (kind, at))
