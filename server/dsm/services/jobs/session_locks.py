"""Recognise session-locking save wrappers, say who holds a session, and edit only their data.

Most live games save players through a library that wraps the player's data with a session
lock naming the game server that has it loaded. A write made while a server holds the session
is lost at that server's next save (it writes its in-memory copy back), and rewriting the
wrapper carelessly can break the lock. Formats, read from each library's public source:

ProfileStore (MadStudioRoblox/ProfileStore, ``ProfileStore.luau``) and its predecessor
ProfileService (MadStudioRoblox/ProfileService, ``ProfileService.lua``) save::

    {"Data": {...}, "MetaData": {"ProfileCreateTime": t, "SessionLoadCount": n,
     "ActiveSession": [place_id, job_id, session_guid] (ProfileStore) | [place_id, job_id]
     (ProfileService) | absent when released, "ForceLoadSession": [place_id, job_id] | absent,
     "LastUpdate": os.time() of the last save, "MetaTags": {...}},
     "GlobalUpdates": [index, [...]], "RobloxMetaData": {...}, "UserIds": [...]}

  (ProfileStore adds RobloxMetaData and UserIds; its GlobalUpdates items are ``[id, data]``,
  ProfileService's ``[id, version, locked, data]``.) A library recognises its profile by
  ``Data``, ``MetaData`` and ``GlobalUpdates`` all being tables, and treats a session as dead
  when ``LastUpdate`` is older than ``ASSUME_DEAD`` = 630 s (ProfileStore) or
  ``AssumeDeadSessionLock`` = 1800 s (ProfileService); a held session saves every 300 s
  (ProfileStore) or about 30 s (ProfileService). Neither records when a session started: the
  closest is the revision history (``held_since``).

Lapis (nezuo/lapis, ``Collection.luau``/``Document.luau``) saves
``{"migrationVersion": n, "lastCompatibleVersion": n?, "lockId": guid | absent, "data": ...}``
and treats a lock as held while the entry's *updated time* is under ``LOCK_EXPIRE`` = 1800 s
old; the lock names no server.

Interfaces: ``detect(value_json, now=..., updated=...) -> SessionLock | None`` and
``replace_data(value_json, new_data_json) -> str`` (the data part replaced, every other byte
kept), ``held_since(lock, history)`` for the session start from revisions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .jsontext import JsonTextError, object_members

WrapperKind = Literal["ProfileStore", "ProfileService", "Lapis"]
LockState = Literal["released", "held", "stale"]

PROFILESTORE_ASSUME_DEAD_SECONDS = 630
PROFILESERVICE_ASSUME_DEAD_SECONDS = 1800
LAPIS_LOCK_EXPIRE_SECONDS = 1800
_DATA_MEMBER: dict[WrapperKind, str] = {
    "ProfileStore": "Data",
    "ProfileService": "Data",
    "Lapis": "data",
}


class SessionLockError(ValueError):
    """The value is not a wrapper whose data part can be replaced safely."""


@dataclass(frozen=True)
class SessionHolder:
    """Who holds (or asks for) a session. Lapis records only an opaque lock id."""

    place_id: int | None
    job_id: str | None
    session_id: str | None  # ProfileStore's per-session GUID, or Lapis's lockId

    def describe(self) -> str:
        if self.place_id is None and self.job_id is None:
            return f"lock {self.session_id}" if self.session_id else "an unnamed holder"
        job = self.job_id or "(Studio, no job id)"
        return f"place {self.place_id}, server {job}"


@dataclass(frozen=True)
class SessionLock:
    kind: WrapperKind
    state: LockState
    holder: SessionHolder | None  # None when released
    last_update: datetime | None  # last save (ProfileStore/Service) or entry update (Lapis)
    stale_after_seconds: int  # the library's own "assume dead" timeout
    data_member: str  # "Data" or "data"
    data_json: str  # the data part exactly as stored
    waiting: SessionHolder | None = None  # ProfileStore/Service ForceLoadSession
    load_count: int | None = None  # SessionLoadCount

    @property
    def held(self) -> bool:
        return self.state == "held"

    def describe(self, now: datetime) -> str:
        if self.state == "released":
            return f"{self.kind} profile, not in use by any game server."
        assert self.holder is not None
        ago = ""
        if self.last_update is not None:
            ago = f"; last saved {_ago(now - self.last_update)} ago"
        if self.state == "stale":
            return (
                f"{self.kind} session of {self.holder.describe()} looks dead{ago} (over "
                f"{self.stale_after_seconds} s): the next server to load it takes it over."
            )
        text = f"Held by {self.holder.describe()} ({self.kind}){ago}."
        if self.waiting is not None:
            text += f" {self.waiting.describe()} is waiting to take it over."
        return (
            text + " A write now is lost at that server's next save unless the player leaves first."
        )


def _ago(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def _is_table(value: Any) -> bool:
    # Roblox stores an empty Luau table as [] and a table with keys as an object.
    return isinstance(value, dict | list)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _epoch(value: Any) -> datetime | None:
    seconds = _number(value)
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _holder(tag: Any) -> SessionHolder | None:
    if not isinstance(tag, list) or len(tag) < 2:
        return None
    place = _number(tag[0])
    job = tag[1] if isinstance(tag[1], str) else None
    session = tag[2] if len(tag) > 2 and isinstance(tag[2], str) else None
    return SessionHolder(None if place is None else int(place), job, session)


def _profile_kind(doc: dict[str, Any], active: Any) -> WrapperKind:
    if isinstance(active, list) and len(active) >= 3:
        return "ProfileStore"
    if isinstance(active, list) and len(active) == 2:
        return "ProfileService"
    if "RobloxMetaData" in doc or "UserIds" in doc:
        return "ProfileStore"
    updates = doc["GlobalUpdates"]
    items = updates[1] if isinstance(updates, list) and len(updates) > 1 else None
    if isinstance(items, list) and items and isinstance(items[0], list) and len(items[0]) == 4:
        return "ProfileService"
    return "ProfileStore"


def _data_text(value_json: str, member: str) -> str:
    spans = [(s, e) for name, s, e in object_members(value_json) if name == member]
    if len(spans) != 1:
        raise SessionLockError(f'the wrapper has {len(spans)} "{member}" members; expected one')
    start, end = spans[0]
    return value_json[start:end]


def detect(
    value_json: str, *, now: datetime, updated: datetime | None = None
) -> SessionLock | None:
    """The wrapper ``value_json`` is, or None when it is not a known session-locked save.

    ``updated`` is the entry's updated time (Lapis decides staleness by it). ``now`` is the
    current time; a library compares its own server clock, so allow some drift either way.
    """
    try:
        doc = json.loads(value_json)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    try:
        if (
            _is_table(doc.get("Data"))
            and isinstance(doc.get("MetaData"), dict)
            and _is_table(doc.get("GlobalUpdates"))
        ):
            return _profile(doc, value_json, now)
        if "data" in doc and _number(doc.get("migrationVersion")) is not None:
            return _lapis(doc, value_json, now, updated)
    except (SessionLockError, JsonTextError):
        return None
    return None


def _profile(doc: dict[str, Any], value_json: str, now: datetime) -> SessionLock:
    meta = doc["MetaData"]
    active = meta.get("ActiveSession")
    kind = _profile_kind(doc, active)
    timeout = (
        PROFILESTORE_ASSUME_DEAD_SECONDS
        if kind == "ProfileStore"
        else PROFILESERVICE_ASSUME_DEAD_SECONDS
    )
    holder = _holder(active)
    last = _epoch(meta.get("LastUpdate"))
    state: LockState = "released"
    if holder is not None:
        # Without LastUpdate the libraries never assume the session dead.
        dead = last is not None and (now - last).total_seconds() > timeout
        state = "stale" if dead else "held"
    count = _number(meta.get("SessionLoadCount"))
    return SessionLock(
        kind=kind,
        state=state,
        holder=holder,
        last_update=last,
        stale_after_seconds=timeout,
        data_member="Data",
        data_json=_data_text(value_json, "Data"),
        waiting=_holder(meta.get("ForceLoadSession")),
        load_count=None if count is None else int(count),
    )


def _lapis(
    doc: dict[str, Any], value_json: str, now: datetime, updated: datetime | None
) -> SessionLock:
    lock_id = doc.get("lockId")
    holder = SessionHolder(None, None, lock_id) if isinstance(lock_id, str) else None
    state: LockState = "released"
    if holder is not None:
        # Unknown update time: the lock may be live, so it counts as held.
        dead = updated is not None and (now - updated).total_seconds() >= LAPIS_LOCK_EXPIRE_SECONDS
        state = "stale" if dead else "held"
    return SessionLock(
        kind="Lapis",
        state=state,
        holder=holder,
        last_update=updated,
        stale_after_seconds=LAPIS_LOCK_EXPIRE_SECONDS,
        data_member="data",
        data_json=_data_text(value_json, "data"),
    )


def replace_data(value_json: str, new_data_json: str) -> str:
    """``value_json`` with only its data part replaced by ``new_data_json``; all other bytes kept.

    ProfileStore and ProfileService discard a profile whose Data is not a table (they log
    "overwritten" and start from the template), so their data must stay an object or array.
    """
    lock = detect(value_json, now=datetime.now(UTC))
    if lock is None:
        raise SessionLockError("the value is not a ProfileStore, ProfileService or Lapis save")
    try:
        new_data = json.loads(new_data_json)
    except (ValueError, RecursionError) as exc:
        raise SessionLockError(f"the new data is not JSON: {exc}") from None
    if lock.kind != "Lapis" and not _is_table(new_data):
        raise SessionLockError(
            f"{lock.kind} needs its Data to be a table (a JSON object or array); the library "
            "would throw away any other value"
        )
    spans = [(s, e) for name, s, e in object_members(value_json) if name == lock.data_member]
    start, end = spans[0]  # detect() made sure there is exactly one
    return value_json[:start] + new_data_json.strip() + value_json[end:]


def held_since(lock: SessionLock, history: Iterable[tuple[datetime, str]]) -> datetime | None:
    """When the current holder's session began, as far as the revisions show.

    ``history`` is (revision time, value JSON), newest first. The answer is the time of the
    oldest consecutive revision naming the same holder: the session began at or before it
    (Roblox keeps at most one revision per key per hour). None when released or unknown.
    """
    if lock.holder is None:
        return None
    since: datetime | None = None
    for when, value_json in history:
        other = detect(value_json, now=when)
        # The same server can load a profile again: SessionLoadCount tells the sessions apart.
        if other is None or other.holder != lock.holder or other.load_count != lock.load_count:
            break
        since = when
    return since
