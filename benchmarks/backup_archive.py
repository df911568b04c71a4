"""Backup archive size against the raw JSON, and write / verify speed, streaming.

A synthetic data set shaped like player saves (seeded, so every run builds the same one:
nested inventories, stats, names, a few values of 1 MiB) is written twice from one generator:
as JSON Lines (the export format: the "raw JSON" baseline) and as an archive. Then the archive
is verified (decrypt, decompress, check every SHA-256). Baselines measured in the same run on
the same bytes, since the machine is shared and noisy: SHA-256 of the JSON Lines file (the
least any verify must do) and zstd of the JSON Lines file alone (what compression alone gives).

Entries are generated lazily and never held, so the process's peak memory (max RSS, taken
before the baselines read the raw file whole) shows the archive code streams: run it with
`--entries 1000000` and the peak stays where it is at 100,000.

    .venv/bin/python -m benchmarks.backup_archive [--entries 100000] [--big 8]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import resource
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import zstandard

from dsm.services.backups.archive import ArchiveEntry, ArchiveReader, ArchiveWriter, EntryName
from dsm.services.backups.keyslots import ArchiveKeys
from dsm.services.jobs.formats import ExportEntry, JsonLinesWriter
from dsm.storage.crypto import new_key
from shared_schema.common import Backend
from shared_schema.entries import StoreKind

MIB = 1024 * 1024
ITEMS = ["sword", "shield", "potion", "bow", "arrow", "helmet", "boots", "ring", "gem", "map"]
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def saves(count: int, big: int, seed: int = 7) -> Iterator[ArchiveEntry]:
    rng = random.Random(seed)
    for i in range(count):
        inventory = [
            {"id": rng.choice(ITEMS), "n": rng.randint(1, 99), "dur": round(rng.random(), 3)}
            for _ in range(rng.randint(0, 30))
        ]
        value = {
            "version": 3,
            "coins": rng.randint(0, 10**7),
            "level": rng.randint(1, 200),
            "name": f"player{rng.randint(1, 10**9)}",
            "inventory": inventory,
            "quests": {f"q{j}": rng.random() < 0.5 for j in range(rng.randint(0, 20))},
            "lastLogin": (T0 - timedelta(seconds=rng.randint(0, 10**7))).isoformat(),
        }
        text = json.dumps(value, separators=(",", ":"))
        if i < big:
            text = '{"blob":"' + "".join(rng.choice("abcdef0123") for _ in range(MIB)) + '"}'
        yield ArchiveEntry(
            EntryName(StoreKind.STANDARD, "PlayerData", "global", f"Player_{i}"),
            text,
            T0,
            {"schema": 3} if i % 3 == 0 else None,
            (i + 1,),
            f"08DC{i:012X}.0000000001.08DC{i:012X}.01",
            T0 - timedelta(days=rng.randint(1, 900)),
            T0 - timedelta(seconds=rng.randint(0, 86400)),
        )


def rate(size: int, seconds: float) -> str:
    return f"{size / MIB / max(seconds, 1e-9):8.1f} MiB/s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--big", type=int, default=8, help="how many 1 MiB values")
    args = parser.parse_args()
    keys = ArchiveKeys(data_key=new_key())
    with tempfile.TemporaryDirectory() as tmp:
        raw_path, archive_path = Path(tmp) / "raw.jsonl", Path(tmp) / "a.dsmbak"
        with raw_path.open("w", encoding="utf-8") as stream, JsonLinesWriter(stream) as out:
            for e in saves(args.entries, args.big):
                out.write(
                    ExportEntry(
                        key=e.name.key,
                        value_json=e.value_json,
                        scope=e.name.scope,
                        attributes=e.attributes,
                        user_ids=list(e.user_ids),
                        revision=e.revision_id,
                        created=e.created_at,
                        updated=e.updated_at,
                    )
                )
        started = time.perf_counter()
        for _ in saves(args.entries, args.big):
            pass
        generate_s = time.perf_counter() - started
        started = time.perf_counter()
        with ArchiveWriter(
            archive_path, universe_id=1, backend=Backend.EMULATOR, keys=keys
        ) as writer:
            for e in saves(args.entries, args.big):
                writer.add(e)
            manifest = writer.finish()
        write_s = time.perf_counter() - started - generate_s

        started = time.perf_counter()
        with ArchiveReader(archive_path, keys) as reader:
            report = reader.verify()
        verify_s = time.perf_counter() - started
        assert report.ok and report.entries_checked == args.entries
        # Before the baselines below read the raw file whole: this is the archive code's peak.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        raw = raw_path.read_bytes()
        started = time.perf_counter()
        hashlib.sha256(raw).hexdigest()
        sha_s = time.perf_counter() - started
        started = time.perf_counter()
        zstd_size = len(zstandard.ZstdCompressor(level=3).compress(raw))
        zstd_s = time.perf_counter() - started
        del raw
        raw_size, archive_size = raw_path.stat().st_size, archive_path.stat().st_size

    out = io.StringIO()
    print(
        f"entries {args.entries:,} ({args.big} of 1 MiB), values {manifest.value_bytes / MIB:.1f} MiB",
        file=out,
    )
    print(f"raw JSON Lines     {raw_size / MIB:9.1f} MiB", file=out)
    print(
        f"archive            {archive_size / MIB:9.1f} MiB  = {archive_size / raw_size:.1%} of raw "
        f"(zstd of the raw file alone: {zstd_size / raw_size:.1%})",
        file=out,
    )
    print(
        f"write              {write_s:9.2f} s    {rate(raw_size, write_s)} of raw JSON "
        f"(generating the data set, {generate_s:.2f} s, not counted)",
        file=out,
    )
    print(
        f"verify             {verify_s:9.2f} s    {rate(archive_size, verify_s)} of archive, "
        f"{rate(raw_size, verify_s)} of raw JSON",
        file=out,
    )
    print(
        f"baselines          SHA-256 of raw {rate(raw_size, sha_s)}; zstd -3 of raw "
        f"{rate(raw_size, zstd_s)}; verify/SHA-256 time ratio {verify_s / sha_s:.1f}",
        file=out,
    )
    print(f"peak RSS           {peak:9.0f} MiB (whole process, after write and verify)", file=out)
    print(out.getvalue(), end="")


if __name__ == "__main__":
    main()
