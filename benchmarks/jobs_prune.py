"""Pruning old jobs: how long the event loop is held, and how much of the file goes back.

A jobs file is filled with `--jobs` finished jobs of `--items` items each (keys and outcome
messages shaped like a real delete job's) plus one running job that stays. Then the prune's own
path runs on an event loop, as the server runs it: the jobs removed in one transaction, their
items in short batches with the loop free in between, the freed pages handed back in a worker
thread. A ticker task on the same loop records the longest gap between its wake-ups: the longest
time the loop could not serve a request. Baseline in the same run, on a copy of the same file:
one DELETE of every item at once (a naive prune), timed the same way (`loop_stall`).

    .venv/bin/python -m benchmarks.jobs_prune [--jobs 40] [--items 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path

from dsm.services.jobs.store import (
    JOBS_FILENAME,
    JobRecord,
    JobStore,
    NewItem,
    new_job_id,
    now_ms,
    reclaim_space,
)
from dsm.storage.sqlite import database_files

from .loop_stall import stalls

MIB = 1024 * 1024


def fill(data_dir: Path, jobs: int, items: int) -> list[str]:
    with JobStore(data_dir) as store:
        ids = []
        for j in range(jobs + 1):
            created = now_ms() - 60 * 86_400_000
            record = JobRecord(
                id=new_job_id(), kind="delete", state="succeeded" if j < jobs else "running",
                universe=1, store_kind="standard", request={"selection": None, "params": {}},
                idempotency_key=None, actor_id="bench", actor_name="bench", created_ms=created,
                updated_ms=created, started_ms=created, finished_ms=None, plan=None,
                plan_complete=True, plan_cursor=None, start_when_planned=False, item_count=0,
                applied=0, skipped=0, failed=0, failure_code=None, failure_message=None,
                output_path=None, rollback_of=None, rolled_back_by=None, kind_state=None,
            )  # fmt: skip
            store.create(record)
            page = [
                NewItem(1, "standard", "PlayerData", "global", f"Player_{j}_{i:07d}")
                for i in range(items)
            ]
            store.add_items(record.id, page, cursor=None, complete=True)
            if j < jobs:
                ids.append(record.id)
        return ids


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in database_files(path))


async def batched(store: JobStore, ids: list[str]) -> None:
    store.remove_jobs(ids)
    while store.drop_pruned_items():
        await asyncio.sleep(0)
    await asyncio.to_thread(reclaim_space, store.path)


async def naive(store: JobStore, ids: list[str]) -> None:
    with store._db.transaction() as conn:
        marks = ", ".join("?" for _ in ids)
        conn.execute(f"DELETE FROM items WHERE job_id IN ({marks})", ids)
        conn.execute(f"DELETE FROM jobs WHERE id IN ({marks})", ids)


def arguments(doc: str) -> argparse.Namespace:
    """--jobs and --items of `fill`, for this benchmark and the others on a filled jobs file."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--items", type=int, default=5000)
    return parser.parse_args()


def two_copies(tmp: str, jobs: int, items: int) -> tuple[Path, Path, list[str]]:
    """Two data dirs holding the same filled jobs file (one for the baseline), and `fill`'s ids."""
    first, second = Path(tmp, "a"), Path(tmp, "b")
    first.mkdir()
    ids = fill(first, jobs, items)  # closed: the WAL folded into one file
    shutil.copytree(first, second)
    return first, second, ids


def main() -> None:
    args = arguments(__doc__ or "")
    with tempfile.TemporaryDirectory() as tmp:
        first, second, ids = two_copies(tmp, args.jobs, args.items)
        before = size(first / JOBS_FILENAME)
        # Opened and closed outside the timing, as the server does at start and shutdown.
        with JobStore(first) as store:
            took, stall = asyncio.run(stalls(lambda: batched(store, ids)))
        after = size(first / JOBS_FILENAME)
        with JobStore(second) as store:
            base_took, base_stall = asyncio.run(stalls(lambda: naive(store, ids)))
        base_after = size(second / JOBS_FILENAME)
    removed = args.jobs * args.items
    print(f"{args.jobs:,} finished jobs, {removed:,} items removed; one running job kept")
    print(
        f"prune (batched, reclaim off the loop): {took:.2f} s, longest loop stall "
        f"{stall * 1000:.0f} ms; file {before / MIB:.1f} -> {after / MIB:.1f} MiB"
    )
    print(
        f"baseline (one DELETE on the loop): {base_took:.2f} s, longest loop stall "
        f"{base_stall * 1000:.0f} ms; file {before / MIB:.1f} -> {base_after / MIB:.1f} MiB"
    )
    print(f"longest stall, prune / baseline: {stall / base_stall:.2f}")


if __name__ == "__main__":
    main()
