"""Durable job state in `<data dir>/jobs.sqlite3`: jobs, their items and outcomes, and uploads.

What is durable, and why a crash loses nothing:

- A job row holds the request (kind, selection, params), the state, the plan, the planning
  cursor (which store/scope/page to list next) and the item counters. State changes are
  committed at once (WAL, synchronous=FULL).
- Items are written page by page while planning, in the same transaction as the planning
  cursor, so a restart continues counting exactly where it stopped.
- Item outcomes are committed in batches. An outcome lost to a crash is not a problem: the item
  runs again, and each of its writes carries an idempotency key derived from the job, the item
  and the attempt, so the write journal answers "already applied" instead of writing twice.

Synchronous and single-threaded by design: the server calls it from its event loop, and each
call is a short transaction.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from ...storage.sqlite import (
    SqliteFile,
    StorageFileError,
    database_files,
    immediate,
    rewrite_securely,
)

JOBS_FILENAME = "jobs.sqlite3"
# What an erased player's key becomes in job items (the erasure report keeps the real ones).
REDACTED_KEY = "(erased)"
SCHEMA_VERSION = 3
# Items of pruned jobs are deleted this many rows per transaction (see `drop_pruned_items`).
PRUNE_BATCH_ROWS = 5000
# Freed pages handed back to the file system per step of `reclaim_space` (4 MiB at 4 KiB).
RECLAIM_STEP_PAGES = 1024
# How long a connection of a worker thread waits for the server's write (and the server's
# connection for the worker's: the same as SqliteFile's) before SQLite says the file is locked.
BUSY_TIMEOUT_MS = 5000

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order (lists are newest first)
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    universe INTEGER NOT NULL,
    store_kind TEXT NOT NULL,
    request TEXT NOT NULL,                  -- JSON: selection and params, defaults filled in
    idempotency_key TEXT UNIQUE,
    actor_id TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    plan TEXT,                              -- JSON JobPlan
    plan_complete INTEGER NOT NULL DEFAULT 0,
    plan_cursor TEXT,                       -- JSON: where counting goes on
    start_when_planned INTEGER NOT NULL DEFAULT 0,
    item_count INTEGER NOT NULL DEFAULT 0,
    applied INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    failure_code TEXT,
    failure_message TEXT,
    output_path TEXT,
    rollback_of TEXT,
    rolled_back_by TEXT,
    kind_state TEXT,                        -- JSON a kind keeps between runs (export spool)
    proposed_by TEXT,                       -- an AI assistant's token name: a proposal
    approved_by_id TEXT,                    -- the token that started a proposal
    approved_by_name TEXT,
    actor_user_id INTEGER,                  -- the Studio user behind actor_id, when announced
    actor_user_name TEXT,
    approved_by_user_id INTEGER,            -- ... and behind approved_by_id
    approved_by_user_name TEXT
);
CREATE TABLE IF NOT EXISTS items (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    universe INTEGER NOT NULL,
    store_kind TEXT NOT NULL,
    datastore TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    line INTEGER,
    data TEXT,                              -- JSON a kind attaches (rollback: journal ids)
    state TEXT NOT NULL DEFAULT 'pending',
    deferred INTEGER NOT NULL DEFAULT 0,
    skip_code TEXT,
    error_code TEXT,
    message TEXT,
    journal_ids TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_state ON items (job_id, state, seq);
CREATE TABLE IF NOT EXISTS pruning (
    job_id TEXT PRIMARY KEY,                -- a pruned job whose items are still being deleted
    pruned_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    file_name TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    chunk_bytes INTEGER NOT NULL,
    expected_sha256 TEXT,
    sha256 TEXT,
    state TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS upload_chunks (
    upload_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (upload_id, idx)
) WITHOUT ROWID;
"""

# Version 2: proposals by AI assistants (docs/assistants.md), who approved them, and the
# Studio users behind the tokens that created and approved each job (docs/team.md).
MIGRATIONS = {
    1: """
ALTER TABLE jobs ADD COLUMN proposed_by TEXT;
ALTER TABLE jobs ADD COLUMN approved_by_id TEXT;
ALTER TABLE jobs ADD COLUMN approved_by_name TEXT;
ALTER TABLE jobs ADD COLUMN actor_user_id INTEGER;
ALTER TABLE jobs ADD COLUMN actor_user_name TEXT;
ALTER TABLE jobs ADD COLUMN approved_by_user_id INTEGER;
ALTER TABLE jobs ADD COLUMN approved_by_user_name TEXT;
""",
    # Version 3: retention (docs/jobs.md, "Pruning old jobs").
    2: """
CREATE TABLE IF NOT EXISTS pruning (
    job_id TEXT PRIMARY KEY,
    pruned_ms INTEGER NOT NULL
) WITHOUT ROWID;
""",
}

_JOB_COLUMNS = (
    "id, kind, state, universe, store_kind, request, idempotency_key, actor_id, actor_name,"
    " created_ms, updated_ms, started_ms, finished_ms, plan, plan_complete, plan_cursor,"
    " start_when_planned, item_count, applied, skipped, failed, failure_code, failure_message,"
    " output_path, rollback_of, rolled_back_by, kind_state, seq, proposed_by, approved_by_id,"
    " approved_by_name, actor_user_id, actor_user_name, approved_by_user_id, approved_by_user_name"
)
_ITEM_COLUMNS = (
    "seq, universe, store_kind, datastore, scope, key, line, data, state, deferred, skip_code,"
    " error_code, message, journal_ids, attempts"
)


class JobStoreError(Exception):
    """The jobs file cannot be used; the message says what to do."""


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: str
    state: str
    universe: int
    store_kind: str
    request: dict[str, Any]  # {"selection": ..., "params": ...}
    idempotency_key: str | None
    actor_id: str
    actor_name: str
    created_ms: int
    updated_ms: int
    started_ms: int | None
    finished_ms: int | None
    plan: dict[str, Any] | None
    plan_complete: bool
    plan_cursor: dict[str, Any] | None
    start_when_planned: bool
    item_count: int
    applied: int
    skipped: int
    failed: int
    failure_code: str | None
    failure_message: str | None
    output_path: str | None
    rollback_of: str | None
    rolled_back_by: str | None
    kind_state: dict[str, Any] | None
    seq: int = 0
    proposed_by: str | None = None  # the assistant token's name, when an assistant proposed it
    approved_by_id: str | None = None  # who started a proposal (token id and name)
    approved_by_name: str | None = None
    actor_user_id: int | None = None  # the Studio users behind actor_id and approved_by_id
    actor_user_name: str | None = None
    approved_by_user_id: int | None = None
    approved_by_user_name: str | None = None

    @property
    def selection(self) -> dict[str, Any] | None:
        selection: dict[str, Any] | None = self.request.get("selection")
        return selection

    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = self.request.get("params") or {}
        return params

    @property
    def done(self) -> int:
        return self.applied + self.skipped + self.failed


@dataclass(frozen=True)
class NewItem:
    """An item found while planning."""

    universe: int
    store_kind: str
    datastore: str
    scope: str
    key: str
    line: int | None = None
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class ItemRecord:
    seq: int
    universe: int
    store_kind: str
    datastore: str
    scope: str
    key: str
    line: int | None
    data: dict[str, Any] | None
    state: str
    deferred: bool
    skip_code: str | None
    error_code: str | None
    message: str | None
    journal_ids: tuple[int, ...]
    attempts: int


@dataclass(frozen=True)
class Outcome:
    """An item's outcome, committed in a batch by `record_outcomes`."""

    seq: int
    state: str  # applied | skipped | failed | pending (deferred: a held entry to retry)
    skip_code: str | None = None
    error_code: str | None = None
    message: str | None = None
    journal_ids: tuple[int, ...] = ()
    attempts: int = 0
    deferred: bool = False


@dataclass(frozen=True)
class UploadRecord:
    id: str
    file_name: str
    size_bytes: int
    chunk_bytes: int
    expected_sha256: str | None
    sha256: str | None
    state: str
    actor_id: str
    created_ms: int
    expires_ms: int
    received: frozenset[int] = field(default_factory=frozenset)

    @property
    def chunks(self) -> int:
        return max(1, -(-self.size_bytes // self.chunk_bytes))


def new_job_id() -> str:
    return "job_" + secrets.token_hex(6)


def new_upload_id() -> str:
    return "upl_" + secrets.token_hex(8)


def now_ms() -> int:
    return int(time.time() * 1000)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class JobStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / JOBS_FILENAME
        try:
            self._db = SqliteFile(
                self.path,
                schema=SCHEMA,
                version=SCHEMA_VERSION,
                synchronous="FULL",
                migrations=MIGRATIONS,
                incremental_vacuum=True,
            )
        except StorageFileError as exc:
            raise JobStoreError(
                f"The jobs file {self.path} cannot be opened ({exc.problem}). Move it aside to "
                "start with no jobs (the write journal still holds every write jobs made)."
            ) from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._db.transaction() as conn:
            yield conn

    # ------------------------------------------------------------------------------- jobs

    def create(self, record: JobRecord) -> JobRecord:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO jobs (id, kind, state, universe, store_kind, request,"
                " idempotency_key, actor_id, actor_name, created_ms, updated_ms, plan,"
                " plan_complete, plan_cursor, start_when_planned, rollback_of, kind_state,"
                " proposed_by, actor_user_id, actor_user_name)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.kind,
                    record.state,
                    record.universe,
                    record.store_kind,
                    _json(record.request),
                    record.idempotency_key,
                    record.actor_id,
                    record.actor_name,
                    record.created_ms,
                    record.updated_ms,
                    _json(record.plan),
                    int(record.plan_complete),
                    _json(record.plan_cursor),
                    int(record.start_when_planned),
                    record.rollback_of,
                    _json(record.kind_state),
                    record.proposed_by,
                    record.actor_user_id,
                    record.actor_user_name,
                ),
            )
        return self.get(record.id)

    def get(self, job_id: str) -> JobRecord:
        found = self.find(job_id)
        if found is None:
            raise KeyError(job_id)
        return found

    def find(self, job_id: str) -> JobRecord | None:
        row = self._db.conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return None if row is None else _job(row)

    def find_by_idempotency_key(self, key: str) -> JobRecord | None:
        row = self._db.conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE idempotency_key = ?", (key,)
        ).fetchone()
        return None if row is None else _job(row)

    def list_jobs(
        self,
        *,
        state: str | None = None,
        kind: str | None = None,
        universe: int | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> list[JobRecord]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("state", state), ("kind", kind), ("universe", universe)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if before_seq is not None:
            clauses.append("seq < ?")
            params.append(before_seq)
        where = " AND ".join(clauses) or "1 = 1"
        rows = self._db.conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {where} ORDER BY seq DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [_job(row) for row in rows]

    def in_states(self, states: Iterable[str]) -> list[JobRecord]:
        wanted = list(states)
        marks = ", ".join("?" for _ in wanted)
        rows = self._db.conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ({marks}) ORDER BY seq", wanted
        ).fetchall()
        return [_job(row) for row in rows]

    def update(self, job_id: str, **changes: Any) -> JobRecord:
        """Set columns of a job (JSON columns take Python values); updated_ms is stamped."""
        json_columns = {"plan", "plan_cursor", "request", "kind_state"}
        bool_columns = {"plan_complete", "start_when_planned"}
        sets = ["updated_ms = ?"]
        params: list[Any] = [now_ms()]
        for column, value in changes.items():
            sets.append(f"{column} = ?")
            if column in json_columns:
                params.append(_json(value))
            elif column in bool_columns:
                params.append(int(bool(value)))
            else:
                params.append(value)
        with self._tx() as conn:
            conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", (*params, job_id))
        return self.get(job_id)

    # ------------------------------------------------------------------------------ items

    def add_items(
        self,
        job_id: str,
        items: Sequence[NewItem],
        *,
        cursor: dict[str, Any] | None,
        complete: bool = False,
    ) -> int:
        """Append items found while planning, with the cursor to go on from; returns the count."""
        with self._tx() as conn:
            count = int(
                conn.execute("SELECT item_count FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
            )
            conn.executemany(
                "INSERT INTO items (job_id, seq, universe, store_kind, datastore, scope, key,"
                " line, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        job_id,
                        count + i + 1,
                        item.universe,
                        item.store_kind,
                        item.datastore,
                        item.scope,
                        item.key,
                        item.line,
                        _json(item.data),
                    )
                    for i, item in enumerate(items)
                ],
            )
            count += len(items)
            conn.execute(
                "UPDATE jobs SET item_count = ?, plan_cursor = ?, updated_ms = ?"
                + (", plan_complete = 1" if complete else "")
                + " WHERE id = ?",
                (count, _json(cursor), now_ms(), job_id),
            )
        return count

    def items(
        self,
        job_id: str,
        *,
        state: str | None = None,
        after: int = 0,
        limit: int = 100,
        deferred: bool | None = None,
    ) -> list[ItemRecord]:
        clauses = ["job_id = ?", "seq > ?"]
        params: list[Any] = [job_id, after]
        if state is not None:
            clauses.append("state = ?")
            params.append(state)
        if deferred is not None:
            clauses.append("deferred = ?")
            params.append(int(deferred))
        rows = self._db.conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [_item(row) for row in rows]

    def count_items(self, job_id: str, *, state: str, deferred: bool | None = None) -> int:
        sql = "SELECT COUNT(*) FROM items WHERE job_id = ? AND state = ?"
        params: list[Any] = [job_id, state]
        if deferred is not None:
            sql += " AND deferred = ?"
            params.append(int(deferred))
        return int(self._db.conn.execute(sql, params).fetchone()[0])

    def outcome_codes(self, job_id: str, state: str) -> dict[str, int]:
        """How many of the job's items ended in `state` (skipped or failed), by skip or error
        code, commonest first."""
        column = "skip_code" if state == "skipped" else "error_code"
        rows = self._db.conn.execute(
            f"SELECT {column}, COUNT(*) AS n FROM items WHERE job_id = ? AND state = ?"
            f" GROUP BY {column} ORDER BY n DESC, {column}",
            (job_id, state),
        ).fetchall()
        return {str(row[0] or ""): int(row[1]) for row in rows}

    def record_outcomes(
        self, job_id: str, outcomes: Sequence[Outcome], **job_changes: Any
    ) -> JobRecord:
        """Commit item outcomes and the job's counters (and `job_changes`) in one transaction.

        An item already finished keeps its first outcome, so a batch replayed after a restart
        cannot count an item twice.
        """
        with self._tx() as conn:
            delta = {"applied": 0, "skipped": 0, "failed": 0}
            for outcome in outcomes:
                row = conn.execute(
                    "SELECT state FROM items WHERE job_id = ? AND seq = ?", (job_id, outcome.seq)
                ).fetchone()
                if row is None or row[0] != "pending":
                    continue
                conn.execute(
                    "UPDATE items SET state = ?, deferred = ?, skip_code = ?, error_code = ?,"
                    " message = ?, journal_ids = ?, attempts = ? WHERE job_id = ? AND seq = ?",
                    (
                        outcome.state,
                        int(outcome.deferred),
                        outcome.skip_code,
                        outcome.error_code,
                        outcome.message,
                        _json(list(outcome.journal_ids)) if outcome.journal_ids else None,
                        outcome.attempts,
                        job_id,
                        outcome.seq,
                    ),
                )
                if outcome.state in delta:
                    delta[outcome.state] += 1
            sets = ["applied = applied + ?", "skipped = skipped + ?", "failed = failed + ?"]
            params: list[Any] = [delta["applied"], delta["skipped"], delta["failed"]]
            for column, value in job_changes.items():
                sets.append(f"{column} = ?")
                params.append(_json(value) if column == "kind_state" else value)
            sets.append("updated_ms = ?")
            params.append(now_ms())
            conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", (*params, job_id))
        return self.get(job_id)

    def redact_items(self, names_player: Callable[[str, str, str, str], bool], user_id: int) -> int:
        """Erasure: take the key (and what the kind kept with it) out of every item of every
        job whose (store kind, store, scope, key) `names_player` says is the player's; plans
        lose such samples, and the user id from the user ids of the others. Then the file is
        rewritten so no free page or log keeps the old keys.

        Blocking for as long as the whole file takes to rewrite: run it in a worker thread. It
        uses a connection of its own, so the server's connection keeps reading meanwhile; its
        writes wait for the rewrite (SQLite's busy timeout), as the rewrite waits for theirs."""
        with side_connection(self.path) as conn:
            changed = self._redact_in(conn, names_player, user_id)
            rewrite_securely(conn)
        return changed

    @staticmethod
    def _redact_in(
        db: sqlite3.Connection, names_player: Callable[[str, str, str, str], bool], user_id: int
    ) -> int:
        db.execute("PRAGMA secure_delete=ON")
        with immediate(db) as conn:
            conn.create_function(
                "names_player", 4, lambda *name: int(names_player(*name)), deterministic=True
            )
            changed = conn.execute(
                "UPDATE items SET key = ?, data = NULL, message = NULL"
                " WHERE key != ? AND names_player(store_kind, datastore, scope, key)",
                (REDACTED_KEY, REDACTED_KEY),
            ).rowcount
            # Plans keep samples (key, value before and after) of the first items.
            for job_id, store_kind, plan_json in conn.execute(
                "SELECT id, store_kind, plan FROM jobs WHERE plan IS NOT NULL"
            ).fetchall():
                plan = json.loads(plan_json)
                samples = plan.get("samples") or []
                kept = [
                    s
                    for s in samples
                    if not names_player(store_kind, s.get("datastore", ""), s.get("scope", ""),
                                        s.get("key", ""))
                ]  # fmt: skip
                listed = [
                    image
                    for sample in kept
                    for image in (sample.get("before"), sample.get("after"))
                    if image and user_id in (image.get("user_ids") or [])
                ]
                for image in listed:
                    image["user_ids"] = [u for u in image["user_ids"] if u != user_id]
                if len(kept) != len(samples) or listed:
                    plan["samples"] = kept
                    conn.execute("UPDATE jobs SET plan = ? WHERE id = ?", (_json(plan), job_id))
                    changed += 1
        return int(changed)

    # -------------------------------------------------------------------------- retention

    def finished_before(self, cutoff_ms: int, states: Iterable[str]) -> list[JobRecord]:
        """Jobs in `states` that finished before `cutoff_ms`, oldest first."""
        wanted = list(states)
        marks = ", ".join("?" for _ in wanted)
        rows = self._db.conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ({marks})"
            " AND COALESCE(finished_ms, updated_ms) < ?"
            " ORDER BY COALESCE(finished_ms, updated_ms), seq",
            (*wanted, cutoff_ms),
        ).fetchall()
        return [_job(row) for row in rows]

    def links(self) -> list[tuple[str, str]]:
        """Every pair of jobs that name each other: a rollback and the job it undoes, a
        backup taken before a job and that job."""
        pairs: list[tuple[str, str]] = []
        rows = self._db.conn.execute(
            "SELECT id, rollback_of, rolled_back_by,"
            " json_extract(request, '$.params.from_job'), json_extract(plan, '$.backup.job_ids')"
            " FROM jobs"
        )
        for job_id, rollback_of, rolled_back_by, from_job, backups in rows:
            named = [rollback_of, rolled_back_by, from_job, *(_load(backups) or [])]
            pairs += [(job_id, str(other)) for other in named if other]
        return pairs

    def remove_jobs(self, job_ids: Sequence[str]) -> int:
        """Delete the jobs at once (they leave every list); their items follow in batches
        (`drop_pruned_items`), durably queued so a crash half-way only delays them."""
        if not job_ids:
            return 0
        stamp = now_ms()
        with self._tx() as conn:
            for job_id in job_ids:
                conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                conn.execute(
                    "INSERT OR REPLACE INTO pruning (job_id, pruned_ms) VALUES (?, ?)",
                    (job_id, stamp),
                )
        return len(job_ids)

    def drop_pruned_items(self, rows: int = PRUNE_BATCH_ROWS) -> int:
        """Delete up to `rows` items of pruned jobs in one short transaction; 0 when none is
        left. A pruned job leaves the queue once its last item is gone."""
        with self._tx() as conn:
            found = conn.execute("SELECT job_id FROM pruning LIMIT 1").fetchone()
            if found is None:
                return 0
            job_id = found[0]
            deleted = int(
                conn.execute(
                    "DELETE FROM items WHERE job_id = ? AND seq IN"
                    " (SELECT seq FROM items WHERE job_id = ? ORDER BY seq LIMIT ?)",
                    (job_id, job_id, rows),
                ).rowcount
            )
            if deleted < rows:
                conn.execute("DELETE FROM pruning WHERE job_id = ?", (job_id,))
            return max(deleted, 1)

    def pruning_pending(self) -> bool:
        return self._db.conn.execute("SELECT 1 FROM pruning LIMIT 1").fetchone() is not None

    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in database_files(self.path))

    def make_reclaimable(self) -> bool:
        """Turn on incremental vacuum for a file made before it was used (one full VACUUM).
        Run it before the service uses the store (at start-up, off the event loop); False
        when the file already had it."""
        conn = self._db.conn
        if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2:
            return False
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return True

    # ---------------------------------------------------------------------------- uploads

    def create_upload(self, record: UploadRecord) -> UploadRecord:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO uploads (id, file_name, size_bytes, chunk_bytes, expected_sha256,"
                " sha256, state, actor_id, created_ms, expires_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.file_name,
                    record.size_bytes,
                    record.chunk_bytes,
                    record.expected_sha256,
                    record.sha256,
                    record.state,
                    record.actor_id,
                    record.created_ms,
                    record.expires_ms,
                ),
            )
        return record

    def upload(self, upload_id: str) -> UploadRecord | None:
        row = self._db.conn.execute(
            "SELECT id, file_name, size_bytes, chunk_bytes, expected_sha256, sha256, state,"
            " actor_id, created_ms, expires_ms FROM uploads WHERE id = ?",
            (upload_id,),
        ).fetchone()
        if row is None:
            return None
        received = frozenset(
            int(r[0])
            for r in self._db.conn.execute(
                "SELECT idx FROM upload_chunks WHERE upload_id = ?", (upload_id,)
            )
        )
        return UploadRecord(
            id=row[0],
            file_name=row[1],
            size_bytes=int(row[2]),
            chunk_bytes=int(row[3]),
            expected_sha256=row[4],
            sha256=row[5],
            state=row[6],
            actor_id=row[7],
            created_ms=int(row[8]),
            expires_ms=int(row[9]),
            received=received,
        )

    def chunk_sha256(self, upload_id: str, index: int) -> str | None:
        row = self._db.conn.execute(
            "SELECT sha256 FROM upload_chunks WHERE upload_id = ? AND idx = ?", (upload_id, index)
        ).fetchone()
        return None if row is None else str(row[0])

    def add_chunk(self, upload_id: str, index: int, sha256: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO upload_chunks (upload_id, idx, sha256) VALUES (?, ?, ?)",
                (upload_id, index, sha256),
            )

    def finish_upload(self, upload_id: str, sha256: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE uploads SET state = 'complete', sha256 = ? WHERE id = ?",
                (sha256, upload_id),
            )

    def delete_upload(self, upload_id: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM upload_chunks WHERE upload_id = ?", (upload_id,))
            conn.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))

    def upload_count(self) -> int:
        return int(self._db.conn.execute("SELECT COUNT(*) FROM uploads").fetchone()[0])

    def keep_upload(self, upload_id: str, until_ms: int) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE uploads SET expires_ms = MAX(expires_ms, ?) WHERE id = ?",
                (until_ms, upload_id),
            )

    def expired_uploads(self, at_ms: int) -> list[str]:
        rows = self._db.conn.execute(
            "SELECT id FROM uploads WHERE expires_ms < ?", (at_ms,)
        ).fetchall()
        return [str(r[0]) for r in rows]


@contextmanager
def side_connection(path: Path, *, read_only: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection of a worker thread's own (off the event loop, beside the server's), which
    waits for the server's writes (SQLite's busy timeout) rather than failing at once."""
    target = path.resolve().as_uri() + "?mode=ro" if read_only else str(path)
    conn = sqlite3.connect(target, uri=read_only, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        yield conn
    finally:
        conn.close()


def measure_bytes(path: Path, job_ids: Sequence[str]) -> int:
    """The stored size of the jobs' rows (their own and their items'), read on a connection
    of its own so it can run off the event loop while the server writes."""
    with side_connection(path, read_only=True) as conn:
        total = 0
        for job_id in job_ids:
            row = conn.execute(
                "SELECT COALESCE(SUM(32 + LENGTH(datastore) + LENGTH(scope) + LENGTH(key)"
                " + COALESCE(LENGTH(data), 0) + COALESCE(LENGTH(message), 0)"
                " + COALESCE(LENGTH(journal_ids), 0) + COALESCE(LENGTH(skip_code), 0)"
                " + COALESCE(LENGTH(error_code), 0)), 0) FROM items WHERE job_id = ?",
                (job_id,),
            ).fetchone()
            total += int(row[0])
            row = conn.execute(
                "SELECT 64 + LENGTH(request) + COALESCE(LENGTH(plan), 0)"
                " + COALESCE(LENGTH(plan_cursor), 0) + COALESCE(LENGTH(kind_state), 0)"
                " + COALESCE(LENGTH(failure_message), 0) FROM jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
            total += int(row[0]) if row else 0
        return total


def reclaim_space(path: Path, step_pages: int = RECLAIM_STEP_PAGES) -> None:
    """Hand the jobs file's free pages back to the file system, a few MiB per transaction,
    on a connection of its own (off the event loop): the server's writes wait at most one
    short step. A file without incremental vacuum keeps its free pages for new jobs."""
    with side_connection(path) as conn:
        if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2:
            free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
            # Bounded: pages the server frees meanwhile wait for the next prune.
            for _ in range(free // step_pages + 1):
                conn.execute(f"PRAGMA incremental_vacuum({int(step_pages)})").fetchall()
        # PASSIVE: copies what it can without making the server's writers wait.
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _job(row: Sequence[Any]) -> JobRecord:
    return JobRecord(
        id=row[0],
        kind=row[1],
        state=row[2],
        universe=int(row[3]),
        store_kind=row[4],
        request=_load(row[5]) or {},
        idempotency_key=row[6],
        actor_id=row[7],
        actor_name=row[8],
        created_ms=int(row[9]),
        updated_ms=int(row[10]),
        started_ms=row[11],
        finished_ms=row[12],
        plan=_load(row[13]),
        plan_complete=bool(row[14]),
        plan_cursor=_load(row[15]),
        start_when_planned=bool(row[16]),
        item_count=int(row[17]),
        applied=int(row[18]),
        skipped=int(row[19]),
        failed=int(row[20]),
        failure_code=row[21],
        failure_message=row[22],
        output_path=row[23],
        rollback_of=row[24],
        rolled_back_by=row[25],
        kind_state=_load(row[26]),
        seq=int(row[27]),
        proposed_by=row[28],
        approved_by_id=row[29],
        approved_by_name=row[30],
        actor_user_id=row[31],
        actor_user_name=row[32],
        approved_by_user_id=row[33],
        approved_by_user_name=row[34],
    )


def _item(row: Sequence[Any]) -> ItemRecord:
    return ItemRecord(
        seq=int(row[0]),
        universe=int(row[1]),
        store_kind=row[2],
        datastore=row[3],
        scope=row[4],
        key=row[5],
        line=row[6],
        data=_load(row[7]),
        state=row[8],
        deferred=bool(row[9]),
        skip_code=row[10],
        error_code=row[11],
        message=row[12],
        journal_ids=tuple(_load(row[13]) or ()),
        attempts=int(row[14]),
    )


__all__ = [
    "ItemRecord",
    "JobRecord",
    "JobStore",
    "JobStoreError",
    "NewItem",
    "Outcome",
    "UploadRecord",
    "new_job_id",
    "new_upload_id",
    "now_ms",
]
