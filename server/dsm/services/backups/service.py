"""The backups folder as the API shows it: list, show, verify, diff, delete and import archives.

Archives open with this server's vault (the data key that also seals the cache and the journal)
or with a passphrase sent in the request. Reading and checking an archive is CPU and disk work,
so it runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from shared_schema.backups import (
    ArchiveDamageView,
    ArchiveErasureNote,
    ArchiveSelectionView,
    ArchiveStoreCount,
    BackupDiff,
    BackupDiffCounts,
    BackupDiffItem,
    BackupDiffRequest,
    BackupList,
    BackupSummary,
    BackupVerifyReport,
    BackupView,
    DiffChange,
    Protection,
)
from shared_schema.errors import ErrorCode

from ..errors import ServiceError
from ..jobs.writes import patch_operations
from .archive import SUFFIX, ArchiveError, ArchiveReader, Manifest, read_header
from .diff import Change, DiffItem, diff_archives
from .folder import (
    ArchiveListing,
    ArchiveNotFound,
    archive_file_name,
    backups_dir,
    describe,
    find_archive,
    list_archives,
)
from .keyslots import ArchiveKeyError, ArchiveKeysSource

MAX_PATCH_OPS = 50


def _problem(exc: Exception) -> ServiceError:
    if isinstance(exc, ArchiveNotFound):
        return ServiceError(ErrorCode.NOT_FOUND, str(exc))
    if isinstance(exc, ArchiveKeyError):
        return ServiceError(ErrorCode.FORBIDDEN, f"The archive cannot be opened: {exc}.")
    return ServiceError(ErrorCode.BAD_REQUEST, f"The archive cannot be read: {exc}.")


def summary_of(listing: ArchiveListing) -> BackupSummary:
    return BackupSummary(**_summary_fields(listing))


def _summary_fields(listing: ArchiveListing) -> dict[str, Any]:
    header, manifest = listing.header, listing.manifest
    fields: dict[str, Any] = {
        "archive_id": header.archive_id if header else None,
        "file_name": listing.path.name,
        "size_bytes": listing.size,
        "readable": manifest is not None,
        "problem": listing.problem,
        "protection": [Protection(s.kind) for s in header.slots] if header else [],
    }
    if manifest is not None:
        fields |= {
            "universe_id": manifest.universe_id,
            "backend": manifest.backend,
            "started_at": manifest.started_at,
            "completed_at": manifest.completed_at,
            "entries": manifest.entries,
            "value_bytes": manifest.value_bytes,
            "schedule": manifest.schedule,
            "note": manifest.note,
            "job_id": manifest.job_id,
            "erasures": len(manifest.erasures),
        }
    return fields


def view_of(listing: ArchiveListing) -> BackupView:
    fields = _summary_fields(listing)
    manifest = listing.manifest
    if manifest is not None:
        selection = manifest.selection
        fields |= {
            "selection": ArchiveSelectionView(
                datastores=selection.datastores,
                ordered_datastores=selection.ordered_datastores,
                scopes=selection.scopes,
                prefix=selection.prefix,
                keys=None if selection.keys is None else len(selection.keys),
            ),
            "stores": [
                ArchiveStoreCount(
                    store_kind=s.kind,
                    datastore=s.datastore,
                    entries=s.entries,
                    value_bytes=s.value_bytes,
                )
                for s in manifest.stores
            ],
            "first_read_at": manifest.first_read_at,
            "last_read_at": manifest.last_read_at,
            "content_sha256": manifest.content_sha256,
            "derived_from": manifest.derived_from,
            "erasure_notes": [
                ArchiveErasureNote(
                    at=n.at, request_id=n.request_id, removed=n.removed, changed=n.changed
                )
                for n in manifest.erasures
            ],
        }
    return BackupView(**fields)


def _diff_item(item: DiffItem) -> BackupDiffItem:
    name = item.name
    users = item.user_ids
    return BackupDiffItem(
        change=DiffChange(item.change.value),
        store_kind=name.kind,
        datastore=name.datastore,
        scope=name.scope,
        key=name.key,
        value_patch=patch_operations(item.value_patch[:MAX_PATCH_OPS]),
        attributes_changed=bool(item.attributes_patch),
        user_ids_before=None if users is None else list(users[0]),
        user_ids_after=None if users is None else list(users[1]),
        before_revision=item.before.revision_id if item.before else None,
        after_revision=item.after.revision_id if item.after else None,
    )


class ArchiveFolder:
    """The server's backups folder and what the API does with its archives."""

    def __init__(self, data_dir: Path, keys: ArchiveKeysSource) -> None:
        self.folder = backups_dir(data_dir)
        self.keys = keys

    def path(self, archive_id: str) -> Path:
        try:
            return find_archive(self.folder, archive_id)
        except ArchiveError as exc:
            raise _problem(exc) from None

    def new_path(self, archive_id: str, started: datetime) -> Path:
        return self.folder / archive_file_name(started, archive_id)

    def listings(self) -> list[ArchiveListing]:
        return list_archives(self.folder, self.keys.keys())

    async def list(self) -> BackupList:
        found = await asyncio.to_thread(self.listings)
        return BackupList(folder=str(self.folder), archives=[summary_of(a) for a in found])

    async def get(self, archive_id: str, passphrase: str | None = None) -> BackupView:
        path = self.path(archive_id)
        listing = await asyncio.to_thread(describe, path, self.keys.keys(passphrase))
        if listing.manifest is None and passphrase is not None:
            # The passphrase was asked for explicitly: say why it does not open.
            raise ServiceError(
                ErrorCode.FORBIDDEN, f"The archive cannot be opened: {listing.problem}."
            )
        return view_of(listing)

    def manifest(self, path: Path, passphrase: str | None = None) -> Manifest:
        try:
            with ArchiveReader(path, self.keys.keys(passphrase)) as reader:
                return reader.manifest
        except (ArchiveError, ArchiveKeyError) as exc:
            raise _problem(exc) from None

    async def verify(self, archive_id: str, passphrase: str | None) -> BackupVerifyReport:
        path = self.path(archive_id)

        def run() -> BackupVerifyReport:
            try:
                with ArchiveReader(path, self.keys.keys(passphrase)) as reader:
                    started = time.perf_counter()
                    report = reader.verify()
                    seconds = time.perf_counter() - started
            except (ArchiveError, ArchiveKeyError) as exc:
                raise _problem(exc) from None
            damage = report.damage
            return BackupVerifyReport(
                archive_id=report.archive_id,
                ok=report.ok,
                entries_checked=report.entries_checked,
                entries=report.manifest.entries if report.manifest else None,
                size_bytes=path.stat().st_size,
                seconds=round(seconds, 4),
                damage=None
                if damage is None
                else ArchiveDamageView(
                    where=damage.where,
                    message=damage.message,
                    store_kind=damage.entry.kind if damage.entry else None,
                    datastore=damage.entry.datastore if damage.entry else None,
                    scope=damage.entry.scope if damage.entry else None,
                    key=damage.entry.key if damage.entry else None,
                    also_affected=damage.also_affected,
                    block=damage.block,
                ),
            )

        return await asyncio.to_thread(run)

    async def diff(self, archive_id: str, request: BackupDiffRequest) -> BackupDiff:
        base, other = self.path(archive_id), self.path(request.against)
        keys = self.keys.keys(request.passphrase)

        def run() -> BackupDiff:
            items: list[BackupDiffItem] = []
            counts: Counter[Change] = Counter()
            try:
                with ArchiveReader(base, keys) as old, ArchiveReader(other, keys) as new:
                    for item in diff_archives(old, new, include_same=True):
                        counts[item.change] += 1
                        shown = request.include_same or item.change is not Change.SAME
                        if shown and len(items) <= request.limit:
                            items.append(_diff_item(item))
                    ids = (old.header.archive_id, new.header.archive_id)
            except (ArchiveError, ArchiveKeyError) as exc:
                raise _problem(exc) from None
            return BackupDiff(
                base=ids[0],
                other=ids[1],
                counts=BackupDiffCounts(
                    created=counts[Change.CREATED],
                    changed=counts[Change.CHANGED],
                    deleted=counts[Change.DELETED],
                    same=counts[Change.SAME],
                ),
                items=items[: request.limit],
                truncated=len(items) > request.limit,
            )

        return await asyncio.to_thread(run)

    def delete(self, archive_id: str) -> None:
        self.path(archive_id).unlink(missing_ok=True)

    async def import_file(self, source: Path, passphrase: str | None) -> BackupSummary:
        """Copy an archive (an upload) into the folder, under its own name, if it opens."""

        def run() -> BackupSummary:
            try:
                header = read_header(source)
            except (ArchiveError, OSError) as exc:
                raise _problem(exc) from None
            for existing in self.folder.glob(f"*{SUFFIX}"):
                try:
                    if read_header(existing).archive_id == header.archive_id:
                        raise ServiceError(
                            ErrorCode.ALREADY_EXISTS,
                            f"Archive {header.archive_id} is already in the backups folder "
                            f"({existing.name}).",
                        )
                except (ArchiveError, OSError):
                    continue
            listing = describe(source, self.keys.keys(passphrase))
            if listing.manifest is None:
                raise ServiceError(
                    ErrorCode.BAD_REQUEST, f"The archive cannot be opened: {listing.problem}."
                )
            target = self.new_path(header.archive_id, listing.manifest.started_at)
            partial = target.with_name(f".{target.name}.import.partial")
            shutil.copyfile(source, partial)
            os.chmod(partial, 0o600)
            os.replace(partial, target)
            return summary_of(describe(target, self.keys.keys(passphrase)))

        return await asyncio.to_thread(run)
