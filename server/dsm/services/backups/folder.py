"""The backups folder in the data dir: list, find, retention, leftovers of interrupted writes.

Archives live in `<data dir>/backups/` as `<created UTC>-<archive id>.dsmbak` (the name is only
a label: an archive is found by its file name or by the id in its clear header). Listing needs
the key to read each manifest; an archive that cannot be opened is still listed, with why.

Retention keeps the `keep` newest archives of one schedule (by the time the backup started)
and deletes the rest. It never deletes an archive it cannot read (it cannot tell its schedule),
nor one made by hand (no schedule).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ...paths import ensure_private_dir
from .archive import (
    SUFFIX,
    ArchiveError,
    ArchiveHeader,
    ArchiveReader,
    Manifest,
    read_header,
)
from .keyslots import ArchiveKeyError, ArchiveKeys

BACKUPS_DIRNAME = "backups"
PARTIAL_SUFFIX = ".partial"


def backups_dir(data_dir: Path) -> Path:
    return ensure_private_dir(Path(data_dir) / BACKUPS_DIRNAME)


def archive_file_name(created_at: datetime, archive_id: str) -> str:
    return f"{created_at:%Y%m%dT%H%M%SZ}-{archive_id}{SUFFIX}"


@dataclass(frozen=True)
class ArchiveListing:
    path: Path
    size: int
    header: ArchiveHeader | None  # None: not an archive, or its header is damaged
    manifest: Manifest | None  # None: locked or damaged (see `problem`)
    problem: str | None = None

    @property
    def archive_id(self) -> str | None:
        return self.header.archive_id if self.header else None

    @property
    def created_at(self) -> datetime | None:
        if self.manifest is not None:
            return self.manifest.started_at
        return self.header.created_at if self.header else None


def describe(path: Path, keys: ArchiveKeys) -> ArchiveListing:
    """One archive's header and manifest, or why they cannot be read."""
    size = path.stat().st_size
    try:
        header = read_header(path)
    except (ArchiveError, OSError) as exc:
        return ArchiveListing(path, size, None, None, str(exc))
    try:
        with ArchiveReader(path, keys) as reader:
            return ArchiveListing(path, size, header, reader.manifest)
    except (ArchiveError, ArchiveKeyError, OSError) as exc:
        return ArchiveListing(path, size, header, None, str(exc))


def list_archives(folder: Path, keys: ArchiveKeys) -> list[ArchiveListing]:
    """Every archive in the folder, newest first; unreadable ones last, with the reason."""
    if not folder.is_dir():
        return []
    found = [describe(p, keys) for p in sorted(folder.glob(f"*{SUFFIX}")) if p.is_file()]
    readable = sorted(
        (a for a in found if a.created_at is not None),
        key=lambda a: a.created_at or datetime.min,
        reverse=True,
    )
    return readable + [a for a in found if a.created_at is None]


class ArchiveNotFound(ArchiveError):
    pass


def find_archive(folder: Path, ref: str) -> Path:
    """An archive by path, file name, or (a unique prefix of at least 4 characters of) its id."""
    direct = Path(ref).expanduser()
    if direct.is_file():
        return direct
    if (folder / ref).is_file():
        return folder / ref
    if len(ref) >= 4 and folder.is_dir():
        matches: list[Path] = []
        for path in sorted(folder.glob(f"*{SUFFIX}")):
            try:
                archive_id = read_header(path).archive_id
            except (ArchiveError, OSError):
                archive_id = ""
            if archive_id.startswith(ref) or path.stem.endswith(ref):
                matches.append(path)
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ArchiveNotFound(
                f"{ref!r} matches {len(matches)} archives; give more of the id or the file name"
            )
    raise ArchiveNotFound(
        f"no archive {ref!r}: give a file path, or an id from `dsm backup list` ({folder})"
    )


@dataclass(frozen=True)
class RetentionPlan:
    schedule: str
    keep: list[ArchiveListing]
    delete: list[ArchiveListing]


def retention_plan(
    archives: Iterable[ArchiveListing], *, schedule: str, keep: int
) -> RetentionPlan:
    """Keep the `keep` newest archives of `schedule`; the older ones of it are to be deleted."""
    if keep < 1:
        raise ValueError("retention must keep at least one archive")
    mine = [
        a
        for a in archives
        if a.manifest is not None and a.manifest.schedule == schedule and a.created_at is not None
    ]
    mine.sort(key=lambda a: (a.created_at, a.path.name), reverse=True)
    return RetentionPlan(schedule, mine[:keep], mine[keep:])


def apply_retention(plan: RetentionPlan) -> list[Path]:
    removed: list[Path] = []
    for archive in plan.delete:
        archive.path.unlink(missing_ok=True)
        removed.append(archive.path)
    return removed


def stale_partials(folder: Path, *, older_than: timedelta, now: datetime) -> list[Path]:
    """Half-written archives left by a crash (encrypted; safe to delete once no writer runs)."""
    if not folder.is_dir():
        return []
    cutoff = (now - older_than).timestamp()
    return [
        p
        for p in sorted(folder.glob(f".*{PARTIAL_SUFFIX}"))
        if p.is_file() and os.stat(p).st_mtime < cutoff
    ]
