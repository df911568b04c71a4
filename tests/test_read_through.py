"""One read path: every read kind answers alike when Open Cloud throttles or is unreachable.

For each kind (entry, data store list, key list, ordered list, sorted map page, sorted map
item, queue peek): a page read while Open Cloud answers is shown CACHED (with age and reason)
once Open Cloud throttles or is gone; one never read is UPSTREAM_THROTTLED with retry_after,
or UPSTREAM_UNAVAILABLE, with an UNAVAILABLE source, never made up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dsm.http.appkeys import DATA
from dsm.services.entries import EntryRef
from shared_schema.common import Role
from tools.testing.server import Server, entry_path, idem, running_server

U, DS = 1, "players"
ORDERED = f"/universes/{U}/ordered/wins/scopes/global/entries"
MEMORY = f"/universes/{U}/memory"


@dataclass(frozen=True)
class ReadKind:
    name: str
    category: str  # the rate-limit budget the read spends
    path: str  # read once while Open Cloud answers
    unread: str  # never read: nothing cached
    params: dict[str, str] | None = None


KINDS = [
    ReadKind("entry", "read", entry_path(U, DS, "sword"), entry_path(U, DS, "shield")),
    ReadKind("data stores", "list", f"/universes/{U}/datastores", f"/universes/{U}/datastores",
             {"prefix": "p"}),
    ReadKind("keys", "list", f"/universes/{U}/datastores/{DS}/keys",
             f"/universes/{U}/datastores/{DS}/keys", {"prefix": "s"}),
    ReadKind("ordered", "list", ORDERED, ORDERED, {"descending": "true"}),
    ReadKind("sorted map", "list", f"{MEMORY}/sorted-maps/lobby/items",
             f"{MEMORY}/sorted-maps/other/items"),
    ReadKind("sorted map item", "read", f"{MEMORY}/sorted-maps/lobby/items/a",
             f"{MEMORY}/sorted-maps/lobby/items/b"),
    ReadKind("queue peek", "read", f"{MEMORY}/queues/jobs/peek", f"{MEMORY}/queues/other/peek"),
]  # fmt: skip


@dataclass
class Setup:
    server: Server
    token: str

    async def get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, Any]:
        return await self.server.call("GET", path, self.token, params=params)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with running_server(tmp_path) as server:
        token = await server.pair("Studio", Role.EDITOR)
        status, _ = await server.call(
            "POST",
            entry_path(U, DS, "sword"),
            token,
            json={"value_json": '{"dmg": 1}', "idempotency_key": idem()},
        )
        assert status == 200
        status, _ = await server.call(
            "POST", ORDERED, token, json={"id": "ann", "value": 3, "idempotency_key": idem()}
        )
        assert status == 200
        client = server.upstream.client_for(U)
        await client.create_entry(U, DS, "shield", '{"def": 2}')  # never read by the server
        await client.sorted_map_create(U, "lobby", "a", '{"n": 1}', sort_key=1)
        await client.sorted_map_create(U, "lobby", "b", '{"n": 2}', sort_key=2)
        await client.queue_add(U, "jobs", '{"job": 1}')
        yield Setup(server, token)


async def read_fresh(setup: Setup) -> dict[str, Any]:
    seen = {}
    for kind in KINDS:
        status, body = await setup.get(kind.path)
        assert status == 200, (kind.name, body)
        assert body["source"]["kind"] == "EMULATOR", kind.name
        seen[kind.name] = body
    return seen


def assert_unavailable(kind: ReadKind, status: int, body: Any, code: str) -> None:
    assert status == 503, (kind.name, body)
    error = body["error"]
    assert error["code"] == code, (kind.name, error)
    assert "No cached copy" in error["message"], kind.name
    assert error["details"]["source"]["kind"] == "UNAVAILABLE", kind.name


async def test_every_read_kind_shows_its_cached_copy_while_throttled(setup: Setup) -> None:
    seen = await read_fresh(setup)
    limiter = setup.server.upstream.limiter
    assert limiter is not None
    for category in ("read", "list"):
        # What the client does on a 429 with retry-after: pause that universe's budget.
        limiter.penalize(str(U), category, 30.0)
    for kind in KINDS:
        status, body = await setup.get(kind.path)
        assert status == 200, (kind.name, body)
        source = body["source"]
        assert source["kind"] == "CACHED" and "throttling" in source["reason"], kind.name
        assert source["age_seconds"] >= 0
        assert body.get("items", body.get("value_json")) == seen[kind.name].get(
            "items", seen[kind.name].get("value_json")
        ), kind.name
    peek = (await setup.get(KINDS[-1].path))[1]
    assert "Nothing was hidden or removed this time" in peek["notice"]
    for kind in KINDS:
        async with setup.server.http.get(
            setup.server.url("/api/v1" + kind.unread),
            params=kind.params,
            headers={"Authorization": f"Bearer {setup.token}"},
        ) as resp:
            body = await resp.json()
            assert_unavailable(kind, resp.status, body, "UPSTREAM_THROTTLED")
            assert int(resp.headers["Retry-After"]) >= 1, kind.name


async def test_every_read_kind_shows_its_cached_copy_while_unreachable(setup: Setup) -> None:
    seen = await read_fresh(setup)
    emulator = setup.server.upstream.emulator
    assert emulator is not None
    await emulator.stop()
    for kind in KINDS:
        status, body = await setup.get(kind.path)
        assert status == 200, (kind.name, body)
        assert body["source"]["kind"] == "CACHED" and body["source"]["reason"], kind.name
        assert body.get("items", body.get("value_json")) == seen[kind.name].get(
            "items", seen[kind.name].get("value_json")
        ), kind.name
    # Nothing cached: the same one function answers for every kind (each such read spends the
    # client's whole retry budget on a dead Open Cloud, so two kinds stand for all of them).
    for kind in (KINDS[0], KINDS[2]):
        status, body = await setup.get(kind.unread, kind.params)
        assert_unavailable(kind, status, body, "UPSTREAM_UNAVAILABLE")


async def test_a_fresh_answer_is_cached_once_it_is_out_and_a_write_meanwhile_wins(
    setup: Setup,
) -> None:
    """The copy of a fresh read is written after its answer (not on the way to it), and is in
    both cache tiers by the time the client has the answer; a write that invalidates the key in
    between wins over the older copy."""
    data = setup.server.app[DATA]
    cache = data.entries.cache
    status, body = await setup.get(KINDS[0].path)
    assert status == 200 and body["source"]["kind"] == "EMULATOR"
    held = cache.get_entry(U, DS, "global", "sword")
    assert held is not None and held.value_json == body["value_json"]
    assert cache.stats().disk_rows >= 1

    ref = EntryRef(U, DS, "global", "shield")
    view = await data.entries.get(ref)  # its copy waits for the answer to be out
    assert view.value_json == '{"def":2}'
    cache.invalidate_entry(U, DS, "global", "shield")  # what a write does
    await asyncio.sleep(0)
    assert cache.get_entry(U, DS, "global", "shield") is None
