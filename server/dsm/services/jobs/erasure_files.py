"""Erasure of a player from the files jobs leave in the data dir: exports and uploads.

- **Exports** (`exports/`, written by export jobs as JSON Lines, CSV or SQLite): each file is
  rewritten without the player's entries, by the rules that pick Open Cloud entries: a key that
  is one of the patterns with the user id filled in is dropped, an entry listing the user id
  loses it from its user ids (value kept, as in archives). An export line names no data store,
  so the export job's record says which stores it read; when it is gone (or the export read
  several stores), the patterns of every store apply, which can only remove more. A file is
  rewritten beside itself, fsynced and renamed over the old one. A file that is not an export
  this server can read is listed as not scrubbed (when it mentions the user id), never skipped;
  so is an export still being written (its spool).
- **Uploads** (`uploads/`, import files sent in chunks, deleted when they expire): an upload
  whose bytes mention the user id at all is **deleted** with its record. It is a transient copy
  the user still has; rewriting it would change the file an import checked, and an import that
  still needs it would put the player's data back.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from shared_schema.entries import StoreKind
from shared_schema.jobs import ExportFormat

from ...storage.atomic import _fsync_dir
from ..backups.archive import EntryName
from ..erasure import Action, ErasureRules, ScrubOutcome, utc_now
from .jsontext import JsonTextError, object_members
from .store import JobRecord

_SUFFIXES = {".jsonl": ExportFormat.JSONL, ".csv": ExportFormat.CSV, ".sqlite": ExportFormat.SQLITE}
_SCAN_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class ExportOrigin:
    """What the export job that wrote a file says about it (None: not known)."""

    format: ExportFormat | None = None
    store_kind: StoreKind | None = None
    datastores: tuple[str, ...] | None = None  # None: every store the patterns name


def export_origins(jobs: Iterable[JobRecord]) -> dict[str, ExportOrigin]:
    """File name -> origin, from export job records (call on the job store's thread)."""
    origins: dict[str, ExportOrigin] = {}
    for job in jobs:
        if job.output_path is None:
            continue
        selection = job.selection or {}
        stores = selection.get("datastores") or []
        single = not selection.get("all_datastores") and len(stores) == 1
        origins[Path(job.output_path).name] = ExportOrigin(
            ExportFormat(job.params.get("format", ExportFormat.JSONL.value)),
            StoreKind(job.store_kind),
            tuple(stores) if single else None,
        )
    return origins


class _Verdicts:
    """The erasure rules for entries of a file that names no data store."""

    def __init__(self, rules: ErasureRules, origin: ExportOrigin) -> None:
        self.rules = rules
        kinds = (
            [origin.store_kind] if origin.store_kind else [StoreKind.STANDARD, StoreKind.ORDERED]
        )
        self._names: list[tuple[StoreKind, str]] = []
        for kind in kinds:
            named = (
                rules.patterns.standard if kind is StoreKind.STANDARD else rules.patterns.ordered
            )
            # "" has only the "*" patterns (or the default ordered id).
            stores = origin.datastores or (*(s for s in named if s != "*"), "")
            self._names += [(kind, store) for store in stores]

    def action(self, scope: str, key: str, user_ids: list[int]) -> Action | None:
        found = [self.rules.match(EntryName(k, s, scope, key), user_ids) for k, s in self._names]
        actions = {m.action for m in found if m is not None}
        if Action.DELETE_ENTRY in actions:
            return Action.DELETE_ENTRY
        return Action.REMOVE_USER_ID if actions else None

    def without_player(self, user_ids: list[int]) -> str:
        """The user ids as JSON, the player taken out."""
        return json.dumps([i for i in user_ids if i != self.rules.user_id], separators=(",", ":"))


@dataclass
class _Tally:
    removed: int = 0
    changed: int = 0

    def count(self, action: Action | None) -> Action | None:
        if action is Action.DELETE_ENTRY:
            self.removed += 1
        elif action is Action.REMOVE_USER_ID:
            self.changed += 1
        return action

    def check_changed(self) -> None:
        if not (self.removed or self.changed):
            raise _Unchanged


class NotAnExport(Exception):
    """The file cannot be read as the export format it seems to be (the message says why)."""


def scrub_exports(
    folder: Path,
    rules: ErasureRules,
    origins: dict[str, ExportOrigin],
    *,
    clock: Callable[[], datetime] = utc_now,
) -> ScrubOutcome:
    """Rewrite every export file in `folder` without the player (see the module doc)."""
    outcome = ScrubOutcome(
        where="exports",
        method="export files rewritten without the player's entries (the user id taken out "
        "of shared entries), each written beside the old one, fsynced and renamed over it",
        at=clock(),
    )
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    for path in files:
        where = f"exports/{path.name}"
        if path.name.startswith("."):
            if mentions(path, rules.user_id):
                outcome.problems.append(
                    f"{where} was not scrubbed: it is an export being written (or one that was "
                    "interrupted); run the erasure again once it has finished, or delete it"
                )
            continue
        origin = origins.get(path.name, ExportOrigin())
        format = origin.format or _SUFFIXES.get(path.suffix.lower())
        try:
            if format is None:
                raise NotAnExport("it is not a JSON Lines, CSV or SQLite export")
            tally = _REWRITERS[format](path, _Verdicts(rules, origin))
        except _Unchanged:
            tally = _Tally()
        except (NotAnExport, OSError, sqlite3.Error, UnicodeDecodeError, csv.Error) as exc:
            if mentions(path, rules.user_id):
                outcome.problems.append(f"{where} was not scrubbed: {exc}; it mentions the user id")
            else:
                outcome.details.append(f"{where}: not readable as an export ({exc}); it does "
                                       "not mention the user id")  # fmt: skip
            continue
        outcome.removed += tally.removed
        outcome.changed += tally.changed
        stores = "" if origin.datastores else " (the patterns of every store applied)"
        if tally.removed or tally.changed:
            outcome.details.append(
                f"{where}: rewritten, {tally.removed} entries removed, {tally.changed} with the "
                f"user id taken out{stores}"
            )
        else:
            outcome.details.append(f"{where}: holds none of the player's entries{stores}")
    return outcome


# ----------------------------------------------------------------------------- per format


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside `path`, put in its place (fsynced) when the block succeeds."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.erasing")
    try:
        yield tmp
        shutil.copymode(path, tmp)
        with open(tmp, "rb+") as done:
            os.fsync(done.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _ids(value: Any, where: str) -> list[int]:
    if value in (None, ""):
        return []
    try:
        ids = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        raise NotAnExport(f"{where}: user_ids is not JSON") from None
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise NotAnExport(f"{where}: user_ids is not a list of user ids")
    return ids


def _rewrite_jsonl(path: Path, verdicts: _Verdicts) -> _Tally:
    tally = _Tally()
    with (
        open(path, encoding="utf-8", newline="") as source,
        _replacing(path) as tmp,
        open(tmp, "w", encoding="utf-8", newline="") as out,
    ):
        for number, line in enumerate(source, 1):
            if not line.strip():
                out.write(line)
                continue
            try:
                spans = {name: (s, e) for name, s, e in object_members(line)}
                key = json.loads(line[slice(*spans["key"])])
                scope = json.loads(line[slice(*spans["scope"])]) if "scope" in spans else ""
                listed = (
                    json.loads(line[slice(*spans["user_ids"])]) if "user_ids" in spans else None
                )
            except (JsonTextError, KeyError, ValueError) as exc:
                raise NotAnExport(f"line {number} is not an export line ({exc})") from None
            ids = _ids(listed, f"line {number}")
            action = tally.count(verdicts.action(scope or "global", str(key), ids))
            if action is Action.DELETE_ENTRY:
                continue
            if action is Action.REMOVE_USER_ID:
                start, end = spans["user_ids"]
                line = line[:start] + verdicts.without_player(ids) + line[end:]
            out.write(line)
        tally.check_changed()
    return tally


def _rewrite_csv(path: Path, verdicts: _Verdicts) -> _Tally:
    tally = _Tally()
    with open(path, encoding="utf-8", newline="") as source, _replacing(path) as tmp:
        rows = csv.reader(source)
        header = next(rows, None)
        if header is None or "key" not in header:
            raise NotAnExport('it has no "key" column')
        key_at, scope_at = header.index("key"), header.index("scope") if "scope" in header else None
        ids_at = header.index("user_ids") if "user_ids" in header else None
        with open(tmp, "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(header)
            for row in rows:
                if len(row) != len(header):
                    raise NotAnExport(f"line {rows.line_num} has {len(row)} cells, not "
                                      f"{len(header)}")  # fmt: skip
                ids = _ids(row[ids_at], f"line {rows.line_num}") if ids_at is not None else []
                scope = (row[scope_at] if scope_at is not None else "") or "global"
                action = tally.count(verdicts.action(scope, row[key_at], ids))
                if action is Action.DELETE_ENTRY:
                    continue
                if action is Action.REMOVE_USER_ID and ids_at is not None:
                    row[ids_at] = verdicts.without_player(ids)
                writer.writerow(row)
            tally.check_changed()
    return tally


def _rewrite_sqlite(path: Path, verdicts: _Verdicts) -> _Tally:
    tally = _Tally()
    with _replacing(path) as tmp:
        shutil.copyfile(path, tmp)
        db = sqlite3.connect(tmp)
        try:
            try:
                rows = db.execute("SELECT rowid, scope, key, user_ids FROM entries").fetchall()
            except sqlite3.OperationalError as exc:
                raise NotAnExport(f"it has no export table ({exc})") from None
            db.execute("PRAGMA secure_delete=ON")
            with db:
                for rowid, scope, key, user_ids in rows:
                    ids = _ids(user_ids, f"key {key!r}")
                    action = tally.count(verdicts.action(scope or "global", str(key), ids))
                    if action is Action.DELETE_ENTRY:
                        db.execute("DELETE FROM entries WHERE rowid = ?", (rowid,))
                    elif action is Action.REMOVE_USER_ID:
                        db.execute("UPDATE entries SET user_ids = ? WHERE rowid = ?",
                                   (verdicts.without_player(ids), rowid))  # fmt: skip
            tally.check_changed()
            db.execute("VACUUM")  # no free page keeps the old rows
        finally:
            db.close()
    return tally


class _Unchanged(Exception):
    """Nothing of the player in the file: the old file stays as it was."""


_REWRITERS: dict[ExportFormat, Callable[[Path, _Verdicts], _Tally]] = {
    ExportFormat.JSONL: _rewrite_jsonl,
    ExportFormat.CSV: _rewrite_csv,
    ExportFormat.SQLITE: _rewrite_sqlite,
}


# ----------------------------------------------------------------------------------- uploads


def mentions(path: Path, user_id: int) -> bool:
    """Whether the file's bytes hold the user id as a whole number (not inside a longer one)."""
    needle = re.compile(rb"(?<![0-9])" + str(user_id).encode() + rb"(?![0-9])")
    overlap = len(str(user_id)) + 1
    tail = b""
    with open(path, "rb") as source:
        while block := source.read(_SCAN_BLOCK):
            if needle.search(tail + block):
                return True
            tail = block[-overlap:]
    return False


def uploads_mentioning(folder: Path, user_id: int) -> list[Path]:
    """Upload files whose bytes mention the user id (run off the event loop: they are read)."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.glob("*.bin")) if p.is_file() and mentions(p, user_id)]


def uploads_outcome(deleted: list[str], *, clock: Callable[[], datetime] = utc_now) -> ScrubOutcome:
    return ScrubOutcome(
        where="uploads",
        method="uploads whose bytes mention the user id deleted with their records (an import "
        "that still needed one must be sent again)",
        at=clock(),
        removed=len(deleted),
        details=[f"uploads/{name}: deleted" for name in deleted],
    )
