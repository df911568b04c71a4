"""Every operation the client performs: its metrics label, rate-limit category and the Roblox
API-key scopes it needs (opencloud-api.md section 10), so errors can name the missing scope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# ClientRateLimiter buckets; each is one documented budget (ratelimit.DOCUMENTED_RATES).
Category = Literal[
    "read",
    "write",
    "list",
    "remove",
    "ordered.read",
    "ordered.write",
    "ordered.list",
    "ordered.remove",
    "v1.read",
    "v1.write",
    "memory",
]

_DS = "universe-datastores."
_ORDERED_READ = "universe.ordered-data-store.scope.entry:read"
_ORDERED_WRITE = "universe.ordered-data-store.scope.entry:write"


@dataclass(frozen=True, slots=True)
class Op:
    name: str  # label passed to on_call
    category: Category  # ClientRateLimiter bucket
    scopes: tuple[str, ...]  # all required, unless scope_text explains alternatives
    action: str  # "read a data store entry": completes "while trying to ..."
    scope_text: str | None = None

    def needed_scopes(self) -> str:
        if self.scope_text is not None:
            return self.scope_text
        return " and ".join(self.scopes)


def _op(
    name: str,
    category: Category,
    scopes: str | tuple[str, ...],
    action: str,
    text: str | None = None,
) -> Op:
    return Op(name, category, (scopes,) if isinstance(scopes, str) else scopes, action, text)


# Cloud v2 standard data stores.
LIST_DATA_STORES = _op("datastores.list", "list", _DS + "control:list", "list data stores")
DELETE_DATA_STORE = _op(
    "datastores.delete", "remove", _DS + "control:delete", "delete a data store"
)
UNDELETE_DATA_STORE = _op(
    "datastores.undelete", "remove", _DS + "control:delete", "undelete a data store"
)
# Snapshots draw on no documented experience budget; "write" keeps them paced conservatively.
SNAPSHOT = _op("datastores.snapshot", "write", _DS + "control:snapshot", "snapshot data stores")
LIST_ENTRIES = _op("entries.list", "list", _DS + "objects:list", "list data store entries")
GET_ENTRY = _op("entries.get", "read", _DS + "objects:read", "read a data store entry")
CREATE_ENTRY = _op("entries.create", "write", _DS + "objects:create", "create a data store entry")
UPDATE_ENTRY = _op("entries.update", "write", _DS + "objects:update", "update a data store entry")
DELETE_ENTRY = _op("entries.delete", "remove", _DS + "objects:delete", "delete a data store entry")
INCREMENT_ENTRY = _op(
    "entries.increment",
    "write",
    (_DS + "objects:create", _DS + "objects:update"),
    "increment a data store entry",
)
LIST_REVISIONS = _op(
    "entries.list_revisions", "list", _DS + "versions:list", "list an entry's revisions"
)

# Legacy v1 standard data stores (used where v2 lacks something).
V1_GET_ENTRY = _op("v1.entries.get", "v1.read", _DS + "objects:read", "read a data store entry")
V1_SET_ENTRY = _op(
    "v1.entries.set",
    "v1.write",
    (_DS + "objects:update", _DS + "objects:create", _DS + "control:create"),
    "set a data store entry",
    text=(
        f"{_DS}objects:update (existing key), {_DS}objects:create (new key) or "
        f"{_DS}control:create (new data store)"
    ),
)
V1_LIST_VERSIONS = _op(
    "v1.versions.list", "v1.read", _DS + "versions:list", "list an entry's versions"
)
V1_GET_VERSION = _op(
    "v1.versions.get", "v1.read", _DS + "versions:read", "read a version of a data store entry"
)

# Cloud v2 ordered data stores.
ORDERED_LIST = _op("ordered.list", "ordered.list", _ORDERED_READ, "list ordered data store entries")
ORDERED_GET = _op("ordered.get", "ordered.read", _ORDERED_READ, "read an ordered data store entry")
ORDERED_CREATE = _op(
    "ordered.create", "ordered.write", _ORDERED_WRITE, "create an ordered data store entry"
)
ORDERED_UPDATE = _op(
    "ordered.update", "ordered.write", _ORDERED_WRITE, "update an ordered data store entry"
)
ORDERED_INCREMENT = _op(
    "ordered.increment", "ordered.write", _ORDERED_WRITE, "increment an ordered data store entry"
)
ORDERED_DELETE = _op(
    "ordered.delete", "ordered.remove", _ORDERED_WRITE, "delete an ordered data store entry"
)

# Memory stores.
_SM_READ = "memory-store.sorted-map:read"
_SM_WRITE = "memory-store.sorted-map:write"
SORTED_MAP_LIST = _op("sorted_map.list", "memory", _SM_READ, "list sorted map items")
SORTED_MAP_GET = _op("sorted_map.get", "memory", _SM_READ, "read a sorted map item")
SORTED_MAP_CREATE = _op("sorted_map.create", "memory", _SM_WRITE, "create a sorted map item")
SORTED_MAP_UPDATE = _op("sorted_map.update", "memory", _SM_WRITE, "update a sorted map item")
SORTED_MAP_DELETE = _op("sorted_map.delete", "memory", _SM_WRITE, "delete a sorted map item")
QUEUE_ADD = _op("queue.add", "memory", "memory-store.queue:add", "add a queue item")
QUEUE_READ = _op("queue.read", "memory", "memory-store.queue:dequeue", "read queue items")
QUEUE_DISCARD = _op(
    "queue.discard", "memory", "memory-store.queue:discard", "discard read queue items"
)
FLUSH = _op("memory_store.flush", "memory", "memory-store:flush", "flush the memory stores")
FLUSH_STATUS = _op(
    "memory_store.flush_status", "memory", "memory-store:flush", "check a memory store flush"
)

# Messaging. Publishing has its own limits (per game server and per key owner), none of which is
# a per-universe budget this client can pace to; the standard write bucket paces it conservatively.
PUBLISH = _op(
    "messaging.publish", "write", "universe-messaging-service:publish", "publish a message"
)

# Not an Open Cloud call: GET / on the base URL, to tell the emulator from Roblox. It is never
# paced (the transport only paces calls made for a universe).
PROBE = _op("probe", "read", (), "probe the server")

ALL_OPS: tuple[Op, ...] = (
    LIST_DATA_STORES,
    DELETE_DATA_STORE,
    UNDELETE_DATA_STORE,
    SNAPSHOT,
    LIST_ENTRIES,
    GET_ENTRY,
    CREATE_ENTRY,
    UPDATE_ENTRY,
    DELETE_ENTRY,
    INCREMENT_ENTRY,
    LIST_REVISIONS,
    V1_GET_ENTRY,
    V1_SET_ENTRY,
    V1_LIST_VERSIONS,
    V1_GET_VERSION,
    ORDERED_LIST,
    ORDERED_GET,
    ORDERED_CREATE,
    ORDERED_UPDATE,
    ORDERED_INCREMENT,
    ORDERED_DELETE,
    SORTED_MAP_LIST,
    SORTED_MAP_GET,
    SORTED_MAP_CREATE,
    SORTED_MAP_UPDATE,
    SORTED_MAP_DELETE,
    QUEUE_ADD,
    QUEUE_READ,
    QUEUE_DISCARD,
    FLUSH,
    FLUSH_STATUS,
    PUBLISH,
    PROBE,
)
# Operation label (as passed to on_call) -> the Roblox API-key scopes it needs.
SCOPES_BY_OPERATION: dict[str, tuple[str, ...]] = {op.name: op.scopes for op in ALL_OPS}
