"""What reading Open Cloud into the index shares: an entry as the index holds it, and the
read path's "no cached copy" (the index is the copy).

Crawls themselves are jobs (`services/jobs/kinds/crawl.py`): planned, paced to the budget,
resumable after a crash, paused and cancelled like every other job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...opencloud.models import DataStoreEntry
from ..readthrough import Recalled
from .store import IndexedEntry


@dataclass(frozen=True)
class NoCopy:
    """A read whose copy is the index, not the cache (verify live)."""

    kind: str = "crawl"

    def recall(self) -> Recalled[Any] | None:
        return None

    def remember(self, value: Any, generation: int) -> None:
        return None


def entry_of(universe_id: int, datastore: str, entry: DataStoreEntry) -> IndexedEntry | None:
    """An entry (or one revision) read from Open Cloud, as the index holds it; None when it has
    no value (deleted)."""
    if entry.value_json is None:
        return None
    return IndexedEntry(
        universe_id=universe_id,
        datastore=datastore,
        scope=entry.scope,
        key=entry.key,
        value_json=entry.value_json,
        revision=entry.revision_id,
        created_at=entry.create_time,
        updated_at=entry.revision_create_time,
        attributes=entry.attributes,
        user_ids=list(entry.user_ids),
    )
