"""The server's SQLite files (cache, journal): open in WAL mode, create the schema, transactions.

Shared by the storage modules only; the emulator keeps its own database code so the server and
the emulator share nothing but HTTP.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

# msgpack ships no type information; pack/unpack below are the typed boundary.
import msgpack  # type: ignore[import-untyped]

Synchronous = Literal["NORMAL", "FULL"]

# SQLite names the side files after the database file; all of them belong to one database.
SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


class StorageFileError(Exception):
    """A storage file cannot be used: not a database, damaged, or from another schema version."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def is_disk_error(exc: BaseException) -> bool:
    """True for failures of the file or the disk, False for bugs in our own SQL.

    sqlite3.ProgrammingError subclasses DatabaseError, but it means we misused the API; hiding it
    behind "the cache file is damaged" would bury a real bug.
    """
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.ProgrammingError)


class SqliteFile:
    """One SQLite file with its schema, opened for a single process.

    `schema` is idempotent DDL (CREATE ... IF NOT EXISTS); `version` is kept in PRAGMA
    user_version so a file written by another schema is refused instead of misread.
    `migrations` maps an older version N to the SQL that brings a file from N to N + 1; a file
    with such a version is upgraded in one transaction when it is opened.
    Raises StorageFileError when the file is not a usable database.
    """

    def __init__(
        self,
        path: Path,
        *,
        schema: str,
        version: int,
        synchronous: Synchronous = "NORMAL",
        verify: bool = True,
        incremental_vacuum: bool = False,
        migrations: Mapping[int, str] | None = None,
    ) -> None:
        self.path = path
        self._migrations = dict(migrations or {})
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _create_private(path)
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            self._prepare(schema, version, synchronous, verify, incremental_vacuum)
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            if not is_disk_error(exc):
                raise
            raise StorageFileError(path, f"not a readable SQLite database ({exc})") from exc
        except BaseException:
            self.conn.close()
            raise

    def _prepare(
        self, schema: str, version: int, synchronous: Synchronous, verify: bool, vacuum: bool
    ) -> None:
        conn = self.conn
        conn.execute("PRAGMA busy_timeout=5000")
        if vacuum:
            # Lets deletions hand space back to the file system. Only takes effect on a new,
            # empty file, so it must come before journal_mode writes the header.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise StorageFileError(self.path, "the file system does not support WAL mode")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        # A single 4 MiB value makes the WAL grow past the default checkpoint size; cap what
        # stays on disk after a checkpoint so the side file does not keep the high-water mark.
        conn.execute("PRAGMA journal_size_limit=67108864")
        if verify:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise StorageFileError(self.path, "damaged: " + "; ".join(problems[:5]))
        found = int(conn.execute("PRAGMA user_version").fetchone()[0])
        fresh = found == 0 and not conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        if not fresh and found < version and self._can_migrate(found, version):
            steps = "\n;".join(self._migrations[v] for v in range(found, version))
            self._script(f"{steps}\n;PRAGMA user_version={int(version)};")
            return
        if not fresh and found != version:
            raise StorageFileError(
                self.path, f"written by schema version {found}, this server uses {version}"
            )
        if not fresh:
            return  # schema already in place; opening must not cost a write
        self._script(f"{schema}\n;PRAGMA user_version={int(version)};")

    def _can_migrate(self, found: int, version: int) -> bool:
        return found >= 1 and all(v in self._migrations for v in range(found, version))

    def _script(self, sql: str) -> None:
        # One transaction: a crash mid-way leaves either none of the change or all of it.
        conn = self.conn
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nCOMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """BEGIN IMMEDIATE .. COMMIT, rolled back on any exception."""
        return immediate(self.conn)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            # Fold the WAL back into the main file so a clean shutdown leaves one file.
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE .. COMMIT on an autocommit connection, rolled back on any exception."""
    if conn.in_transaction:
        raise RuntimeError("nested storage transaction")
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        # SQLite has already rolled back after some errors (disk full, I/O); ROLLBACK then
        # fails with "no transaction is active", which must not hide the real error.
        with contextlib.suppress(sqlite3.OperationalError):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class RewriteIncomplete(Exception):
    """The write-ahead log could not be emptied: a reader held it the whole time.

    Not a sqlite3 error on purpose: the file is sound, so the cache must not move it aside as
    damaged (a copy that would keep the old bytes); the caller reports the scrub as not done."""


# A TRUNCATE checkpoint gives up (busy) while another connection still reads the log; these
# tries (each after the busy timeout) let a long read finish before the rewrite gives up.
CHECKPOINT_TRIES = 5


def rewrite_securely(conn: sqlite3.Connection) -> None:
    """Rewrite the file so no free page or write-ahead log keeps bytes of removed data.

    secure_delete, then VACUUM, then an emptied (TRUNCATE) log. Raises RewriteIncomplete
    rather than return while the log may still hold old pages: an erasure must not say done
    early. Slow for a big file: run it off the event loop.
    """
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    conn.execute("VACUUM")
    for _ in range(CHECKPOINT_TRIES):
        busy = int(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
        if not busy:
            return
    raise RewriteIncomplete("another connection kept reading the file's write-ahead log")


def _create_private(path: Path) -> None:
    """Create the file owner-only before SQLite opens it; the -wal/-shm files inherit its mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def database_files(path: Path) -> list[Path]:
    """The database file and whichever of its side files exist."""
    files = [path.with_name(path.name + suffix) for suffix in SIDE_SUFFIXES]
    return [p for p in [path, *files] if p.exists()]


def move_aside(path: Path) -> Path:
    """Rename a damaged database (and its side files) to `<name>.corrupt`, replacing an older one.

    Only the latest damaged copy is kept: a cache that keeps getting damaged must not fill the disk.
    """
    target = path.with_name(path.name + ".corrupt")
    for old in database_files(target):
        old.unlink()
    for suffix in ("", *SIDE_SUFFIXES):
        source = path.with_name(path.name + suffix)
        if source.exists():
            os.replace(source, target.with_name(target.name + suffix))
    return target


class RecordFormatError(ValueError):
    """A stored record's plaintext is not the msgpack document we wrote."""


def pack(document: object) -> bytes:
    """msgpack-encode a record before sealing it; str stays str, bytes stay bytes."""
    try:
        packed: bytes = msgpack.packb(document, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"cannot store this value: {exc}") from exc
    return packed


def unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for malformed input
        raise RecordFormatError(f"stored record is malformed: {type(exc).__name__}") from exc
