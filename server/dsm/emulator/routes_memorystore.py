"""Cloud v2 memory stores: sorted maps, queues and flush (opencloud-api.md §5.2-5.4).

Wire choices where Roblox documents nothing (state semantics are listed in memorystore.py):
- Item and operation paths carry the `cloud/v2/` prefix, unlike data store paths.
- Body field names are matched case-insensitively and a create may carry `id` in the body,
  and `:discard` also takes `readId` from the query string: published third-party clients
  (rblx-open-cloud, openblox) send requests that way, so the emulator accepts them.
- Creating an existing sorted-map item answers 409 (what rblx-open-cloud expects) with ABORTED,
  the v2 error table's conflict code (the table has no ALREADY_EXISTS); an etag mismatch answers
  409 ABORTED; deleting a missing item answers 200, like the engine's RemoveAsync.
- `orderBy` accepts `id` and `id desc` (plus bare `asc`/`desc`, which clients send).
- A queue read with nothing visible answers 200 with no items and a readId that discards
  nothing; `:discard` after the window ended removes nothing (the items are visible again).
- A flush removes the data at once. Its first answer says `done: false`, as Roblox's does, so
  clients exercise their polling; every poll of the operation then reports `done: true` with a
  `response`, as the spec requires of a finished operation (Operation.done: "either `error` or
  `response` is available"). The response is the empty FlushMemoryStoreResponse; Roblox's
  `@type` for it is unpublished, so it is left out. The
  path is `cloud/v2/universes/{u}/memory-store/operations/{id}`, the documented poll route
  (one client example shows Roblox omitting `memory-store/`; its poll URL is the same).
- Expire times are RFC 3339 in whole seconds, as recorded from Open Cloud; items expire on that
  second boundary (memorystore.py rounds a fractional TTL's end up to it).
- A queue discard answers 200 with no body (the spec gives the response no content).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from aiohttp import web

from .context import EMULATOR, EmulatorContext, json_response, universe_param
from .errors import invalid
from .memorystore import (
    MAX_ITEM_ID_CHARS,
    MAX_SORT_KEY_CHARS,
    MAX_TTL,
    MAX_VALUE_BYTES,
    NO_SORT_KEY,
    Condition,
    MemoryStore,
    Position,
    QueueItem,
    SortedItem,
    SortedWrite,
    SortKey,
)
from .paging import decode_token, encode_token, fingerprint
from .timefmt import parse_duration, whole_seconds
from .validation import clamp_page_size, compact_json, parse_bool, parse_json_body

PREFIX = "/cloud/v2/universes/{universe_id}/memory-store"
BUDGETS = ["memory_store"]
DEFAULT_WINDOW = timedelta(seconds=30)
SCOPES = ("LIVE", "TEST")
_SAFE_INTEGER = 2**53


def _ctx(request: web.Request) -> EmulatorContext:
    return request.app[EMULATOR]


def _store(ctx: EmulatorContext) -> MemoryStore:
    return ctx.memory


def _charge(request: web.Request, universe: str, structure: str | None, units: int = 1) -> None:
    """Charge memory-store request units; list and read cost one unit per item returned."""
    _ctx(request).throttle(request, universe, BUDGETS, entry_key=structure, units=units)


# ------------------------------------------------------------------ wire values


def _number(value: float) -> float | int:
    """Doubles with an integral value print without `.0`, as protobuf JSON does."""
    if value.is_integer() and abs(value) < _SAFE_INTEGER:
        return int(value)
    return value


def _sorted_json(universe: str, map_id: str, item: SortedItem) -> dict[str, Any]:
    body: dict[str, Any] = {
        "path": f"cloud/v2/universes/{universe}/memory-store/sorted-maps/{map_id}"
        f"/items/{item.item_id}",
        "value": item.value,
        "etag": item.etag,
        "expireTime": whole_seconds(item.expire_time),
        "id": item.item_id,
    }
    if isinstance(item.sort_key, str):
        body["stringSortKey"] = item.sort_key
    elif item.sort_key is not None:
        body["numericSortKey"] = _number(item.sort_key)
    return body


def _queue_json(universe: str, queue_id: str, item: QueueItem) -> dict[str, Any]:
    return {
        "path": f"cloud/v2/universes/{universe}/memory-store/queues/{queue_id}"
        f"/items/{item.item_id}",
        "data": item.data,
        "priority": _number(item.priority),
        "expireTime": whole_seconds(item.expire_time),
        "id": item.item_id,
    }


def _operation_json(universe: str, operation_id: str, done: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "path": f"cloud/v2/universes/{universe}/memory-store/operations/{operation_id}",
        "done": done,
    }
    if done:
        body["response"] = {}  # FlushMemoryStoreResponse has no fields
    return body


# ------------------------------------------------------------------ input checks


async def _body_fields(request: web.Request) -> dict[str, Any]:
    """The JSON object body with lower-cased field names ({} when there is no body)."""
    raw = await request.read() if request.can_read_body else b""
    if not raw.strip():
        return {}
    body = parse_json_body(raw)
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    return {str(key).lower(): value for key, value in body.items()}


def _item_id(raw: str | None) -> str:
    if raw is None or raw == "":
        raise invalid("The item id is required: pass ?id= (1-127 characters).")
    if len(raw) > MAX_ITEM_ID_CHARS:
        raise invalid(
            f"The item id is {len(raw)} characters long; it must be 1-{MAX_ITEM_ID_CHARS}."
        )
    return raw


def _value_json(fields: dict[str, Any], name: str) -> str:
    """A required JSON value of at most 32 KB, returned as compact JSON text."""
    if name not in fields:
        raise invalid(f"The body must contain a {name!r} field with the item's JSON value.")
    try:
        text = compact_json(fields[name])
    except ValueError:
        raise invalid(f"{name} contains NaN or Infinity, which JSON cannot hold.") from None
    size = len(text.encode("utf-8"))
    if size > MAX_VALUE_BYTES:
        raise invalid(
            f"ItemValueSizeTooLarge: {name} is {size:,} bytes as JSON; memory store items "
            f"hold at most {MAX_VALUE_BYTES:,} bytes (32 KB)."
        )
    return text


def _ttl(fields: dict[str, Any]) -> timedelta:
    raw = fields.get("ttl")
    if raw is None:
        return MAX_TTL
    if not isinstance(raw, str):
        raise invalid('ttl must be a duration string in seconds such as "30s".')
    try:
        ttl = parse_duration(raw)
    except (ValueError, OverflowError):
        raise invalid(
            f'ttl {raw!r} is not a duration such as "30s" (seconds, ending in s).'
        ) from None
    if not ttl > timedelta(0) or ttl > MAX_TTL:
        raise invalid(
            f"InvalidExpirationTime: ttl {raw!r} must be more than 0 s and at most "
            f"{MAX_TTL.total_seconds():,.0f} s (45 days)."
        )
    return ttl


def _finite_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"{name} must be a number.")
    number = float(value)
    if not math.isfinite(number):
        raise invalid(f"{name} must be a finite number.")
    return number


def _sort_key(fields: dict[str, Any]) -> SortKey:
    text, number = fields.get("stringsortkey"), fields.get("numericsortkey")
    if text is not None and number is not None:
        raise invalid("Give either stringSortKey or numericSortKey, not both.")
    if text is not None:
        if not isinstance(text, str):
            raise invalid("stringSortKey must be a string.")
        if len(text) > MAX_SORT_KEY_CHARS:
            raise invalid(
                f"stringSortKey is {len(text)} characters; the limit is {MAX_SORT_KEY_CHARS}."
            )
        return text
    if number is not None:
        return _finite_number(number, "numericSortKey")
    return None


def _sorted_write(fields: dict[str, Any]) -> SortedWrite:
    return SortedWrite(_value_json(fields, "value"), _sort_key(fields), _ttl(fields))


def _scope_param(request: web.Request) -> str:
    scope = request.query.get("scope") or "LIVE"
    if scope not in SCOPES:
        raise invalid(f"scope must be LIVE or TEST, not {scope!r}.")
    return scope


# -------------------------------------------------------------- list parameters

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<and>&&)
      | (?P<op>[<>](?!=))
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![A-Za-z0-9_.]))
      | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    )""",
    re.VERBOSE,
)
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r", "/": "/"}
_FLIP: dict[str, Literal["<", ">"]] = {"<": ">", ">": "<"}
_FILTER_HELP = (
    "Sorted-map filters compare id or sortKey with a literal using only < or >, joined "
    'by &&, e.g. id > "key-001" && sortKey < 100.'
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    at: int


def _unquote(literal: str, source: str) -> str:
    out: list[str] = []
    body, i = literal[1:-1], 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        code = body[i + 1]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            i += 2
        elif code in "uU":
            width = 4 if code == "u" else 8
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise invalid(f"Bad escape in string {literal!r} of filter {source!r}.")
            out.append(chr(int(digits, 16)))
            i += 2 + width
        else:
            raise invalid(f"Unsupported escape \\{code} in filter {source!r}.")
    return "".join(out)


def _tokens(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(source):
        if source[pos:].strip() == "":
            break
        match = _TOKEN.match(source, pos)
        if match is None or match.lastgroup is None:
            start = len(source) - len(source[pos:].lstrip())
            raise invalid(
                f"Unsupported filter syntax at {source[start : start + 12]!r} in {source!r}. "
                + _FILTER_HELP
            )
        tokens.append(
            _Token(match.lastgroup, match.group(match.lastgroup), match.start(match.lastgroup))
        )
        pos = match.end()
    return tokens


def _operand(token: _Token, source: str) -> tuple[str, Any]:
    if token.kind == "ident":
        if token.text not in ("id", "sortKey"):
            raise invalid(
                f"Unknown filter field {token.text!r}: only id and sortKey can be filtered."
            )
        return "field", token.text
    if token.kind == "str":
        return "literal", _unquote(token.text, source)
    if token.kind == "num":
        return "literal", _finite_number(float(token.text), "A filter number")
    raise invalid(
        f"Expected a field or literal at {token.text!r} in filter {source!r}. " + _FILTER_HELP
    )


def parse_filter(source: str | None) -> list[Condition]:
    """Parse the CEL subset Open Cloud allows here: `a op b (&& a op b)*`, op in {<, >}."""
    if source is None or source.strip() == "":
        return []
    tokens = _tokens(source)
    conditions: list[Condition] = []
    i = 0
    while True:
        if i + 3 > len(tokens) or tokens[i + 1].kind != "op":
            raise invalid(f"Incomplete or unsupported filter {source!r}. " + _FILTER_HELP)
        left, right = _operand(tokens[i], source), _operand(tokens[i + 2], source)
        op: Literal["<", ">"] = ">" if tokens[i + 1].text == ">" else "<"
        if left[0] == right[0]:
            raise invalid(
                f"Each comparison in filter {source!r} needs exactly one field and one literal."
            )
        if left[0] == "literal":  # `"a" < id` means `id > "a"`
            left, right, op = right, left, _FLIP[op]
        field: Literal["id", "sortKey"] = "id" if left[1] == "id" else "sortKey"
        if field == "id" and not isinstance(right[1], str):
            raise invalid(f"In filter {source!r}, id can only be compared with a quoted string.")
        conditions.append(Condition(field, op, right[1]))
        i += 3
        if i == len(tokens):
            return conditions
        if tokens[i].kind != "and":
            raise invalid(
                f"Expected && at {tokens[i].text!r} in filter {source!r}. " + _FILTER_HELP
            )
        i += 1


def parse_order_by(raw: str | None) -> bool:
    """True for descending. Only the `id` field is orderable (it means map order)."""
    words = (raw or "").split()
    if words in ([], ["id"], ["asc"], ["id", "asc"]):
        return False
    if words in (["id", "desc"], ["desc"]):
        return True
    raise invalid(f'orderBy {raw!r} is not supported: use "id" or "id desc".')


def _position(raw: Any) -> Position | None:
    if raw is None:
        return None
    if (
        isinstance(raw, list)
        and len(raw) == 4
        and raw[0] in (0, 1, NO_SORT_KEY)
        and isinstance(raw[1], int | float)
        and isinstance(raw[2], str)
        and isinstance(raw[3], str)
    ):
        return (int(raw[0]), float(raw[1]), raw[2], raw[3])
    raise invalid("Invalid page token.")


# -------------------------------------------------------------------- handlers


def _map_request(request: web.Request) -> tuple[EmulatorContext, str, str]:
    return _ctx(request), universe_param(request), request.match_info["sorted_map_id"]


async def list_sorted_items(request: web.Request) -> web.Response:
    ctx, universe, map_id = _map_request(request)
    ctx.require(request, universe, "memory-store.sorted-map:read")
    query = request.query
    limit = clamp_page_size(query.get("maxPageSize"), default=1, maximum=100, name="maxPageSize")
    descending = parse_order_by(query.get("orderBy"))
    conditions = parse_filter(query.get("filter"))
    bound = fingerprint(f"memory-store/{universe}/sorted-maps/{map_id}", query)
    after = _position(decode_token(query.get("pageToken"), bound))
    items, last = _store(ctx).list_sorted(
        universe, map_id, conditions=conditions, descending=descending, after=after, limit=limit
    )
    _charge(request, universe, f"sorted-map/{map_id}", max(1, len(items)))
    body: dict[str, Any] = {"items": [_sorted_json(universe, map_id, item) for item in items]}
    if last is not None:
        body["nextPageToken"] = encode_token(list(last), bound)
    return json_response(body)


async def create_sorted_item(request: web.Request) -> web.Response:
    ctx, universe, map_id = _map_request(request)
    ctx.require(request, universe, "memory-store.sorted-map:write")
    fields = await _body_fields(request)
    body_id = fields.get("id")
    if body_id is not None and not isinstance(body_id, str):
        raise invalid("id must be a string.")
    item_id = _item_id(request.query.get("id") or body_id)
    write = _sorted_write(fields)
    _charge(request, universe, f"sorted-map/{map_id}")
    item = _store(ctx).create_sorted(universe, map_id, item_id, write)
    return json_response(_sorted_json(universe, map_id, item))


async def get_sorted_item(request: web.Request) -> web.Response:
    ctx, universe, map_id = _map_request(request)
    ctx.require(request, universe, "memory-store.sorted-map:read")
    item_id = _item_id(request.match_info["item_id"])
    _charge(request, universe, f"sorted-map/{map_id}")
    return json_response(
        _sorted_json(universe, map_id, _store(ctx).get_sorted(universe, map_id, item_id))
    )


async def update_sorted_item(request: web.Request) -> web.Response:
    ctx, universe, map_id = _map_request(request)
    ctx.require(request, universe, "memory-store.sorted-map:write")
    item_id = _item_id(request.match_info["item_id"])
    allow_missing = parse_bool(request.query.get("allowMissing"), "allowMissing")
    fields = await _body_fields(request)
    etag = fields.get("etag")
    if etag is not None and not isinstance(etag, str):
        raise invalid("etag must be a string.")
    write = _sorted_write(fields)
    _charge(request, universe, f"sorted-map/{map_id}")
    item = _store(ctx).update_sorted(
        universe, map_id, item_id, write, allow_missing=allow_missing, etag=etag or None
    )
    return json_response(_sorted_json(universe, map_id, item))


async def delete_sorted_item(request: web.Request) -> web.Response:
    ctx, universe, map_id = _map_request(request)
    ctx.require(request, universe, "memory-store.sorted-map:write")
    item_id = _item_id(request.match_info["item_id"])
    _charge(request, universe, f"sorted-map/{map_id}")
    _store(ctx).delete_sorted(universe, map_id, item_id)
    return web.Response(status=200)


def _queue_request(request: web.Request) -> tuple[EmulatorContext, str, str]:
    return _ctx(request), universe_param(request), request.match_info["queue_id"]


async def add_queue_item(request: web.Request) -> web.Response:
    ctx, universe, queue_id = _queue_request(request)
    ctx.require(request, universe, "memory-store.queue:add")
    fields = await _body_fields(request)
    data = _value_json(fields, "data")
    raw_priority = fields.get("priority")
    priority = 0.0 if raw_priority is None else _finite_number(raw_priority, "priority")
    ttl = _ttl(fields)
    _charge(request, universe, f"queue/{queue_id}")
    item = _store(ctx).add_queue_item(universe, queue_id, data, priority, ttl)
    return json_response(_queue_json(universe, queue_id, item))


async def read_queue_items(request: web.Request) -> web.Response:
    ctx, universe, queue_id = _queue_request(request)
    ctx.require(request, universe, "memory-store.queue:dequeue")
    query = request.query
    count = clamp_page_size(query.get("count"), default=1, maximum=200, name="count")
    all_or_nothing = parse_bool(query.get("allOrNothing"), "allOrNothing")
    raw_window = query.get("invisibilityWindow")
    window = DEFAULT_WINDOW
    if raw_window is not None:
        try:
            window = parse_duration(raw_window)
        except (ValueError, OverflowError):
            window = timedelta(0)
        if not window > timedelta(0):
            raise invalid(
                f"invisibilityWindow {raw_window!r} must be a number of seconds greater "
                'than 0 ending with s, such as "30s".'
            )
    read_id, items = _store(ctx).read_queue(
        universe,
        queue_id,
        count=count,
        all_or_nothing=all_or_nothing,
        window=window,
        charge=lambda units: _charge(request, universe, f"queue/{queue_id}", units),
    )
    return json_response(
        {"readId": read_id, "items": [_queue_json(universe, queue_id, item) for item in items]}
    )


async def discard_queue_items(request: web.Request) -> web.Response:
    ctx, universe, queue_id = _queue_request(request)
    ctx.require(request, universe, "memory-store.queue:discard")
    fields = await _body_fields(request)
    read_id = fields.get("readid") or request.query.get("readId")
    if not isinstance(read_id, str) or read_id == "":
        raise invalid("readId is required: pass the readId a previous items:read returned.")
    _charge(request, universe, f"queue/{queue_id}")
    _store(ctx).discard_queue_items(universe, queue_id, read_id)
    return web.Response(status=200)


async def flush(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    universe = universe_param(request)
    ctx.require(request, universe, "memory-store:flush")
    scope = _scope_param(request)
    await _body_fields(request)
    _charge(request, universe, None)
    operation = _store(ctx).flush(universe, scope)
    return json_response(_operation_json(universe, operation.operation_id, done=False))


async def get_operation(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    universe = universe_param(request)
    ctx.require(request, universe, "memory-store:flush")
    _scope_param(request)
    _charge(request, universe, None)
    operation = _store(ctx).get_operation(universe, request.match_info["operation_id"])
    return json_response(_operation_json(universe, operation.operation_id, done=True))


def setup(app: web.Application, ctx: EmulatorContext) -> None:
    del ctx  # handlers reach the context through the app
    router = app.router
    items = PREFIX + "/sorted-maps/{sorted_map_id:[^/]+}/items"
    router.add_get(items, list_sorted_items)
    router.add_post(items, create_sorted_item)
    router.add_get(items + "/{item_id:[^/]+}", get_sorted_item)
    router.add_patch(items + "/{item_id:[^/]+}", update_sorted_item)
    router.add_delete(items + "/{item_id:[^/]+}", delete_sorted_item)
    queue = PREFIX + "/queues/{queue_id:[^/]+}"
    router.add_post(queue + "/items", add_queue_item)
    router.add_get(queue + "/items:read", read_queue_items)
    router.add_post(queue + "/items:discard", discard_queue_items)
    router.add_post(PREFIX + ":flush", flush)
    router.add_get(PREFIX + "/operations/{operation_id}", get_operation)
