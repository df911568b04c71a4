"""Browsing over real HTTP: universes, data stores (deleted ones too), keys and scopes.

The data is written through the server's own API first, so every listing is checked against
entries that really exist on the embedded emulator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared_schema.common import Role
from tools.testing.server import Server, entry_path, idem, running_server, store_path


@dataclass
class Browse:
    server: Server
    admin: str
    editor: str
    viewer: str

    async def put(self, universe: int, datastore: str, key: str, scope: str = "global") -> None:
        status, body = await self.server.call(
            "POST",
            entry_path(universe, datastore, key),
            self.editor,
            params={"scope": scope},
            json={"value_json": '{"v":1}', "idempotency_key": idem()},
        )
        assert status == 200, body

    async def get(self, path: str, token: str | None = None, **params: str) -> dict[str, Any]:
        status, body = await self.server.call("GET", path, token or self.viewer, params=params)
        assert status == 200, body
        result: dict[str, Any] = body
        return result

    async def walk(self, path: str, **params: str) -> list[list[dict[str, Any]]]:
        """Every page of a listing, following next_cursor until it is absent."""
        pages: list[list[dict[str, Any]]] = []
        cursor: str | None = None
        for _ in range(50):  # bounded: a cursor loop would otherwise hang the test
            query = dict(params, **({"cursor": cursor} if cursor else {}))
            page = await self.get(path, **query)
            assert page["source"]["kind"] == "EMULATOR"
            pages.append(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return pages
        raise AssertionError(f"{path} did not end after 50 pages")


@pytest.fixture
async def browse(tmp_path: Path) -> AsyncIterator[Browse]:
    async with running_server(tmp_path) as server:
        yield Browse(
            server,
            admin=await server.pair("Admin", Role.ADMIN),
            editor=await server.pair("Editor", Role.EDITOR),
            viewer=await server.pair("Viewer", Role.VIEWER),
        )


async def test_universes_are_the_configured_ones_plus_those_holding_data(browse: Browse) -> None:
    listed = await browse.get("/universes")
    assert listed["source"]["kind"] == "EMULATOR"
    assert listed["universes"] == [
        {
            "universe_id": 1,
            "label": "Emulator universe 1",
            "environment": "development",
            "backend": "EMULATOR",
        }
    ]
    await browse.put(4242, "Saves", "k")
    ids = [u["universe_id"] for u in (await browse.get("/universes"))["universes"]]
    assert ids == [1, 4242]


async def test_data_stores_list_with_prefix_and_paging(browse: Browse) -> None:
    for name in ("Alpha", "Beta", "Bravo", "Charlie"):
        await browse.put(1, name, "k")
    everything = await browse.get("/universes/1/datastores")
    assert [s["name"] for s in everything["items"]] == ["Alpha", "Beta", "Bravo", "Charlie"]
    assert all(s["state"] == "ACTIVE" and s["created_at"] for s in everything["items"])
    assert "next_cursor" not in everything
    prefixed = await browse.get("/universes/1/datastores", prefix="B")
    assert [s["name"] for s in prefixed["items"]] == ["Beta", "Bravo"]
    pages = await browse.walk("/universes/1/datastores", limit="1")
    assert [len(p) for p in pages] == [1, 1, 1, 1]
    assert [p[0]["name"] for p in pages] == ["Alpha", "Beta", "Bravo", "Charlie"]
    # A universe with nothing in it lists nothing (and says where that came from).
    empty = await browse.get("/universes/77/datastores")
    assert empty["items"] == [] and empty["source"]["backend"] == "EMULATOR"


async def test_admin_deletes_and_undeletes_a_data_store(browse: Browse) -> None:
    await browse.put(1, "Doomed", "k")
    await browse.put(1, "Kept", "k")
    status, cursor_page = await browse.server.call(
        "GET", "/events", browse.viewer, params={"timeout": "0"}
    )
    assert status == 200
    # An editor cannot: deleting a data store is an admin action.
    status, body = await browse.server.call("DELETE", store_path(1, "Doomed"), browse.editor)
    assert status == 403 and body["error"]["code"] == "FORBIDDEN"
    assert body["error"]["details"] == {"needed_role": "admin", "role": "editor"}
    status, body = await browse.server.call(
        "POST", store_path(1, "Doomed") + "/undelete", browse.editor
    )
    assert status == 403
    assert [s["name"] for s in (await browse.get("/universes/1/datastores"))["items"]] == [
        "Doomed",
        "Kept",
    ]

    status, deleted = await browse.server.call("DELETE", store_path(1, "Doomed"), browse.admin)
    assert status == 200
    assert deleted["name"] == "Doomed" and deleted["state"] == "DELETED"
    assert deleted["expires_at"] > deleted["created_at"]
    active = await browse.get("/universes/1/datastores")
    assert [s["name"] for s in active["items"]] == ["Kept"]
    with_deleted = await browse.get("/universes/1/datastores", show_deleted="true")
    states = {s["name"]: s["state"] for s in with_deleted["items"]}
    assert states == {"Doomed": "DELETED", "Kept": "ACTIVE"}

    status, restored = await browse.server.call(
        "POST", store_path(1, "Doomed") + "/undelete", browse.admin
    )
    assert status == 200 and restored["state"] == "ACTIVE" and "expires_at" not in restored
    assert [s["name"] for s in (await browse.get("/universes/1/datastores"))["items"]] == [
        "Doomed",
        "Kept",
    ]
    # The entries came back with the store.
    status, entry = await browse.server.call("GET", entry_path(1, "Doomed", "k"), browse.viewer)
    assert status == 200 and entry["value_json"] == '{"v":1}'

    status, batch = await browse.server.call(
        "GET",
        "/events",
        browse.viewer,
        params={"cursor": str(cursor_page["next_cursor"]), "timeout": "1"},
    )
    changes = [
        (e["payload"]["universe_id"], e["payload"]["datastore"], e["payload"]["state"])
        for e in batch["events"]
        if e["type"] == "datastore.changed"
    ]
    assert changes == [(1, "Doomed", "DELETED"), (1, "Doomed", "ACTIVE")]
    actors = {e["payload"]["actor"] for e in batch["events"] if e["type"] == "datastore.changed"}
    assert len(actors) == 1 and None not in actors  # the admin token's name, from its pairing


async def test_undeleting_an_active_or_unknown_store_is_refused(browse: Browse) -> None:
    await browse.put(1, "Live", "k")
    status, body = await browse.server.call(
        "POST", store_path(1, "Live") + "/undelete", browse.admin
    )
    # Open Cloud refuses it (400); the server passes the refusal on with Open Cloud's reason,
    # as a conflict with the store's state (a client mistake, not an upstream failure).
    assert status == 409 and body["error"]["code"] == "CONFLICT"
    assert "'Live' is not deleted" in body["error"]["message"]
    for method, path in (
        ("DELETE", store_path(1, "Nowhere")),
        ("POST", store_path(1, "Nowhere") + "/undelete"),
    ):
        status, body = await browse.server.call(method, path, browse.admin)
        assert status == 404 and body["error"]["code"] == "NOT_FOUND"
        assert "'Nowhere' was not found" in body["error"]["message"]


async def test_keys_by_scope_prefix_and_page(browse: Browse) -> None:
    for key in ("player_1", "player_2", "player_3", "config"):
        await browse.put(1, "Game", key)
    await browse.put(1, "Game", "player_9", scope="beta")
    path = "/universes/1/datastores/Game/keys"

    listed = await browse.get(path)
    assert {(i["scope"], i["key"]) for i in listed["items"]} == {
        ("global", "player_1"),
        ("global", "player_2"),
        ("global", "player_3"),
        ("global", "config"),
    }
    assert not any(i["deleted"] for i in listed["items"])
    prefixed = await browse.get(path, prefix="player_")
    assert sorted(i["key"] for i in prefixed["items"]) == ["player_1", "player_2", "player_3"]
    beta = await browse.get(path, scope="beta")
    assert [(i["scope"], i["key"]) for i in beta["items"]] == [("beta", "player_9")]
    every = await browse.get(path, all_scopes="true")
    assert {(i["scope"], i["key"]) for i in every["items"]} == {
        ("global", "player_1"),
        ("global", "player_2"),
        ("global", "player_3"),
        ("global", "config"),
        ("beta", "player_9"),
    }
    # Paging two at a time visits every key exactly once.
    pages = await browse.walk(path, limit="2", all_scopes="true")
    visited = [(i["scope"], i["key"]) for page in pages for i in page]
    assert len(visited) == len(set(visited)) == 5
    assert all(len(page) <= 2 for page in pages)


async def test_deleted_keys_are_listed_only_on_request_and_marked(browse: Browse) -> None:
    for key in ("a", "b"):
        await browse.put(1, "Bin", key)
    status, _ = await browse.server.call(
        "DELETE", entry_path(1, "Bin", "a"), browse.editor, params={"idempotency_key": idem()}
    )
    assert status == 200
    path = "/universes/1/datastores/Bin/keys"
    assert [i["key"] for i in (await browse.get(path))["items"]] == ["b"]
    shown = await browse.get(path, show_deleted="true")
    assert {i["key"]: i["deleted"] for i in shown["items"]} == {"a": True, "b": False}


async def test_scopes_are_derived_from_the_keys_of_all_scopes(browse: Browse) -> None:
    await browse.put(1, "Scoped", "k1")
    await browse.put(1, "Scoped", "k2", scope="beta")
    await browse.put(1, "Scoped", "k3", scope="zeta")
    scopes = await browse.get("/universes/1/datastores/Scoped/scopes")
    assert scopes["scopes"] == ["beta", "global", "zeta"]
    assert scopes["complete"] is True
    assert scopes["source"]["kind"] == "EMULATOR"
    status, body = await browse.server.call(
        "GET", "/universes/1/datastores/Nothing/scopes", browse.viewer
    )
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    assert "'Nothing'" in body["error"]["message"]


async def test_listing_parameters_are_validated(browse: Browse) -> None:
    for path, params in (
        ("/universes/1/datastores", {"limit": "0"}),
        ("/universes/1/datastores", {"limit": "101"}),
        ("/universes/1/datastores/Game/keys", {"limit": "257"}),
        ("/universes/1/datastores/Game/keys", {"prefix": "p" * 51}),
        ("/universes/0/datastores", {}),
    ):
        status, body = await browse.server.call("GET", path, browse.viewer, params=params)
        assert status == 400, (path, params, body)
        assert body["error"]["code"] == "BAD_REQUEST"
