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
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from shared_schema.common import Backend
from shared_schema.index import Coverage, IndexBasis, IndexProtection

log = logging.getLogger("dsm.index")

INDEX_FILENAME = "index.duckdb"
# Attributes the sample game puts on every entry it generates (see emulator/sample_game.py).
SAMPLE_ATTRIBUTE = "dsmSample"
MAX_TYPED_COLUMNS = 48
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INGEST_COLUMNS = {
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
    size_bytes INTEGER NOT NULL
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
    seen_at DOUBLE NOT NULL
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
    column_name VARCHAR NOT NULL,
    sql_type VARCHAR NOT NULL   -- DOUBLE or VARCHAR
);
CREATE TABLE IF NOT EXISTS crawls (
    crawl_id VARCHAR NOT NULL,
    created_at DOUBLE NOT NULL,
    info JSON NOT NULL,         -- CrawlInfo
    state JSON NOT NULL         -- where to resume
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

    def row(self) -> dict[str, Any]:
        return {
            "universe_id": self.universe_id,
            "datastore": self.datastore,
            "scope": self.scope,
            "key": self.key,
            "value": self.value_json,
            "attributes": json.dumps(self.attributes) if self.attributes else None,
            "user_ids": list(self.user_ids),
            "revision": self.revision,
            "created_at": _epoch(self.created_at),
            "updated_at": _epoch(self.updated_at),
            "size_bytes": len(self.value_json.encode("utf-8")),
        }


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

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, data_dir: Path, data_key: bytes | None, *, encrypt: bool = True) -> IndexStore:
        store = cls(data_dir / INDEX_FILENAME, data_key, encrypt=encrypt)
        store._connect()
        return store

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
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
        con.execute("USE idx")
        con.execute(SCHEMA)
        con.execute("CHECKPOINT")
        self._restrict()
        if fresh:
            log.info("search index created at %s (%s)", self.path, self.protection.protection)
        self._con = con
        self._load_typed()

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

    def close(self) -> None:
        if self._con is not None:
            with contextlib.suppress(duckdb.Error):
                self._con.execute("CHECKPOINT")
            self._con.close()
            self._con = None

    def drop(self) -> int:
        """Delete the index file; returns how many entries it held. A new, empty one follows."""
        held = self.con.execute("SELECT count(*) FROM entries").fetchone()
        count = int(held[0]) if held else 0
        self.close()
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

        A crawl passes `listed=False`: it recorded the keys when it listed them.
        """
        if not entries:
            return 0
        now = time.time() if crawled_at is None else crawled_at
        con = self.con
        staged = self._stage(entries)
        try:
            con.execute("BEGIN")
            con.execute(
                "CREATE OR REPLACE TEMP TABLE staged AS SELECT * FROM staged_rel",
            )
            con.execute(
                """DELETE FROM entries USING temp.staged s
                   WHERE entries.backend = ? AND entries.universe_id = s.universe_id
                     AND entries.datastore = s.datastore AND entries.scope = s.scope
                     AND entries.key = s.key""",
                [backend.value],
            )
            typed_cols = "".join(f", {t.column}" for t in self.typed.values())
            typed_exprs = "".join(
                f", {self._typed_expr(t, 's.value')}" for t in self.typed.values()
            )
            con.execute(
                f"""INSERT INTO entries (backend, universe_id, datastore, scope, key, value,
                        attributes, user_ids, revision, created_at, updated_at, crawled_at,
                        size_bytes{typed_cols})
                    SELECT ?, s.universe_id, s.datastore, s.scope, s.key, s.value::JSON,
                        s.attributes::JSON, coalesce(s.user_ids, []), s.revision, s.created_at,
                        s.updated_at, ?, s.size_bytes{typed_exprs}
                    FROM temp.staged s""",
                [backend.value, now],
            )
            con.execute(
                """INSERT INTO revisions
                   SELECT ?, s.universe_id, s.datastore, s.scope, s.key, s.revision,
                          s.created_at, s.updated_at, s.value::JSON, coalesce(s.user_ids, []), ?
                   FROM temp.staged s
                   WHERE NOT EXISTS (
                       SELECT 1 FROM revisions r WHERE r.backend = ?
                         AND r.universe_id = s.universe_id AND r.datastore = s.datastore
                         AND r.scope = s.scope AND r.key = s.key AND r.revision = s.revision)""",
                [backend.value, now, backend.value],
            )
            if listed:
                con.execute(
                    """INSERT INTO listed
                   SELECT ?, s.universe_id, s.datastore, s.scope, s.key, ?
                   FROM temp.staged s
                   WHERE NOT EXISTS (
                       SELECT 1 FROM listed l WHERE l.backend = ?
                         AND l.universe_id = s.universe_id AND l.datastore = s.datastore
                         AND l.scope = s.scope AND l.key = s.key)""",
                    [backend.value, crawl_id, backend.value],
                )
            con.execute("DROP TABLE temp.staged")
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        finally:
            del staged
            with contextlib.suppress(duckdb.Error):
                con.unregister("staged_rel")
        self.generation += 1
        return len(entries)

    def _stage(self, entries: Sequence[IndexedEntry]) -> duckdb.DuckDBPyRelation:
        """The batch as a relation read from in-memory NDJSON (far faster than executemany)."""
        buffer = io.BytesIO()
        for entry in entries:
            buffer.write(json.dumps(entry.row(), ensure_ascii=False).encode("utf-8"))
            buffer.write(b"\n")
        buffer.seek(0)
        rel = self.con.read_json(
            buffer, columns=_INGEST_COLUMNS, format="newline_delimited", maximum_object_size=2**26
        )
        self.con.register("staged_rel", rel)
        return rel

    def add_revisions(self, backend: Backend, entries: Sequence[IndexedEntry]) -> int:
        """Remember historical revisions (from a history read) without touching latest rows."""
        if not entries:
            return 0
        now = time.time()
        self._stage(entries)
        try:
            before = self._count("revisions")
            self.con.execute(
                """INSERT INTO revisions
                   SELECT DISTINCT ON (s.universe_id, s.datastore, s.scope, s.key, s.revision)
                          ?, s.universe_id, s.datastore, s.scope, s.key, s.revision,
                          s.created_at, s.updated_at, s.value::JSON, coalesce(s.user_ids, []), ?
                   FROM staged_rel s
                   WHERE NOT EXISTS (
                       SELECT 1 FROM revisions r WHERE r.backend = ?
                         AND r.universe_id = s.universe_id AND r.datastore = s.datastore
                         AND r.scope = s.scope AND r.key = s.key AND r.revision = s.revision)""",
                [backend.value, now, backend.value],
            )
        finally:
            self.con.unregister("staged_rel")
        self.generation += 1
        return self._count("revisions") - before

    def _count(self, table: str) -> int:
        row = self.con.execute(f"SELECT count(*) FROM {table}").fetchone()
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

    def mark_listed(
        self,
        backend: Backend,
        universe_id: int,
        datastore: str,
        keys: Iterable[tuple[str, str]],
        crawl_id: str,
    ) -> None:
        """Record keys a crawl listed (scope, key): the denominator of coverage."""
        rows = [{"scope": s, "key": k} for s, k in keys]
        if not rows:
            return
        buffer = io.BytesIO("\n".join(json.dumps(r) for r in rows).encode("utf-8"))
        rel = self.con.read_json(
            buffer, columns={"scope": "VARCHAR", "key": "VARCHAR"}, format="newline_delimited"
        )
        self.con.register("listed_rel", rel)
        try:
            self.con.execute(
                """DELETE FROM listed USING listed_rel r WHERE listed.backend = ?
                   AND listed.universe_id = ? AND listed.datastore = ?
                   AND listed.scope = r.scope AND listed.key = r.key""",
                [backend.value, universe_id, datastore],
            )
            self.con.execute(
                "INSERT INTO listed SELECT ?, ?, ?, r.scope, r.key, ? FROM listed_rel r",
                [backend.value, universe_id, datastore, crawl_id],
            )
        finally:
            self.con.unregister("listed_rel")
        self.generation += 1

    def finish_store(
        self,
        backend: Backend,
        universe_id: int,
        datastore: str,
        crawl_id: str,
        *,
        scope: str | None,
        key_prefix: str | None,
        complete: bool,
    ) -> int:
        """End a store's crawl: drop keys it no longer lists, snapshot the schema for drift.

        Only a complete listing proves a key is gone, and only within what was crawled.
        """
        removed = 0
        if complete:
            where = "backend = ? AND universe_id = ? AND datastore = ? AND crawl_id <> ?"
            params: list[Any] = [backend.value, universe_id, datastore, crawl_id]
            if scope is not None:
                where += " AND scope = ?"
                params.append(scope)
            if key_prefix is not None:
                where += " AND starts_with(key, ?)"
                params.append(key_prefix)
            gone = self.con.execute(f"SELECT scope, key FROM listed WHERE {where}", params)
            stale = gone.fetchall()
            for stale_scope, stale_key in stale:
                removed += self.remove(backend, universe_id, datastore, stale_scope, stale_key)
            self.con.execute(f"DELETE FROM listed WHERE {where}", params)
        snapshot = self.schema_snapshot(Scope(backend, universe_id, (datastore,)))
        self.con.execute(
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
        rows = self.con.execute("SELECT path, column_name, sql_type FROM typed_fields").fetchall()
        self.typed = {p: TypedField(p, c, t) for p, c, t in rows}

    @staticmethod
    def _typed_expr(field: TypedField, value: str) -> str:
        pointer = _sql_text(field.pointer)
        if field.sql_type == "DOUBLE":
            return (
                f"CASE WHEN json_type({value}, {pointer}) IN ('BIGINT', 'UBIGINT', 'DOUBLE') "
                f"THEN json_extract({value}, {pointer})::DOUBLE END"
            )
        if field.sql_type == "BOOLEAN":
            return (
                f"CASE WHEN json_type({value}, {pointer}) = 'BOOLEAN' "
                f"THEN json_extract({value}, {pointer})::BOOLEAN END"
            )
        return (
            f"CASE WHEN json_type({value}, {pointer}) = 'VARCHAR' "
            f"THEN json_extract_string({value}, {pointer}) END"
        )

    def refresh_typed_columns(self) -> list[TypedField]:
        """Materialise the scalar fields most entries share as typed columns."""
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
            if pointer in self.typed or len(self.typed) >= MAX_TYPED_COLUMNS:
                continue
            column = f"f_{len(self.typed)}"
            typed = TypedField(pointer, column, sql_type)
            self.con.execute(f"ALTER TABLE entries ADD COLUMN {column} {sql_type}")
            self.con.execute(f"UPDATE entries SET {column} = {self._typed_expr(typed, 'value')}")
            self.con.execute(
                "INSERT INTO typed_fields VALUES (?, ?, ?)", [pointer, column, sql_type]
            )
            self.typed[pointer] = typed
            added.append(typed)
        return added

    # ------------------------------------------------------------------ schema snapshot

    def structures(self, scope: Scope) -> list[tuple[Any, int]]:
        """Each distinct value structure (json_structure) in scope with how many entries have it.

        The slowest aggregate here (it parses every value), so it is kept until the index changes.
        """
        held = self._structures.get(scope)
        if held is not None and held[0] == self.generation:
            return held[1]
        found = self._structures_now(scope)
        self._structures[scope] = (self.generation, found)
        return found

    def _structures_now(self, scope: Scope) -> list[tuple[Any, int]]:
        where, params = scope.where()
        rows = self.con.execute(
            f"""SELECT json_structure(value)::VARCHAR AS s, count(*) FROM entries
                WHERE {where} GROUP BY s""",
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
        where, params = scope.where()
        row = self.con.execute(
            f"""SELECT count(*), min(crawled_at), max(crawled_at), count(DISTINCT datastore),
                       bool_or(json_extract(attributes, ?) IS NOT NULL)
                FROM entries WHERE {where}""",
            [f"$.{SAMPLE_ATTRIBUTE}", *params],
        ).fetchone()
        indexed, oldest, newest, stores, sample = row if row else (0, None, None, 0, False)
        listed_row = self.con.execute(
            f"""SELECT count(*) FROM (
                    SELECT datastore, scope, key FROM listed WHERE {where}
                    UNION SELECT datastore, scope, key FROM entries WHERE {where})""",
            params + params,
        ).fetchone()
        listed = int(listed_row[0]) if listed_row else 0
        complete = self._complete(scope)
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

    # ------------------------------------------------------------------ crawl state

    def save_crawl(self, crawl_id: str, created_at: float, info: str, state: str) -> None:
        self.con.execute("DELETE FROM crawls WHERE crawl_id = ?", [crawl_id])
        self.con.execute(
            "INSERT INTO crawls VALUES (?, ?, ?, ?)", [crawl_id, created_at, info, state]
        )

    def load_crawls(self, limit: int = 50) -> list[tuple[str, str, str]]:
        rows = self.con.execute(
            "SELECT crawl_id, info, state FROM crawls ORDER BY created_at DESC LIMIT ?", [limit]
        ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]


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
