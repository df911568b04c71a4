"""Key and value search over the local index (docs/search.md has the query language).

One request shape serves key search (`key_pattern`), value search (`query`) and both at once
(they are AND-ed). `SearchFilter` alone, without paging, is what a bulk job takes as its
selection: it deletes or transforms exactly the entries the filter matches in the index, each
conditional on the revision the index holds.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .base import RequestBody, ResponseBody
from .common import Source
from .constraints import Cursor, Name, NonNegativeInt, PositiveInt, UtcDateTime
from .index import IndexBasis

MAX_QUERY_CHARS = 2000
MAX_SEARCH_PAGE = 500
# Verifying re-reads every hit from Open Cloud, so such pages are kept small.
MAX_VERIFY_PAGE = 50


class KeyMatch(StrEnum):
    PREFIX = "prefix"
    SUBSTRING = "substring"
    GLOB = "glob"  # * any run of characters, ? one character, [abc] one of
    REGEX = "regex"  # RE2-style regular expression, matched anywhere in the key


class EntryLink(ResponseBody):
    """Where an entry lives; the plugin opens its entry view from this."""

    universe_id: PositiveInt
    datastore: str = Field(min_length=1)
    scope: str
    key: str = Field(min_length=1)


class SearchFilter(RequestBody):
    """Which indexed entries: a key pattern, a value query, or both (AND)."""

    universe_id: PositiveInt
    datastores: list[Name] = Field(
        default_factory=list, max_length=100, description="Empty: every indexed store."
    )
    scopes: list[Name] = Field(
        default_factory=list, max_length=100, description="Empty: every scope."
    )
    key_pattern: str | None = Field(
        default=None, min_length=1, max_length=200, description="Matched against keys."
    )
    key_match: KeyMatch = Field(default=KeyMatch.PREFIX, description="How key_pattern matches.")
    case_sensitive: bool = Field(default=True, description="For key_pattern only.")
    query: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        description="A value query, e.g. `coins > 1e9 and not exists(banned)`.",
    )


class SearchRequest(SearchFilter):
    sort: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="A field path to order by (e.g. `coins`); absent: store, scope, key.",
    )
    descending: bool = False
    cursor: Cursor | None = None
    limit: int = Field(default=50, ge=1, le=MAX_SEARCH_PAGE, description="Page size.")
    verify_live: bool = Field(
        default=False,
        description=f"Re-read this page's entries (limit at most {MAX_VERIFY_PAGE}) and mark "
        "those that changed since they were indexed.",
    )


class LiveState(StrEnum):
    UNCHANGED = "unchanged"  # still at the indexed revision
    CHANGED = "changed"  # a newer revision exists; the index was updated with it
    DELETED = "deleted"  # the key no longer exists; the index row was removed
    UNAVAILABLE = "unavailable"  # could not be re-read now (see reason)


class LiveCheck(ResponseBody):
    state: LiveState
    live_revision: str | None = Field(default=None, description="The revision read just now.")
    still_matches: bool | None = Field(
        default=None, description="For CHANGED: whether the new value still matches the search."
    )
    source: Source
    reason: str | None = None


class SearchHit(ResponseBody):
    entry: EntryLink
    revision: str = Field(min_length=1, description="The indexed revision.")
    updated_at: UtcDateTime | None = Field(default=None, description="When it was written.")
    crawled_at: UtcDateTime = Field(description="When the index read it.")
    size_bytes: NonNegativeInt
    user_ids: list[NonNegativeInt]
    preview: str = Field(description="The start of the value's JSON text (may be cut).")
    preview_truncated: bool
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Each field path the query or sort names -> its value as JSON text.",
    )
    live: LiveCheck | None = Field(default=None, description="Set when verify_live was asked.")


class SearchPage(ResponseBody):
    hits: list[SearchHit]
    total: NonNegativeInt = Field(description="Indexed entries matching, on every page.")
    next_cursor: str | None = Field(default=None, description="Absent on the last page.")
    basis: IndexBasis


class QueryCheckRequest(RequestBody):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)


class QueryError(ResponseBody):
    """Where a query is wrong. Also in a 400 envelope's details as `query_error`."""

    message: str
    position: NonNegativeInt = Field(description="0-based character offset in the query.")
    line: PositiveInt
    column: PositiveInt = Field(description="1-based; for a caret under the query.")
    length: NonNegativeInt = Field(default=1, description="Characters the problem spans.")
    expected: list[str] = Field(default_factory=list, description="What could come there.")


class QueryCheck(ResponseBody):
    valid: bool
    error: QueryError | None = None
    fields: list[str] = Field(
        default_factory=list, description="The field paths the query reads, when valid."
    )
    normalized: str | None = Field(
        default=None, description="The query as the server understood it (fully bracketed)."
    )
