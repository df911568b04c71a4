"""Erasing a player from the jobs file: how long the event loop is held while the file is
rewritten (secure_delete, VACUUM, emptied write-ahead log) so no free page keeps their keys.

A jobs file is filled with `--jobs` finished jobs of `--items` items each (`jobs_prune.fill`);
one key is the erased player's. The erasure's own path (`JobStore.redact_items` in a worker
thread, on a connection of its own, as the erase-user job runs it) is timed with a ticker on
the loop (`loop_stall`). Baseline in the same run, on a copy of the same file: the same redaction
and rewrite on the server's connection, on the loop (how the erasure ran before).

    .venv/bin/python -m benchmarks.erasure_vacuum [--jobs 40] [--items 5000]
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from dsm.services.jobs.store import JOBS_FILENAME, JobStore
from dsm.storage.sqlite import database_files, rewrite_securely

from .jobs_prune import MIB, arguments, size, two_copies
from .loop_stall import stalls

PLAYER_KEY = "Player_3_0000042"  # one of `fill`'s keys
USER_ID = 42


def names_player(_kind: str, _store: str, _scope: str, key: str) -> bool:
    return key == PLAYER_KEY


async def off_the_loop(store: JobStore) -> None:
    await asyncio.to_thread(store.redact_items, names_player, USER_ID)


async def on_the_loop(store: JobStore) -> None:
    conn = store._db.conn
    store._redact_in(conn, names_player, USER_ID)
    rewrite_securely(conn)


def still_named(path: Path) -> bool:
    return any(PLAYER_KEY.encode() in p.read_bytes() for p in database_files(path))


def main() -> None:
    args = arguments(__doc__ or "")
    with tempfile.TemporaryDirectory() as tmp:
        first, second, _ = two_copies(tmp, args.jobs, args.items)
        before = size(first / JOBS_FILENAME)
        with JobStore(first) as store:
            took, stall = asyncio.run(stalls(lambda: off_the_loop(store)))
            left = still_named(store.path)
        with JobStore(second) as store:
            base_took, base_stall = asyncio.run(stalls(lambda: on_the_loop(store)))
            base_left = still_named(store.path)
    items = (args.jobs + 1) * args.items
    print(f"{items:,} items in {before / MIB:.1f} MiB; one player's key erased")
    print(
        f"erasure (worker thread, own connection): {took:.2f} s, longest loop stall "
        f"{stall * 1000:.0f} ms; key left in the files: {left}"
    )
    print(
        f"baseline (on the loop): {base_took:.2f} s, longest loop stall "
        f"{base_stall * 1000:.0f} ms; key left in the files: {base_left}"
    )
    print(f"longest stall, erasure / baseline: {stall / base_stall:.2f}")


if __name__ == "__main__":
    main()
