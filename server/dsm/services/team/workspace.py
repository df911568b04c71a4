"""The team's workspace in the universe: members, invites, shared bookmarks, notes on keys.

Each is a JSON entry of the `dsm-team-workspace` data store, changed only by conditional writes
(create-only, or an update on the etag just read, retried when a teammate won), so two servers
never overwrite each other's change. Like the audit log these are the team's own records, not
game data: they do not go through the write journal.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from shared_schema.common import Role
from shared_schema.errors import ErrorCode
from shared_schema.identity import Person
from shared_schema.team import Bookmark, KeyNote, TeamMember

from ..errors import ServiceError
from ..upstream import Upstream
from .chain import person_from
from .names import SCOPE, WORKSPACE_STORE

MEMBERS = "members"
BOOKMARKS = "bookmarks"
NOTES = "notes"
MAX_ITEMS = 200
ATTEMPTS = 5
CODE_PREFIX = "DSM1"

Doc = dict[str, Any]


def _person_fields(person: Person) -> dict[str, Any]:
    return {
        "id": person.studio_user_id,
        "name": person.studio_user_name,
        "token": person.token_name,
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def invite_key(secret: str) -> str:
    return "invite-" + hashlib.sha256(secret.encode()).hexdigest()[:32]


def make_code(universe_id: int) -> tuple[str, str]:
    """(code to hand out, its secret part)."""
    secret = secrets.token_urlsafe(18)
    return f"{CODE_PREFIX}-{universe_id}-{secret}", secret


def parse_code(code: str) -> tuple[int, str]:
    parts = code.strip().split("-", 2)
    if len(parts) != 3 or parts[0] != CODE_PREFIX or not parts[1].isdigit() or not parts[2]:
        raise ServiceError(
            ErrorCode.BAD_REQUEST,
            "That is not an invite code: codes look like DSM1-<universe>-<letters>, as "
            "`dsm team invite` printed them.",
        )
    return int(parts[1]), parts[2]


class WorkspaceStore:
    def __init__(self, universe_id: int, upstream: Upstream) -> None:
        self.universe_id = universe_id
        self._upstream = upstream

    # ---------------------------------------------------------------- members

    async def members(self) -> list[TeamMember]:
        doc = await self.read(MEMBERS)
        return [m for m in (_member(i) for i in _items(doc, "members")) if m is not None]

    async def add_member(self, member: TeamMember, *, create_team: bool) -> list[TeamMember]:
        """Add (or update) a member; `create_team` makes the team if there is none yet."""

        def change(doc: Doc | None) -> Doc:
            if doc is None and not create_team:
                raise ServiceError(
                    ErrorCode.NOT_FOUND, f"Universe {self.universe_id} has no team yet."
                )
            items = [i for i in _items(doc, "members") if i.get("server") != member.server_id]
            items.append(
                {
                    "server": member.server_id,
                    "name": member.name,
                    "role": member.role.value,
                    "joined": _iso(member.joined_at),
                    "invited_by": member.invited_by,
                }
            )
            return {"members": items[-MAX_ITEMS:]}

        doc = await self.modify(MEMBERS, change)
        return [m for m in (_member(i) for i in _items(doc, "members")) if m is not None]

    # ---------------------------------------------------------------- invites

    async def create_invite(
        self, role: Role, expires_at: datetime, by: str
    ) -> tuple[str, datetime]:
        code, secret = make_code(self.universe_id)
        body = {"role": role.value, "expires": _iso(expires_at), "by": by, "used_by": None}
        await self._upstream.call(
            self.universe_id,
            lambda c: c.create_entry(
                self.universe_id, WORKSPACE_STORE, invite_key(secret), _dump(body), scope=SCOPE
            ),
        )
        return code, expires_at

    async def redeem_invite(self, secret: str, server_id: str, now: datetime) -> Role:
        """Mark the invite used by `server_id` (an update conditional on the etag read), so a
        code works once even when two servers try it at the same moment."""
        key = invite_key(secret)
        entry = await self._get(key)
        if entry is None:
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                "No such invite in this universe's team: check the code, or ask for a new one.",
            )
        doc = _load(entry.value_json)
        expires = _time(doc.get("expires"))
        if doc.get("used_by"):
            raise ServiceError(ErrorCode.CONFLICT, "This invite code was already used.")
        if expires is None or expires <= now:
            raise ServiceError(
                ErrorCode.CONFLICT, "This invite code has expired; ask for a new one."
            )
        try:
            role = Role(str(doc.get("role")))
        except ValueError:
            raise ServiceError(ErrorCode.CONFLICT, "This invite names no valid role.") from None
        doc["used_by"] = server_id
        doc["used_at"] = _iso(now)
        try:
            await self._write(key, doc, entry.etag)
        except ServiceError as exc:
            if exc.code is ErrorCode.CONFLICT:
                raise ServiceError(
                    ErrorCode.CONFLICT, "This invite code was already used."
                ) from exc
            raise
        return role

    # ---------------------------------------------------------------- bookmarks and notes

    async def bookmarks(self) -> list[Bookmark]:
        return _bookmarks(await self.read(BOOKMARKS))

    async def notes(self) -> list[KeyNote]:
        return _notes(await self.read(NOTES))

    async def set_bookmark(
        self, ref: tuple[str, str, str], label: str | None, remove: bool, by: Person, now: datetime
    ) -> list[Bookmark]:
        fields = None if remove else {"label": label}
        return _bookmarks(await self.modify(BOOKMARKS, _keyed_change(ref, fields, by, now)))

    async def set_note(
        self, ref: tuple[str, str, str], text: str, by: Person, now: datetime
    ) -> list[KeyNote]:
        fields = {"text": text} if text.strip() else None
        return _notes(await self.modify(NOTES, _keyed_change(ref, fields, by, now)))

    # ---------------------------------------------------------------- entries

    async def read(self, key: str) -> Doc | None:
        entry = await self._get(key)
        return None if entry is None else _load(entry.value_json)

    async def modify(self, key: str, change: Callable[[Doc | None], Doc]) -> Doc:
        """Read, change and write back conditionally; retried when a teammate wrote between."""
        for _ in range(ATTEMPTS):
            entry = await self._get(key)
            new = change(None if entry is None else _load(entry.value_json))
            try:
                await self._write(key, new, None if entry is None else entry.etag)
            except ServiceError as exc:
                if exc.code in (ErrorCode.CONFLICT, ErrorCode.ALREADY_EXISTS):
                    continue
                raise
            return new
        raise ServiceError(
            ErrorCode.CONFLICT,
            f"Teammates kept changing the team's {key} while this change was made; try again.",
        )

    async def _write(self, key: str, doc: Doc, etag: str | None) -> None:
        """Create-only without an etag; otherwise an update conditional on it."""
        if etag is None:
            await self._upstream.call(
                self.universe_id,
                lambda c: c.create_entry(
                    self.universe_id, WORKSPACE_STORE, key, _dump(doc), scope=SCOPE
                ),
            )
            return
        await self._upstream.call(
            self.universe_id,
            lambda c: c.update_entry(
                self.universe_id,
                WORKSPACE_STORE,
                key,
                _dump(doc),
                attributes=None,
                user_ids=[],
                etag=etag,
                scope=SCOPE,
            ),
        )

    async def _get(self, key: str) -> Any:
        try:
            entry = await self._upstream.call(
                self.universe_id,
                lambda c: c.get_entry(self.universe_id, WORKSPACE_STORE, key, scope=SCOPE),
            )
        except ServiceError as exc:
            if exc.code is ErrorCode.NOT_FOUND:
                return None
            raise
        return None if entry.state == "DELETED" or entry.value_json is None else entry


def _dump(doc: Doc) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def _load(text: str | None) -> Doc:
    try:
        doc = json.loads(text or "{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _keyed_change(
    ref: tuple[str, str, str], fields: dict[str, Any] | None, by: Person, now: datetime
) -> Callable[[Doc | None], Doc]:
    """A bookmark or note document change: drop the key's item, then (unless `fields` is None)
    add its new one, keeping the newest MAX_ITEMS."""

    def change(doc: Doc | None) -> Doc:
        items = [i for i in _items(doc, "items") if (i.get("ds"), i.get("sc"), i.get("k")) != ref]
        if fields is not None:
            items.append(
                {"ds": ref[0], "sc": ref[1], "k": ref[2], **fields,
                 "by": _person_fields(by), "at": _iso(now)}
            )  # fmt: skip
        return {"items": items[-MAX_ITEMS:]}

    return change


def _items(doc: Doc | None, field: str) -> list[dict[str, Any]]:
    items = (doc or {}).get(field)
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _time(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _member(item: dict[str, Any]) -> TeamMember | None:
    try:
        return TeamMember(
            server_id=str(item["server"]),
            name=str(item.get("name") or item["server"]),
            role=Role(str(item["role"])),
            joined_at=_time(item.get("joined")) or datetime.fromtimestamp(0, UTC),
            invited_by=item.get("invited_by") if isinstance(item.get("invited_by"), str) else None,
        )
    except (KeyError, ValueError):
        return None


def _ref_fields(item: dict[str, Any]) -> tuple[str, str, str] | None:
    ds, sc, k = item.get("ds"), item.get("sc"), item.get("k")
    if isinstance(ds, str) and isinstance(sc, str) and isinstance(k, str):
        return ds, sc, k
    return None


def _bookmarks(doc: Doc | None) -> list[Bookmark]:
    out = []
    for item in _items(doc, "items"):
        ref = _ref_fields(item)
        at = _time(item.get("at"))
        if ref is None or at is None:
            continue
        label = item.get("label")
        out.append(
            Bookmark(
                datastore=ref[0],
                scope=ref[1],
                key=ref[2],
                label=label if isinstance(label, str) else None,
                by=person_from(item.get("by")),
                at=at,
            )
        )
    return out


def _notes(doc: Doc | None) -> list[KeyNote]:
    out = []
    for item in _items(doc, "items"):
        ref = _ref_fields(item)
        at = _time(item.get("at"))
        text = item.get("text")
        if ref is None or at is None or not isinstance(text, str):
            continue
        out.append(
            KeyNote(
                datastore=ref[0],
                scope=ref[1],
                key=ref[2],
                text=text,
                by=person_from(item.get("by")),
                at=at,
            )
        )
    return out


def expiry(seconds: int, now: datetime) -> datetime:
    return now + timedelta(seconds=seconds)
