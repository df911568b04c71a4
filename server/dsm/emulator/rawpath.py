"""The last path segment exactly as the client sent it, still percent-encoded.

Open Cloud puts verbs (`:listRevisions`, `:increment`, `:undelete`) and revision selectors
(`@<revision>`, `@latest:<time>`) in the same segment as a key, so they must be found in the
raw segment: aiohttp's match_info is already decoded, which turned a key named
`k:listRevisions` (sent as `k%3AlistRevisions`) into the verb on key `k`. An encoded `:` or
`@` is part of the key; only a literal one separates. Split first, then decode each part.
"""

from __future__ import annotations

from urllib.parse import unquote

from aiohttp import web

__all__ = ["decoded", "raw_last_segment"]


def raw_last_segment(request: web.Request) -> str:
    return request.rel_url.raw_path.rsplit("/", 1)[-1]


def decoded(raw: str) -> str:
    """A raw segment part as text (invalid UTF-8 escapes become U+FFFD, never an error)."""
    return unquote(raw, errors="replace")
