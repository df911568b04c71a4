"""Cloud v2 standard data stores (`/cloud/v2/universes/{universe_id}/data-stores...`).

Wire shapes follow opencloud-api.md §4. Choices where Roblox does not document behaviour:
- the unscoped entry routes mean the `global` scope; `scopes/-` lists every scope and its
  items carry the `.../scopes/{scope}/entries/{key}` path;
- an etag mismatch answers 409 ABORTED (ERR lists no 412 for v2);
- `:listRevisions` lists newest first;
- reads and writes against a deleted data store fail at once with 404.
Documented or recorded from Open Cloud: `@latest:<time>` must be after the epoch and at most ten
minutes ahead (Get Data Store Entry); a delete answers `{}` as JSON (recorded responses).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from .context import EMULATOR, EmulatorContext, json_response, universe_param
from .errors import EmulatorError, invalid
from .paging import decode_token, encode_token, fingerprint
from .rawpath import decoded, raw_last_segment
from .standard import DataStoreInfo, PreconditionFailed, Revision
from .timefmt import parse_rfc3339, rfc3339
from .validation import (
    V2_NUMBER_LIMIT,
    check_attributes,
    check_json_value,
    check_name,
    check_value_text,
    clamp_page_size,
    compact_json,
    parse_bool,
    parse_json_body,
    v2_users_to_ids,
)

PREFIX = "/cloud/v2/universes/{universe_id}"
DEFAULT_SCOPE = "global"
ALL_SCOPES = "-"
LATEST_FUTURE_LIMIT = timedelta(minutes=10)


def _ctx(request: web.Request) -> EmulatorContext:
    return request.app[EMULATOR]


def _datastore(request: web.Request) -> str:
    return check_name(
        "Data store name", request.match_info["data_store_id"], "InvalidDataStoreName"
    )


def _scope(request: web.Request, *, allow_all: bool = False) -> str:
    scope = request.match_info.get("scope_id", DEFAULT_SCOPE)
    if allow_all and scope == ALL_SCOPES:
        return scope
    return check_name("Scope", scope, "InvalidDataStoreScope")


def _entry_path(universe: str, datastore: str, scope: str, key: str, scoped: bool) -> str:
    base = f"universes/{universe}/data-stores/{datastore}"
    if scoped:
        return f"{base}/scopes/{scope}/entries/{key}"
    return f"{base}/entries/{key}"


def _store_resource(store: DataStoreInfo) -> dict[str, Any]:
    body: dict[str, Any] = {
        "path": f"universes/{store.universe}/data-stores/{store.name}",
        "id": store.name,
        "createTime": rfc3339(store.create_time),
        "state": store.state,
    }
    if store.expire_time is not None:
        body["expireTime"] = rfc3339(store.expire_time)
    return body


def _entry_json(path: str, entry_id: str, revision: Revision) -> str:
    """The full DataStoreEntry, embedding the stored JSON text verbatim (no re-encoding)."""
    meta: dict[str, Any] = {
        "path": path,
        "id": entry_id,
        "createTime": rfc3339(revision.entry_created),
        "revisionId": revision.version,
        "revisionCreateTime": rfc3339(revision.revision_time),
        "state": "DELETED" if revision.deleted else "ACTIVE",
        "etag": revision.version,
        "users": [f"users/{uid}" for uid in revision.user_ids],
        "attributes": json.loads(revision.attributes) if revision.attributes else {},
    }
    head = compact_json(meta)
    if revision.value is None:
        return head
    return head[:-1] + ',"value":' + revision.value + "}"


def _entry_response(path: str, entry_id: str, revision: Revision) -> web.Response:
    return web.Response(text=_entry_json(path, entry_id, revision), content_type="application/json")


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    raw = await request.read()
    if not raw.strip():
        return {}
    body = parse_json_body(raw)
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    return body


# ----------------------------------------------------------------- data stores


async def list_data_stores(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    universe = universe_param(request)
    ctx.require(request, universe, "universe-datastores.control:list")
    ctx.throttle(request, universe, ["v2.standard.list"])
    query = request.query
    limit = clamp_page_size(query.get("maxPageSize"), default=10, maximum=100, name="maxPageSize")
    prefix = _parse_starts_with(query.get("filter"), "id")
    show_deleted = parse_bool(query.get("showDeleted"), "showDeleted")
    bound = fingerprint("data-stores", query)
    after = decode_token(query.get("pageToken"), bound)
    stores, next_after = ctx.standard.list_datastores(
        universe, prefix=prefix, after=after, limit=limit, show_deleted=show_deleted
    )
    body: dict[str, Any] = {"dataStores": [_store_resource(s) for s in stores]}
    if next_after is not None:
        body["nextPageToken"] = encode_token(next_after, bound)
    return json_response(body)


async def data_store_action(request: web.Request) -> web.Response:
    """DELETE /data-stores/{id} or POST /data-stores/{id}:undelete."""
    ctx = _ctx(request)
    universe = universe_param(request)
    raw = raw_last_segment(request)
    if request.method == "POST":
        if not raw.endswith(":undelete"):
            raise EmulatorError("NOT_FOUND", f"No Open Cloud route matches {request.path}.")
        name = check_name(
            "Data store name", decoded(raw.removesuffix(":undelete")), "InvalidDataStoreName"
        )
        ctx.require(request, universe, "universe-datastores.control:delete", name)
        ctx.throttle(request, universe, ["v2.standard.remove"])
        await _json_body(request)
        return json_response(_store_resource(ctx.standard.undelete_datastore(universe, name)))
    name = check_name("Data store name", decoded(raw), "InvalidDataStoreName")
    ctx.require(request, universe, "universe-datastores.control:delete", name)
    ctx.throttle(request, universe, ["v2.standard.remove"])
    return json_response(_store_resource(ctx.standard.delete_datastore(universe, name)))


async def snapshot(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    universe = universe_param(request)
    ctx.require(request, universe, "universe-datastores.control:snapshot")
    ctx.throttle(request, universe, ["gateway.snapshot"])
    await _json_body(request)
    taken, when = ctx.standard.snapshot(universe)
    return json_response({"newSnapshotTaken": taken, "latestSnapshotTime": rfc3339(when)})


# --------------------------------------------------------------------- entries


def _parse_starts_with(raw: str | None, field: str) -> str:
    """The only supported filter: `id.startsWith("prefix")`."""
    if raw is None or raw.strip() == "":
        return ""
    text = raw.strip()
    opener = f"{field}.startsWith("
    if not (text.startswith(opener) and text.endswith(")")):
        raise invalid(f'Unsupported filter {raw!r}: only {field}.startsWith("prefix") is allowed.')
    literal = text[len(opener) : -1]
    try:
        prefix = json.loads(literal)
    except json.JSONDecodeError:
        prefix = None
    if not isinstance(prefix, str):
        raise invalid(f"Unsupported filter {raw!r}: the prefix must be a quoted string.")
    return prefix


async def list_entries(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    universe = universe_param(request)
    datastore = _datastore(request)
    scoped = "scope_id" in request.match_info
    scope = _scope(request, allow_all=True)
    ctx.require(request, universe, "universe-datastores.objects:list", datastore)
    ctx.throttle(request, universe, ["v2.standard.list"])
    query = request.query
    limit = clamp_page_size(query.get("maxPageSize"), default=10, maximum=256, name="maxPageSize")
    prefix = _parse_starts_with(query.get("filter"), "id")
    show_deleted = parse_bool(query.get("showDeleted"), "showDeleted")
    bound = fingerprint(f"entries:{datastore}:{scope}", query)
    after = decode_token(query.get("pageToken"), bound)
    keys, next_after = ctx.standard.list_keys(
        universe,
        datastore,
        scope=None if scope == ALL_SCOPES else scope,
        prefix=prefix,
        after=(after[0], after[1]) if after else None,
        limit=limit,
        include_deleted=show_deleted,
    )
    items = [
        {
            "path": _entry_path(universe, datastore, k.scope, k.key, scoped),
            "id": k.key,
        }
        for k in keys
    ]
    body: dict[str, Any] = {"dataStoreEntries": items}
    if next_after is not None:
        body["nextPageToken"] = encode_token(list(next_after), bound)
    return json_response(body)


def _parse_write_body(body: dict[str, Any]) -> tuple[str, str | None, list[int]]:
    if "value" not in body:
        raise invalid("The entry's value is required.")
    check_json_value(body["value"], "The value")
    value_text = check_value_text(compact_json(body["value"]))
    attributes = check_attributes(body.get("attributes"))
    user_ids = v2_users_to_ids(body.get("users"))
    return value_text, attributes, user_ids


async def create_entry(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    universe = universe_param(request)
    datastore = _datastore(request)
    scoped = "scope_id" in request.match_info
    scope = _scope(request)
    key = check_name("Entry id", request.query.get("id"), "InvalidEntryKey")
    ctx.require(request, universe, "universe-datastores.objects:create", datastore)
    body = await _json_body(request)
    value, attributes, user_ids = _parse_write_body(body)
    ctx.throttle(
        request,
        universe,
        ["v2.standard.write"],
        entry_key=f"{datastore}/{scope}/{key}",
        request_bytes=len(value.encode()),
    )
    try:
        revision, _ = ctx.standard.write(
            universe,
            datastore,
            scope,
            key,
            value,
            attributes=attributes,
            user_ids=user_ids,
            exclusive_create=True,
        )
    except PreconditionFailed:
        raise invalid(f"Entry {key!r} already exists.") from None
    return _entry_response(_entry_path(universe, datastore, scope, key, scoped), key, revision)


def _split_verb(raw: str, verb: str) -> str | None:
    suffix = f":{verb}"
    return raw[: -len(suffix)] if raw.endswith(suffix) else None


async def entry_get(request: web.Request) -> web.Response:
    """GET an entry (optionally `@revision`, `@latest`, `@latest:<time>`) or `:listRevisions`."""
    raw = raw_last_segment(request)
    listed = _split_verb(raw, "listRevisions")
    if listed is not None:
        return await _list_revisions(request, decoded(listed))
    ctx = _ctx(request)
    universe = universe_param(request)
    datastore = _datastore(request)
    scoped = "scope_id" in request.match_info
    scope = _scope(request)
    # The text after the last `@` is always a revision selector (documented).
    raw_key, _, raw_selector = raw.rpartition("@") if "@" in raw else (raw, "", "")
    key, selector = decoded(raw_key), decoded(raw_selector) or None
    check_name("Entry id", key, "InvalidEntryKey")
    ctx.require(request, universe, "universe-datastores.objects:read", datastore)
    ctx.throttle(request, universe, ["v2.standard.read"], entry_key=f"{datastore}/{scope}/{key}")
    if selector is None or selector == "latest":
        revision = ctx.standard.get(universe, datastore, scope, key)
    elif selector.startswith("latest:"):
        when = _latest_time(selector[7:], ctx.clock.now())
        revision = ctx.standard.get_at(universe, datastore, scope, key, when)
    else:
        revision = _get_revision(ctx, universe, datastore, scope, key, selector)
    # Per-key read throughput is counted on what was actually read.
    ctx.throttle(
        request,
        universe,
        [],
        entry_key=f"{datastore}/{scope}/{key}",
        request_bytes=revision.content_length,
    )
    return _entry_response(_entry_path(universe, datastore, scope, raw, scoped), raw, revision)


def _get_revision(
    ctx: EmulatorContext, universe: str, datastore: str, scope: str, key: str, version: str
) -> Revision:
    try:
        return ctx.standard.get_version(universe, datastore, scope, key, version)
    except EmulatorError as error:
        if error.status == 404 and ctx.standard.get_datastore(universe, datastore) is not None:
            raise invalid("Invalid version id.", "InvalidVersionId") from None
        raise


def _latest_time(text: str, now: datetime) -> datetime:
    try:
        when = parse_rfc3339(text)
    except ValueError:
        raise invalid(f"Invalid timestamp {text!r} in @latest:<time>.") from None
    if when.timestamp() <= 0:
        raise invalid("The @latest time must be after the Unix epoch.")
    if when > now + LATEST_FUTURE_LIMIT:
        raise invalid(
            f"The @latest time {text} is more than ten minutes in the future; ask for a time "
            "no later than ten minutes from now."
        )
    return when


async def _list_revisions(request: web.Request, key: str) -> web.Response:
    ctx = _ctx(request)
    universe = universe_param(request)
    datastore = _datastore(request)
    scoped = "scope_id" in request.match_info
    scope = _scope(request)
    check_name("Entry id", key, "InvalidEntryKey")
    ctx.require(request, universe, "universe-datastores.versions:list", datastore)
    ctx.throttle(request, universe, ["v2.standard.list"])
    query = request.query
    limit = clamp_page_size(query.get("maxPageSize"), default=10, maximum=100, name="maxPageSize")
    start, end = _parse_time_filter(query.get("filter"))
    bound = fingerprint(f"revisions:{datastore}:{scope}:{key}", query)
    after = decode_token(query.get("pageToken"), bound)
    revisions, next_seq = ctx.standard.list_versions(
        universe,
        datastore,
        scope,
        key,
        start=start,
        end=end,
        descending=True,
        after_seq=after,
        limit=limit,
    )
    if (
        not revisions
        and after is None
        and ctx.standard.head(universe, datastore, scope, key) is None
    ):
        raise EmulatorError("NOT_FOUND", f"Entry {key!r} was not found.")
    items = []
    for revision in revisions:
        rid = f"{key}@{revision.version}"
        items.append(
            {
                "path": _entry_path(universe, datastore, scope, rid, scoped),
                "id": rid,
                "createTime": rfc3339(revision.entry_created),
                "revisionId": revision.version,
                "revisionCreateTime": rfc3339(revision.revision_time),
                "state": "DELETED" if revision.deleted else "ACTIVE",
                "etag": revision.version,
            }
        )
    body: dict[str, Any] = {"dataStoreEntries": items}
    if next_seq is not None:
        body["nextPageToken"] = encode_token(next_seq, bound)
    return json_response(body)


def _parse_time_filter(raw: str | None) -> tuple[datetime | None, datetime | None]:
    """CEL subset: `revision_create_time >= T`, `<= T`, joined by `&&`."""
    if raw is None or raw.strip() == "":
        return None, None
    start: datetime | None = None
    end: datetime | None = None
    for clause in raw.split("&&"):
        parts = clause.split()
        if len(parts) != 3 or parts[0] != "revision_create_time" or parts[1] not in (">=", "<="):
            raise invalid(
                f"Unsupported filter {raw!r}: use revision_create_time >= <time> "
                "and/or revision_create_time <= <time> joined by &&."
            )
        try:
            when = parse_rfc3339(parts[2])
        except ValueError:
            raise invalid(f"Invalid time {parts[2]!r} in filter.") from None
        if parts[1] == ">=":
            if start is not None:
                raise invalid("The filter may give only one lower bound.")
            start = when
        else:
            if end is not None:
                raise invalid("The filter may give only one upper bound.")
            end = when
    return start, end


async def update_entry(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    universe = universe_param(request)
    datastore = _datastore(request)
    scoped = "scope_id" in request.match_info
    scope = _scope(request)
    # On writes an `@` suffix is part of the literal key (documented).
    key = check_name("Entry id", request.match_info["entry_id"], "InvalidEntryKey")
    allow_missing = parse_bool(request.query.get("allowMissing"), "allowMissing")
    ctx.require(request, universe, "universe-datastores.objects:update", datastore)
    body = await _json_body(request)
    value, attributes, user_ids = _parse_write_body(body)
    etag = body.get("etag")
    if etag is not None and not isinstance(etag, str):
        raise invalid("etag must be a string.")
    ctx.throttle(
        request,
        universe,
        ["v2.standard.write"],
        entry_key=f"{datastore}/{scope}/{key}",
        request_bytes=len(value.encode()),
    )
    try:
        revision, _ = ctx.standard.write(
            universe,
            datastore,
            scope,
            key,
            value,
            attributes=attributes,
            user_ids=user_ids,
            match_version=etag or None,
            must_exist=not allow_missing,
        )
    except PreconditionFailed as failed:
        current = failed.current.version if failed.current else "none (the entry does not exist)"
        raise EmulatorError(
            "ABORTED",
            f"The etag {etag!r} does not match the entry's current etag {current}.",
        ) from None
    return _entry_response(_entry_path(universe, datastore, scope, key, scoped), key, revision)


async def delete_entry(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    universe = universe_param(request)
    datastore = _datastore(request)
    scope = _scope(request)
    key = check_name("Entry id", request.match_info["entry_id"], "InvalidEntryKey")
    ctx.require(request, universe, "universe-datastores.objects:delete", datastore)
    ctx.throttle(request, universe, ["v2.standard.remove"], entry_key=f"{datastore}/{scope}/{key}")
    ctx.standard.delete(universe, datastore, scope, key)
    return json_response({})


async def increment_entry(request: web.Request) -> web.Response:
    raw_key = _split_verb(raw_last_segment(request), "increment")
    if raw_key is None:
        raise EmulatorError("NOT_FOUND", f"No Open Cloud route matches POST {request.path}.")
    key = decoded(raw_key)
    ctx = _ctx(request)
    universe = universe_param(request)
    datastore = _datastore(request)
    scoped = "scope_id" in request.match_info
    scope = _scope(request)
    check_name("Entry id", key, "InvalidEntryKey")
    # Increment needs both create and update (documented).
    ctx.require(request, universe, "universe-datastores.objects:create", datastore)
    ctx.require(request, universe, "universe-datastores.objects:update", datastore)
    body = await _json_body(request)
    amount = body.get("amount", 1)
    if isinstance(amount, float) and amount.is_integer():
        amount = int(amount)
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise invalid("amount must be an integer.", "IncrementValueTooLarge")
    attributes = check_attributes(body.get("attributes"))
    user_ids = v2_users_to_ids(body.get("users"))
    ctx.throttle(request, universe, ["v2.standard.write"], entry_key=f"{datastore}/{scope}/{key}")
    revision = ctx.standard.increment(
        universe,
        datastore,
        scope,
        key,
        amount,
        attributes=attributes,
        user_ids=user_ids,
        # v2 numbers are doubles clamped to [-2^53, 2^53] (OBS-DF).
        clamp=(-V2_NUMBER_LIMIT, V2_NUMBER_LIMIT),
    )
    return _entry_response(_entry_path(universe, datastore, scope, key, scoped), key, revision)


def setup(app: web.Application, ctx: EmulatorContext) -> None:
    del ctx  # handlers reach the context through the app
    router = app.router
    router.add_get(f"{PREFIX}/data-stores", list_data_stores)
    router.add_post(f"{PREFIX}/data-stores:snapshot", snapshot)
    router.add_delete(PREFIX + "/data-stores/{data_store_id:[^/]+}", data_store_action)
    router.add_post(PREFIX + "/data-stores/{data_store_id:[^/]+}", data_store_action)
    for entries in (
        PREFIX + "/data-stores/{data_store_id:[^/]+}/entries",
        PREFIX + "/data-stores/{data_store_id:[^/]+}/scopes/{scope_id:[^/]+}/entries",
    ):
        router.add_get(entries, list_entries)
        router.add_post(entries, create_entry)
        one = entries + "/{entry_id:[^/]+}"
        router.add_get(one, entry_get)
        router.add_patch(one, update_entry)
        router.add_delete(one, delete_entry)
        router.add_post(one, increment_entry)
