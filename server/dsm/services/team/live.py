"""Presence, soft locks and the change feed of one universe, through its memory store.

One sorted map (`dsm-team-live`) holds three kinds of item, each with a short TTL:

- `p/<server>`: who is connected to that server and what they have open; rewritten every
  third of its TTL while anyone is connected, so a server that stops simply drops out;
- `l/<digest of data store, scope, key>`: a soft lock, taken with a create-only write (the one
  conditional write sorted maps have) and renewed while the entry is being edited;
- `c/<time>/<server>/<n>`: a batch of changes made through that server.

One listing with the filter `id > "c/<cursor>"` returns the new change batches and every lock and
presence item at once ('c' < 'l' < 'p'), so a server spends one request per poll on all three.
Change ids carry the time on Open Cloud's clock (estimated from the expire times it answers), so
teammates whose machine clocks disagree still see each other's changes; a look-back window and
the ids already seen cover the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared_schema.entries import EntryOperation, EntryState, StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.events import EntryChangedPayload, EventType
from shared_schema.identity import Person
from shared_schema.sessions import SessionInfo
from shared_schema.team import (
    EntryRef,
    LockAnswer,
    TeamActivityPayload,
    TeamLock,
    Teammate,
    TeamPresencePayload,
)

from ...opencloud import errors as oc
from ...opencloud.client import OpenCloudClient
from ...opencloud.models import Page, SortedMapItem
from ...storage.cache import EntryCache
from ..journaled import Publisher
from ..tokens import Principal
from ..upstream import Upstream
from .chain import person_from
from .governor import Governor
from .names import (
    CHANGE,
    LOCK,
    PRESENCE,
    SORTED_MAP,
    change_cursor,
    change_id,
    change_time_ms,
    lock_id,
    presence_id,
)

log = logging.getLogger("dsm.team.live")

POLL_SECONDS = 2.0  # while a plugin is connected to this server
IDLE_POLL_SECONDS = 10.0  # while none is
FLUSH_DELAY = 0.3  # changes made close together go out as one batch
LOOKBACK_MS = 15_000  # changes listed again on each poll, for clocks that disagree
MAX_PAGES = 3
MAX_PEOPLE = 8
MAX_PERMISSION_BACKOFF = 60.0
# Between two presence writes, however often presence changes (each navigation changes what a
# user views): keeps a clicking user from spending the request cap on presence alone.
MIN_PRESENCE_SECONDS = 5.0


class Unavailable(Exception):
    """Team sync cannot use the memory store now; the message says why."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.UPSTREAM_UNAVAILABLE) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Change:
    """One write made through this server, as teammates receive it (no values)."""

    kind: str  # standard | ordered
    datastore: str
    scope: str
    key: str
    operation: str
    state: str
    revision: str | None
    person: Person
    journal_id: int | None


def _person_fields(person: Person) -> dict[str, Any]:
    return {
        "id": person.studio_user_id,
        "name": person.studio_user_name,
        "token": person.token_name,
    }


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class LiveSync:
    def __init__(
        self,
        universe_id: int,
        *,
        upstream: Upstream,
        server_id: str,
        governor: Governor,
        events: Publisher,
        cache: EntryCache,
        local_sessions: Callable[[], list[SessionInfo]],
        on_audit_hint: Callable[[int], None],
        on_state: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.universe_id = universe_id
        self._upstream = upstream
        self.server_id = server_id
        self.governor = governor
        self._events = events
        self._cache = cache
        self._local_sessions = local_sessions
        self._on_audit_hint = on_audit_hint
        self._on_state = on_state
        self._clock = clock
        self._offset_ms = 0.0  # Open Cloud's clock minus ours
        self._cursor_ms: int | None = None
        self._seen: dict[str, int] = {}  # change ids already applied -> their time
        self._outgoing: list[Change] = []
        self._audit_hints: list[int] = []
        self._jobs: list[dict[str, Any]] = []
        self._sent = 0
        self._remote: dict[str, Teammate] = {}
        self._locks: dict[str, TeamLock] = {}  # lock item id -> lock
        self._lock_tokens: dict[str, str] = {}  # lock item id -> token id of the holder
        self._published: str = ""
        self._wake = asyncio.Event()
        self._presence_due = 0.0
        self._last_presence = float("-inf")
        self._poll_due = 0.0
        self.available: bool | None = None  # None until the first sync
        self.reason: str | None = None
        self.last_sync_at: datetime | None = None
        # Seconds from a teammate's write to this server seeing it (for the benchmark).
        self.feed_delays: deque[float] = deque(maxlen=1000)

    # ------------------------------------------------------------------ inputs

    def queue_change(self, change: Change) -> None:
        self._outgoing.append(change)
        self._wake.set()

    def queue_job(self, job_id: str, summary: str, person: Person) -> None:
        self._jobs.append({"id": job_id, "summary": summary, "by": _person_fields(person)})
        self._wake.set()

    def queue_audit_hint(self, seq: int) -> None:
        self._audit_hints.append(seq)
        self._wake.set()

    def nudge(self) -> None:
        """Local presence changed (a plugin connected, opened something): write it soon, but
        not more often than every MIN_PRESENCE_SECONDS however fast the user clicks."""
        self._presence_due = min(self._presence_due, self._last_presence + MIN_PRESENCE_SECONDS)
        # A plugin just connected: read at the connected pace from now on.
        self._poll_due = min(self._poll_due, self._clock() + POLL_SECONDS)
        self._wake.set()

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        backoff = 5.0
        while True:
            try:
                await self.step()
                backoff = 5.0
                delay = self._next_due() - self._clock()
            except Unavailable as exc:
                self._set_state(False, str(exc))
                self._poll_due = self._clock() + backoff
                delay, backoff = backoff, min(backoff * 2, MAX_PERMISSION_BACKOFF)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, delay)):
                    await self._wake.wait()
            if self._has_outgoing():
                await asyncio.sleep(FLUSH_DELAY)

    async def step(self) -> None:
        """One round: write presence if due, send queued changes, read the map if due."""
        now = self._clock()
        if now >= self._presence_due:
            await self._write_presence()
            self._last_presence = now
            self._presence_due = now + self.governor.caps.presence_ttl / 3
        if self._has_outgoing():
            await self._flush_changes()
        if now >= self._poll_due:
            await self._poll()
            interval = POLL_SECONDS if self._local_sessions() else IDLE_POLL_SECONDS
            self._poll_due = now + interval
            self._set_state(True, None)

    def _has_outgoing(self) -> bool:
        return bool(self._outgoing or self._audit_hints or self._jobs)

    def _next_due(self) -> float:
        return min(self._presence_due, self._poll_due)

    def _set_state(self, available: bool, reason: str | None) -> None:
        changed = (available, reason) != (self.available, self.reason)
        self.available, self.reason = available, reason
        if available:
            self.last_sync_at = datetime.now(UTC)
        if changed:
            self._on_state()

    # ------------------------------------------------------------------ presence

    def _people(self) -> list[dict[str, Any]]:
        people = []
        for session in self._local_sessions()[:MAX_PEOPLE]:
            person = session.person
            item: dict[str, Any] = {"session": session.session_id[-8:]}
            if person is not None:
                item["by"] = _person_fields(person)
            if session.viewing is not None:
                v = session.viewing
                item["viewing"] = {"ds": v.datastore, "sc": v.scope, "k": v.key}
            people.append(item)
        return people

    async def _write_presence(self) -> None:
        people = self._people()
        item_id = presence_id(self.server_id)
        if not people:
            return  # nobody here: the item expires on its own
        value = {"v": 1, "server": self.server_id, "people": people, "at": self._oc_ms()}
        text = _fit(value, "people", self.governor.caps.max_item_bytes)
        if not self.governor.fits(item_id, len(text)):
            return
        ttl = self.governor.caps.presence_ttl
        item = await self._call(
            lambda c: c.sorted_map_update(
                self.universe_id, SORTED_MAP, item_id, text, ttl_seconds=ttl, allow_missing=True
            ),
            background=True,
        )
        self.governor.stored(item_id, len(text), ttl)
        self._learn_offset(item, ttl)

    def teammates(self) -> list[Teammate]:
        """Everyone present: this server's sessions, then teammates' (not yet expired)."""
        now = datetime.now(UTC)
        own = [
            Teammate(
                person=s.person,
                server_id=self.server_id,
                viewing=s.viewing
                if s.viewing and s.viewing.universe_id == self.universe_id
                else None,
                last_seen_at=s.last_seen_at,
                expires_at=s.expires_at,
                this_server=True,
            )
            for s in self._local_sessions()
            if s.person is not None
        ]
        remote = [t for t in self._remote.values() if t.expires_at > now]
        return own + sorted(remote, key=lambda t: (t.person.label, t.server_id))

    # ------------------------------------------------------------------ locks

    def locks(self, principal: Principal | None = None) -> list[TeamLock]:
        now = datetime.now(UTC)
        live = [
            lock.model_copy(update={"mine": self._is_mine(item_id, principal)})
            for item_id, lock in self._locks.items()
            if lock.expires_at > now
        ]
        return sorted(live, key=lambda lock: (lock.datastore, lock.scope, lock.key))

    def _is_mine(self, item_id: str, principal: Principal | None) -> bool:
        lock = self._locks.get(item_id)
        return (
            principal is not None
            and lock is not None
            and lock.server_id == self.server_id
            and self._lock_tokens.get(item_id) == principal.token_id
        )

    async def acquire_lock(
        self, principal: Principal, person: Person, datastore: str, scope: str, key: str
    ) -> LockAnswer:
        """Take the entry's soft lock, or renew it if the caller holds it already."""
        item_id = lock_id(datastore, scope, key)
        ttl = self.governor.caps.lock_ttl
        held = self._locks.get(item_id)
        since = (
            int(held.since.timestamp() * 1000)
            if held is not None and self._is_mine(item_id, principal)
            else self._oc_ms()
        )
        value = {
            "v": 1,
            "server": self.server_id,
            "token": principal.token_id,
            "by": _person_fields(person),
            "ds": datastore,
            "sc": scope,
            "k": key,
            "since": since,
        }
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        if not self.governor.fits(item_id, len(text)):
            return LockAnswer(
                held=False,
                message="Team sync is at its memory-store byte cap; the lock was not taken "
                "(your save is still checked against the revision you saw).",
            )
        try:
            item = await self._call(
                lambda c: c.sorted_map_create(
                    self.universe_id, SORTED_MAP, item_id, text, ttl_seconds=ttl
                ),
                background=False,
            )
        except oc.Conflict:
            current = await self._read_lock(item_id)
            if current == "missing":  # expired between our create and the read
                return await self.acquire_lock(principal, person, datastore, scope, key)
            if current == "foreign":
                return LockAnswer(
                    held=False,
                    message="The lock item holds something team sync did not write (a game "
                    "server's?); it was left alone.",
                )
            if not self._is_mine(item_id, principal):
                return LockAnswer(
                    held=False,
                    lock=self._locks[item_id],
                    message=f"{self._locks[item_id].holder.label} is editing this entry.",
                )
            # Ours: renew. Sorted map updates take no condition, so this re-read just above is
            # the check; a lock that expired in between is simply taken again.
            item = await self._call(
                lambda c: c.sorted_map_update(
                    self.universe_id,
                    SORTED_MAP,
                    item_id,
                    text,
                    ttl_seconds=ttl,
                    allow_missing=True,
                ),
                background=False,
            )
        self.governor.stored(item_id, len(text), ttl)
        self._learn_offset(item, ttl)
        self._take_lock(item_id, text, item, mine_token=principal.token_id)
        self._publish_presence()
        return LockAnswer(
            held=True,
            lock=self._locks[item_id].model_copy(update={"mine": True}),
            message="Locked.",
        )

    async def release_lock(
        self, principal: Principal, datastore: str, scope: str, key: str
    ) -> LockAnswer:
        item_id = lock_id(datastore, scope, key)
        current = await self._read_lock(item_id)
        if not isinstance(current, TeamLock):
            return LockAnswer(held=False, message="Nobody holds this lock.")
        if not self._is_mine(item_id, principal):
            return LockAnswer(
                held=False,
                lock=self._locks[item_id],
                message=f"The lock is {self._locks[item_id].holder.label}'s; it was left alone.",
            )
        await self._call(
            lambda c: c.sorted_map_delete(self.universe_id, SORTED_MAP, item_id),
            background=False,
        )
        self.governor.removed(item_id)
        self._locks.pop(item_id, None)
        self._publish_presence()
        return LockAnswer(held=False, message="Released.")

    async def _read_lock(self, item_id: str) -> TeamLock | str:
        """The lock as it is now, "missing", or "foreign" (an item we cannot read)."""
        try:
            item = await self._call(
                lambda c: c.sorted_map_get(self.universe_id, SORTED_MAP, item_id),
                background=False,
            )
        except oc.NotFound:
            self._locks.pop(item_id, None)
            return "missing"
        return self._take_lock(item_id, item.value_json, item) or "foreign"

    def _take_lock(
        self, item_id: str, text: str, item: SortedMapItem, mine_token: str | None = None
    ) -> TeamLock | None:
        try:
            value = json.loads(text)
            since = _utc(int(value["since"]))
            lock = TeamLock(
                datastore=str(value["ds"]),
                scope=str(value["sc"]),
                key=str(value["k"]),
                holder=person_from(value.get("by")),
                server_id=str(value["server"]),
                since=since,
                expires_at=item.expire_time or since,
                mine=False,
            )
        except (ValueError, KeyError, TypeError):
            return None  # not ours to read (a game server wrote something else here)
        self._locks[item_id] = lock
        self._lock_tokens[item_id] = mine_token or str(value.get("token", ""))
        return lock

    # ------------------------------------------------------------------ change feed

    async def _flush_changes(self) -> None:
        caps = self.governor.caps
        changes, self._outgoing = self._outgoing, []
        hints, self._audit_hints = self._audit_hints, []
        jobs, self._jobs = self._jobs[-3:], []
        entries = [
            {
                "kind": c.kind,
                "ds": c.datastore,
                "sc": c.scope,
                "k": c.key,
                "op": c.operation,
                "st": c.state,
                "rev": c.revision,
                "j": c.journal_id,
                "by": _person_fields(c.person),
            }
            for c in changes
        ]
        value: dict[str, Any] = {
            "v": 1,
            "server": self.server_id,
            "changes": [],
            "audit": hints[-5:],
            "jobs": jobs,
        }
        overflow: dict[str, int] = {}
        for change, entry in zip(changes, entries, strict=True):
            value["changes"].append(entry)
            if len(_compact(value)) > caps.max_item_bytes:
                value["changes"].pop()
                overflow[change.datastore] = overflow.get(change.datastore, 0) + 1
        if overflow:
            value["more"] = overflow
            value["more_by"] = _person_fields(changes[-1].person)
        text = _compact(value)
        now_ms = self._oc_ms()
        self._sent += 1
        item_id = change_id(now_ms, self.server_id, self._sent)
        if not self.governor.fits(item_id, len(text)):
            # Over the byte cap: keep them for the next round, when older batches have expired.
            self._outgoing = changes + self._outgoing
            self._audit_hints = hints + self._audit_hints
            self._jobs = jobs + self._jobs
            return
        ttl = caps.change_ttl
        try:
            item = await self._call(
                lambda c: c.sorted_map_create(
                    self.universe_id, SORTED_MAP, item_id, text, ttl_seconds=ttl
                ),
                background=True,
            )
        except (Unavailable, oc.OpenCloudError):
            self._outgoing = changes + self._outgoing
            self._audit_hints = hints + self._audit_hints
            raise
        self.governor.stored(item_id, len(text), ttl)
        self._seen[item_id] = now_ms
        self._learn_offset(item, ttl)

    async def _poll(self) -> None:
        now_ms = self._oc_ms()
        if self._cursor_ms is None:
            self._cursor_ms = now_ms - LOOKBACK_MS
        cursor = change_cursor(self._cursor_ms - LOOKBACK_MS)
        items: list[SortedMapItem] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            page = await self._list_page(cursor, token)
            items.extend(page.items)
            token = page.next_page_token
            if not token:
                break
        remote: dict[str, Teammate] = {}
        locks: dict[str, TeamLock] = {}
        tokens = dict(self._lock_tokens)
        for item in items:
            if item.id.startswith(CHANGE):
                self._receive_changes(item)
            elif item.id.startswith(LOCK):
                if self._take_lock(item.id, item.value_json, item, tokens.get(item.id)):
                    locks[item.id] = self._locks[item.id]
            elif item.id.startswith(PRESENCE) and item.id != presence_id(self.server_id):
                remote.update(self._teammates_of(item))
        self._locks = locks
        self._lock_tokens = {k: v for k, v in tokens.items() if k in locks}
        self._remote = remote
        self._forget_old_changes(now_ms)
        self._publish_presence()

    async def _list_page(self, cursor: str, token: str | None) -> Page[SortedMapItem]:
        return await self._call(
            lambda c: c.sorted_map_list_page(
                self.universe_id,
                SORTED_MAP,
                filter=f'id > "{cursor}"',
                page_size=100,
                page_token=token,
            ),
            background=True,
        )

    def _teammates_of(self, item: SortedMapItem) -> dict[str, Teammate]:
        try:
            value = json.loads(item.value_json)
            server = str(value["server"])
            seen = _utc(int(value["at"]))
            people = value["people"]
        except (ValueError, KeyError, TypeError):
            return {}
        found: dict[str, Teammate] = {}
        for index, person in enumerate(people if isinstance(people, list) else []):
            if not isinstance(person, dict):
                continue
            viewing = person.get("viewing")
            ref = None
            if isinstance(viewing, dict) and isinstance(viewing.get("ds"), str):
                ref = EntryRef(
                    universe_id=self.universe_id,
                    datastore=viewing["ds"],
                    scope=str(viewing.get("sc") or "global"),
                    key=viewing.get("k") if isinstance(viewing.get("k"), str) else None,
                )
            found[f"{server}/{index}"] = Teammate(
                person=person_from(person.get("by")),
                server_id=server,
                viewing=ref,
                last_seen_at=seen,
                expires_at=item.expire_time or seen,
                this_server=False,
            )
        return found

    def _receive_changes(self, item: SortedMapItem) -> None:
        if item.id in self._seen:
            return
        at_ms = change_time_ms(item.id)
        if at_ms is None:
            return
        self._seen[item.id] = at_ms
        self._cursor_ms = max(self._cursor_ms or 0, at_ms)
        try:
            value = json.loads(item.value_json)
            if value.get("server") == self.server_id:
                return
            changes = value.get("changes", [])
            hints = value.get("audit", [])
        except (ValueError, AttributeError):
            return
        self.feed_delays.append(max(0.0, (self._oc_ms() - at_ms) / 1000))
        for change in changes if isinstance(changes, list) else []:
            self._apply_change(change)
        more = value.get("more")
        if isinstance(more, dict):
            for datastore, count in more.items():
                self._apply_overflow(str(datastore), count, value.get("more_by"), at_ms)
        for seq in hints if isinstance(hints, list) else []:
            if isinstance(seq, int):
                self._on_audit_hint(seq)
        jobs = value.get("jobs")
        for job in jobs if isinstance(jobs, list) else []:
            if isinstance(job, dict) and isinstance(job.get("summary"), str):
                self._events.publish(
                    EventType.TEAM_ACTIVITY,
                    TeamActivityPayload(
                        universe_id=self.universe_id,
                        person=person_from(job.get("by")),
                        kind="job",
                        summary=job["summary"][:300],
                        at=_utc(at_ms),
                        job_id=str(job.get("id")) if job.get("id") is not None else None,
                    ),
                )

    def _apply_change(self, change: Any) -> None:
        try:
            kind = StoreKind(change["kind"])
            datastore, scope, key = str(change["ds"]), str(change["sc"]), str(change["k"])
            payload = EntryChangedPayload(
                universe_id=self.universe_id,
                store_kind=kind,
                datastore=datastore,
                scope=scope,
                key=key,
                operation=EntryOperation(change["op"]),
                state=EntryState(change["st"]),
                revision=change.get("rev") if isinstance(change.get("rev"), str) else None,
                actor=None,
                person=person_from(change.get("by")),
                via_team=True,
            )
        except (KeyError, ValueError, TypeError):
            return
        if kind is StoreKind.ORDERED:
            self._cache.invalidate_datastore(self.universe_id, datastore)
        else:
            self._cache.invalidate_entry(self.universe_id, datastore, scope, key)
        self._events.publish(EventType.ENTRY_CHANGED, payload)

    def _apply_overflow(self, datastore: str, count: Any, by: Any, at_ms: int) -> None:
        self._cache.invalidate_datastore(self.universe_id, datastore)
        person = person_from(by)
        self._events.publish(
            EventType.TEAM_ACTIVITY,
            TeamActivityPayload(
                universe_id=self.universe_id,
                person=person,
                kind="batch",
                summary=f"{person.label} changed {count} more entries of {datastore}",
                at=_utc(at_ms),
                datastore=datastore,
            ),
        )

    def _forget_old_changes(self, now_ms: int) -> None:
        horizon = now_ms - 2 * LOOKBACK_MS - int(self.governor.caps.change_ttl * 1000)
        for item_id in [i for i, at in self._seen.items() if at < horizon]:
            del self._seen[item_id]

    def _publish_presence(self) -> None:
        payload = TeamPresencePayload(
            universe_id=self.universe_id, teammates=self.teammates(), locks=self.locks()
        )
        # Only what changed goes out: the expiry times move on every poll.
        fingerprint = hashlib.sha256(
            json.dumps(
                [
                    [t.person.label, t.server_id, t.viewing and t.viewing.model_dump()]
                    for t in payload.teammates
                ]
                + [
                    [lock.key, lock.datastore, lock.scope, lock.server_id] for lock in payload.locks
                ],
                default=str,
            ).encode()
        ).hexdigest()
        if fingerprint != self._published:
            self._published = fingerprint
            self._events.publish(EventType.TEAM_PRESENCE, payload)

    # ------------------------------------------------------------------ Open Cloud

    def _oc_ms(self) -> int:
        return int(self._clock() * 1000 + self._offset_ms)

    def _learn_offset(self, item: SortedMapItem, ttl: float) -> None:
        # Open Cloud sets expireTime = its now + ttl, rounded up to a whole second.
        if item.expire_time is None:
            return
        theirs = item.expire_time.timestamp() * 1000 - ttl * 1000
        sample = theirs - self._clock() * 1000
        self._offset_ms = sample if self._offset_ms == 0 else 0.8 * self._offset_ms + 0.2 * sample

    async def _call[T](
        self, fn: Callable[[OpenCloudClient], Awaitable[T]], *, background: bool
    ) -> T:
        wait = None if background else 3.0
        if not await self.governor.slot(background=background, wait_at_most=wait):
            raise Unavailable(
                f"Team sync is at its cap of {self.governor.caps.max_rpm} memory-store requests "
                "a minute; try again in a few seconds.",
                ErrorCode.RATE_LIMITED,
            )
        try:
            client = self._upstream.client_for(self.universe_id)
        except Exception as exc:
            raise Unavailable(str(exc)) from exc
        try:
            return await fn(client)
        except (oc.Unauthorized, oc.PermissionDenied) as exc:
            raise Unavailable(
                f"The API key for universe {self.universe_id} cannot use the memory store "
                f"({exc.message}); team sync needs memory-store.sorted-map:read and :write. "
                "Everything else keeps working.",
                ErrorCode.UPSTREAM_PERMISSION,
            ) from exc
        except (oc.NetworkError, oc.ServerError, oc.RateLimited) as exc:
            raise Unavailable(f"Open Cloud's memory store did not answer: {exc.message}") from exc


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _fit(value: dict[str, Any], list_field: str, limit: int) -> str:
    """`value` as compact JSON, dropping items of `list_field` from the end until it fits."""
    text = _compact(value)
    while len(text.encode()) > limit and value[list_field]:
        value[list_field].pop()
        text = _compact(value)
    return text
