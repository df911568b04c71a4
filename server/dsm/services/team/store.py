"""This server's own team state on disk (`team.sqlite3` in the data directory).

- this server's id in every team (random, made once);
- which universes are opted in, with this server's role, name and caps;
- a local copy of each universe's audit chain (records sealed with the data key: they name
  keys), so the Activity view reads no Open Cloud at all;
- the newest chain head this server has seen, in clear: `dsm audit verify` checks the chain
  read from Open Cloud against it, so a cut-off tail or a rewritten chain is caught.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shared_schema.common import Role

from ...storage.crypto import IntegrityError, RecordCipher, slot
from ...storage.sqlite import SqliteFile

FILENAME = "team.sqlite3"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS spaces (
    universe INTEGER PRIMARY KEY,
    enabled INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    name TEXT NOT NULL,
    max_rpm INTEGER NOT NULL,
    max_bytes INTEGER NOT NULL,
    changed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    universe INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (universe, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heads (
    universe INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    seen_at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Space:
    universe_id: int
    enabled: bool
    role: Role
    name: str
    max_rpm: int
    max_bytes: int


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str


class TeamStore:
    def __init__(self, data_dir: Path, cipher: RecordCipher) -> None:
        self._db = SqliteFile(data_dir / FILENAME, schema=SCHEMA, version=SCHEMA_VERSION)
        self._cipher = cipher
        self._lock = threading.Lock()
        self.server_id = self._server_id()

    def close(self) -> None:
        self._db.close()

    def _server_id(self) -> str:
        row = self._db.conn.execute("SELECT value FROM meta WHERE name = 'server_id'").fetchone()
        if row is not None:
            return str(row[0])
        made = "srv" + secrets.token_hex(6)
        with self._db.transaction() as conn:
            conn.execute("INSERT INTO meta (name, value) VALUES ('server_id', ?)", (made,))
        return made

    # ---------------------------------------------------------------- spaces

    def spaces(self) -> list[Space]:
        rows = self._db.conn.execute(
            "SELECT universe, enabled, role, name, max_rpm, max_bytes FROM spaces ORDER BY universe"
        ).fetchall()
        return [Space(int(u), bool(e), Role(r), n, int(m), int(b)) for u, e, r, n, m, b in rows]

    def space(self, universe_id: int) -> Space | None:
        return next((s for s in self.spaces() if s.universe_id == universe_id), None)

    def save_space(self, space: Space) -> None:
        with self._lock, self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO spaces (universe, enabled, role, name, max_rpm, max_bytes, changed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (universe) DO UPDATE SET"
                " enabled = excluded.enabled, role = excluded.role, name = excluded.name,"
                " max_rpm = excluded.max_rpm, max_bytes = excluded.max_bytes,"
                " changed_at = excluded.changed_at",
                (
                    space.universe_id,
                    int(space.enabled),
                    space.role.value,
                    space.name,
                    space.max_rpm,
                    space.max_bytes,
                    datetime.now(UTC).isoformat(),
                ),
            )

    # ---------------------------------------------------------------- audit copy

    def head(self, universe_id: int) -> Head | None:
        row = self._db.conn.execute(
            "SELECT seq, hash FROM heads WHERE universe = ?", (universe_id,)
        ).fetchone()
        return None if row is None else Head(int(row[0]), str(row[1]))

    def note_head(self, universe_id: int, head: Head) -> None:
        """Keep `head` if it is newer than the one kept (a head is never moved back)."""
        with self._lock, self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO heads (universe, seq, hash, seen_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (universe) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,"
                " seen_at = excluded.seen_at WHERE excluded.seq > heads.seq",
                (universe_id, head.seq, head.hash, datetime.now(UTC).isoformat()),
            )

    def keep_record(self, universe_id: int, seq: int, hash_: str, text: str) -> None:
        sealed = self._cipher.seal(text.encode("utf-8"), slot("team-audit", universe_id, seq))
        with self._lock, self._db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO audit (universe, seq, hash, body) VALUES (?, ?, ?, ?)",
                (universe_id, seq, hash_, sealed),
            )

    def kept_hashes(self, universe_id: int) -> dict[int, str]:
        """seq -> hash of every record kept (the local copy may have gaps until it is synced)."""
        rows = self._db.conn.execute(
            "SELECT seq, hash FROM audit WHERE universe = ?", (universe_id,)
        ).fetchall()
        return {int(seq): str(digest) for seq, digest in rows}

    def kept_count(self, universe_id: int) -> int:
        row = self._db.conn.execute(
            "SELECT COUNT(*) FROM audit WHERE universe = ?", (universe_id,)
        ).fetchone()
        return int(row[0])

    def records(self, universe_id: int, before: int | None = None) -> Iterator[tuple[int, str]]:
        """(seq, record JSON) newest first; a row that does not open (a data key of another run)
        is dropped, to be read again from Open Cloud."""
        cursor = self._db.conn.execute(
            "SELECT seq, body FROM audit WHERE universe = ? AND seq < ? ORDER BY seq DESC",
            (universe_id, before if before is not None else 2**62),
        )
        cursor.arraysize = 200
        for seq, body in list(cursor.fetchall()):
            try:
                text = self._cipher.open(bytes(body), slot("team-audit", universe_id, int(seq)))
            except IntegrityError:
                self.forget_records(universe_id)
                return
            yield int(seq), text.decode("utf-8")

    def forget_records(self, universe_id: int) -> None:
        with self._lock, self._db.transaction() as conn:
            conn.execute("DELETE FROM audit WHERE universe = ?", (universe_id,))
