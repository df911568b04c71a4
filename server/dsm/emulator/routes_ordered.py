"""Ordered data store routes: legacy `/ordered-data-stores/v1` and Cloud v2 (opencloud-api.md
§3 and §5.1). Both surfaces act on the same `OrderedStore`, as they do at Roblox.

Numbers in bodies are read as the proto3 JSON mapping reads them (both APIs look like gRPC
transcodings: snake_case v1 query names, `{code, message}` errors): a JSON number or a numeric
string, so `5`, `5.0` and `"5"` all mean 5. This is an inference, not documented behaviour.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from aiohttp import web

from . import paging
from .context import EmulatorContext, json_response, universe_param
from .errors import invalid
from .ordered import OrderedStore, StoredOrderedEntry, ValueRange, missing, parse_filter
from .rawpath import decoded, raw_last_segment
from .validation import (
    INT64_MAX,
    INT64_MIN,
    MAX_ORDERED_ID_CHARS,
    check_name,
    clamp_page_size,
    parse_bool,
)

READ_SCOPE = "universe.ordered-data-store.scope.entry:read"
WRITE_SCOPE = "universe.ordered-data-store.scope.entry:write"
V1_READ = ["gateway.ordered_v1", "ordered_v1.read"]
V1_WRITE = ["gateway.ordered_v1", "ordered_v1.write"]
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100

# The widely used rblx-open-cloud client has sent `orderedDatastores` for v1 writes; the
# emulator accepts that spelling too rather than answer those clients with a 404.
V1_BASE = (
    "/ordered-data-stores/v1/universes/{universeId}/{collection:orderedDataStores|orderedDatastores}"
    "/{store:[^/]+}/scopes/{scope:[^/]+}/entries"
)
V2_BASE = "/cloud/v2/universes/{universe_id}/ordered-data-stores/{store:[^/]+}/scopes/{scope:[^/]+}/entries"

# v1's order_by is documented only as "ascending by default, a `desc` suffix for descending";
# the v2 spellings are accepted too since v1 describes `desc` as a suffix.
V1_ORDERS = {"": False, "asc": False, "desc": True, "value": False, "value desc": True}
V2_ORDERS = {"": False, "value": False, "value desc": True}


@dataclass(frozen=True)
class Target:
    universe: str
    store: str
    scope: str


def setup(app: web.Application, ctx: EmulatorContext) -> None:
    store = ctx.ordered
    v1 = _V1Routes(ctx, store)
    v2 = _V2Routes(ctx, store)
    app.router.add_get(V1_BASE, v1.list)
    app.router.add_post(V1_BASE, v1.create)
    app.router.add_get(V1_BASE + "/{entry:[^/]+}", v1.get)
    app.router.add_patch(V1_BASE + "/{entry:[^/]+}", v1.update)
    app.router.add_delete(V1_BASE + "/{entry:[^/]+}", v1.delete)
    app.router.add_post(V1_BASE + "/{entry:[^/]+}", v1.increment)
    app.router.add_get(V2_BASE, v2.list)
    app.router.add_post(V2_BASE, v2.create)
    app.router.add_get(V2_BASE + "/{entry:[^/]+}", v2.get)
    app.router.add_patch(V2_BASE + "/{entry:[^/]+}", v2.update)
    app.router.add_delete(V2_BASE + "/{entry:[^/]+}", v2.delete)
    app.router.add_post(V2_BASE + "/{entry:[^/]+}", v2.increment)


# Input parsing ---------------------------------------------------------------


def _target(request: web.Request, universe_name: str) -> Target:
    return Target(
        universe=universe_param(request, universe_name),
        store=check_name(
            "The ordered data store name", request.match_info["store"], "InvalidDataStoreName"
        ),
        scope=check_name("The scope", request.match_info["scope"], "InvalidDataStoreScope"),
    )


def _v1_entry_id(raw: str | None) -> str:
    return check_name("The entry id", raw, "InvalidEntryKey")


def _v2_entry_id(raw: str | None) -> str:
    if raw is None or raw == "":
        raise invalid("The entry id is required and cannot be empty.")
    if len(raw) > MAX_ORDERED_ID_CHARS:
        raise invalid(f"The entry id must be 1-{MAX_ORDERED_ID_CHARS} characters long.")
    return raw


def _split_verb(request: web.Request, expected: str) -> str:
    """`name:increment` -> `name`; any other POST on an entry is not a route.

    Split on the raw segment: an encoded `:` (`%3A`) belongs to the id.
    """
    entry_id, sep, verb = raw_last_segment(request).rpartition(":")
    if not sep or verb != expected:
        raise web.HTTPNotFound()
    return decoded(entry_id)


def _reject_constant(token: str) -> Any:
    raise invalid(f"The request body contains {token}, which is not a number Roblox accepts.")


async def _body(request: web.Request, example: str) -> dict[str, Any]:
    raw = await request.read()
    if raw.strip() == b"":
        raise invalid(f"The request body is required: send a JSON object such as {example}.")
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise invalid(
            f"The request body is not valid JSON; send an object such as {example}."
        ) from None
    if not isinstance(body, dict):
        raise invalid(f"The request body must be a JSON object such as {example}.")
    return body


_NUMERIC_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _number(body: dict[str, Any], field: str) -> Decimal:
    if field not in body or body[field] is None:
        raise invalid(f"The field {field!r} is required.")
    raw = body[field]
    if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
        return Decimal(raw)
    if isinstance(raw, str) and _NUMERIC_TEXT.fullmatch(raw):
        return Decimal(raw)
    raise invalid(f"The field {field!r} must be a number, not {json.dumps(raw)}.")


def _int64(number: Decimal, field: str) -> int:
    if not INT64_MIN <= number <= INT64_MAX:
        raise invalid(
            f"The field {field!r} is outside the 64-bit integer range ({INT64_MIN} to {INT64_MAX})."
        )
    return int(number)


def _whole(body: dict[str, Any], field: str) -> int:
    number = _number(body, field)
    if number != number.to_integral_value():
        raise invalid(f"The field {field!r} must be a whole number, not {number}.")
    return _int64(number, field)


def _rounded(body: dict[str, Any], field: str) -> int:
    """v2 values are doubles "always rounded to the nearest integer".

    Roblox does not say how halves round; the emulator rounds them away from zero.
    """
    number = _number(body, field)
    if abs(number) <= 2**64:  # far outside int64 stays as-is and fails the range check
        number = number.quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return _int64(number, field)


# Listing --------------------------------------------------------------------


@dataclass(frozen=True)
class ListQuery:
    size: int
    descending: bool
    value_range: ValueRange
    token: str | None


def _list_page(
    store: OrderedStore, target: Target, family: str, query: ListQuery
) -> tuple[list[StoredOrderedEntry], str | None]:
    value_range = query.value_range
    # Tokens are bound to the normalised query, so a changed filter or order is a 400.
    bound = paging.fingerprint(
        f"{family}/{target.universe}/{target.store}/{target.scope}",
        {
            "order": "desc" if query.descending else "asc",
            "min": str(value_range.minimum),
            "max": str(value_range.maximum),
        },
    )
    after = _position(paging.decode_token(query.token, bound))
    entries, more = store.list(
        target.universe,
        target.store,
        target.scope,
        descending=query.descending,
        value_range=value_range,
        after=after,
        limit=query.size,
    )
    token = None
    if more and entries:
        token = paging.encode_token([entries[-1].value, entries[-1].id], bound)
    return entries, token


def _position(raw: Any) -> StoredOrderedEntry | None:
    if raw is None:
        return None
    if (
        isinstance(raw, list)
        and len(raw) == 2
        and isinstance(raw[0], int)
        and not isinstance(raw[0], bool)
        and isinstance(raw[1], str)
    ):
        return StoredOrderedEntry(raw[1], raw[0])
    raise invalid("Invalid page token.")


def _order(raw: str | None, allowed: dict[str, bool], name: str) -> bool:
    text = raw or ""
    if text not in allowed:
        forms = ", ".join(repr(k) for k in allowed if k)
        raise invalid(f"Invalid {name} {text!r}: use one of {forms}, or leave it out.")
    return allowed[text]


# Handlers -------------------------------------------------------------------


class _V1Routes:
    def __init__(self, ctx: EmulatorContext, store: OrderedStore) -> None:
        self.ctx = ctx
        self.store = store

    def _entry(self, target: Target, entry: StoredOrderedEntry) -> dict[str, Any]:
        return {
            "path": f"universes/{target.universe}/orderedDataStores/{target.store}"
            f"/scopes/{target.scope}/entries/{entry.id}",
            "id": entry.id,
            "value": entry.value,
        }

    def _authorize(self, request: web.Request, target: Target, write: bool) -> None:
        self.ctx.require(request, target.universe, WRITE_SCOPE if write else READ_SCOPE)
        self.ctx.throttle(request, target.universe, V1_WRITE if write else V1_READ)

    async def list(self, request: web.Request) -> web.Response:
        target = _target(request, "universeId")
        query = ListQuery(
            size=clamp_page_size(
                request.query.get("max_page_size"),
                default=DEFAULT_PAGE_SIZE,
                maximum=MAX_PAGE_SIZE,
                name="max_page_size",
            ),
            descending=_order(request.query.get("order_by"), V1_ORDERS, "order_by"),
            value_range=parse_filter(request.query.get("filter")),
            token=request.query.get("page_token"),
        )
        self._authorize(request, target, write=False)
        entries, token = _list_page(self.store, target, "ordered-v1", query)
        body: dict[str, Any] = {"entries": [self._entry(target, e) for e in entries]}
        if token:
            body["nextPageToken"] = token
        return json_response(body)

    async def create(self, request: web.Request) -> web.Response:
        target = _target(request, "universeId")
        raw_id = request.query.get("id")
        if not raw_id:
            raise invalid("The id query parameter is required: the name of the entry to create.")
        entry_id = _v1_entry_id(raw_id)
        value = _whole(await _body(request, '{"value": 10}'), "value")
        self._authorize(request, target, write=True)
        entry = self.store.create(target.universe, target.store, target.scope, entry_id, value)
        return json_response(self._entry(target, entry))

    async def get(self, request: web.Request) -> web.Response:
        target = _target(request, "universeId")
        entry_id = _v1_entry_id(request.match_info["entry"])
        self._authorize(request, target, write=False)
        entry = self.store.require(target.universe, target.store, target.scope, entry_id)
        return json_response(self._entry(target, entry))

    async def update(self, request: web.Request) -> web.Response:
        target = _target(request, "universeId")
        entry_id = _v1_entry_id(request.match_info["entry"])
        allow_missing = parse_bool(request.query.get("allow_missing"), "allow_missing")
        value = _whole(await _body(request, '{"value": 10}'), "value")
        self._authorize(request, target, write=True)
        entry = self.store.update(
            target.universe,
            target.store,
            target.scope,
            entry_id,
            value,
            allow_missing=allow_missing,
        )
        return json_response(self._entry(target, entry))

    async def delete(self, request: web.Request) -> web.Response:
        target = _target(request, "universeId")
        entry_id = _v1_entry_id(request.match_info["entry"])
        self._authorize(request, target, write=True)
        # v1 answers 200 whether or not the entry existed (ODS1), with `{}` as JSON like v2.
        self.store.delete(target.universe, target.store, target.scope, entry_id)
        return json_response({})

    async def increment(self, request: web.Request) -> web.Response:
        target = _target(request, "universeId")
        entry_id = _v1_entry_id(_split_verb(request, "increment"))
        amount = _whole(await _body(request, '{"amount": 1}'), "amount")
        self._authorize(request, target, write=True)
        entry = self.store.increment(target.universe, target.store, target.scope, entry_id, amount)
        return json_response(self._entry(target, entry))


class _V2Routes:
    def __init__(self, ctx: EmulatorContext, store: OrderedStore) -> None:
        self.ctx = ctx
        self.store = store

    def _entry(self, target: Target, entry: StoredOrderedEntry) -> dict[str, Any]:
        return {
            "path": f"universes/{target.universe}/ordered-data-stores/{target.store}"
            f"/scopes/{target.scope}/entries/{entry.id}",
            "value": entry.value,
            "id": entry.id,
        }

    def _authorize(self, request: web.Request, target: Target, scope: str, budget: str) -> None:
        self.ctx.require(request, target.universe, scope)
        self.ctx.throttle(request, target.universe, [budget])

    async def list(self, request: web.Request) -> web.Response:
        target = _target(request, "universe_id")
        query = ListQuery(
            size=clamp_page_size(
                request.query.get("maxPageSize"),
                default=DEFAULT_PAGE_SIZE,
                maximum=MAX_PAGE_SIZE,
                name="maxPageSize",
            ),
            descending=_order(request.query.get("orderBy"), V2_ORDERS, "orderBy"),
            value_range=parse_filter(request.query.get("filter")),
            token=request.query.get("pageToken"),
        )
        self._authorize(request, target, READ_SCOPE, "v2.ordered.list")
        entries, token = _list_page(self.store, target, "ordered-v2", query)
        body: dict[str, Any] = {
            "orderedDataStoreEntries": [self._entry(target, e) for e in entries]
        }
        if token:
            body["nextPageToken"] = token
        return json_response(body)

    async def create(self, request: web.Request) -> web.Response:
        target = _target(request, "universe_id")
        raw_id = request.query.get("id")
        if not raw_id:
            raise invalid("The id query parameter is required: the name of the entry to create.")
        entry_id = _v2_entry_id(raw_id)
        value = _rounded(await _body(request, '{"value": 10}'), "value")
        self._authorize(request, target, WRITE_SCOPE, "v2.ordered.write")
        entry = self.store.create(target.universe, target.store, target.scope, entry_id, value)
        return json_response(self._entry(target, entry))

    async def get(self, request: web.Request) -> web.Response:
        target = _target(request, "universe_id")
        entry_id = _v2_entry_id(request.match_info["entry"])
        self._authorize(request, target, READ_SCOPE, "v2.ordered.read")
        entry = self.store.require(target.universe, target.store, target.scope, entry_id)
        return json_response(self._entry(target, entry))

    async def update(self, request: web.Request) -> web.Response:
        target = _target(request, "universe_id")
        entry_id = _v2_entry_id(request.match_info["entry"])
        allow_missing = parse_bool(request.query.get("allowMissing"), "allowMissing")
        value = _rounded(await _body(request, '{"value": 10}'), "value")
        self._authorize(request, target, WRITE_SCOPE, "v2.ordered.write")
        entry = self.store.update(
            target.universe,
            target.store,
            target.scope,
            entry_id,
            value,
            allow_missing=allow_missing,
        )
        return json_response(self._entry(target, entry))

    async def delete(self, request: web.Request) -> web.Response:
        target = _target(request, "universe_id")
        entry_id = _v2_entry_id(request.match_info["entry"])
        self._authorize(request, target, WRITE_SCOPE, "v2.ordered.remove")
        # Unlike v1, v2 answers 404 for a missing entry (OAPI Cloud_DeleteOrderedDataStoreEntry).
        if not self.store.delete(target.universe, target.store, target.scope, entry_id):
            raise missing(target.store, target.scope, entry_id)
        # Recorded Open Cloud responses: a delete answers `{}` with a JSON content type.
        return json_response({})

    async def increment(self, request: web.Request) -> web.Response:
        target = _target(request, "universe_id")
        entry_id = _v2_entry_id(_split_verb(request, "increment"))
        # OAPI: "Both the existing value and the increment amount must be integers"; the
        # emulator also requires `amount`, since silently adding 0 hides a client bug.
        amount = _whole(await _body(request, '{"amount": 1}'), "amount")
        self._authorize(request, target, WRITE_SCOPE, "v2.ordered.write")
        entry = self.store.increment(target.universe, target.store, target.scope, entry_id, amount)
        return json_response(self._entry(target, entry))
