"""Diff an archive against another archive, or against entries the caller reads now.

`ArchiveDiff(base)` indexes the base archive's directory (names and state digests only, no
value decrypted) into a temporary SQLite file, so a million-entry archive is compared without
holding it in memory. Each entry of the other side is then classified as it comes:

- **created**: in the other side, not in the base;
- **changed**: in both with another value, attributes or user ids (RFC 6902 patches of the
  value and the attributes, and both user id lists);
- **same**: in both with the same state (digests equal, or the parsed JSON equal);
- **deleted**: in the base and never seen on the other side (`deleted()`, at the end).

The temporary index holds keyed digests of names (HMAC under a key that lives only in memory)
and offsets, never a name or a value, and is removed on close.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import jsonpatch

from .archive import ArchiveEntry, ArchiveReader, DirectoryItem, EntryName, state_digest

_BATCH = 5000


class Change(StrEnum):
    CREATED = "created"
    CHANGED = "changed"
    DELETED = "deleted"
    SAME = "same"


@dataclass(frozen=True)
class DiffItem:
    change: Change
    name: EntryName
    before: ArchiveEntry | None = None  # the base's entry (changed, deleted)
    after: ArchiveEntry | None = None  # the other side's entry (created, changed)
    value_patch: list[dict[str, Any]] = field(default_factory=list)
    attributes_patch: list[dict[str, Any]] = field(default_factory=list)
    user_ids: tuple[tuple[int, ...], tuple[int, ...]] | None = None  # (before, after) if differ

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "change": self.change.value,
            "kind": self.name.kind.value,
            "datastore": self.name.datastore,
            "scope": self.name.scope,
            "key": self.name.key,
        }
        if self.change is Change.CHANGED:
            out["value_patch"] = self.value_patch
            out["attributes_patch"] = self.attributes_patch
            if self.user_ids is not None:
                out["user_ids"] = {"before": self.user_ids[0], "after": self.user_ids[1]}
        for role, entry in (("before", self.before), ("after", self.after)):
            if entry is not None:
                out[role] = {"revision": entry.revision_id, "read_at": entry.read_at.isoformat()}
        return out


def _patch(before: Any, after: Any) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = jsonpatch.make_patch(before, after).patch
    return ops


def compare_entries(before: ArchiveEntry, after: ArchiveEntry) -> DiffItem:
    """Same or changed (with patches) for two states of one entry."""
    value = _patch(json.loads(before.value_json), json.loads(after.value_json))
    attributes = _patch(before.attributes or {}, after.attributes or {})
    users = None if before.user_ids == after.user_ids else (before.user_ids, after.user_ids)
    if not value and not attributes and users is None:
        return DiffItem(Change.SAME, after.name, before, after)
    return DiffItem(Change.CHANGED, after.name, before, after, value, attributes, users)


class ArchiveDiff:
    """The base side of a diff; feed it the other side with `compare`, then ask `deleted()`."""

    def __init__(self, base: ArchiveReader, *, workdir: Path | None = None) -> None:
        self.base = base
        self.counts: Counter[Change] = Counter()
        self._key = secrets.token_bytes(32)
        self._tmp = tempfile.TemporaryDirectory(prefix="dsm-diff-", dir=workdir)
        self._db = sqlite3.connect(Path(self._tmp.name) / "diff.sqlite3")
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE base (tag BLOB PRIMARY KEY, state BLOB, ordinal INTEGER,"
            " offset INTEGER, length INTEGER, sha BLOB, seen INTEGER NOT NULL DEFAULT 0);"
        )
        rows: list[tuple[bytes, bytes, int, int, int, bytes]] = []
        for item in base.directory():
            rows.append(
                (
                    self._tag(item.name),
                    item.state,
                    item.ordinal,
                    item.offset,
                    item.length,
                    item.sha256,
                )
            )
            if len(rows) >= _BATCH:
                self._insert(rows)
        self._insert(rows)

    def _insert(self, rows: list[tuple[bytes, bytes, int, int, int, bytes]]) -> None:
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO base VALUES (?, ?, ?, ?, ?, ?, 0)", rows)
        rows.clear()

    def _tag(self, name: EntryName) -> bytes:
        text = json.dumps([name.kind.value, name.datastore, name.scope, name.key])
        return hmac.new(self._key, text.encode(), hashlib.sha256).digest()[:16]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()
        self._tmp.cleanup()

    def compare(self, entry: ArchiveEntry) -> DiffItem:
        """Classify one entry of the other side (created, changed or same)."""
        tag = self._tag(entry.name)
        row = self._db.execute(
            "SELECT state, ordinal, offset, length, sha FROM base WHERE tag = ?", (tag,)
        ).fetchone()
        if row is None:
            item = DiffItem(Change.CREATED, entry.name, after=entry)
        else:
            self._db.execute("UPDATE base SET seen = 1 WHERE tag = ?", (tag,))
            state, ordinal, offset, length, sha = row
            if bytes(state) == state_digest(entry):
                item = DiffItem(Change.SAME, entry.name, after=entry)
            else:
                located = DirectoryItem(ordinal, offset, length, entry.name, bytes(sha), state)
                item = compare_entries(self.base.read(located), entry)
        self.counts[item.change] += 1
        return item

    def deleted(self, within: Callable[[EntryName], bool] | None = None) -> Iterator[DiffItem]:
        """Base entries the other side never showed (only those `within` the compared part)."""
        self._db.commit()
        for item in self.base.directory():
            if within is not None and not within(item.name):
                continue
            row = self._db.execute(
                "SELECT seen FROM base WHERE tag = ?", (self._tag(item.name),)
            ).fetchone()
            if row is not None and row[0] == 0:
                self.counts[Change.DELETED] += 1
                yield DiffItem(Change.DELETED, item.name, before=self.base.read(item))


def diff_against(
    base: ArchiveReader,
    current: Iterable[ArchiveEntry],
    *,
    within: Callable[[EntryName], bool] | None = None,
    include_same: bool = False,
    workdir: Path | None = None,
) -> Iterator[DiffItem]:
    """The base archive against a stream of entries (another archive, or what is live now)."""
    with ArchiveDiff(base, workdir=workdir) as diff:
        for entry in current:
            item = diff.compare(entry)
            if include_same or item.change is not Change.SAME:
                yield item
        yield from diff.deleted(within)


def diff_archives(
    old: ArchiveReader, new: ArchiveReader, *, include_same: bool = False
) -> Iterator[DiffItem]:
    return diff_against(old, new.entries(), include_same=include_same)
