"""The local search index: its status and coverage, and the sample game.

The index is a local analytical copy of crawled data store entries; crawls that fill it are jobs
(`crawl` and `crawl_history` in jobs.py). Search and analytics read
only the index, so every answer carries an `IndexBasis`: which Open Cloud the data came from,
how much of the listed data it covers, and how old the oldest copy is.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .base import QueryParams, RequestBody, ResponseBody
from .common import Backend
from .constraints import NonNegativeInt, PositiveInt, UtcDateTime

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
    """What the index holds. Its crawls are jobs: `GET /jobs?kind=crawl&universe=...`."""

    exists: bool = Field(description="False after `dsm index drop` or before the first crawl.")
    protection: IndexProtection
    protection_note: str = Field(description="How the file is protected, in plain words.")
    size_bytes: NonNegativeInt
    stores: list[StoreCoverage]
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


class SampleGameLoading(ResponseBody):
    """A sample game load under way: the server keeps answering other requests meanwhile."""

    universe_id: PositiveInt
    seed: int
    players: NonNegativeInt = Field(description="Player entries it generates.")
    players_written: NonNegativeInt = Field(description="Players written to the emulator so far.")


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
    loading: SampleGameLoading | None = Field(
        default=None,
        description="A load under way; another is refused (CONFLICT) until it ends.",
    )
