"""The names team sync uses in a universe, and the ids of its memory-store items.

Everything is prefixed `dsm-team-` so it is easy to recognise next to the game's own stores and
never collides with them. Game servers of the universe can read (and write) these names too:
docs/team.md says so plainly.
"""

from __future__ import annotations

import hashlib

from shared_schema.team import TeamNames

PREFIX = "dsm-team-"
SORTED_MAP = PREFIX + "live"  # presence, soft locks, change feed (all with short TTLs)
AUDIT_STORE = PREFIX + "audit"  # the hash-chained audit log
WORKSPACE_STORE = PREFIX + "workspace"  # members, invites, bookmarks, notes
SCOPE = "global"

NAMES = TeamNames(sorted_map=SORTED_MAP, audit_store=AUDIT_STORE, workspace_store=WORKSPACE_STORE)

# Item id prefixes, chosen so that `id > "c/<cursor>"` lists the new changes *and* every lock and
# presence item in one call ('c' < 'l' < 'p').
CHANGE = "c/"
LOCK = "l/"
PRESENCE = "p/"


def presence_id(server_id: str) -> str:
    return PRESENCE + server_id


def lock_id(datastore: str, scope: str, key: str) -> str:
    """One lock per entry; the id is a digest so item ids stay short whatever the key."""
    digest = hashlib.sha256(f"{datastore}\0{scope}\0{key}".encode()).hexdigest()
    return LOCK + digest[:40]


def change_id(at_ms: int, server_id: str, n: int) -> str:
    return f"{CHANGE}{at_ms:013d}/{server_id}/{n}"


def change_cursor(at_ms: int) -> str:
    return f"{CHANGE}{max(0, at_ms):013d}"


def change_time_ms(item_id: str) -> int | None:
    try:
        return int(item_id[len(CHANGE) :].split("/", 1)[0])
    except ValueError:
        return None


def audit_key(seq: int) -> str:
    return f"r{seq:012d}"


def audit_seq(key: str) -> int | None:
    if len(key) != 13 or not key.startswith("r") or not key[1:].isdigit():
        return None
    return int(key[1:])
