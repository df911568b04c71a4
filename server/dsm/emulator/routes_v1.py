"""Legacy standard data stores v1 (`/datastores/v1/universes/{universeId}/standard-datastores`).

Wire shapes follow opencloud-api.md §2: raw JSON values with metadata in `roblox-entry-*`
headers, `datastores` / `keys[{scope,key}]` / `versions` lists with `nextPageCursor`, and the
`{error, message, errorDetails}` envelope. Choices where Roblox leaves behaviour undocumented:
- query parameter names match case-insensitively, because Roblox's ASP.NET binding does so and
  published clients send `AllScopes` as well as `allScopes`;
- `allScopes=true` with a non-empty `scope` is rejected (L-H: "can't pass Scope and
  AllScopes"); an empty `scope=` counts as absent;
- the last page carries `"nextPageCursor": ""`, as in L-H's examples;
- page sizes: v1 publishes defaults (data stores 1, entries 16, versions 16) but no maxima, so
  larger requests are clamped to v2's documented maxima for the same lists (data stores 100,
  entries 256, versions 100);
- `objectCreatedTime` is the entry's creation time: the spec text says "data store", but the
  published examples and clients (OBS-PY `key_created`) read it as the entry's;
- Get Entry Version on a tombstone answers 204 with the version headers and no body: DS1
  keeps a "204 The key is marked as deleted" answer in this API and OBS-PY treats 204 from
  Get Entry Version as "no value", while 404 is kept for versions that do not exist;
- `roblox-entry-attributes` is omitted when an entry has none; `roblox-entry-userids` is
  always sent as a JSON array (`[]` when empty).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiohttp import web

from .context import EMULATOR, EmulatorContext, json_response, universe_param
from .errors import EmulatorError, invalid
from .paging import decode_token, encode_token, fingerprint
from .standard import PreconditionFailed, Revision
from .timefmt import parse_time, v1_body_time, v1_header_time
from .validation import (
    INT64_MAX,
    INT64_MIN,
    MAX_VALUE_BYTES,
    check_attributes_text,
    check_name,
    check_user_ids_text,
    check_value_text,
    clamp_page_size,
    parse_bool,
)

PREFIX = "/datastores/v1/universes/{universe_id}/standard-datastores"
DEFAULT_SCOPE = "global"

MAX_DATASTORES_PAGE = 100
MAX_KEYS_PAGE = 256
MAX_VERSIONS_PAGE = 100

READ = ("gateway.v1", "v1.read")
WRITE = ("gateway.v1", "v1.write")

_SCOPE = "universe-datastores."
_INTEGER = re.compile(r"[+-]?\d+")
# HEX16(entry ticks).%010d.HEX16(version ticks).NN, the shape of every Roblox version id.
_VERSION_ID = re.compile(r"[0-9A-Fa-f]{16}\.\d{10}\.[0-9A-Fa-f]{16}\.\d{2}")


class _Query:
    """Query parameters looked up case-insensitively; the first value of a name wins."""

    def __init__(self, request: web.Request) -> None:
        self._values: dict[str, str] = {}
        for name, value in request.query.items():
            self._values.setdefault(name.lower(), value)

    def get(self, name: str) -> str | None:
        return self._values.get(name.lower())


def _ctx(request: web.Request) -> EmulatorContext:
    return request.app[EMULATOR]


def _datastore_name(query: _Query) -> str:
    return check_name("datastoreName", query.get("datastoreName"), "InvalidDataStoreName")


def _entry_key(query: _Query) -> str:
    return check_name("entryKey", query.get("entryKey"), "InvalidEntryKey")


def _scope(query: _Query) -> str:
    raw = query.get("scope")
    return check_name("scope", raw or DEFAULT_SCOPE, "InvalidDataStoreScope")


def _throttle_key(datastore: str, scope: str, key: str) -> str:
    # Same per-key identity as the v2 routes, so both surfaces share a key's budget.
    return f"{datastore}/{scope}/{key}"


_CURSOR_HELP = (
    "Invalid cursor: pass back nextPageCursor exactly as it was returned, with every other "
    "parameter except limit unchanged."
)


def _cursor(raw: str | None, bound: str) -> Any:
    try:
        return decode_token(raw, bound)
    except EmulatorError:
        raise invalid(_CURSOR_HELP, "InvalidCursor") from None


def _bad_cursor() -> EmulatorError:
    return invalid(_CURSOR_HELP, "InvalidCursor")


def _next_cursor(position: Any, bound: str) -> str:
    return encode_token(position, bound) if position is not None else ""


# -------------------------------------------------------------------- wire shapes


def _entry_headers(revision: Revision) -> dict[str, str]:
    headers = {
        "roblox-entry-version": revision.version,
        "roblox-entry-created-time": v1_header_time(revision.entry_created),
        "roblox-entry-version-created-time": v1_header_time(revision.revision_time),
        "roblox-entry-userids": json.dumps(list(revision.user_ids)),
    }
    if not revision.deleted:
        headers["content-md5"] = revision.content_md5
    if revision.attributes:
        # Re-serialised with ASCII escapes: header values must stay ASCII on the wire.
        headers["roblox-entry-attributes"] = json.dumps(json.loads(revision.attributes))
    return headers


def _value_response(revision: Revision, status: int = 200) -> web.Response:
    return web.Response(
        text=revision.value or "",
        status=status,
        content_type="application/json",
        headers=_entry_headers(revision),
    )


def _entry_version(revision: Revision) -> dict[str, Any]:
    return {
        "version": revision.version,
        "deleted": revision.deleted,
        "contentLength": revision.content_length,
        "createdTime": v1_body_time(revision.revision_time),
        "objectCreatedTime": v1_body_time(revision.entry_created),
    }


def _body_size(body: Mapping[str, Any]) -> int:
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _precondition_failed(current: Revision | None) -> web.Response:
    """412 carries the current value and metadata; with no live entry, an empty body."""
    if current is None:
        return web.Response(status=412)
    return _value_response(current, status=412)


# -------------------------------------------------------------------------- reads


async def list_datastores(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    universe = universe_param(request)
    query = _Query(request)
    limit = clamp_page_size(
        query.get("limit"), default=1, maximum=MAX_DATASTORES_PAGE, name="limit"
    )
    prefix = query.get("prefix") or ""
    bound = fingerprint(f"v1:datastores:{universe}", {"prefix": prefix})
    after = _cursor(query.get("cursor"), bound)
    if after is not None and not isinstance(after, str):
        raise _bad_cursor()
    ctx.require(request, universe, _SCOPE + "control:list")
    stores, next_after = ctx.standard.list_datastores(
        universe, prefix=prefix, after=after, limit=limit
    )
    body = {
        "datastores": [
            {"name": s.name, "createdTime": v1_body_time(s.create_time)} for s in stores
        ],
        "nextPageCursor": _next_cursor(next_after, bound),
    }
    ctx.throttle(request, universe, READ, request_bytes=_body_size(body))
    return json_response(body)


async def list_entries(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    universe = universe_param(request)
    query = _Query(request)
    datastore = _datastore_name(query)
    all_scopes = parse_bool(query.get("allScopes"), "allScopes")
    if all_scopes and query.get("scope"):
        raise invalid(
            "Pass either scope or allScopes=true, not both: allScopes already lists every scope.",
            "InvalidDataStoreScope",
        )
    scope = None if all_scopes else _scope(query)
    limit = clamp_page_size(query.get("limit"), default=16, maximum=MAX_KEYS_PAGE, name="limit")
    prefix = query.get("prefix") or ""
    bound = fingerprint(
        f"v1:entries:{universe}",
        {
            "datastoreName": datastore,
            "scope": scope or "",
            "allScopes": str(all_scopes),
            "prefix": prefix,
        },
    )
    after = _cursor(query.get("cursor"), bound)
    if after is not None and not (
        isinstance(after, list) and len(after) == 2 and all(isinstance(p, str) for p in after)
    ):
        raise _bad_cursor()
    ctx.require(request, universe, _SCOPE + "objects:list", datastore)
    try:
        keys, next_after = ctx.standard.list_keys(
            universe,
            datastore,
            scope=scope,
            prefix=prefix,
            after=(after[0], after[1]) if after is not None else None,
            limit=limit,
            include_deleted=True,  # DS1: tombstoned keys are listed until purged
        )
    except EmulatorError:
        ctx.throttle(request, universe, READ)
        raise
    body = {
        "keys": [{"scope": k.scope, "key": k.key} for k in keys],
        "nextPageCursor": _next_cursor(list(next_after) if next_after else None, bound),
    }
    ctx.throttle(request, universe, READ, request_bytes=_body_size(body))
    return json_response(body)


async def get_entry(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    universe = universe_param(request)
    query = _Query(request)
    datastore, key, scope = _datastore_name(query), _entry_key(query), _scope(query)
    ctx.require(request, universe, _SCOPE + "objects:read", datastore)
    entry_key = _throttle_key(datastore, scope, key)
    try:
        revision = ctx.standard.get(universe, datastore, scope, key)
    except EmulatorError:
        ctx.throttle(request, universe, READ, entry_key=entry_key)
        raise
    ctx.throttle(
        request, universe, READ, entry_key=entry_key, request_bytes=revision.content_length
    )
    return _value_response(revision)


async def list_versions(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    universe = universe_param(request)
    query = _Query(request)
    datastore, key, scope = _datastore_name(query), _entry_key(query), _scope(query)
    start = _time_param(query, "startTime", "InvalidStartTime")
    end = _time_param(query, "endTime", "InvalidEndTime")
    if start is not None and end is not None and end < start:
        raise invalid("endTime must not be earlier than startTime.", "InvalidEndTime")
    order = (query.get("sortOrder") or "Ascending").lower()
    if order not in ("ascending", "descending"):
        raise invalid("sortOrder must be Ascending or Descending.", "InvalidSortOrder")
    limit = clamp_page_size(query.get("limit"), default=16, maximum=MAX_VERSIONS_PAGE, name="limit")
    bound = fingerprint(
        f"v1:versions:{universe}",
        {
            "datastoreName": datastore,
            "entryKey": key,
            "scope": scope,
            "startTime": start.isoformat() if start else "",
            "endTime": end.isoformat() if end else "",
            "sortOrder": order,
        },
    )
    after = _cursor(query.get("cursor"), bound)
    if after is not None and (not isinstance(after, int) or isinstance(after, bool)):
        raise _bad_cursor()
    ctx.require(request, universe, _SCOPE + "versions:list", datastore)
    entry_key = _throttle_key(datastore, scope, key)
    try:
        revisions, next_seq = ctx.standard.list_versions(
            universe,
            datastore,
            scope,
            key,
            start=start,
            end=end,
            descending=order == "descending",
            after_seq=after,
            limit=limit,
        )
    except EmulatorError:
        ctx.throttle(request, universe, READ, entry_key=entry_key)
        raise
    body = {
        "versions": [_entry_version(r) for r in revisions],
        "nextPageCursor": _next_cursor(next_seq, bound),
    }
    ctx.throttle(request, universe, READ, entry_key=entry_key, request_bytes=_body_size(body))
    return json_response(body)


def _time_param(query: _Query, name: str, v1_code: str) -> datetime | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        return parse_time(raw)
    except ValueError:
        pass
    try:
        # A timestamp without an offset is read as UTC, as Roblox's servers (UTC) bind it.
        return parse_time(raw + "Z")
    except ValueError:
        raise invalid(
            f"{name} {raw!r} is not an RFC 3339 timestamp such as 2024-01-31T12:00:00Z.",
            v1_code,
        ) from None


async def get_version(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    universe = universe_param(request)
    query = _Query(request)
    datastore, key, scope = _datastore_name(query), _entry_key(query), _scope(query)
    version = query.get("versionId")
    if not version or not _VERSION_ID.fullmatch(version):
        raise invalid(
            f"Invalid versionId {version!r}: use a version string from List Entry Versions, "
            "such as 08D9E6A3F2188CFF.0000000001.08D9E6A3F2188CFF.01.",
            "InvalidVersionId",
        )
    ctx.require(request, universe, _SCOPE + "versions:read", datastore)
    entry_key = _throttle_key(datastore, scope, key)
    try:
        revision = ctx.standard.get_version(universe, datastore, scope, key, version)
    except EmulatorError:
        ctx.throttle(request, universe, READ, entry_key=entry_key)
        raise
    ctx.throttle(
        request, universe, READ, entry_key=entry_key, request_bytes=revision.content_length
    )
    if revision.deleted:
        return web.Response(status=204, headers=_entry_headers(revision))
    return _value_response(revision)


# ------------------------------------------------------------------------- writes


def _require_write(
    request: web.Request, ctx: EmulatorContext, universe: str, datastore: str, scope: str, key: str
) -> bool:
    """Check Set/Increment scopes (DS1 x-roblox-scopes); returns whether the store exists."""
    store = ctx.standard.get_datastore(universe, datastore)
    if store is None:
        ctx.require(request, universe, _SCOPE + "control:create", datastore)
        ctx.require(request, universe, _SCOPE + "objects:create", datastore)
        return False
    head = ctx.standard.head(universe, datastore, scope, key) if store.state == "ACTIVE" else None
    live = head is not None and not head.deleted
    needed = "objects:update" if live else "objects:create"
    ctx.require(request, universe, _SCOPE + needed, datastore)
    return True


def _checksum(raw: bytes, header: str | None) -> None:
    if header is None:
        return
    actual = hashlib.md5(raw).digest()
    try:
        sent = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        sent = b""
    if sent != actual:
        raise invalid(
            "content-md5 does not match the body: send base64(MD5(exact UTF-8 body bytes)) "
            f"= {base64.b64encode(actual).decode('ascii')}.",
            "ChecksumMismatch",
        )


def _value_text(raw: bytes) -> str:
    if len(raw) > MAX_VALUE_BYTES:
        raise invalid(
            f"The value is {len(raw)} bytes; the limit is {MAX_VALUE_BYTES} bytes.",
            "ContentTooBig",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("The body is not valid UTF-8 JSON.", "ContentNotJson") from None
    return check_value_text(text)


async def set_entry(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    universe = universe_param(request)
    query = _Query(request)
    datastore, key, scope = _datastore_name(query), _entry_key(query), _scope(query)
    match_version = query.get("matchVersion") or None
    exclusive = parse_bool(query.get("exclusiveCreate"), "exclusiveCreate")
    if exclusive and match_version is not None:
        raise invalid(
            "exclusiveCreate and matchVersion cannot both be set: use exclusiveCreate to "
            "create a new entry or matchVersion to update a known version.",
            "ExclusiveCreateAndMatchVersionCannotBeSet",
        )
    attributes = check_attributes_text(request.headers.get("roblox-entry-attributes"))
    user_ids = check_user_ids_text(request.headers.get("roblox-entry-userids"))
    if request.content_length is None and request.body_exists:
        raise invalid("Send the value with a Content-Length header.", "ContentLengthRequired")
    raw = await request.read()
    value = _value_text(raw)
    _checksum(raw, request.headers.get("content-md5"))
    store_exists = _require_write(request, ctx, universe, datastore, scope, key)
    ctx.throttle(
        request,
        universe,
        WRITE,
        entry_key=_throttle_key(datastore, scope, key),
        request_bytes=len(raw),
    )
    if match_version is not None and not store_exists:
        # No store means no entry; answering here also avoids creating an empty data store
        # for a write that is refused.
        return _precondition_failed(None)
    try:
        revision, _ = ctx.standard.write(
            universe,
            datastore,
            scope,
            key,
            value,
            attributes=attributes,
            user_ids=user_ids,
            match_version=match_version,
            exclusive_create=exclusive,
        )
    except PreconditionFailed as failed:
        return _precondition_failed(failed.current)
    return json_response(_entry_version(revision))


async def increment_entry(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    universe = universe_param(request)
    query = _Query(request)
    datastore, key, scope = _datastore_name(query), _entry_key(query), _scope(query)
    amount = _increment_by(query.get("incrementBy"))
    attributes = check_attributes_text(request.headers.get("roblox-entry-attributes"))
    user_ids = check_user_ids_text(request.headers.get("roblox-entry-userids"))
    _require_write(request, ctx, universe, datastore, scope, key)
    ctx.throttle(request, universe, WRITE, entry_key=_throttle_key(datastore, scope, key))
    revision = ctx.standard.increment(
        universe, datastore, scope, key, amount, attributes=attributes, user_ids=user_ids
    )
    return _value_response(revision)


def _increment_by(raw: str | None) -> int:
    if raw is None or raw == "":
        return 1  # DS1's documented default
    if not _INTEGER.fullmatch(raw.strip()):
        raise invalid(f"incrementBy must be a whole number, got {raw!r}.")
    amount = int(raw.strip())
    if amount > INT64_MAX:
        raise invalid("incrementBy is larger than a 64-bit integer.", "IncrementValueTooLarge")
    if amount < INT64_MIN:
        raise invalid("incrementBy is smaller than a 64-bit integer.", "IncrementValueTooSmall")
    return amount


async def delete_entry(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    universe = universe_param(request)
    query = _Query(request)
    datastore, key, scope = _datastore_name(query), _entry_key(query), _scope(query)
    ctx.require(request, universe, _SCOPE + "objects:delete", datastore)
    ctx.throttle(request, universe, WRITE, entry_key=_throttle_key(datastore, scope, key))
    ctx.standard.delete(universe, datastore, scope, key)
    return web.Response(status=204)


def setup(app: web.Application, ctx: EmulatorContext) -> None:
    del ctx  # handlers reach the context through the app
    router = app.router
    router.add_get(PREFIX, list_datastores)
    router.add_get(PREFIX + "/datastore/entries", list_entries)
    entry = PREFIX + "/datastore/entries/entry"
    router.add_get(entry, get_entry)
    router.add_post(entry, set_entry)
    router.add_delete(entry, delete_entry)
    router.add_post(entry + "/increment", increment_entry)
    router.add_get(entry + "/versions", list_versions)
    router.add_get(entry + "/versions/version", get_version)
