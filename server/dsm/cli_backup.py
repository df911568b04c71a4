"""`dsm backup list | show | verify | diff`: look after backup archives on disk.

These work on archive files alone, with no server running. `create`, `schedule` and restore
run as jobs of `dsm serve` and are not part of this command yet.

Archives made by this server open with its vault (unlocked as `dsm serve` unlocks it); a
portable archive opens with `--passphrase`, asked at a hidden prompt or read from
`$DSM_BACKUP_PASSPHRASE`, never taken from the command line.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from . import cli_keys
from .paths import data_dir
from .services.backups.archive import ArchiveError, ArchiveReader, Manifest, read_header
from .services.backups.diff import Change, DiffItem, diff_archives
from .services.backups.folder import (
    ArchiveListing,
    backups_dir,
    find_archive,
    list_archives,
)
from .services.backups.keyslots import PASSPHRASE_ENV, ArchiveKeyError, ArchiveKeys
from .storage.vault import VAULT_FILE, Vault, VaultError, has_terminal

MIB = 1024 * 1024


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "backup",
        help="list, show, verify and compare backup archives",
        description="Look after encrypted backup archives (.dsmbak) in the server's backups "
        "folder or anywhere on disk. Creating, scheduling and restoring backups come with the "
        "jobs of `dsm serve`.",
    )
    actions = parser.add_subparsers(dest="backup_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list the archives in the backups folder")
    show = actions.add_parser("show", help="show an archive's manifest")
    show.add_argument("archive", metavar="ARCHIVE", help="file path, file name or archive id")
    show.add_argument("--json", action="store_true", help="print the manifest as JSON")
    verify = actions.add_parser(
        "verify", help="decrypt an archive and check every checksum; names the first bad entry"
    )
    verify.add_argument("archives", nargs="+", metavar="ARCHIVE")
    diff = actions.add_parser("diff", help="compare two archives: created, changed, deleted")
    diff.add_argument("old", metavar="OLD")
    diff.add_argument("new", metavar="NEW")
    diff.add_argument("--json", action="store_true", help="one JSON object a line")
    diff.add_argument("--same", action="store_true", help="also list unchanged entries")
    for sub in (listing, show, verify, diff):
        sub.add_argument(
            "--dir", type=Path, help="backups folder (default: the server's, in its data dir)"
        )
        sub.add_argument(
            "--passphrase",
            action="store_true",
            help=f"open portable archives with a passphrase (hidden prompt, or ${PASSPHRASE_ENV})",
        )


class CliError(Exception):
    pass


@dataclass
class _Keys:
    """The keys for this run: the passphrase if asked for, the vault only when needed."""

    passphrase: str | None
    _vault_key: bytes | None = None
    _vault_problem: str | None = None
    _vault_tried: bool = False

    def for_archive(self, path: Path) -> ArchiveKeys:
        if self.passphrase is not None:
            return ArchiveKeys(passphrase=self.passphrase)
        kinds = {s.kind for s in read_header(path).slots}
        if "vault" not in kinds:
            raise CliError(f"{path.name} is protected by a passphrase: add --passphrase")
        return ArchiveKeys(data_key=self.vault_key())

    def for_listing(self) -> ArchiveKeys:
        if self.passphrase is not None:
            return ArchiveKeys(passphrase=self.passphrase)
        return ArchiveKeys(data_key=self.vault_key(required=False))

    def vault_key(self, *, required: bool = True) -> bytes | None:
        if not self._vault_tried:
            self._vault_tried = True
            home = data_dir()
            if not (home / VAULT_FILE).exists():
                self._vault_problem = f"this machine's server has no vault ({home})"
            else:
                try:
                    self._vault_key = Vault.open(home, kdf=cli_keys.VAULT_KDF).data_key()
                except VaultError as exc:
                    self._vault_problem = str(exc)
        if self._vault_key is None and required:
            raise CliError(
                f"the archive opens with the vault of the server that made it, and {self._vault_problem}"
            )
        return self._vault_key


def _passphrase(asked: bool) -> str | None:
    if not asked:
        return None
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env:
        return from_env
    if not has_terminal():
        raise CliError(f"--passphrase needs a terminal to ask on, or ${PASSPHRASE_ENV}")
    return getpass.getpass("Backup passphrase: ")


def run(
    args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    folder = args.dir if args.dir is not None else backups_dir(data_dir())
    try:
        keys = _Keys(_passphrase(args.passphrase))
        if args.backup_command == "list":
            return _list(folder, keys, out)
        if args.backup_command == "show":
            return _show(find_archive(folder, args.archive), keys, args.json, out)
        if args.backup_command == "verify":
            paths = [find_archive(folder, ref) for ref in args.archives]
            return max(_verify(path, keys, out) for path in paths)
        if args.backup_command == "diff":
            old, new = find_archive(folder, args.old), find_archive(folder, args.new)
            return _diff(old, new, keys, args, out)
    except (CliError, ArchiveError, ArchiveKeyError, OSError) as exc:
        print(f"error: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        print("\ncancelled", file=err)
        return 130
    print(f"error: unknown backup action {args.backup_command!r}", file=err)
    return 2


def _when(manifest: Manifest) -> str:
    return manifest.started_at.strftime("%Y-%m-%d %H:%M:%SZ")


def _list(folder: Path, keys: _Keys, out: TextIO) -> int:
    archives = list_archives(folder, keys.for_listing())
    if not archives:
        print(f"No backup archives in {folder}.", file=out)
        return 0
    print(f"Backup archives in {folder}:", file=out)
    for archive in archives:
        print(_listing_line(archive), file=out)
    return 0


def _listing_line(archive: ArchiveListing) -> str:
    size = f"{archive.size / MIB:8.1f} MiB"
    manifest = archive.manifest
    if manifest is None:
        ident = archive.archive_id or "?"
        return f"  {ident:16}  {size}  {archive.path.name}: cannot be read ({archive.problem})"
    schedule = manifest.schedule or "manual"
    return (
        f"  {manifest.archive_id:16}  {size}  {_when(manifest)}  {manifest.backend.value:8}  "
        f"universe {manifest.universe_id}  {manifest.entries} entries  {schedule}"
    )


def _show(path: Path, keys: _Keys, as_json: bool, out: TextIO) -> int:
    with ArchiveReader(path, keys.for_archive(path)) as reader:
        manifest = reader.manifest
    if as_json:
        doc = manifest.model_dump(mode="json", exclude={"frames"})
        print(json.dumps(doc, indent=2, ensure_ascii=False), file=out)
        return 0
    selection = manifest.selection
    lines = [
        f"Archive {manifest.archive_id}  ({path})",
        f"  backend     {manifest.backend.value}, universe {manifest.universe_id}",
        f"  taken       {_when(manifest)} to {manifest.completed_at:%Y-%m-%d %H:%M:%SZ}",
        f"  schedule    {manifest.schedule or 'manual'}",
        f"  selection   data stores {', '.join(selection.datastores or ['all'])}"
        + (
            f"; ordered {', '.join(selection.ordered_datastores)}"
            if selection.ordered_datastores
            else ""
        )
        + (f"; scopes {', '.join(selection.scopes)}" if selection.scopes else "")
        + (f"; prefix {selection.prefix!r}" if selection.prefix else ""),
        f"  entries     {manifest.entries} ({manifest.value_bytes / MIB:.1f} MiB of values, "
        f"{path.stat().st_size / MIB:.1f} MiB on disk)",
        f"  sha-256     {manifest.content_sha256}",
    ]
    for store in manifest.stores:
        lines.append(f"    {store.kind.value:8} {store.datastore}: {store.entries} entries")
    if manifest.derived_from:
        lines.append(f"  rewritten from archive {manifest.derived_from}")
    for note in manifest.erasures:
        lines.append(
            f"  erasure {note.request_id} on {note.at:%Y-%m-%d %H:%M:%SZ}: "
            f"{note.removed} entries removed, {note.changed} changed"
        )
    if manifest.note:
        lines.append(f"  note        {manifest.note}")
    print("\n".join(lines), file=out)
    return 0


def _verify(path: Path, keys: _Keys, out: TextIO) -> int:
    with ArchiveReader(path, keys.for_archive(path)) as reader:
        started = time.perf_counter()  # after unlocking: scrypt is not the archive's speed
        report = reader.verify()
        seconds = max(time.perf_counter() - started, 1e-9)
    if report.damage is not None:
        print(f"DAMAGED {path.name}: {report.damage.message}", file=out)
        if report.damage.entry is not None:
            print(f"  first bad entry: {report.damage.entry}", file=out)
        print(f"  {report.entries_checked} entries before it were intact", file=out)
        return 1
    assert report.manifest is not None
    size = path.stat().st_size / MIB
    print(
        f"OK {path.name}: {report.entries_checked} entries, every checksum matches "
        f"({size:.1f} MiB in {seconds:.2f} s, {size / seconds:.0f} MiB/s)",
        file=out,
    )
    return 0


def _diff(old: Path, new: Path, keys: _Keys, args: argparse.Namespace, out: TextIO) -> int:
    with (
        ArchiveReader(old, keys.for_archive(old)) as before,
        ArchiveReader(new, keys.for_archive(new)) as after,
    ):
        counts = dict.fromkeys(Change, 0)
        for item in diff_archives(before, after, include_same=args.same):
            counts[item.change] += 1
            print(
                json.dumps(item.as_json(), ensure_ascii=False) if args.json else _diff_line(item),
                file=out,
            )
        if not args.same:
            counts[Change.SAME] = (
                after.manifest.entries - counts[Change.CREATED] - counts[Change.CHANGED]
            )
    if not args.json:
        print(
            f"{counts[Change.CREATED]} created, {counts[Change.CHANGED]} changed, "
            f"{counts[Change.DELETED]} deleted, {counts[Change.SAME]} unchanged",
            file=out,
        )
    return 0


_MARK = {Change.CREATED: "+", Change.CHANGED: "~", Change.DELETED: "-", Change.SAME: "="}


def _diff_line(item: DiffItem) -> str:
    line = f"{_MARK[item.change]} {item.name}"
    if item.change is not Change.CHANGED:
        return line
    details = [
        f"{op['op']} {op['path'] or '(whole value)'}"
        + (f" = {json.dumps(op['value'], ensure_ascii=False)[:60]}" if "value" in op else "")
        for op in item.value_patch[:5]
    ]
    if len(item.value_patch) > 5:
        details.append(f"... {len(item.value_patch) - 5} more")
    if item.attributes_patch:
        details.append(f"attributes: {len(item.attributes_patch)} change(s)")
    if item.user_ids is not None:
        details.append(f"user ids {list(item.user_ids[0])} -> {list(item.user_ids[1])}")
    return line + "  " + "; ".join(details)
