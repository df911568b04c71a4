"""The entry API over real HTTP: a real server on its embedded emulator, driven like the plugin.

Every test pairs real tokens, sends real requests to `/api/v1/...` and checks both the answer
and what actually happened upstream (read straight from the emulator, not through the server).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dsm.emulator.context import EMULATOR
from shared_schema.common import Role
from tools.testing.server import Server, entry_path, idem, running_server

U = 1
DS = "Players"


@dataclass
class Api:
    server: Server
    admin: str
    editor: str
    viewer: str

    async def create(
        self, key: str, value_json: str, token: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        status, body = await self.server.call(
            "POST",
            entry_path(U, DS, key),
            token or self.editor,
            json={"value_json": value_json, "idempotency_key": idem(), **fields},
        )
        assert status == 200, body
        result: dict[str, Any] = body
        return result

    async def get(self, key: str, token: str | None = None) -> tuple[int, Any]:
        return await self.server.call("GET", entry_path(U, DS, key), token or self.viewer)

    async def update(
        self, key: str, value_json: str, expected: str, token: str | None = None, **fields: Any
    ) -> tuple[int, Any]:
        body = {"value_json": value_json, "expected_revision": expected, **fields}
        body.setdefault("idempotency_key", idem())
        return await self.server.call(
            "PUT", entry_path(U, DS, key), token or self.editor, json=body
        )

    async def journal(self, **params: str) -> list[dict[str, Any]]:
        status, body = await self.server.call("GET", "/journal", self.viewer, params=params)
        assert status == 200, body
        items: list[dict[str, Any]] = body["items"]
        return items

    async def upstream_entry(self, key: str) -> tuple[int, Any]:
        """The entry as the emulator holds it, bypassing the server (a v2 GET)."""
        emulator = self.server.upstream.emulator
        assert emulator is not None
        url = f"{emulator.base_url}/cloud/v2/universes/{U}/data-stores/{DS}/scopes/global/entries/{key}"
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, headers={"x-api-key": "second-writer"}) as resp,
        ):
            return resp.status, await resp.json()

    async def second_writer(self, key: str, value: Any, **fields: Any) -> None:
        """Another writer (a game server, a script) changes the entry directly upstream."""
        emulator = self.server.upstream.emulator
        assert emulator is not None
        url = f"{emulator.base_url}/cloud/v2/universes/{U}/data-stores/{DS}/scopes/global/entries/{key}"
        async with (
            aiohttp.ClientSession() as http,
            http.patch(
                url, json={"value": value, **fields}, headers={"x-api-key": "second-writer"}
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_server(tmp_path) as server:
        yield Api(
            server,
            admin=await server.pair("Admin", Role.ADMIN),
            editor=await server.pair("Editor", Role.EDITOR),
            viewer=await server.pair("Viewer", Role.VIEWER),
        )


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading


async def test_values_travel_as_the_exact_json_text(api: Api) -> None:
    # Big integers beyond a double, {} next to [], key order and non-ASCII must all survive.
    value = (
        '{"zeta":1,"big":123456789012345678901234567890,"neg":-9007199254740993,'
        '"obj":{},"arr":[],"nested":[{},[]],"name":"Ünïcödé ✓","half":0.5}'
    )
    created = await api.create("exact", value)
    status, got = await api.get("exact")
    assert status == 200
    assert got["value_json"] == value
    assert got["size_bytes"] == len(value.encode("utf-8")) > len(value)
    assert got["size_limit_bytes"] == 4 * 1024 * 1024
    assert got["source"]["kind"] == "EMULATOR" and got["source"]["backend"] == "EMULATOR"
    assert got["source"]["fetched_at"]
    assert got["revision"] == created["revision"] and got["state"] == "ACTIVE"
    assert got["created_at"] == got["updated_at"]
    # Top-level {} and [] stay what they are.
    for key, text in (("empty-object", "{}"), ("empty-array", "[]")):
        await api.create(key, text)
        assert (await api.get(key))[1]["value_json"] == text


async def test_awkward_keys_round_trip(api: Api) -> None:
    keys = ("a/b", "with space", "50%", "q?x#y", "é✓", "x:increment")
    for key in keys:
        made = await api.create(key, json.dumps(key))
        assert made["key"] == key
    status, page = await api.server.call("GET", f"/universes/{U}/datastores/{DS}/keys", api.viewer)
    assert status == 200 and {item["key"] for item in page["items"]} == set(keys)
    for key in keys[:3]:
        status, got = await api.get(key)
        assert status == 200, got
        assert got["key"] == key and json.loads(got["value_json"]) == key


async def test_missing_entry_is_not_found(api: Api) -> None:
    status, body = await api.get("nobody")
    assert status == 404
    assert body["error"]["code"] == "NOT_FOUND"
    assert "nobody" in body["error"]["message"]


# ---------------------------------------------------------------------------------------------
# Writing


async def test_create_carries_metadata_and_refuses_an_existing_key(api: Api) -> None:
    first = await api.create("p1", '{"coins":1}', attributes={"team": "red"}, user_ids=[42])
    assert first["attributes"] == {"team": "red"} and first["user_ids"] == [42]
    status, body = await api.server.call(
        "POST",
        entry_path(U, DS, "p1"),
        api.editor,
        json={"value_json": '{"coins":999}', "idempotency_key": idem()},
    )
    assert status == 409
    assert body["error"]["code"] == "ALREADY_EXISTS"
    assert first["revision"] in body["error"]["message"]
    assert (await api.upstream_entry("p1"))[1]["value"] == {"coins": 1}


async def test_update_conflicts_when_someone_else_wrote_first(api: Api) -> None:
    seen = await api.create("p2", '{"coins":1}', attributes={"a": 1}, user_ids=[7])
    # A game server writes between the user opening the entry and saving it.
    await api.second_writer("p2", {"coins": 50}, attributes={"by": "game"}, users=["users/9"])
    status, body = await api.update("p2", '{"coins":2}', seen["revision"])
    assert status == 409
    error = body["error"]
    assert error["code"] == "CONFLICT" and error["retryable"] is False
    current = error["details"]["current"]
    assert current["value_json"] == '{"coins":50}'
    assert current["attributes"] == {"by": "game"} and current["user_ids"] == [9]
    assert current["revision"] != seen["revision"]
    assert error["details"]["expected_revision"] == seen["revision"]
    assert seen["revision"] in error["message"] and current["revision"] in error["message"]
    # Nothing was written over the other writer's value, and nothing was journaled as written.
    assert (await api.upstream_entry("p2"))[1]["value"] == {"coins": 50}
    assert [i["operation"] for i in await api.journal(key="p2")] == ["create"]
    # Saving against the revision now shown succeeds.
    status, saved = await api.update("p2", '{"coins":51}', current["revision"])
    assert status == 200 and saved["value_json"] == '{"coins":51}'


async def test_attributes_and_user_ids_carry_over_unless_changed(api: Api) -> None:
    v1 = await api.create("meta", "1", attributes={"x": 1}, user_ids=[5, 6])
    status, v2 = await api.update("meta", "2", v1["revision"])
    assert status == 200
    assert v2["attributes"] == {"x": 1} and v2["user_ids"] == [5, 6]
    upstream = (await api.upstream_entry("meta"))[1]
    assert upstream["attributes"] == {"x": 1} and upstream["users"] == ["users/5", "users/6"]
    # Changing one leaves the other alone.
    status, v3 = await api.update("meta", "3", v2["revision"], attributes={"y": 2})
    assert status == 200 and v3["attributes"] == {"y": 2} and v3["user_ids"] == [5, 6]
    # Sent empty clears them; Luau's JSONEncode sends an empty table as [].
    status, v4 = await api.update("meta", "4", v3["revision"], attributes=[], user_ids=[])
    assert status == 200
    assert "attributes" not in v4 and v4["user_ids"] == []
    upstream = (await api.upstream_entry("meta"))[1]
    assert not upstream.get("attributes") and not upstream.get("users")
    status, v5 = await api.update("meta", "5", v4["revision"], attributes={"z": 3})
    status, v6 = await api.update("meta", "6", v5["revision"], attributes=None)
    assert status == 200 and "attributes" not in v6


async def test_delete_is_conditional_and_journaled(api: Api) -> None:
    v1 = await api.create("gone", '{"hp":3}')
    status, body = await api.server.call(
        "DELETE",
        entry_path(U, DS, "gone"),
        api.editor,
        params={"idempotency_key": idem(), "expected_revision": "0" * 20},
    )
    assert status == 409 and body["error"]["code"] == "CONFLICT"
    assert body["error"]["details"]["current"]["revision"] == v1["revision"]
    status, deleted = await api.server.call(
        "DELETE",
        entry_path(U, DS, "gone"),
        api.editor,
        params={"idempotency_key": idem(), "expected_revision": v1["revision"]},
    )
    assert status == 200
    assert deleted["source"]["kind"] == "EMULATOR"
    assert (await api.get("gone"))[0] == 404
    assert (await api.upstream_entry("gone"))[0] == 404
    item = (await api.journal(key="gone"))[0]
    assert item["id"] == deleted["journal_id"] and item["operation"] == "delete"
    assert item["status"] == "applied" and item["before_sha256"] == sha256('{"hp":3}')
    assert "after_sha256" not in item
    # Deleting what does not exist says so.
    status, body = await api.server.call(
        "DELETE", entry_path(U, DS, "gone"), api.editor, params={"idempotency_key": idem()}
    )
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"


async def test_increment_adds_and_keeps_metadata(api: Api) -> None:
    await api.create("counter", "10", attributes={"kind": "coins"}, user_ids=[3])
    status, got = await api.server.call(
        "POST",
        entry_path(U, DS, "counter") + "/increment",
        api.editor,
        json={"amount": -4, "idempotency_key": idem()},
    )
    assert status == 200
    assert got["value_json"] == "6"
    assert got["attributes"] == {"kind": "coins"} and got["user_ids"] == [3]
    # A key that does not exist yet starts from 0, as Open Cloud's increment does.
    status, fresh_counter = await api.server.call(
        "POST",
        entry_path(U, DS, "new-counter") + "/increment",
        api.editor,
        json={"amount": 5, "idempotency_key": idem()},
    )
    assert status == 200 and fresh_counter["value_json"] == "5"
    # A value that is not a whole number cannot be incremented, and the journal says it failed.
    await api.create("label", '"hello"')
    status, body = await api.server.call(
        "POST",
        entry_path(U, DS, "label") + "/increment",
        api.editor,
        json={"amount": 1, "idempotency_key": idem()},
    )
    assert status >= 400 and "whole number" in body["error"]["message"]
    assert (await api.upstream_entry("label"))[1]["value"] == "hello"
    assert (await api.journal(key="label"))[0]["status"] == "failed"


# ---------------------------------------------------------------------------------------------
# History


async def test_revisions_list_get_at_diff_and_revert(api: Api) -> None:
    v1 = await api.create("hist", '{"a":1,"b":[1,2]}', attributes={"v": 1}, user_ids=[1])
    status, v2 = await api.update(
        "hist", '{"a":2,"b":[1,2],"c":{}}', v1["revision"], attributes={"v": 2}, user_ids=[]
    )
    assert status == 200

    status, page = await api.server.call(
        "GET", entry_path(U, DS, "hist") + "/revisions", api.viewer
    )
    assert status == 200 and page["source"]["kind"] == "EMULATOR"
    listed = [item["revision"] for item in page["items"]]
    assert set(listed) == {v1["revision"], v2["revision"]}
    assert all(item["state"] == "ACTIVE" for item in page["items"])
    # Paging one at a time reaches the same revisions.
    status, first = await api.server.call(
        "GET", entry_path(U, DS, "hist") + "/revisions", api.viewer, params={"limit": "1"}
    )
    assert len(first["items"]) == 1 and first["next_cursor"]
    status, second = await api.server.call(
        "GET",
        entry_path(U, DS, "hist") + "/revisions",
        api.viewer,
        params={"limit": "1", "cursor": first["next_cursor"]},
    )
    assert {first["items"][0]["revision"], second["items"][0]["revision"]} == set(listed)

    status, old = await api.server.call(
        "GET", entry_path(U, DS, "hist") + "/revisions/" + v1["revision"], api.viewer
    )
    assert status == 200
    assert old["value_json"] == '{"a":1,"b":[1,2]}' and old["attributes"] == {"v": 1}
    assert old["user_ids"] == [1] and old["revision"] == v1["revision"]

    status, at = await api.server.call(
        "GET", entry_path(U, DS, "hist") + "/at", api.viewer, params={"time": v1["updated_at"]}
    )
    assert status == 200 and at["revision"] == v1["revision"]

    status, diff = await api.server.call(
        "GET",
        entry_path(U, DS, "hist") + "/diff",
        api.viewer,
        params={"from": v1["revision"], "to": v2["revision"]},
    )
    assert status == 200
    ops = {(op["op"], op["path"], op.get("value_json")) for op in diff["operations"]}
    assert ops == {("replace", "/a", "2"), ("add", "/c", "{}")}
    assert diff["attributes_changed"] is True and diff["user_ids_changed"] is True

    # Revert writes the old revision back as the newest, metadata included.
    status, stale = await api.server.call(
        "POST",
        entry_path(U, DS, "hist") + "/revert",
        api.editor,
        json={
            "revision": v1["revision"],
            "expected_revision": v1["revision"],
            "idempotency_key": idem(),
        },
    )
    assert status == 409 and stale["error"]["code"] == "CONFLICT"
    status, reverted = await api.server.call(
        "POST",
        entry_path(U, DS, "hist") + "/revert",
        api.editor,
        json={
            "revision": v1["revision"],
            "expected_revision": v2["revision"],
            "idempotency_key": idem(),
        },
    )
    assert status == 200
    assert reverted["value_json"] == '{"a":1,"b":[1,2]}'
    assert reverted["attributes"] == {"v": 1} and reverted["user_ids"] == [1]
    assert reverted["revision"] not in (v1["revision"], v2["revision"])
    assert (await api.journal(key="hist"))[0]["operation"] == "revert"


async def _delete(api: Api, key: str, expected: str) -> None:
    status, body = await api.server.call(
        "DELETE",
        entry_path(U, DS, key),
        api.editor,
        params={"expected_revision": expected, "idempotency_key": idem()},
    )
    assert status == 200, body


async def _revisions(api: Api, key: str) -> list[dict[str, Any]]:
    status, page = await api.server.call("GET", entry_path(U, DS, key) + "/revisions", api.viewer)
    assert status == 200, page
    items: list[dict[str, Any]] = page["items"]
    return items


async def _revert(api: Api, key: str, revision: str, expected: str) -> tuple[int, Any]:
    return await api.server.call(
        "POST",
        entry_path(U, DS, key) + "/revert",
        api.editor,
        json={"revision": revision, "expected_revision": expected, "idempotency_key": idem()},
    )


async def test_revert_restores_a_deleted_key_and_the_restore_can_be_undone(api: Api) -> None:
    v1 = await api.create("gone", '{"coins":7}', attributes={"v": 1}, user_ids=[5])
    await _delete(api, "gone", v1["revision"])
    tombstone = (await _revisions(api, "gone"))[0]
    assert tombstone["state"] == "DELETED"
    # As of the deletion, the key held nothing: the answer says deleted, with the tombstone.
    status, then = await api.server.call(
        "GET",
        entry_path(U, DS, "gone") + "/at",
        api.viewer,
        params={"time": tombstone["created_at"]},
    )
    assert status == 200 and then["state"] == "DELETED" and "value_json" not in then
    assert then["revision"] == tombstone["revision"]

    # Conditional on the deletion the user saw: an older revision id is refused.
    status, stale = await _revert(api, "gone", v1["revision"], v1["revision"])
    assert status == 409 and stale["error"]["code"] == "CONFLICT"
    assert "Nothing was restored" in stale["error"]["message"]
    assert (await api.upstream_entry("gone"))[0] == 404

    status, restored = await _revert(api, "gone", v1["revision"], tombstone["revision"])
    assert status == 200, restored
    assert restored["value_json"] == '{"coins":7}' and restored["state"] == "ACTIVE"
    assert restored["attributes"] == {"v": 1} and restored["user_ids"] == [5]
    status, upstream = await api.upstream_entry("gone")
    assert status == 200 and upstream["value"] == {"coins": 7}
    record = (await api.journal(key="gone"))[0]
    assert record["operation"] == "revert" and record["status"] == "applied"
    assert "before_sha256" not in record  # the key held nothing before

    # Undo takes the restore back: the key is deleted again.
    status, undone = await api.server.call(
        "POST", f"/journal/{record['id']}/undo", api.editor, json={"idempotency_key": idem()}
    )
    assert status == 200, undone
    assert (await api.upstream_entry("gone"))[0] == 404


async def test_restoring_a_key_a_game_server_wrote_again_keeps_the_game_write(api: Api) -> None:
    v1 = await api.create("race", '{"coins":1}')
    await _delete(api, "race", v1["revision"])
    tombstone = (await _revisions(api, "race"))[0]
    # The game saved the player meanwhile, straight into Open Cloud.
    assert api.server.upstream.emulator is not None
    opencloud = api.server.upstream.emulator.runner.app[EMULATOR].standard
    opencloud.write(str(U), DS, "global", "race", '{"coins":99}', attributes=None, user_ids=[])

    status, body = await _revert(api, "race", v1["revision"], tombstone["revision"])
    assert status == 409 and body["error"]["code"] == "CONFLICT"
    assert body["error"]["details"]["current"]["value_json"] == '{"coins":99}'
    assert "Nothing was written" in body["error"]["message"]
    assert (await api.upstream_entry("race"))[1]["value"] == {"coins": 99}
    assert [r["operation"] for r in await api.journal(key="race")] == ["delete", "create"]


async def test_unknown_revisions_and_times_before_creation_are_refused(api: Api) -> None:
    await api.create("h2", "1")
    status, body = await api.server.call(
        "GET", entry_path(U, DS, "h2") + "/revisions/NOPE", api.viewer
    )
    # Open Cloud answers 400 for a revision id it does not know; the server passes it on as the
    # client's mistake (400, not an upstream failure) and quotes the reason.
    assert status == 400 and body["error"]["code"] == "BAD_REQUEST"
    assert "version id" in body["error"]["message"]
    status, body = await api.server.call(
        "GET", entry_path(U, DS, "h2") + "/at", api.viewer, params={"time": "2001-01-01T00:00:00Z"}
    )
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    assert "no value at 2001-01-01" in body["error"]["message"]


# ---------------------------------------------------------------------------------------------
# Journal and undo


async def test_journal_lists_every_write_newest_first_with_hashes(api: Api) -> None:
    v1 = await api.create("j1", '{"n":1}')
    _, v2 = await api.update("j1", '{"n":2}', v1["revision"])
    await api.create("j2", "0")
    items = await api.journal()
    assert [(i["key"], i["operation"]) for i in items] == [
        ("j2", "create"),
        ("j1", "update"),
        ("j1", "create"),
    ]
    update = items[1]
    assert update["actor"] == "Editor" and update["status"] == "applied"
    assert update["universe_id"] == U and update["datastore"] == DS and update["scope"] == "global"
    assert update["store_kind"] == "standard"
    assert update["before_sha256"] == sha256('{"n":1}')
    assert update["after_sha256"] == sha256('{"n":2}')
    assert update["revision_after"] == v2["revision"]
    assert "before_sha256" not in items[2]  # nothing existed before the create
    # Filters and paging.
    assert [i["key"] for i in await api.journal(key="j1")] == ["j1", "j1"]
    status, page = await api.server.call("GET", "/journal", api.viewer, params={"limit": "2"})
    assert status == 200 and [i["id"] for i in page["items"]] == [items[0]["id"], items[1]["id"]]
    status, rest = await api.server.call(
        "GET", "/journal", api.viewer, params={"limit": "2", "before": str(page["next_before"])}
    )
    assert status == 200 and [i["id"] for i in rest["items"]] == [items[2]["id"]]
    assert "next_before" not in rest


async def test_undo_of_update_restores_value_and_metadata(api: Api) -> None:
    v1 = await api.create("u1", '{"gold":100}', attributes={"a": 1}, user_ids=[8])
    _, v2 = await api.update("u1", '{"gold":0}', v1["revision"], attributes={}, user_ids=[])
    journal_id = (await api.journal(key="u1"))[0]["id"]
    status, undone = await api.server.call(
        "POST", f"/journal/{journal_id}/undo", api.editor, json={"idempotency_key": idem()}
    )
    assert status == 200
    assert undone["value_json"] == '{"gold":100}'
    assert undone["attributes"] == {"a": 1} and undone["user_ids"] == [8]
    assert undone["revision"] != v2["revision"]
    upstream = (await api.upstream_entry("u1"))[1]
    assert upstream["value"] == {"gold": 100} and upstream["users"] == ["users/8"]
    items = await api.journal(key="u1")
    assert items[0]["operation"] == "undo" and items[0]["before_sha256"] == sha256('{"gold":0}')
    # The same write cannot be undone twice.
    status, body = await api.server.call(
        "POST", f"/journal/{journal_id}/undo", api.editor, json={"idempotency_key": idem()}
    )
    assert status == 400 and "already undone" in body["error"]["message"]


async def test_undo_of_create_deletes_and_undo_of_delete_restores(api: Api) -> None:
    await api.create("u2", '{"made":true}', attributes={"k": "v"})
    create_id = (await api.journal(key="u2"))[0]["id"]
    status, deleted = await api.server.call(
        "POST", f"/journal/{create_id}/undo", api.editor, json={"idempotency_key": idem()}
    )
    assert status == 200 and "journal_id" in deleted
    assert (await api.upstream_entry("u2"))[0] == 404
    # Undoing that deletion brings the value and attributes back.
    status, restored = await api.server.call(
        "POST",
        f"/journal/{deleted['journal_id']}/undo",
        api.editor,
        json={"idempotency_key": idem()},
    )
    assert status == 200
    assert restored["value_json"] == '{"made":true}' and restored["attributes"] == {"k": "v"}


async def test_undo_is_refused_when_the_entry_moved_on(api: Api) -> None:
    v1 = await api.create("u3", "1")
    assert (await api.update("u3", "2", v1["revision"]))[0] == 200
    journal_id = (await api.journal(key="u3"))[0]["id"]
    await api.second_writer("u3", 3)
    status, body = await api.server.call(
        "POST", f"/journal/{journal_id}/undo", api.editor, json={"idempotency_key": idem()}
    )
    assert status == 409 and body["error"]["code"] == "CONFLICT"
    assert body["error"]["details"]["current"]["value_json"] == "3"
    assert (await api.upstream_entry("u3"))[1]["value"] == 3  # the newer value was kept
    # Unknown journal ids are refused clearly.
    status, body = await api.server.call(
        "POST", "/journal/999999/undo", api.editor, json={"idempotency_key": idem()}
    )
    assert status in (400, 404) and "999999" in body["error"]["message"]


# ---------------------------------------------------------------------------------------------
# Idempotency


async def test_a_repeated_write_is_applied_once_with_the_same_result(api: Api) -> None:
    v1 = await api.create("idem", "1")
    key = idem()
    first = await api.update("idem", "2", v1["revision"], idempotency_key=key)
    again = await api.update("idem", "2", v1["revision"], idempotency_key=key)
    assert first[0] == again[0] == 200
    assert again[1]["revision"] == first[1]["revision"]
    assert again[1]["value_json"] == "2"
    assert [i["operation"] for i in await api.journal(key="idem")] == ["update", "create"]
    status, page = await api.server.call(
        "GET", entry_path(U, DS, "idem") + "/revisions", api.viewer
    )
    assert len(page["items"]) == 2
    # A repeated create is not ALREADY_EXISTS either: it is the same create.
    create_key = idem()
    body = {"value_json": '"x"', "idempotency_key": create_key}
    made = await api.server.call("POST", entry_path(U, DS, "idem-c"), api.editor, json=body)
    repeat = await api.server.call("POST", entry_path(U, DS, "idem-c"), api.editor, json=body)
    assert made[0] == repeat[0] == 200 and made[1]["revision"] == repeat[1]["revision"]
    # The same key for a different entry is a client bug: refused, nothing written.
    status, refused = await api.update(
        "idem", "3", again[1]["revision"], idempotency_key=create_key
    )
    assert status == 409 and refused["error"]["code"] == "CONFLICT"
    assert (await api.upstream_entry("idem"))[1]["value"] == 2


# ---------------------------------------------------------------------------------------------
# Roles and validation


async def test_viewer_reads_but_cannot_write(api: Api) -> None:
    v1 = await api.create("ro", "1")
    writes = [
        ("POST", entry_path(U, DS, "ro2"), {"json": {"value_json": "1", "idempotency_key": idem()}}),
        ("PUT", entry_path(U, DS, "ro"), {"json": {"value_json": "2", "expected_revision": v1["revision"], "idempotency_key": idem()}}),
        ("DELETE", entry_path(U, DS, "ro"), {"params": {"idempotency_key": idem()}}),
        ("POST", entry_path(U, DS, "ro") + "/increment", {"json": {"amount": 1, "idempotency_key": idem()}}),
        ("POST", entry_path(U, DS, "ro") + "/revert", {"json": {"revision": v1["revision"], "expected_revision": v1["revision"], "idempotency_key": idem()}}),
        ("POST", "/journal/1/undo", {"json": {"idempotency_key": idem()}}),
    ]  # fmt: skip
    for method, path, kwargs in writes:
        status, body = await api.server.call(method, path, api.viewer, **kwargs)
        assert status == 403, (method, path, body)
        assert body["error"]["code"] == "FORBIDDEN"
        assert body["error"]["details"] == {"needed_role": "editor", "role": "viewer"}
    assert (await api.get("ro"))[0] == 200
    assert (await api.upstream_entry("ro"))[1]["value"] == 1
    assert (await api.upstream_entry("ro2"))[0] == 404
    assert len(await api.journal()) == 1


async def test_limits_are_refused_with_clear_messages(api: Api) -> None:
    def message(body: Any) -> str:
        assert body["error"]["code"] == "BAD_REQUEST"
        text: str = body["error"]["message"]
        return text

    # 50 bytes of UTF-8, not 50 characters: 25 two-byte characters fit, 26 do not.
    await api.create("é" * 25, "1")
    status, body = await api.get("é" * 26)
    assert status == 400 and "50 bytes" in message(body) and "52" in message(body)
    # A value over 4 MiB.
    big = '"' + "a" * (4 * 1024 * 1024) + '"'
    status, body = await api.server.call(
        "POST",
        entry_path(U, DS, "big"),
        api.editor,
        json={"value_json": big, "idempotency_key": idem()},
    )
    assert status == 400
    assert "value_json" in message(body) and "4194304" in message(body)
    # Exactly 4 MiB is accepted.
    exact = '"' + "a" * (4 * 1024 * 1024 - 2) + '"'
    made = await api.create("big", exact)
    assert made["size_bytes"] == 4 * 1024 * 1024
    # Five user ids (Open Cloud takes at most four).
    status, body = await api.server.call(
        "POST",
        entry_path(U, DS, "users"),
        api.editor,
        json={"value_json": "1", "user_ids": [1, 2, 3, 4, 5], "idempotency_key": idem()},
    )
    assert status == 400 and "user_ids" in message(body) and "4" in message(body)
    # Text that is not JSON.
    status, body = await api.server.call(
        "POST",
        entry_path(U, DS, "bad"),
        api.editor,
        json={"value_json": "{not json", "idempotency_key": idem()},
    )
    assert status == 400 and "not valid JSON" in message(body)
    for key in ("users", "bad"):
        assert (await api.upstream_entry(key))[0] == 404
    # Idempotency keys are required on writes.
    status, body = await api.server.call(
        "POST", entry_path(U, DS, "nokey"), api.editor, json={"value_json": "1"}
    )
    assert status == 400 and "idempotency_key" in message(body)


async def test_a_too_long_key_is_named_as_the_key(api: Api) -> None:
    status, body = await api.get("k" * 51)
    assert status == 400
    assert "(body)" not in body["error"]["message"] and "key" in body["error"]["message"]


# ---------------------------------------------------------------------------------------------
# Events and metrics


async def test_writes_publish_entry_changed_events(api: Api) -> None:
    status, start = await api.server.call("GET", "/events", api.viewer, params={"timeout": "0"})
    assert status == 200
    cursor = start["next_cursor"]
    v1 = await api.create("ev", "1")
    _, v2 = await api.update("ev", "2", v1["revision"])
    await api.server.call(
        "DELETE", entry_path(U, DS, "ev"), api.editor, params={"idempotency_key": idem()}
    )
    status, batch = await api.server.call(
        "GET", "/events", api.viewer, params={"cursor": str(cursor), "timeout": "1"}
    )
    assert status == 200 and batch["instance_id"] == start["instance_id"]
    changed = [e for e in batch["events"] if e["type"] == "entry.changed"]
    assert {e["backend"] for e in batch["events"]} == {"EMULATOR"}
    assert [e["payload"]["operation"] for e in changed] == ["create", "update", "delete"]
    assert [e["payload"]["revision"] for e in changed[:2]] == [v1["revision"], v2["revision"]]
    assert changed[2]["payload"]["state"] == "DELETED"
    assert all(e["payload"]["actor"] == "Editor" and e["payload"]["key"] == "ev" for e in changed)
    seqs = [e["seq"] for e in batch["events"]]
    assert seqs == sorted(seqs) and batch["next_cursor"] == seqs[-1]
    # A refused write publishes nothing.
    await api.update("ev2", "1", "nope")
    status, after = await api.server.call(
        "GET", "/events", api.viewer, params={"cursor": str(batch["next_cursor"]), "timeout": "0"}
    )
    # (monitor.tick comes every finished second of Open Cloud traffic, writes or not.)
    assert status == 200
    assert [e for e in after["events"] if e["type"] != "monitor.tick"] == []


def _calls(summary: dict[str, Any], operation: str, status: str) -> float:
    return sum(
        float(s["value"])
        for s in summary["samples"]
        if s["name"] == "dsm_opencloud_calls_total"
        and s["labels"].get("operation") == operation
        and s["labels"].get("status") == status
    )


async def test_metrics_count_the_open_cloud_calls_made(api: Api) -> None:
    await api.create("m", "1")
    status, before = await api.server.call("GET", "/metrics/summary", api.viewer)
    assert status == 200
    for _ in range(3):
        assert (await api.get("m"))[0] == 200
    await api.get("missing")
    status, after = await api.server.call("GET", "/metrics/summary", api.viewer)
    assert _calls(after, "entries.get", "200") - _calls(before, "entries.get", "200") == 3
    assert _calls(after, "entries.get", "404") - _calls(before, "entries.get", "404") == 1
    assert _calls(after, "entries.create", "200") == 1
    # The Prometheus text says the same.
    status, text = await api.server.call("GET", "/metrics", api.viewer)
    assert status == 200
    line = next(
        row
        for row in text.splitlines()
        if row.startswith("dsm_opencloud_calls_total{")
        and 'operation="entries.create"' in row
        and 'status="200"' in row
    )
    assert 'backend="EMULATOR"' in line and line.endswith(" 1.0")
