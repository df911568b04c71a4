"""Rewrite an archive with some entries removed or changed (erasure), under the same key.

The archive format has no per-entry keys to shred: an entry is removed by writing a new file
without it and replacing the old one atomically. The new file keeps the archive key and its
slots (so the vault and the passphrase, if any, both still open it), gets a new archive id with
`derived_from` naming the old one, and records the rewrite in `erasures` (counts and the request
id, never the player). What the old file held is gone from the folder once `os.replace` returns;
copies made elsewhere beforehand (an exported portable archive) are outside the server's reach,
and the erasure report says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .archive import (
    ArchiveEntry,
    ArchiveReader,
    ArchiveWriter,
    ErasureNote,
    Manifest,
    _Reuse,
    utc_now,
)
from .keyslots import ArchiveKeys


@dataclass(frozen=True)
class RewriteResult:
    path: Path
    old_archive_id: str
    manifest: Manifest | None  # None: nothing matched, the file was left as it was
    removed: int
    changed: int

    @property
    def rewritten(self) -> bool:
        return self.manifest is not None


def rewrite_archive(
    path: Path,
    keys: ArchiveKeys,
    change: Callable[[ArchiveEntry], ArchiveEntry | None],
    *,
    request_id: str,
    clock: Callable[[], datetime] = utc_now,
) -> RewriteResult:
    """Apply `change` to every entry (None drops it); replace the file only if anything changed.

    Every entry is checked against its SHA-256 on the way; a damaged archive raises
    ArchiveDamagedError and is left untouched.
    """
    path = Path(path)
    removed = changed = 0
    with ArchiveReader(path, keys) as reader:
        manifest = reader.manifest
        reuse = _Reuse(
            archive_key=reader.archive_key,
            key_id=reader.header.key_id,
            slots=reader.header.slots,
            started_at=manifest.started_at,
            completed_at=manifest.completed_at,
            derived_from=manifest.archive_id,
            erasures=manifest.erasures,
        )
        writer = ArchiveWriter(
            path,
            universe_id=manifest.universe_id,
            backend=manifest.backend,
            keys=ArchiveKeys(),
            selection=manifest.selection,
            schedule=manifest.schedule,
            note=manifest.note,
            chunk_bytes=manifest.chunk_bytes,
            clock=clock,
            _reuse=reuse,
        )
        with writer:
            for entry in reader.entries():
                kept = change(entry)
                if kept is None:
                    removed += 1
                    continue
                if kept != entry:
                    changed += 1
                writer.add(kept)
            if not removed and not changed:
                writer.abort()
                return RewriteResult(path, manifest.archive_id, None, 0, 0)
            writer.erasures.append(
                ErasureNote(at=clock(), request_id=request_id, removed=removed, changed=changed)
            )
            reader.close()  # the old file is replaced next (Windows cannot replace an open file)
            new_manifest = writer.finish()
    return RewriteResult(path, manifest.archive_id, new_manifest, removed, changed)
