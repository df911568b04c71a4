"""The search index: one DuckDB file in the data directory, encrypted at rest where possible.

Rows hold one entry's latest indexed revision (key, scope, store, universe, backend, value JSON,
attributes, user ids, revision, times, size); `revisions` keeps every revision the index has
seen (crawls, writes through the server, history reads) for supply history, progression and
jumps; `listed` is every key the crawls listed (coverage = indexed / listed); numeric and
string fields the schema inference finds are materialised as typed columns (`typed_fields`
maps a field path to its column) so queries do not parse JSON every time.

Encryption: DuckDB encrypts a database file (AES-GCM) only with its httpfs extension loaded
(its built-in crypto is read-only). Offline, that extension comes from the PyPI package
`duckdb-extension-httpfs` (DuckDB's own signed build, checked at LOAD: unsigned extensions
stay refused), which pins DuckDB 1.5.5. When it cannot be loaded the file is written
unencrypted with mode 0600, and `protection` says so. `force_mbedtls_unsafe` is never used.

Bulk writes are grouped (`ingest(listed=False)`, `mark_listed`): they wait in in-memory staging
tables and are written out together in one transaction when a DuckDB row group's worth is
waiting, when the oldest has waited FLUSH_SECONDS, before anything reads the index, and on close.
A row group written at once goes straight into the file, compressed, instead of through the
write-ahead log and a later checkpoint: that is most of the ingest rate. A crawl job writes
through `index_crawled`, which writes its batch out before the items count as done, so a crash
never loses an entry a job recorded as indexed. Writes through the server are written at once.

Spilled intermediate results (large sorts and joins) go to `index.tmp/` beside the file,
encrypted like it.

All methods are synchronous and must run on one thread (`IndexWorker` gives the server one).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from shared_schema.common import Backend
from shared_schema.index import Coverage, IndexBasis, IndexProtection

log = logging.getLogger("dsm.index")
_encode_text: Callable[[str], str] = json.encoder.encode_basestring

INDEX_FILENAME = "index.duckdb"
# Bumped when the tables change shape: an older file is a copy of Open Cloud data, so it is
# started again (and crawled again) rather than migrated.
SCHEMA_VERSION = 2
FLUSH_ROWS = 122_880  # one DuckDB row group
FLUSH_SECONDS = 30.0
UPDATE_ROWS = 262_144  # rows filled per step when typed columns are added
# Attributes the sample game puts on every entry it generates (see emulator/sample_game.py).
SAMPLE_ATTRIBUTE = "dsmSample"
MAX_TYPED_COLUMNS = 48
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INGEST_COLUMNS = {
    "seq": "BIGINT",
    "backend": "VARCHAR",
    "crawled_at": "DOUBLE",
    "listed_by": "VARCHAR",  # the crawl id to list the key under if nothing listed it yet
    "universe_id": "BIGINT",
    "datastore": "VARCHAR",
    "scope": "VARCHAR",
    "key": "VARCHAR",
    "value": "VARCHAR",
    "attributes": "VARCHAR",
    "user_ids": "BIGINT[]",
    "revision": "VARCHAR",
    "created_at": "DOUBLE",
    "updated_at": "DOUBLE",
    "size_bytes": "INTEGER",
}
_KEY = ("backend", "universe_id", "datastore", "scope", "key")

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    backend VARCHAR NOT NULL,
    universe_id BIGINT NOT NULL,
    datastore VARCHAR NOT NULL,
    scope VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    value JSON NOT NULL,
    attributes JSON,
    user_ids BIGINT[] NOT NULL,
    revision VARCHAR NOT NULL,
    created_at DOUBLE,          -- epoch seconds; when the key was first created
    updated_at DOUBLE,          -- when this revision was written
    crawled_at DOUBLE NOT NULL, -- when the index read it
    size_bytes INTEGER NOT NULL,
    shape INTEGER NOT NULL      -- shapes.id: the value's json_structure, for schema inference
);
CREATE TABLE IF NOT EXISTS shapes (
    id INTEGER NOT NULL,
    structure VARCHAR NOT NULL  -- json_structure(value)
);
CREATE TABLE IF NOT EXISTS revisions (
    backend VARCHAR NOT NULL,
    universe_id BIGINT NOT NULL,
    datastore VARCHAR NOT NULL,
    scope VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    revision VARCHAR NOT NULL,
    created_at DOUBLE,
    updated_at DOUBLE,
    value JSON NOT NULL,
    user_ids BIGINT[] NOT NULL,
    seen_at DOUBLE NOT NULL     -- typed columns follow, as in entries
);
CREATE TABLE IF NOT EXISTS listed (
    backend VARCHAR NOT NULL,
    universe_id BIGINT NOT NULL,
    datastore VARCHAR NOT NULL,
    scope VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    crawl_id VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS store_crawls (
    backend VARCHAR NOT NULL,
    universe_id BIGINT NOT NULL,
    datastore VARCHAR NOT NULL,
    crawl_id VARCHAR NOT NULL,
    finished_at DOUBLE NOT NULL,
    complete BOOLEAN NOT NULL,
    schema_json JSON NOT NULL   -- {path: [types]} at the end of the crawl, for drift
);
CREATE TABLE IF NOT EXISTS typed_fields (
    path VARCHAR NOT NULL,      -- JSON Pointer
    column_name VARCHAR NOT NULL, -- in entries and revisions
    sql_type VARCHAR NOT NULL   -- DOUBLE, VARCHAR or BOOLEAN
);
CREATE TABLE IF NOT EXISTS meta (version INTEGER NOT NULL);
-- Crawls were once kept here; they are jobs now (jobs.sqlite3).
DROP TABLE IF EXISTS crawls;
"""
# Crawl writes waiting to be written out (see the module docstring); one connection's temp tables.
# Values are checked to be JSON on the way in, so a bad one fails its own ingest call.
_PENDING_COLUMNS = _INGEST_COLUMNS | {"value": "JSON", "attributes": "JSON"}
PENDING = f"""
CREATE TEMP TABLE IF NOT EXISTS pending_entries (
    {", ".join(f"{name} {sql_type}" for name, sql_type in _PENDING_COLUMNS.items())}
);
CREATE TEMP TABLE IF NOT EXISTS pending_listed (
    seq BIGINT, backend VARCHAR, universe_id BIGINT, datastore VARCHAR, scope VARCHAR,
    key VARCHAR, crawl_id VARCHAR
);
"""


@dataclass(frozen=True)
class IndexedEntry:
    """One entry revision as read from Open Cloud, ready to index."""

    universe_id: int
    datastore: str
    scope: str
    key: str
    value_json: str
    revision: str
    created_at: datetime | None = None
    updated_at: datetime | None = None
    attributes: dict[str, Any] | None = None
    user_ids: Sequence[int] = ()

    def row(self, seq: int, backend: Backend, crawled_at: float, listed_by: str) -> str:
        """One line of the NDJSON a batch is staged from (the columns of _INGEST_COLUMNS).

        Written out by hand: about 1.5x faster than json.dumps of a dict per entry.
        """
        attributes = _text(json.dumps(self.attributes)) if self.attributes else "null"
        user_ids = ",".join(str(int(u)) for u in self.user_ids)
        return (
            f'{{"seq":{int(seq)},"backend":{_text(backend.value)},"crawled_at":{_number(crawled_at)},'
            f'"listed_by":{_text(listed_by)},'
            f'"universe_id":{int(self.universe_id)},"datastore":{_text(self.datastore)},'
            f'"scope":{_text(self.scope)},"key":{_text(self.key)},'
            f'"value":{_text(self.value_json)},"attributes":{attributes},'
            f'"user_ids":[{user_ids}],"revision":{_text(self.revision)},'
            f'"created_at":{_number(_epoch(self.created_at))},'
            f'"updated_at":{_number(_epoch(self.updated_at))},'
            f'"size_bytes":{len(self.value_json.encode("utf-8"))}}}'
        )


def _text(value: str) -> str:
    """A JSON string, as json.dumps(value, ensure_ascii=False) writes it."""
    return _encode_text(value)


def _number(value: float | None) -> str:
    return "null" if value is None else repr(float(value))


@dataclass(frozen=True)
class TypedField:
    pointer: str
    column: str
    sql_type: str  # DOUBLE, VARCHAR or BOOLEAN


@dataclass(frozen=True)
class Scope:
    """Which rows an answer covers. Every query filters by backend, so data never mixes."""

    backend: Backend
    universe_id: int
    datastores: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()

    def where(self, alias: str = "") -> tuple[str, list[Any]]:
        p = f"{alias}." if alias else ""
        sql = f"{p}backend = ? AND {p}universe_id = ?"
        params: list[Any] = [self.backend.value, self.universe_id]
        if self.datastores:
            sql += f" AND {p}datastore IN ({', '.join('?' for _ in self.datastores)})"
            params += list(self.datastores)
        if self.scopes:
            sql += f" AND {p}scope IN ({', '.join('?' for _ in self.scopes)})"
            params += list(self.scopes)
        return sql, params


@dataclass
class ProtectionInfo:
    protection: IndexProtection
    note: str


def _epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def to_datetime(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _httpfs_extension() -> Path | None:
    """The signed httpfs build shipped by the `duckdb-extension-httpfs` package, if present."""
    try:
        import duckdb_extension_httpfs  # type: ignore[import-untyped]
    except ImportError:
        return None
    root = Path(duckdb_extension_httpfs.__file__).parent / "extensions"
    wanted = root / f"v{duckdb.__version__}" / "httpfs.duckdb_extension"
    return wanted if wanted.is_file() else None


def _index_key(data_key: bytes) -> str:
    """The index's encryption key, derived from the server's data key (never stored)."""
    return hmac.new(data_key, b"dsm search index v1", hashlib.sha256).hexdigest()


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class IndexStore:
    """The index file and every read and write of it (one thread at a time)."""

    def __init__(self, path: Path, data_key: bytes | None, *, encrypt: bool = True) -> None:
        self.path = path
        self._data_key = data_key
        self._encrypt = encrypt
        self._con: duckdb.DuckDBPyConnection | None = None
        self.protection = ProtectionInfo(IndexProtection.FILE_PERMISSIONS, "not opened yet")
        self.typed: dict[str, TypedField] = {}
        self.generation = 0  # bumps on every change; search cursors and caches key on it
        self._structures: dict[Scope, tuple[int, list[tuple[Any, int]]]] = {}
        self._coverage: dict[Scope, tuple[int, tuple[Any, ...]]] = {}
        self._places: dict[Scope, tuple[int, int]] = {}
        # Crawl writes waiting in the pending tables (module docstring).
        self._seq = 0
        self._pending_entries = 0
        self._pending_listed = 0
        self._pending_since: float | None = None
        # Keys of the pending entries, and whether one came twice (only then is the newest
        # picked per key: the sort that takes is not free).
        self._pending_keys: set[tuple[Backend, int, str, str, str]] = set()
        self._pending_repeats = False

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, data_dir: Path, data_key: bytes | None, *, encrypt: bool = True) -> IndexStore:
        store = cls(data_dir / INDEX_FILENAME, data_key, encrypt=encrypt)
        store._connect()
        return store

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The connection for reading and writing: grouped crawl writes are written out first."""
        self.flush()
        return self._db

    @property
    def _db(self) -> duckdb.DuckDBPyConnection:
        """The connection as it is (what the write-out itself uses)."""
        if self._con is None:
            self._connect()
        assert self._con is not None
        return self._con

    def _connect(self) -> None:
        extension = _httpfs_extension() if self._encrypt and self._data_key else None
        con = duckdb.connect(
            config={
                "autoinstall_known_extensions": "false",
                "autoload_known_extensions": "false",
                "allow_unsigned_extensions": "false",
                "enable_external_access": "true",
                # Not the default `.tmp` in whatever directory the server was started from.
                "temp_directory": str(self._temp_dir),
            }
        )
        fresh = not self.path.exists()
        if extension is not None and self._data_key is not None:
            con.execute(f"LOAD {_sql_text(str(extension))}")
            key = _index_key(self._data_key)
            try:
                self._attach(con, key)
            except duckdb.Error as exc:
                # Written with another key (a previous run's in-memory key) or unencrypted: the
                # index is only a copy of Open Cloud data, so start it again.
                log.warning("search index cannot be opened (%s); starting a new one", exc)
                self._remove_files()
                fresh = True
                self._attach(con, key)
            # Spilled sorts and joins hold players' data too (DuckDB writes them in clear
            # otherwise).
            con.execute("SET temp_file_encryption = true")
            self.protection = ProtectionInfo(
                IndexProtection.ENCRYPTED,
                "Encrypted at rest (DuckDB AES-GCM; key derived from the server's data key) "
                "and readable only by your OS user (mode 0600).",
            )
        else:
            why = (
                "no server data key"
                if not self._data_key
                else "encryption disabled"
                if not self._encrypt
                else "DuckDB's httpfs extension (package duckdb-extension-httpfs) is missing"
            )
            try:
                con.execute(f"ATTACH {_sql_text(str(self.path))} AS idx")
            except duckdb.Error as exc:
                log.warning("search index cannot be opened (%s); starting a new one", exc)
                self._remove_files()
                fresh = True
                con.execute(f"ATTACH {_sql_text(str(self.path))} AS idx")
            self.protection = ProtectionInfo(
                IndexProtection.FILE_PERMISSIONS,
                f"Not encrypted ({why}): readable only by your OS user (mode 0600).",
            )
        if not fresh and _version(con) != SCHEMA_VERSION:
            log.warning("the search index was written by another version; starting a new one")
            con.execute("DETACH idx")
            self._remove_files()
            fresh = True
            if extension is not None and self._data_key is not None:
                self._attach(con, _index_key(self._data_key))
            else:
                con.execute(f"ATTACH {_sql_text(str(self.path))} AS idx")
        con.execute("USE idx")
        con.execute(SCHEMA)
        if fresh:
            con.execute("INSERT INTO meta VALUES (?)", [SCHEMA_VERSION])
        con.execute(PENDING)
        con.execute("CHECKPOINT")
        self._restrict()
        if fresh:
            log.info("search index created at %s (%s)", self.path, self.protection.protection)
        self._con = con
        self._load_typed()

    @property
    def _temp_dir(self) -> Path:
        return self.path.with_name(self.path.stem + ".tmp")

    def _attach(self, con: duckdb.DuckDBPyConnection, key: str) -> None:
        con.execute(f"ATTACH {_sql_text(str(self.path))} AS idx (ENCRYPTION_KEY {_sql_text(key)})")

    def _restrict(self) -> None:
        if os.name != "posix":
            return
        for path in (self.path, self.path.with_name(self.path.name + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                path.chmod(0o600)

    def _remove_files(self) -> None:
        for path in (self.path, self.path.with_name(self.path.name + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        shutil.rmtree(self._temp_dir, ignore_errors=True)

    def close(self) -> None:
        if self._con is not None:
            try:
                self.flush()
                self._con.execute("CHECKPOINT")
            except duckdb.Error as exc:
                log.warning("search index: could not write out before closing (%s)", exc)
            self._con.close()
            self._con = None
            self._forget_pending()

    def drop(self) -> int:
        """Delete the index file; returns how many entries it held. A new, empty one follows.

        Crawl writes still waiting are dropped with it.
        """
        held = self._db.execute("SELECT count(*) FROM entries").fetchone()
        count = int(held[0]) if held else 0
        assert self._con is not None
        self._con.close()
        self._con = None
        self._forget_pending()
        self._remove_files()
        self.typed = {}
        self.generation += 1
        self._connect()
        return count

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def size_bytes(self) -> int:
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    # ------------------------------------------------------------------ writes

    def ingest(
        self,
        backend: Backend,
        entries: Sequence[IndexedEntry],
        *,
        crawled_at: float | None = None,
        crawl_id: str = "write",
        listed: bool = True,
    ) -> int:
        """Upsert `entries` (their latest revision), remember each revision, mark them listed.

        A crawl passes `listed=False`: it recorded the keys when it listed them (a key it did not
        list is listed under its id all the same), and its writes are grouped (module
        docstring). Anything else is written at once.
        """
        if not entries:
            return 0
        now = time.time() if crawled_at is None else crawled_at
        rel = self._staged(backend, entries, now, crawl_id)
        rel.insert_into("temp.pending_entries")
        keys = self._pending_keys
        for entry in entries:
            key = (backend, entry.universe_id, entry.datastore, entry.scope, entry.key)
            self._pending_repeats |= key in keys
            keys.add(key)
        self._pending_entries += len(entries)
        self._pending()
        if listed:
            self.flush()
        else:
            self._flush_if_due()
        return len(entries)

    def _staged(
        self,
        backend: Backend,
        entries: Sequence[IndexedEntry],
        crawled_at: float,
        listed_by: str,
    ) -> duckdb.DuckDBPyRelation:
        """`entries` as a relation with the columns of _INGEST_COLUMNS, read from NDJSON."""
        first = self._seq + 1
        self._seq += len(entries)
        lines = "\n".join(
            entry.row(seq, backend, crawled_at, listed_by)
            for seq, entry in enumerate(entries, first)
        )
        return self._db.read_json(
            io.BytesIO(lines.encode("utf-8")),
            columns=_INGEST_COLUMNS,
            format="newline_delimited",
            maximum_object_size=2**26,
        )

    def mark_listed(
        self,
        backend: Backend,
        universe_id: int,
        datastore: str,
        keys: Iterable[tuple[str, str]],
        crawl_id: str,
    ) -> None:
        """Record keys a crawl listed (scope, key): the denominator of coverage. Grouped."""
        lines = []
        for scope, key in keys:
            self._seq += 1
            lines.append(f'{{"seq":{self._seq},"scope":{_text(scope)},"key":{_text(key)}}}')
        if not lines:
            return
        buffer = io.BytesIO("\n".join(lines).encode("utf-8"))
        rel = self._db.read_json(
            buffer,
            columns={"seq": "BIGINT", "scope": "VARCHAR", "key": "VARCHAR"},
            format="newline_delimited",
        )
        self._db.register("listed_rel", rel)
        try:
            self._db.execute(
                """INSERT INTO temp.pending_listed
                   SELECT r.seq, ?, ?, ?, r.scope, r.key, ? FROM listed_rel r""",
                [backend.value, universe_id, datastore, crawl_id],
            )
        finally:
            self._db.unregister("listed_rel")
        self._pending_listed += len(lines)
        self._pending()
        self._flush_if_due()

    def index_crawled(
        self,
        backend: Backend,
        universe_id: int,
        listed: Sequence[tuple[str, str, str]],
        entries: Sequence[IndexedEntry],
        crawl_id: str,
    ) -> None:
        """A crawl's batch, written out before it returns: keys it listed (store, scope, key),
        then the entries it read (a key listed but not read, e.g. refused, counts as listed)."""
        by_store: dict[str, list[tuple[str, str]]] = {}
        for datastore, scope, key in listed:
            by_store.setdefault(datastore, []).append((scope, key))
        for datastore, keys in by_store.items():
            self.mark_listed(backend, universe_id, datastore, keys, crawl_id)
        self.ingest(backend, entries, crawl_id=crawl_id, listed=False)
        self.flush()

    def _pending(self) -> None:
        if self._pending_since is None:
            self._pending_since = time.monotonic()

    def _flush_if_due(self) -> None:
        waited = time.monotonic() - (self._pending_since or time.monotonic())
        if max(self._pending_entries, self._pending_listed) >= FLUSH_ROWS or (
            waited >= FLUSH_SECONDS
        ):
            self.flush()

    def _forget_pending(self) -> None:
        self._pending_keys = set()
        self._pending_repeats = False
        self._pending_entries = 0
        self._pending_listed = 0
        self._pending_since = None

    def flush(self) -> None:
        """Write out the grouped crawl writes, all in one transaction."""
        if not (self._pending_entries or self._pending_listed):
            return
        con = self._db
        try:
            con.execute("BEGIN")
            self._write_listed(con)
            self._write_entries(con)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        finally:
            with contextlib.suppress(duckdb.Error):
                con.execute("DROP TABLE IF EXISTS temp.batch")
        # Made again empty (deleted rows of an in-memory table would keep their memory).
        con.execute("DROP TABLE IF EXISTS temp.pending_entries; DROP TABLE temp.pending_listed")
        con.execute(PENDING)
        self._forget_pending()
        self.generation += 1

    def _write_listed(self, con: duckdb.DuckDBPyConnection) -> None:
        """Listed marks: the newest per key replaces what an earlier crawl recorded."""
        con.execute(
            f"""DELETE FROM listed USING temp.pending_listed r WHERE {_same_key("listed", "r")}"""
        )
        con.execute(
            f"""INSERT INTO listed SELECT {", ".join(_KEY)}, crawl_id FROM temp.pending_listed
                QUALIFY row_number() OVER (PARTITION BY {", ".join(_KEY)} ORDER BY seq DESC) = 1"""
        )

    def _write_entries(self, con: duckdb.DuckDBPyConnection) -> None:
        """Pending entries: upsert the newest per key, add revisions not seen, list new keys."""
        ready = self._prepare_batch(con, "temp.pending_entries")
        con.execute("DROP TABLE temp.pending_entries")  # batch holds it all now (memory)
        if not ready:
            return
        con.execute(
            """INSERT INTO shapes
                SELECT (SELECT coalesce(max(id), 0) FROM shapes)
                       + row_number() OVER (ORDER BY shape_text), shape_text
                FROM (SELECT DISTINCT shape_text FROM temp.batch) n
                WHERE NOT EXISTS (SELECT 1 FROM shapes s WHERE s.structure = n.shape_text)"""
        )
        con.execute(f"DELETE FROM entries USING temp.batch s WHERE {_same_key('entries', 's')}")
        typed = "".join(f", {t.column}" for t in self.typed.values())
        typed_s = "".join(f", s.{t.column}" for t in self.typed.values())
        con.execute(
            f"""INSERT INTO entries (backend, universe_id, datastore, scope, key, value,
                    attributes, user_ids, revision, created_at, updated_at, crawled_at,
                    size_bytes, shape{typed})
                SELECT s.backend, s.universe_id, s.datastore, s.scope, s.key, s.value::JSON,
                    s.attributes::JSON, coalesce(s.user_ids, []), s.revision, s.created_at,
                    s.updated_at, s.crawled_at, s.size_bytes, h.id{typed_s}
                FROM temp.batch s JOIN shapes h ON h.structure = s.shape_text
                {_newest("s.backend, s.universe_id, s.datastore, s.scope, s.key", self._pending_repeats)}"""
        )
        self._write_revisions(con, repeats=self._pending_repeats)
        con.execute(
            f"""INSERT INTO listed
                SELECT s.backend, s.universe_id, s.datastore, s.scope, s.key, s.listed_by
                FROM temp.batch s
                WHERE NOT EXISTS (SELECT 1 FROM listed l WHERE {_same_key("l", "s")})
                {_newest("s.backend, s.universe_id, s.datastore, s.scope, s.key", self._pending_repeats)}"""
        )

    def _prepare_batch(
        self, con: duckdb.DuckDBPyConnection, source: str, *, shapes: bool = True
    ) -> bool:
        """temp.batch: `source` rows with their typed values (one JSON parse each) and, for
        entries, their shape."""
        shape = "json_structure(p.value)::VARCHAR" if shapes else "NULL"
        fields = list(self.typed.values())
        if fields:
            typed = "".join(
                f", {_typed_item(t, f'p.j[{i}]')} AS {t.column}" for i, t in enumerate(fields, 1)
            )
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE batch AS
                    SELECT p.* EXCLUDE (j), {shape} AS shape_text{typed}
                    FROM (SELECT *, json_extract(value, $pointers) AS j FROM {source}) p""",
                {"pointers": [t.pointer for t in fields]},
            )
        else:
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE batch AS
                    SELECT p.*, {shape} AS shape_text FROM {source} p"""
            )
        return self._count("temp.batch") > 0

    def _write_revisions(self, con: duckdb.DuckDBPyConnection, *, repeats: bool) -> None:
        typed = "".join(f", {t.column}" for t in self.typed.values())
        typed_s = "".join(f", s.{t.column}" for t in self.typed.values())
        con.execute(
            f"""INSERT INTO revisions (backend, universe_id, datastore, scope, key, revision,
                    created_at, updated_at, value, user_ids, seen_at{typed})
                SELECT s.backend, s.universe_id, s.datastore, s.scope, s.key, s.revision,
                    s.created_at, s.updated_at, s.value::JSON, coalesce(s.user_ids, []),
                    s.crawled_at{typed_s}
                FROM temp.batch s
                WHERE NOT EXISTS (
                    SELECT 1 FROM revisions r
                    WHERE {_same_key("r", "s")} AND r.revision = s.revision)
                {_newest("s.backend, s.universe_id, s.datastore, s.scope, s.key, s.revision", repeats)}"""
        )

    def add_revisions(self, backend: Backend, entries: Sequence[IndexedEntry]) -> int:
        """Remember historical revisions (from a history read) without touching latest rows."""
        if not entries:
            return 0
        self.flush()
        con = self._db
        con.register("history_rel", self._staged(backend, entries, time.time(), "history"))
        try:
            before = self._count("revisions")
            con.execute("BEGIN")
            self._prepare_batch(con, "history_rel", shapes=False)
            self._write_revisions(con, repeats=True)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        finally:
            con.unregister("history_rel")
            with contextlib.suppress(duckdb.Error):
                con.execute("DROP TABLE IF EXISTS temp.batch")
        self.generation += 1
        return self._count("revisions") - before

    def _count(self, table: str) -> int:
        row = self._db.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0

    def remove(
        self, backend: Backend, universe_id: int, datastore: str, scope: str, key: str
    ) -> int:
        """Forget a key that no longer exists (its past revisions stay for history)."""
        params = [backend.value, universe_id, datastore, scope, key]
        where = "backend = ? AND universe_id = ? AND datastore = ? AND scope = ? AND key = ?"
        row = self.con.execute(f"SELECT count(*) FROM entries WHERE {where}", params).fetchone()
        self.con.execute(f"DELETE FROM entries WHERE {where}", params)
        self.con.execute(f"DELETE FROM listed WHERE {where}", params)
        self.generation += 1
        return int(row[0]) if row else 0

    def finish_store(
        self,
        backend: Backend,
        universe_id: int,
        datastore: str,
        crawl_id: str,
        *,
        scopes: tuple[str, ...],
        key_prefix: str | None,
        complete: bool,
        since: float | None = None,
    ) -> int:
        """End a store's crawl: drop keys it no longer lists, snapshot the schema for drift.

        `scopes` are the scopes the crawl listed (empty: every scope). Only a complete listing
        proves a key is gone, and only within what was crawled (those scopes, that prefix); a key
        indexed at or after `since` (when the crawl began listing: written through the server
        meanwhile) is kept, as its listing could not have seen it.
        """
        con = self.con
        removed = 0
        if complete:
            where = "backend = ? AND universe_id = ? AND datastore = ? AND crawl_id <> ?"
            params: list[Any] = [backend.value, universe_id, datastore, crawl_id]
            if scopes:
                where += f" AND scope IN ({', '.join('?' for _ in scopes)})"
                params += list(scopes)
            if key_prefix is not None:
                where += " AND starts_with(key, ?)"
                params.append(key_prefix)
            if since is not None:
                where += f""" AND NOT EXISTS (SELECT 1 FROM entries e WHERE {_same_key("e", "listed")}
                              AND e.crawled_at >= ?)"""
                params.append(since)
            con.execute("BEGIN")
            try:
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE gone AS SELECT * FROM listed WHERE {where}",
                    params,
                )
                row = con.execute(
                    f"DELETE FROM entries USING temp.gone g WHERE {_same_key('entries', 'g')}"
                ).fetchone()
                removed = int(row[0]) if row else 0
                con.execute(f"DELETE FROM listed WHERE {where}", params)
                con.execute("DROP TABLE temp.gone")
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise
            self.generation += 1
        snapshot = self.schema_snapshot(Scope(backend, universe_id, (datastore,)))
        con.execute(
            "INSERT INTO store_crawls VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                backend.value,
                universe_id,
                datastore,
                crawl_id,
                time.time(),
                complete,
                json.dumps(snapshot),
            ],
        )
        # Typed columns change no value: the structures just computed stay valid.
        self.refresh_typed_columns()
        return removed

    def listing_user(self, universe_id: int, user_id: int) -> list[tuple[str, str, str, list[int]]]:
        """Indexed entries of a universe whose user ids contain the id: (store, scope, key,
        user ids); the erasure's source for shared entries (a key listing shows no user ids)."""
        rows = self.con.execute(
            "SELECT datastore, scope, key, user_ids FROM entries"
            " WHERE universe_id = ? AND list_contains(user_ids, ?) ORDER BY datastore, scope, key",
            [universe_id, user_id],
        ).fetchall()
        return [(str(d), str(s), str(k), [int(u) for u in users]) for d, s, k, users in rows]

    def scrub_user(self, user_id: int) -> int:
        """Erase a user from the index: every row tagged with the id or whose key names it.

        A key names the user when the id appears in it as a whole run of digits
        (`Player_123`, `123`, `user:123:save`), the common key patterns for player data.
        """
        pattern = rf"(^|[^0-9]){int(user_id)}([^0-9]|$)"
        where = "list_contains(user_ids, ?) OR regexp_matches(key, ?)"
        row = self.con.execute(
            f"SELECT count(*) FROM entries WHERE {where}", [user_id, pattern]
        ).fetchone()
        self.con.execute(f"DELETE FROM entries WHERE {where}", [user_id, pattern])
        self.con.execute(f"DELETE FROM revisions WHERE {where}", [user_id, pattern])
        self.con.execute("DELETE FROM listed WHERE regexp_matches(key, ?)", [pattern])
        self.con.execute("CHECKPOINT")
        self.generation += 1
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ typed columns

    def _load_typed(self) -> None:
        rows = self._db.execute("SELECT path, column_name, sql_type FROM typed_fields").fetchall()
        self.typed = {p: TypedField(p, c, t) for p, c, t in rows}

    def refresh_typed_columns(self) -> list[TypedField]:
        """Materialise the scalar fields most entries share as typed columns.

        In entries and revisions alike (supply history, jumps and progression read revisions);
        all new columns of a table are filled in one pass that parses each value once.
        """
        candidates = self.con.execute(
            """SELECT backend, universe_id, datastore, schema_json FROM store_crawls
               QUALIFY row_number() OVER (
                   PARTITION BY backend, universe_id, datastore ORDER BY finished_at DESC) = 1"""
        ).fetchall()
        wanted: dict[str, str] = {}
        for *_, snapshot in candidates:
            for path, info in json.loads(snapshot).items():
                sql_type = _typed_sql_type(info)
                if sql_type is not None and not info.get("in_array"):
                    wanted.setdefault(path, sql_type)
        added: list[TypedField] = []
        for pointer, sql_type in sorted(wanted.items()):
            if pointer in self.typed or len(self.typed) + len(added) >= MAX_TYPED_COLUMNS:
                continue
            added.append(TypedField(pointer, f"f_{len(self.typed) + len(added)}", sql_type))
        if not added:
            return []
        # A slice of rows at a time, each folded into the file before the next: an update keeps
        # old and new values in memory until then. Revisions first, entries last with the
        # typed_fields rows: a column that typed_fields does not name yet (a crash in between)
        # is simply filled again.
        con = self._db
        sets = ", ".join(
            f"{t.column} = {_typed_item(t, f'json_extract(value, $pointers)[{i}]')}"
            for i, t in enumerate(added, 1)
        )
        for table in ("revisions", "entries"):
            for typed in added:
                con.execute(
                    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {typed.column} {typed.sql_type}"
                )
            (last,) = self.one(f"SELECT coalesce(max(rowid), -1) FROM {table}")
            for start in range(0, int(last) + 1, UPDATE_ROWS):
                con.execute(
                    f"UPDATE {table} SET {sets} WHERE rowid >= $start AND rowid < $end",
                    {
                        "pointers": [t.pointer for t in added],
                        "start": start,
                        "end": start + UPDATE_ROWS,
                    },
                )
                con.execute("CHECKPOINT")
        con.executemany(
            "INSERT INTO typed_fields VALUES (?, ?, ?)",
            [[t.pointer, t.column, t.sql_type] for t in added],
        )
        for typed in added:
            self.typed[typed.pointer] = typed
        return added

    # ------------------------------------------------------------------ schema snapshot

    def structures(self, scope: Scope) -> list[tuple[Any, int]]:
        """Each distinct value structure (json_structure) in scope with how many entries have it.

        Each entry's structure is worked out once, when it is indexed (`shape`); the answer is
        kept until the index changes.
        """
        self.flush()
        held = self._structures.get(scope)
        if held is not None and held[0] == self.generation:
            return held[1]
        found = self._structures_now(scope)
        self._structures[scope] = (self.generation, found)
        return found

    def _structures_now(self, scope: Scope) -> list[tuple[Any, int]]:
        where, params = scope.where()
        rows = self.con.execute(
            f"""SELECT h.structure, c.n
                FROM (SELECT shape, count(*) AS n FROM entries WHERE {where} GROUP BY shape) c
                JOIN shapes h ON h.id = c.shape""",
            params,
        ).fetchall()
        return [(json.loads(s), int(n)) for s, n in rows]

    def schema_snapshot(self, scope: Scope) -> dict[str, dict[str, Any]]:
        """{pointer: {types: {type: count}, present: n, in_array: bool}} for drift and typing."""
        summary: dict[str, dict[str, Any]] = {}
        for structure, count in self.structures(scope):
            for pointer, kind, in_array in walk_structure(structure):
                info = summary.setdefault(
                    pointer, {"types": {}, "present": 0, "in_array": in_array}
                )
                info["types"][kind] = info["types"].get(kind, 0) + count
                info["present"] += count
        return summary

    # ------------------------------------------------------------------ coverage

    def basis(self, scope: Scope, note: str | None = None) -> IndexBasis:
        """What an answer over `scope` stands on; kept until the index changes."""
        self.flush()
        held = self._coverage.get(scope)
        if held is None or held[0] != self.generation:
            held = (self.generation, self._coverage_now(scope))
            self._coverage[scope] = held
        indexed, oldest, newest, stores, sample, listed, complete = held[1]
        if indexed == 0 and note is None:
            note = "Nothing is indexed here yet: crawl these data stores first."
        return IndexBasis(
            backend=scope.backend,
            sample_data=bool(sample) and scope.backend is Backend.EMULATOR,
            coverage=Coverage(
                entries_indexed=int(indexed),
                entries_listed=max(listed, int(indexed)),
                share=1.0 if listed == 0 else min(1.0, int(indexed) / listed),
                complete=complete and int(indexed) >= listed,
                stores=int(stores or 0),
            ),
            as_of=to_datetime(oldest),
            newest=to_datetime(newest),
            note=note,
        )

    def _coverage_now(self, scope: Scope) -> tuple[Any, ...]:
        where, params = scope.where()
        row = self.con.execute(
            f"""SELECT count(*), min(crawled_at), max(crawled_at), count(DISTINCT datastore),
                       bool_or(json_exists(attributes, ?))
                FROM entries WHERE {where}""",
            [f"$.{SAMPLE_ATTRIBUTE}", *params],
        ).fetchone()
        indexed, oldest, newest, stores, sample = row if row else (0, None, None, 0, False)
        # Every indexed key is listed (ingest lists a key no crawl listed), so the listed keys
        # alone are the denominator.
        listed_row = self.con.execute(
            f"SELECT count(*) FROM listed WHERE {where}", params
        ).fetchone()
        listed = int(listed_row[0]) if listed_row else 0
        return indexed, oldest, newest, stores, sample, listed, self._complete(scope)

    def places(self, scope: Scope) -> int:
        """How many (data store, scope) pairs the entries in `scope` are spread over; kept until
        the index changes."""
        self.flush()
        held = self._places.get(scope)
        if held is None or held[0] != self.generation:
            where, params = scope.where()
            (count,) = self.one(
                f"SELECT count(*) FROM (SELECT DISTINCT datastore, scope FROM entries WHERE {where})",
                params,
            )
            held = (self.generation, int(count))
            self._places[scope] = held
        return held[1]

    def _complete(self, scope: Scope) -> bool:
        """Whether the newest crawl of every store in scope listed and read everything."""
        stores = Scope(scope.backend, scope.universe_id, scope.datastores)
        where, params = stores.where()
        rows = self.con.execute(
            f"""SELECT datastore, arg_max(complete, finished_at) FROM store_crawls
                WHERE {where} GROUP BY datastore""",
            params,
        ).fetchall()
        if not rows:
            return False
        done = {name for name, ok in rows if ok}
        wanted = scope.datastores or tuple(name for name, _ in rows)
        return all(name in done for name in wanted)

    def store_names(self, backend: Backend, universe_id: int) -> list[str]:
        rows = self.con.execute(
            """SELECT DISTINCT datastore FROM entries WHERE backend = ? AND universe_id = ?
               ORDER BY datastore""",
            [backend.value, universe_id],
        ).fetchall()
        return [r[0] for r in rows]

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, list(params)).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        row = self.con.execute(sql, list(params)).fetchone()
        assert row is not None
        return tuple(row)


def _version(con: duckdb.DuckDBPyConnection) -> int | None:
    try:
        row = con.execute("SELECT max(version) FROM idx.meta").fetchone()
    except duckdb.CatalogException:
        return None
    return int(row[0]) if row and row[0] is not None else None


def _newest(partition: str, repeats: bool) -> str:
    """SQL keeping the newest row (seq) of each `partition`, needed only when keys repeat."""
    if not repeats:
        return ""
    return f"QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY s.seq DESC) = 1"


def _same_key(a: str, b: str) -> str:
    """SQL: rows `a` and `b` are the same entry (backend, universe, store, scope, key)."""
    return " AND ".join(f"{a}.{c} = {b}.{c}" for c in _KEY)


def _typed_item(field: TypedField, fragment: str) -> str:
    """SQL: a typed column's value from `fragment`, the field's JSON (null when missing).

    The same test as the query language's: a number only from a JSON number, text only from a
    JSON string, a boolean only from true/false.
    """
    if field.sql_type == "DOUBLE":
        return (
            f"(CASE WHEN json_type({fragment}) IN ('BIGINT', 'UBIGINT', 'DOUBLE') "
            f"THEN {fragment}::DOUBLE END)"
        )
    if field.sql_type == "BOOLEAN":
        return f"(CASE WHEN json_type({fragment}) = 'BOOLEAN' THEN {fragment}::BOOLEAN END)"
    return (
        f"(CASE WHEN json_type({fragment}) = 'VARCHAR' "
        f"THEN json_extract_string({fragment}, '$') END)"
    )


_DUCK_TYPES = {
    "UBIGINT": "integer",
    "BIGINT": "integer",
    "DOUBLE": "number",
    "VARCHAR": "string",
    "BOOLEAN": "boolean",
    "NULL": "null",
    "JSON": "mixed",
}


def walk_structure(
    structure: Any, prefix: str = "", in_array: bool = False
) -> Iterator[tuple[str, str, bool]]:
    """(pointer, type, inside an array) for every field of a json_structure() result.

    Array items are the path plus `/*` and are counted once per entry.
    """
    if isinstance(structure, dict):
        for name, child in structure.items():
            pointer = prefix + "/" + name.replace("~", "~0").replace("/", "~1")
            yield pointer, _kind(child), in_array
            yield from walk_structure(child, pointer, in_array)
    elif isinstance(structure, list) and structure and structure[0] != "NULL":
        # ["NULL"] is what json_structure gives an empty array: it has no items to describe.
        pointer = prefix + "/*"
        yield pointer, _kind(structure[0]), True
        yield from walk_structure(structure[0], pointer, True)


def _kind(structure: Any) -> str:
    if isinstance(structure, dict):
        return "object"
    if isinstance(structure, list):
        return "array"
    return _DUCK_TYPES.get(str(structure), "mixed")


def _typed_sql_type(info: dict[str, Any]) -> str | None:
    types: dict[str, int] = info["types"]
    present = max(1, int(info["present"]))
    numeric = types.get("integer", 0) + types.get("number", 0)
    if numeric / present >= 0.5:
        return "DOUBLE"
    if types.get("string", 0) / present >= 0.5:
        return "VARCHAR"
    if types.get("boolean", 0) / present >= 0.5:
        return "BOOLEAN"
    return None


def pointer_text(pointer: str) -> str:
    """A JSON Pointer as people type the path: /settings/music -> settings.music, /* -> []."""
    text = ""
    for raw in pointer.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if part == "*":
            text += "[]"
        elif _NAME.fullmatch(part):
            text += ("." if text else "") + part
        else:
            text += f"[{json.dumps(part, ensure_ascii=False)}]"
    return text
