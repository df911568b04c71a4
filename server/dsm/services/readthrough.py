"""The one read path: fresh from Open Cloud, else the labelled cached copy, else a typed error.

Every read kind (entries, data store and key lists, ordered lists, memory store reads) goes
through `ReadThrough.read`, so every one answers alike:

| Open Cloud                               | cached copy | answer                                     |
| ---------------------------------------- | ----------- | ------------------------------------------ |
| answers                                  | (any)       | the value, LIVE/EMULATOR; the copy updated |
|                                          |             | (right after the answer is written)        |
| paused by a 429 or just failed (no call) | yes         | the copy, CACHED with its age and why      |
| paused by a 429 (no call is made)        | no          | UPSTREAM_THROTTLED with retry_after        |
| unreachable or 5xx                       | yes         | the copy, CACHED with its age and why      |
| unreachable or 5xx                       | no          | UPSTREAM_UNAVAILABLE, source UNAVAILABLE   |
| throttling (429)                         | no          | UPSTREAM_THROTTLED with retry_after        |
| refuses the request (404, 403, 400, ...) | (any)       | that error; the cache is never consulted   |

A failure to connect or a 5xx opens a short circuit breaker (see Upstream) so the next reads
with a cached copy answer at once instead of spending the client's retry budget again (a read
with nothing cached still asks Open Cloud); any fresh answer closes it. A new read kind supplies a `fetch`
(one Open Cloud call, returning a value the cache can hold) and a `CachedCopy` (where that
kind keeps its last answer); jobs that read can use the same function.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from shared_schema.common import Source, SourceKind
from shared_schema.errors import ErrorCode

from ..opencloud import errors as oc
from ..opencloud.client import OpenCloudClient
from ..storage.cache import EntryCache
from .errors import ServiceError
from .provenance import cached, fresh, is_unreachable, upstream_error
from .upstream import Upstream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recalled[T]:
    value: T
    fetched_at: float  # epoch seconds
    age_seconds: float


class CachedCopy[T](Protocol):
    """Where one read kind keeps its last fresh answer."""

    @property
    def kind(self) -> str:
        """For the cache hit/miss counters, e.g. "entry", "list"."""
        ...

    def recall(self) -> Recalled[T] | None: ...

    def remember(self, value: T, generation: int) -> None:
        """Store a fresh answer unless the cache was invalidated since `generation`."""
        ...


@dataclass(frozen=True)
class Answer[T]:
    value: T
    source: Source

    @property
    def is_fresh(self) -> bool:
        return self.source.kind is not SourceKind.CACHED


class CacheObserver(Protocol):
    def cache_hit(self, kind: str = "entry") -> None: ...
    def cache_miss(self, kind: str = "entry") -> None: ...


def after_this_answer(work: Callable[[], None]) -> None:
    """Run `work` once the request being handled has been answered: on the event loop, when the
    handler's task yields. aiohttp writes a ready response without yielding, so the answer goes
    out first, and the work is done before the loop reads the next request. Off a loop: now."""

    def run() -> None:
        try:
            work()
        except Exception:
            log.exception("work after an answer failed")

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        run()
        return
    loop.call_soon(run)


@dataclass(frozen=True)
class ListCopy:
    """A list page (or any msgpack-able answer) cached under (kind, universe, store, *parts).

    `store` groups the copy with a data store so writes to it forget the copy; None files it
    under the universe.
    """

    cache: EntryCache
    list_kind: str
    universe_id: int
    store: str | None
    parts: tuple[str, ...]
    kind: str = "list"

    def recall(self) -> Recalled[Any] | None:
        hit = self.cache.get_list(self.list_kind, self.universe_id, self.store, *self.parts)
        return None if hit is None else Recalled(hit.value, hit.fetched_at, hit.age_seconds)

    def remember(self, value: Any, generation: int) -> None:
        self.cache.put_list(
            self.list_kind,
            self.universe_id,
            self.store,
            *self.parts,
            value=value,
            if_generation=generation,
        )


@dataclass
class ReadThrough:
    upstream: Upstream
    cache: EntryCache
    observer: CacheObserver | None = None

    async def read[T](
        self,
        universe_id: int,
        fetch: Callable[[OpenCloudClient], Awaitable[T]],
        copy: CachedCopy[T],
        *,
        what: str,
        category: str = "read",
    ) -> Answer[T]:
        """`fetch` fresh, or answer from `copy` as the table in the module docs says.

        `what` names the thing read in messages ("entry 'a' of data store 'b'", "this list").
        """
        client = self.upstream.client_for(universe_id)
        backend = self.upstream.binding(universe_id).backend
        skip = self.upstream.read_skip(universe_id, category)
        if skip is not None:
            held = self._recall(copy)
            if held is not None:
                reason = skip.reason
                return Answer(
                    held.value, cached(backend, held.fetched_at, held.age_seconds, reason)
                )
            if skip.code is ErrorCode.UPSTREAM_THROTTLED:
                # No call is made: the budget is paused, the client would only wait.
                error = ServiceError(skip.code, skip.reason, retry_after=skip.retry_after)
                raise _nothing_cached(error, what)
            # The breaker is open but nothing is cached: asking Open Cloud is the only way.
        generation = self.cache.generation
        try:
            value = await fetch(client)
        except oc.OpenCloudError as exc:
            error = upstream_error(exc, backend)
            if not is_unreachable(exc):
                raise error from exc
            if isinstance(exc, oc.NetworkError | oc.ServerError):
                self.upstream.note_unreachable(universe_id, error.message)
            held = self._recall(copy)
            if held is None:
                raise _nothing_cached(error, what) from exc
            return Answer(
                held.value, cached(backend, held.fetched_at, held.age_seconds, error.message)
            )
        self.upstream.note_reachable(universe_id)
        # Sealing and writing the copy need not delay the answer (`generation` still guards it).
        after_this_answer(functools.partial(copy.remember, value, generation))
        return Answer(value, fresh(backend))

    def _recall[T](self, copy: CachedCopy[T]) -> Recalled[T] | None:
        held = copy.recall()
        if self.observer is not None:
            if held is None:
                self.observer.cache_miss(copy.kind)
            else:
                self.observer.cache_hit(copy.kind)
        return held


def _nothing_cached(error: ServiceError, what: str) -> ServiceError:
    return ServiceError(
        error.code,
        f"{error.message} No cached copy of {what} exists, so it cannot be shown.",
        retry_after=error.retry_after,
        details={"source": {"kind": "UNAVAILABLE", "reason": error.message}},
    )
