"""The backup archive: byte-identical round trips, damage named by entry, keys, streaming.

The data set is written to the emulator and read back through the real Open Cloud client, as a
backup of a live store reads it, then archived and read back from the file.
"""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dsm.opencloud.client import OpenCloudClient, RetryPolicy
from dsm.services.backups.archive import (
    ArchiveDamagedError,
    ArchiveEntry,
    ArchiveError,
    ArchiveReader,
    ArchiveSelection,
    ArchiveWriter,
    EntryName,
    read_header,
)
from dsm.services.backups.keyslots import (
    ArchiveKeyError,
    ArchiveKeys,
    ArchiveLockedError,
    WrongPassphraseError,
)
from dsm.services.backups.rewrite import rewrite_archive
from dsm.storage.crypto import new_key
from dsm.storage.vault import KdfParams
from shared_schema.common import Backend
from shared_schema.entries import StoreKind

from .conftest import API_KEY, RunningEmulator

U = 77
CHEAP = KdfParams(n=2**10)
PASSPHRASE = "correct horse battery staple"
FOUR_MB = 4 * 1024 * 1024
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def keys(data_key: bytes | None = None, passphrase: str | None = None) -> ArchiveKeys:
    return ArchiveKeys(data_key=data_key, passphrase=passphrase, kdf=CHEAP)


def big_value(seed: str, size: int) -> str:
    """A JSON object of exactly `size` bytes (UTF-8) with multibyte text in it."""
    head = '{"seed":"' + seed + '","blob":"'
    tail = '"}'
    filler = "é" * ((size - len(head) - len(tail)) // 2)
    text = head + filler + tail
    return text[:-2] + "x" * (size - len(text.encode())) + tail


async def seed_varied(client: OpenCloudClient) -> None:
    values = {
        ("players", "global", "Player_1"): '{"coins":5,"inv":[1,2,{"a":null}],"f":1.5}',
        ("players", "global", "玩家_二"): '{"name":"名前","emoji":"🎮🕹️"}',
        ("players", "global", "Ключ с пробелом"): "[]",
        ("players", "global", "big_int"): '{"id":123456789012345678901234567890}',
        ("players", "season-2", "Player_1"): '"a plain string"',
        ("players", "season-2", "zero"): "0",
        ("players", "émoji-scope", "🔑"): "true",
        ("inventory", "global", "4mb"): big_value("four", FOUR_MB),
        ("inventory", "global", "almost4mb"): big_value("almost", FOUR_MB - 17),
        ("inventory", "global", "empty_object"): "{}",
    }
    metadata = {
        ("players", "global", "Player_1"): ({"tier": "gold", "n": [1, {"x": "ü"}]}, [1, 2, 3, 4]),
        ("players", "global", "玩家_二"): ({"名": "値"}, [9007199254740993]),
        ("inventory", "global", "4mb"): ({"big": True}, [5]),
    }
    for (ds, scope, key), value in values.items():
        attributes, users = metadata.get((ds, scope, key), (None, []))
        await client.create_entry(
            U, ds, key, value, scope=scope, attributes=attributes, user_ids=users
        )
    await client.ordered_create(U, "wins", "Player_1", 42)
    await client.ordered_create(U, "wins", "玩家_二", -7, scope="weekly")
    await client.ordered_create(U, "wins", "max", 2**53)


async def read_everything(client: OpenCloudClient, at: datetime) -> list[ArchiveEntry]:
    """What a backup reads: every standard entry in every scope, then the ordered entries."""
    out: list[ArchiveEntry] = []
    for ds in ("players", "inventory"):
        async for listed in client.iter_entries(U, ds, scope="-"):
            entry = await client.get_entry(U, ds, listed.key, scope=listed.scope)
            out.append(ArchiveEntry.from_standard(entry, ds, at))
    for scope in ("global", "weekly"):
        async for ordered in client.ordered_iter(U, "wins", scope=scope):
            out.append(ArchiveEntry.from_ordered(ordered, "wins", scope, at))
    return out


@pytest.fixture
async def client(emulator: RunningEmulator) -> AsyncIterator[OpenCloudClient]:
    fast = RetryPolicy(base_delay=0.001, max_delay=0.01)
    async with OpenCloudClient(api_key=API_KEY, base_url=emulator.base_url, retry=fast) as c:
        yield c


def write(path: Path, entries: list[ArchiveEntry], archive_keys: ArchiveKeys, **kw: object) -> None:
    with ArchiveWriter(
        path,
        universe_id=U,
        backend=Backend.EMULATOR,
        keys=archive_keys,
        selection=ArchiveSelection(datastores=["players", "inventory"]),
        clock=lambda: NOW,
        **kw,  # type: ignore[arg-type]
    ) as writer:
        for entry in entries:
            writer.add(entry)
        writer.finish()


def small_entries(count: int, *, start: int = 0) -> list[ArchiveEntry]:
    return [
        ArchiveEntry(
            EntryName(StoreKind.STANDARD, "players", "global", f"Player_{i}"),
            json.dumps({"coins": i, "name": f"player {i}"}),
            NOW,
            {"level": i % 7},
            (i,),
            f"rev-{i}",
            NOW - timedelta(days=1),
            NOW,
        )
        for i in range(start, start + count)
    ]


async def test_round_trip_is_byte_identical_for_a_varied_data_set(
    client: OpenCloudClient, tmp_path: Path
) -> None:
    await seed_varied(client)
    source = await read_everything(client, NOW)
    assert len(source) == 13 and any(len(e.value_json.encode()) == FOUR_MB for e in source)
    data_key = new_key()
    path = tmp_path / "varied.dsmbak"
    write(path, source, keys(data_key, PASSPHRASE), chunk_bytes=64 * 1024)

    for opener in (keys(data_key=data_key), keys(passphrase=PASSPHRASE)):
        with ArchiveReader(path, opener) as reader:
            back = list(reader.entries())
            assert back == source  # names, value text, attributes, user ids, revision, times
            for before, after in zip(source, back, strict=True):
                assert after.value_json.encode() == before.value_json.encode()
                assert json.dumps(after.attributes) == json.dumps(before.attributes)
                assert after.user_ids == before.user_ids
            by_item = [reader.read(item) for item in reader.directory()]
            assert by_item == source
            manifest = reader.manifest
            assert manifest.entries == 13 and manifest.backend is Backend.EMULATOR
            assert manifest.universe_id == U and manifest.first_read_at == NOW
            assert {(s.kind, s.datastore): s.entries for s in manifest.stores} == {
                (StoreKind.STANDARD, "inventory"): 3,
                (StoreKind.STANDARD, "players"): 7,
                (StoreKind.ORDERED, "wins"): 3,
            }
            assert manifest.value_bytes == sum(len(e.value_json.encode()) for e in source)
            assert reader.verify().ok
    # The archive is much smaller than the raw JSON of its values (the 4 MB ones repeat).
    assert path.stat().st_size < manifest.value_bytes / 20
    # Nothing readable in clear: not a key, a store name or a value.
    raw = path.read_bytes()
    for secret in ("Player_1", "players", "inventory", "玩家", "coins", "tier"):
        assert secret.encode() not in raw


async def test_one_flipped_byte_fails_verify_and_names_the_entry(tmp_path: Path) -> None:
    entries = small_entries(300)
    data_key = new_key()
    path = tmp_path / "a.dsmbak"
    write(path, entries, keys(data_key), chunk_bytes=2048)
    with ArchiveReader(path, keys(data_key)) as reader:
        frames = reader.manifest.frames
        blocks = [list(reader._directory(b)) for b in range(reader.blocks)]
    clean = path.read_bytes()
    # A byte in the middle of block 5's data: its entries are the ones named.
    block = 5
    target = (frames[2 * block] + frames[2 * block + 1]) // 2
    damaged = bytearray(clean)
    damaged[target] ^= 0x01
    path.write_bytes(damaged)
    with ArchiveReader(path, keys(data_key)) as reader:
        report = reader.verify()
    assert not report.ok and report.damage is not None
    spanning = [i for i in blocks[block - 1] if i.offset + i.length > block * 2048]
    expected_first = (spanning or blocks[block])[0].name
    assert report.damage.entry == expected_first
    assert str(expected_first) in report.damage.message
    assert report.damage.block == block
    assert report.entries_checked < 300

    # Every other flipped byte, anywhere in the file, is caught too; never a silent pass.
    for position in range(0, len(clean), max(1, len(clean) // 400)):
        damaged = bytearray(clean)
        damaged[position] ^= 0x40
        path.write_bytes(damaged)
        try:
            with ArchiveReader(path, keys(data_key)) as reader:
                report = reader.verify()
        except ArchiveError:
            continue  # header damage is refused when opening
        assert not report.ok, position
        assert report.damage is not None and report.damage.message


async def test_a_damaged_directory_still_names_the_entries_of_its_block(tmp_path: Path) -> None:
    data_key = new_key()
    path = tmp_path / "a.dsmbak"
    write(path, small_entries(200), keys(data_key), chunk_bytes=2048)
    with ArchiveReader(path, keys(data_key)) as reader:
        frames = reader.manifest.frames
        first_of_block_3 = next(iter(reader._directory(3)))
    damaged = bytearray(path.read_bytes())
    damaged[(frames[7] + frames[8]) // 2] ^= 0x10
    path.write_bytes(damaged)
    with ArchiveReader(path, keys(data_key)) as reader:
        report = reader.verify()
    assert report.damage is not None and report.damage.where == "directory"
    assert report.damage.entry == first_of_block_3.name


async def test_keys_wrong_passphrase_other_vault_and_locked_fail_cleanly(tmp_path: Path) -> None:
    data_key = new_key()
    both, vault_only, portable = (tmp_path / n for n in ("both", "vault", "portable"))
    write(both, small_entries(3), keys(data_key, PASSPHRASE))
    write(vault_only, small_entries(3), keys(data_key))
    write(portable, small_entries(3), keys(passphrase=PASSPHRASE))

    with pytest.raises(WrongPassphraseError, match="passphrase does not open this archive"):
        ArchiveReader(both, keys(data_key, "Correct horse battery staple"))
    with pytest.raises(WrongPassphraseError):
        ArchiveReader(portable, keys(passphrase="not the passphrase"))
    with pytest.raises(ArchiveLockedError, match="has no passphrase"):
        ArchiveReader(vault_only, keys(passphrase=PASSPHRASE))
    with pytest.raises(ArchiveLockedError, match=r"another server's vault.*give its --passphrase"):
        ArchiveReader(both, keys(new_key()))
    with pytest.raises(ArchiveLockedError, match="protected by a passphrase"):
        ArchiveReader(portable, keys(data_key))
    with pytest.raises(ArchiveLockedError, match="vault is not available"):
        ArchiveReader(vault_only, keys())
    with pytest.raises(ArchiveKeyError, match="at least 8 characters"):
        write(tmp_path / "short", [], keys(passphrase="short"))
    with pytest.raises(ArchiveKeyError, match="give a passphrase"):
        write(tmp_path / "none", [], keys())
    assert not (tmp_path / "none").exists() and not list(tmp_path.glob(".*partial"))
    # The clear header names no data and no secret, and reads without a key.
    header = read_header(portable)
    assert [s.kind for s in header.slots] == ["passphrase"]
    assert PASSPHRASE.encode() not in portable.read_bytes()


async def test_the_manifest_reads_without_the_entries(tmp_path: Path) -> None:
    data_key = new_key()
    path = tmp_path / "a.dsmbak"
    write(path, small_entries(500), keys(data_key), chunk_bytes=4096, schedule="nightly")
    with ArchiveReader(path, keys(data_key)) as reader:
        frames = reader.manifest.frames
    damaged = bytearray(path.read_bytes())
    for offset in frames:  # wreck every data and directory frame
        damaged[offset + 40] ^= 0xFF
    path.write_bytes(damaged)
    with ArchiveReader(path, keys(data_key)) as reader:
        assert reader.manifest.entries == 500 and reader.manifest.schedule == "nightly"
        assert not reader.verify().ok


async def test_truncated_and_foreign_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    data_key = new_key()
    path = tmp_path / "a.dsmbak"
    write(path, small_entries(50), keys(data_key))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 100])
    with ArchiveReader(path, keys(data_key)) as reader:
        report = reader.verify()
    assert report.damage is not None and report.damage.where == "footer"
    assert "cut short" in report.damage.message
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(ArchiveError, match="not a DataStore Manager Pro backup archive"):
        ArchiveReader(other, keys(data_key))
    with pytest.raises(ArchiveDamagedError, match="header is damaged"):
        path.write_bytes(whole[:20] + bytes([whole[20] ^ 1]) + whole[21:])
        ArchiveReader(path, keys(data_key))


def test_writing_and_reading_are_streaming(tmp_path: Path) -> None:
    """Peak memory does not grow with the number of entries: it is bounded by the chunk."""
    data_key = new_key()

    def peak(count: int) -> int:
        path = tmp_path / f"{count}.dsmbak"

        def entries() -> list[ArchiveEntry]:
            return small_entries(1)

        tracemalloc.start()
        with ArchiveWriter(
            path,
            universe_id=U,
            backend=Backend.EMULATOR,
            keys=keys(data_key),
            chunk_bytes=8 * 1024,
        ) as writer:
            for i in range(count):
                entry = entries()[0]
                writer.add(
                    ArchiveEntry(
                        EntryName(StoreKind.STANDARD, "players", "global", f"k{i}"),
                        entry.value_json,
                        NOW,
                    )
                )
            writer.finish()
        with ArchiveReader(path, keys(data_key)) as reader:
            seen = sum(1 for _ in reader.entries())
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert seen == count
        return top

    small, large = peak(1_000), peak(12_000)
    assert large < small * 1.3, (small, large)


def test_an_empty_archive_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "empty.dsmbak"
    write(path, [], keys(passphrase=PASSPHRASE))
    with ArchiveReader(path, keys(passphrase=PASSPHRASE)) as reader:
        assert reader.verify().ok and reader.manifest.entries == 0
        assert list(reader.entries()) == [] and list(reader.directory()) == []


def test_rewrite_drops_and_changes_entries_and_keeps_every_slot(tmp_path: Path) -> None:
    data_key = new_key()
    path = tmp_path / "a.dsmbak"
    entries = small_entries(100)
    write(path, entries, keys(data_key, PASSPHRASE), chunk_bytes=2048)
    before = read_header(path)

    def erase(entry: ArchiveEntry) -> ArchiveEntry | None:
        if entry.name.key == "Player_7":
            return None
        if 7 in entry.user_ids:
            return ArchiveEntry(
                entry.name,
                entry.value_json,
                entry.read_at,
                entry.attributes,
                tuple(u for u in entry.user_ids if u != 7),
                entry.revision_id,
                entry.created_at,
                entry.updated_at,
            )
        return entry

    untouched = path.read_bytes()
    result = rewrite_archive(path, keys(data_key), lambda e: e, request_id="er_1")
    assert not result.rewritten and path.read_bytes() == untouched

    result = rewrite_archive(path, keys(data_key), erase, request_id="er_1", clock=lambda: NOW)
    assert result.rewritten and result.removed == 1 and result.changed == 0
    assert result.manifest is not None and result.manifest.derived_from == before.archive_id
    assert [(n.request_id, n.removed) for n in result.manifest.erasures] == [("er_1", 1)]
    for opener in (keys(data_key), keys(passphrase=PASSPHRASE)):
        with ArchiveReader(path, opener) as reader:
            assert reader.verify().ok
            back = list(reader.entries())
    assert [e.name.key for e in back] == [e.name.key for e in entries if e.name.key != "Player_7"]
    assert read_header(path).archive_id != before.archive_id
    assert not list(tmp_path.glob(".*partial"))


def test_a_failed_write_leaves_no_archive(tmp_path: Path) -> None:
    path = tmp_path / "a.dsmbak"
    with (
        pytest.raises(RuntimeError),
        ArchiveWriter(path, universe_id=U, backend=Backend.LIVE, keys=keys(new_key())) as writer,
    ):
        writer.add(small_entries(1)[0])
        raise RuntimeError("the listing failed")
    assert os.listdir(tmp_path) == []
