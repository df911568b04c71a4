"""Assistant tokens' cap usage on disk (`assistants.sqlite3`), so the caps survive a restart of
`dsm serve` and a person can read each assistant's usage with `dsm tokens list` while the server
runs (the file is SQLite in WAL mode, like the token file).

Every API request an assistant token makes and every Open Cloud call made for it is a row with
its wall-clock time; a record counts while it is less than a minute old, and older rows are
dropped as new ones are written. The server also writes the caps it runs with, so the usage is read against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..storage.sqlite import SqliteFile

__all__ = ["DB_FILENAME", "CapsInForce", "Kind", "UsageLog"]

DB_FILENAME = "assistants.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    token_id TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('request', 'opencloud')),
    at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_by_token ON usage (token_id, kind, at);
CREATE INDEX IF NOT EXISTS usage_by_time ON usage (at);
CREATE TABLE IF NOT EXISTS caps (
    id                   INTEGER PRIMARY KEY CHECK (id = 1),
    requests_per_minute  INTEGER NOT NULL,
    opencloud_per_minute INTEGER NOT NULL,
    proposals_allowed    INTEGER NOT NULL
);
"""

Kind = Literal["request", "opencloud"]


@dataclass(frozen=True)
class CapsInForce:
    """The caps the server last started with."""

    requests_per_minute: int
    opencloud_per_minute: int
    proposals_allowed: bool


class UsageLog:
    def __init__(self, path: Path) -> None:
        self._db = SqliteFile(path, schema=SCHEMA, version=1)

    @classmethod
    def open(cls, data_dir: Path) -> UsageLog:
        return cls(data_dir / DB_FILENAME)

    def close(self) -> None:
        self._db.close()

    def load(self, since: float) -> list[tuple[str, Kind, float]]:
        """(token id, kind, time) of every record after `since`, oldest first."""
        rows = self._db.conn.execute(
            "SELECT token_id, kind, at FROM usage WHERE at > ? ORDER BY at", (since,)
        ).fetchall()
        return [(str(token), kind, float(at)) for token, kind, at in rows]

    def counts(self, since: float) -> dict[str, tuple[int, int]]:
        """token id -> (API requests, Open Cloud calls) after `since`."""
        rows = self._db.conn.execute(
            "SELECT token_id, SUM(kind = 'request'), SUM(kind = 'opencloud') FROM usage"
            " WHERE at > ? GROUP BY token_id",
            (since,),
        ).fetchall()
        return {str(token): (int(requests), int(calls)) for token, requests, calls in rows}

    def record(self, token_id: str, kind: Kind, at: float, forget_before: float) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM usage WHERE at <= ?", (forget_before,))
            conn.execute(
                "INSERT INTO usage (token_id, kind, at) VALUES (?, ?, ?)", (token_id, kind, at)
            )

    def set_caps(self, caps: CapsInForce) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO caps (id, requests_per_minute, opencloud_per_minute,"
                " proposals_allowed) VALUES (1, ?, ?, ?)",
                (caps.requests_per_minute, caps.opencloud_per_minute, int(caps.proposals_allowed)),
            )

    def caps(self) -> CapsInForce | None:
        row = self._db.conn.execute(
            "SELECT requests_per_minute, opencloud_per_minute, proposals_allowed FROM caps"
        ).fetchone()
        if row is None:
            return None
        return CapsInForce(int(row[0]), int(row[1]), bool(row[2]))
