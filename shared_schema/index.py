"""The local search index: crawls that fill it, its status and coverage, and the sample game.

The index is a local analytical copy of crawled data store entries. Search and analytics read
only the index, so every answer carries an `IndexBasis`: which Open Cloud the data came from,
how much of the listed data it covers, and how old the oldest copy is.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .base import QueryParams, RequestBody, ResponseBody
from .common import Backend
from .constraints import Name, NonNegativeInt, PositiveInt, UtcDateTime

MAX_CRAWL_STORES = 100
MAX_HISTORY_SAMPLE = 1000
MAX_REVISIONS_PER_KEY = 100


class Coverage(ResponseBody):
    """How much of the listed data an answer is computed from."""

    entries_indexed: NonNegativeInt = Field(
        description="Entries whose value is in the index (crawled or written through the server)."
    )
    entries_listed: NonNegativeInt = Field(
        description="Keys the crawls listed in Open Cloud (plus keys created through the server)."
    )
    share: float = Field(
        ge=0, le=1, description="entries_indexed / entries_listed (1 when both 0)."
    )
    complete: bool = Field(
        description="Every store in the answer was crawled to the end and every listed key read."
    )
    stores: NonNegativeInt = Field(description="Data stores the answer covers.")


class IndexBasis(ResponseBody):
    """What every search and analytics answer is computed from. Nothing outside the index."""

    backend: Backend = Field(description="Where the indexed entries were read: LIVE or EMULATOR.")
    sample_data: bool = Field(
        default=False,
        description="The entries are the emulator's generated sample game, not a real game's.",
    )
    coverage: Coverage
    as_of: UtcDateTime | None = Field(
        default=None,
        description="When the oldest indexed entry in the answer was read; absent if none is.",
    )
    newest: UtcDateTime | None = Field(
        default=None, description="When the most recently indexed entry in the answer was read."
    )
    note: str | None = Field(
        default=None, description="What limits the answer, e.g. 'no crawl has finished yet'."
    )


class CrawlKind(StrEnum):
    LATEST = "latest"  # list keys, read each key's latest revision
    HISTORY = "history"  # read the revision history of a sample of keys (progression)


class CrawlState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"  # Open Cloud throttles or is unreachable: retrying after a pause
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CrawlRequest(RequestBody):
    """Read a universe's data stores into the index, paced to the background budget."""

    universe_id: PositiveInt
    datastores: list[Name] = Field(
        default_factory=list,
        max_length=MAX_CRAWL_STORES,
        description="Stores to crawl; empty: every data store of the universe.",
    )
    scope: Name | None = Field(default=None, description="Only this scope; absent: every scope.")
    key_prefix: str | None = Field(
        default=None, min_length=1, max_length=50, description="Only keys with this prefix."
    )


class HistoryRequest(RequestBody):
    """Read the revision history of a sample of indexed keys (for progression and jumps)."""

    universe_id: PositiveInt
    datastore: Name
    scope: Name | None = Field(default=None, description="Only keys of this scope.")
    sample_size: int = Field(
        default=50, ge=1, le=MAX_HISTORY_SAMPLE, description="Keys to sample from the index."
    )
    max_revisions_per_key: int = Field(
        default=30, ge=1, le=MAX_REVISIONS_PER_KEY, description="Newest revisions read per key."
    )
    seed: int = Field(
        default=0, ge=0, le=2**31 - 1, description="Which keys are sampled (same seed, same keys)."
    )


class CrawlInfo(ResponseBody):
    """One crawl (or history read) and its progress; also the `index.crawl` event payload."""

    crawl_id: str = Field(min_length=1)
    kind: CrawlKind
    universe_id: PositiveInt
    datastores: list[str] = Field(description="Stores chosen; empty while still being listed.")
    scope: str | None = None
    state: CrawlState
    created_at: UtcDateTime
    finished_at: UtcDateTime | None = None
    stores_total: NonNegativeInt = 0
    stores_done: NonNegativeInt = 0
    keys_listed: NonNegativeInt = 0
    entries_indexed: NonNegativeInt = 0
    entries_failed: NonNegativeInt = Field(
        default=0, description="Keys that could not be read (kept for a later crawl)."
    )
    entries_removed: NonNegativeInt = Field(
        default=0, description="Index rows dropped because the key no longer exists."
    )
    revisions_read: NonNegativeInt = 0
    requests_made: NonNegativeInt = 0
    requests_estimated: NonNegativeInt | None = Field(
        default=None, description="Requests the whole crawl is expected to take, when known."
    )
    message: str | None = Field(default=None, description="Why it waits, failed or stopped.")
    job_id: str | None = Field(default=None, description="The job running it, when it is one.")
    backend: Backend


class CrawlList(ResponseBody):
    crawls: list[CrawlInfo] = Field(description="Running first, then the newest finished ones.")


class StoreCoverage(ResponseBody):
    universe_id: PositiveInt
    datastore: str = Field(min_length=1)
    entries_indexed: NonNegativeInt
    entries_listed: NonNegativeInt
    complete: bool = Field(description="The last crawl of this store listed and read every key.")
    last_crawl_at: UtcDateTime | None = None
    as_of: UtcDateTime | None = Field(default=None, description="Oldest indexed entry's read time.")
    revisions_indexed: NonNegativeInt = Field(default=0, description="Historical revisions kept.")
    typed_fields: NonNegativeInt = Field(
        default=0, description="Fields materialised as typed columns for fast queries."
    )


class IndexProtection(StrEnum):
    ENCRYPTED = "encrypted"  # the file is encrypted at rest
    FILE_PERMISSIONS = "file_permissions"  # not encrypted: readable only by this OS user (0600)


class IndexStatusQuery(QueryParams):
    universe_id: PositiveInt | None = Field(default=None, description="Only this universe.")


class IndexStatus(ResponseBody):
    exists: bool = Field(description="False after `dsm index drop` or before the first crawl.")
    protection: IndexProtection
    protection_note: str = Field(description="How the file is protected, in plain words.")
    size_bytes: NonNegativeInt
    stores: list[StoreCoverage]
    crawls: list[CrawlInfo] = Field(description="Running crawls and the most recent ones.")
    basis: IndexBasis


class IndexDropResult(ResponseBody):
    dropped: bool = Field(description="False when there was no index to drop.")
    entries_removed: NonNegativeInt
    message: str


class SampleGameRequest(RequestBody):
    """Fill the emulator with the generated sample game (refused on live Open Cloud)."""

    universe_id: PositiveInt = Field(default=1, description="The emulator universe to fill.")
    seed: int = Field(default=1, ge=0, le=2**31 - 1, description="Same seed, same sample game.")
    players: int = Field(default=500, ge=10, le=20000, description="Player entries to generate.")


class SampleGameStatus(ResponseBody):
    """Whether the plugin may offer the sample game: only on an emulator, best when empty."""

    backend: Backend
    available: bool = Field(description="The server runs the emulator, so it can be loaded.")
    loaded: bool = Field(description="The emulator holds the generated sample game.")
    emulator_empty: bool = Field(description="The emulator holds no data store entries at all.")
    universe_id: PositiveInt | None = Field(default=None, description="Where it was loaded.")
    seed: int | None = None
    players: NonNegativeInt | None = None
    datastores: list[str] = Field(default_factory=list, description="Stores the sample fills.")
    reason: str | None = Field(default=None, description="Why it is not available.")
