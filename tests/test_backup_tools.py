"""Diff, the backups folder (list, find, retention) and `dsm backup list|show|verify|diff`."""

from __future__ import annotations

import argparse
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import keyring
import pytest

from dsm import cli_backup, cli_keys
from dsm.services.backups.archive import (
    ArchiveEntry,
    ArchiveReader,
    ArchiveWriter,
    EntryName,
)
from dsm.services.backups.diff import Change, diff_against, diff_archives
from dsm.services.backups.folder import (
    apply_retention,
    archive_file_name,
    backups_dir,
    find_archive,
    list_archives,
    retention_plan,
    stale_partials,
)
from dsm.services.backups.keyslots import PASSPHRASE_ENV as BACKUP_PASSPHRASE_ENV
from dsm.services.backups.keyslots import ArchiveKeys
from dsm.storage.vault import PASSPHRASE_ENV, KdfParams, Vault
from shared_schema.common import Backend
from shared_schema.entries import StoreKind

from .test_cli_keys import fail_keyring

CHEAP = KdfParams(n=2**10)
T0 = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)


def entry(
    key: str,
    value: object,
    *,
    users: tuple[int, ...] = (),
    attrs: dict[str, object] | None = None,
    scope: str = "global",
) -> ArchiveEntry:
    return ArchiveEntry(
        EntryName(StoreKind.STANDARD, "players", scope, key),
        json.dumps(value, separators=(",", ":")),
        T0,
        attrs,
        users,
        f"rev-{key}",
        T0,
        T0,
    )


def make(
    path: Path,
    entries: list[ArchiveEntry],
    keys: ArchiveKeys,
    *,
    started: datetime = T0,
    schedule: str | None = None,
) -> Path:
    with ArchiveWriter(
        path,
        universe_id=1,
        backend=Backend.EMULATOR,
        keys=keys,
        schedule=schedule,
        clock=lambda: started,
        chunk_bytes=4096,
    ) as writer:
        for item in entries:
            writer.add(item)
        writer.finish()
    return path


def test_diff_two_archives_created_changed_deleted_same(tmp_path: Path) -> None:
    keys = ArchiveKeys(data_key=os.urandom(32))
    old = [entry(f"p{i}", {"coins": i}) for i in range(500)]
    replaced = {
        "p10": entry("p10", {"coins": 11, "gems": 1}, users=(10,)),
        "p20": entry("p20", {"coins": 20}, attrs={"vip": True}),
    }
    new = [replaced.get(e.name.key, e) for e in old if e.name.key not in ("p3", "p400")]
    new.append(entry("fresh", [1, 2]))
    new.append(entry("p1", {"coins": 1}, scope="other"))  # same key in another scope: created
    a = make(tmp_path / "a.dsmbak", old, keys)
    b = make(tmp_path / "b.dsmbak", new, keys)
    with ArchiveReader(a, keys) as ra, ArchiveReader(b, keys) as rb:
        items = list(diff_archives(ra, rb))
    by = {(i.change, i.name.scope, i.name.key): i for i in items}
    assert sorted((c.value, s, k) for c, s, k in by) == [
        ("changed", "global", "p10"),
        ("changed", "global", "p20"),
        ("created", "global", "fresh"),
        ("created", "other", "p1"),
        ("deleted", "global", "p3"),
        ("deleted", "global", "p400"),
    ]
    changed = by[(Change.CHANGED, "global", "p10")]
    assert sorted(changed.value_patch, key=lambda op: op["path"]) == [
        {"op": "replace", "path": "/coins", "value": 11},
        {"op": "add", "path": "/gems", "value": 1},
    ]
    assert changed.user_ids == ((), (10,))
    assert by[(Change.CHANGED, "global", "p20")].attributes_patch == [
        {"op": "add", "path": "/vip", "value": True}
    ]
    deleted = by[(Change.DELETED, "global", "p3")]
    assert deleted.before is not None and deleted.before.value_json == '{"coins":3}'


def test_diff_against_a_stream_of_current_entries_limited_to_what_was_compared(
    tmp_path: Path,
) -> None:
    keys = ArchiveKeys(data_key=os.urandom(32))
    archived = [entry(f"p{i}", {"c": i}) for i in range(10)]
    archived.append(ArchiveEntry(EntryName(StoreKind.ORDERED, "wins", "global", "p1"), "5", T0))
    path = make(tmp_path / "a.dsmbak", archived, keys)
    # What is live now: p0 respelled (same content), p1 changed, only the standard store read.
    current = [entry(f"p{i}", {"c": i}) for i in range(2, 10)]
    current.insert(0, ArchiveEntry(archived[0].name, '{ "c" : 0 }', T0 + timedelta(days=1)))
    current.insert(1, entry("p1", {"c": 100}))
    with ArchiveReader(path, keys) as reader:
        items = list(
            diff_against(
                reader,
                current,
                within=lambda name: name.kind is StoreKind.STANDARD,
                include_same=True,
            )
        )
    changes = {(i.name.key, i.change) for i in items}
    assert ("p0", Change.SAME) in changes and ("p1", Change.CHANGED) in changes
    assert all(i.change is not Change.DELETED for i in items)  # the ordered store was not read
    assert len(items) == 10


def test_list_find_retention_and_partials(tmp_path: Path) -> None:
    data_key = os.urandom(32)
    keys = ArchiveKeys(data_key=data_key)
    folder = backups_dir(tmp_path)
    made = []
    for day in range(5):
        started = T0 + timedelta(days=day)
        made.append(
            make(
                folder / archive_file_name(started, f"n{day}"),
                [entry("p", {"d": day})],
                keys,
                started=started,
                schedule="nightly",
            )
        )
    manual = make(folder / "manual.dsmbak", [entry("p", 1)], keys, started=T0 - timedelta(days=9))
    portable = make(
        folder / "portable.dsmbak",
        [entry("p", 2)],
        ArchiveKeys(passphrase="a passphrase", kdf=CHEAP),
        started=T0 - timedelta(days=20),
    )
    (folder / "junk.dsmbak").write_bytes(b"not an archive")
    listed = list_archives(folder, keys)
    # Newest first; a locked archive is dated by its clear header; junk comes last.
    assert [a.path for a in listed] == [*reversed(made), manual, portable, folder / "junk.dsmbak"]
    unreadable = {a.path.name: a.problem for a in listed if a.manifest is None}
    assert "protected by a passphrase" in (unreadable["portable.dsmbak"] or "")
    assert "not a DataStore Manager Pro backup archive" in (unreadable["junk.dsmbak"] or "")

    plan = retention_plan(listed, schedule="nightly", keep=2)
    assert [a.path for a in plan.keep] == [made[4], made[3]]
    assert [a.path for a in plan.delete] == [made[2], made[1], made[0]]
    assert apply_retention(plan) == [made[2], made[1], made[0]]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [made[3].name, made[4].name, "manual.dsmbak", "portable.dsmbak", "junk.dsmbak"]
    )
    with pytest.raises(ValueError):
        retention_plan(listed, schedule="nightly", keep=0)

    with ArchiveReader(made[4], keys) as reader:
        archive_id = reader.manifest.archive_id
    assert find_archive(folder, archive_id[:6]) == made[4]
    assert find_archive(folder, made[4].name) == made[4]
    assert find_archive(folder, str(portable)) == portable

    partial = folder / ".x.dsmbak.abcd.partial"
    partial.write_bytes(b"x")
    old = (T0 - timedelta(days=2)).timestamp()
    os.utime(partial, (old, old))
    assert stale_partials(folder, older_than=timedelta(hours=1), now=T0) == [partial]


# ----------------------------------------------------------------------------------------- CLI


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """DSM_HOME with a real passphrase vault (cheap scrypt, no OS keyring)."""
    path = tmp_path / "home"
    monkeypatch.setenv("DSM_HOME", str(path))
    monkeypatch.setenv(PASSPHRASE_ENV, "vault passphrase 123")
    monkeypatch.setattr(cli_keys, "VAULT_KDF", CHEAP)
    previous = keyring.get_keyring()
    keyring.set_keyring(fail_keyring())
    yield path
    keyring.set_keyring(previous)


def dsm(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="dsm")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_backup.register(sub)
    args = parser.parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    code = cli_backup.run(args, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_list_show_verify_diff_with_the_vault(home: Path) -> None:
    data_key = Vault.open(home, keyring_backend=None, kdf=CHEAP).data_key()
    keys = ArchiveKeys(data_key=data_key)
    folder = backups_dir(home)
    a = make(
        folder / archive_file_name(T0, "a"),
        [entry("p1", {"c": 1}), entry("p2", 2)],
        keys,
        schedule="nightly",
    )
    b = make(
        folder / archive_file_name(T0 + timedelta(days=1), "b"),
        [entry("p1", {"c": 2}), entry("p3", 3)],
        keys,
        started=T0 + timedelta(days=1),
    )
    code, out, _ = dsm("backup", "list")
    assert code == 0 and out.count("EMULATOR") == 2 and "2 entries  nightly" in out

    code, out, _ = dsm("backup", "show", a.name)
    assert code == 0 and "universe 1" in out and "players: 2 entries" in out and "nightly" in out
    code, out, _ = dsm("backup", "show", a.name, "--json")
    assert json.loads(out)["entries"] == 2

    code, out, _ = dsm("backup", "verify", str(a), b.name)
    assert code == 0 and out.count("every checksum matches") == 2

    code, out, _ = dsm("backup", "diff", a.name, b.name)
    assert code == 0
    assert out.splitlines() == [
        "~ players/global/p1  replace /c = 2",
        "+ players/global/p3",
        "- players/global/p2",
        "1 created, 1 changed, 1 deleted, 0 unchanged",
    ]
    code, out, _ = dsm("backup", "diff", a.name, b.name, "--json")
    assert [json.loads(line)["change"] for line in out.splitlines()] == [
        "changed",
        "created",
        "deleted",
    ]

    # One flipped byte in the data: verify fails, names the entry, exits 1.
    raw = bytearray(a.read_bytes())
    with ArchiveReader(a, keys) as reader:
        first_frame = reader.manifest.frames[0]
    raw[first_frame + 30] ^= 0x02
    a.write_bytes(raw)
    code, out, _ = dsm("backup", "verify", a.name)
    assert code == 1 and "DAMAGED" in out and "first bad entry: players/global/p1" in out


def test_cli_portable_archive_and_wrong_passphrase(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make(
        tmp_path / "portable.dsmbak",
        [entry("p1", 1)],
        ArchiveKeys(passphrase="the right passphrase", kdf=CHEAP),
    )
    code, _, err = dsm("backup", "verify", str(path))
    assert code == 1 and "protected by a passphrase: add --passphrase" in err
    monkeypatch.setenv(BACKUP_PASSPHRASE_ENV, "the wrong passphrase")
    code, out, err = dsm("backup", "verify", str(path), "--passphrase")
    assert code == 1 and out == ""
    assert (
        err.strip() == "error: the passphrase does not open this archive (check it and try again)"
    )
    monkeypatch.setenv(BACKUP_PASSPHRASE_ENV, "the right passphrase")
    code, out, _ = dsm("backup", "verify", str(path), "--passphrase")
    assert code == 0 and "OK portable.dsmbak: 1 entries" in out
    assert not (home / "vault.bin").exists()  # reading a portable archive made no vault


def test_cli_without_a_vault_says_so(home: Path, tmp_path: Path) -> None:
    path = make(tmp_path / "x.dsmbak", [entry("p", 1)], ArchiveKeys(data_key=os.urandom(32)))
    code, _, err = dsm("backup", "show", str(path))
    assert code == 1 and "has no vault" in err
    code, out, _ = dsm("backup", "list")
    assert code == 0 and "No backup archives" in out
    code, _, err = dsm("backup", "show", "nope")
    assert code == 1 and "no archive 'nope'" in err
