"""Any legal key round-trips (security suite): names made of every reserved character.

Open Cloud puts verbs (`:listRevisions`, `:increment`, `:undelete`) and revision selectors
(`@rev`, `@latest:<time>`) in the same path segment as a key, so a key named
`k:listRevisions` used to be read back as that verb. Each key here goes through the client
against the emulator, and through the companion server's API as the plugin sends it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from dsm.opencloud.client import CARRY_OVER, OpenCloudClient
from dsm.opencloud.errors import NotFound
from dsm.opencloud.retry import RetryPolicy
from dsm.opencloud.wire import seg
from tools.testing.server import Server, idem, running_server, store_path

from .conftest import API_KEY, RunningEmulator

KEYS = [
    "k:listRevisions",
    "k:increment",
    "s:undelete",
    "a@b",
    "a@latest",
    "a@latest:2020-01-01T00:00:00Z",
    "@",
    ":",
    "a/b",
    "a/../b",
    "..",
    ".",
    "a?b=c&d",
    "a#frag",
    "a%2Fb",
    "100%",
    "%",
    "a b",
    "a+b",
    "[ipv6]",
    "{}",
    "!$&'()*+,;=",
    ":/?#[]@!$&'()*+,;=%",
    "é",
    "鍵",
    "😀",
    "~-_.",
    "\\",
    '"',
    "<>|^`",
]
UNIVERSE = 1


def entry_path(universe: int, datastore: str, key: str) -> str:
    """As the plugin's Api.encodeComponent builds it: a segment of only dots is encoded too."""
    return f"{store_path(universe, datastore)}/entries/{seg(key)}"


@pytest.fixture
async def client(emulator: RunningEmulator) -> AsyncIterator[OpenCloudClient]:
    fast = RetryPolicy(base_delay=0.001, max_delay=0.01)
    async with OpenCloudClient(api_key=API_KEY, base_url=emulator.base_url, retry=fast) as c:
        yield c


@pytest.mark.parametrize("key", KEYS)
async def test_the_client_round_trips_every_key(client: OpenCloudClient, key: str) -> None:
    store = "Keys"
    created = await client.create_entry(UNIVERSE, store, key, "1")
    assert created.value_json == "1"
    read = await client.get_entry(UNIVERSE, store, key)
    assert (read.value_json, read.revision_id) == ("1", created.revision_id)
    at_revision = await client.get_entry(UNIVERSE, store, key, revision_id=created.revision_id)
    assert at_revision.value_json == "1"
    revisions = await client.list_revisions_page(UNIVERSE, store, key)
    assert [r.revision_id for r in revisions.items] == [created.revision_id]
    bumped = await client.increment_entry(
        UNIVERSE, store, key, 2, attributes=CARRY_OVER, user_ids=CARRY_OVER
    )
    assert json.loads(bumped.value_json or "null") == 3
    listed = await client.list_entries_page(UNIVERSE, store, prefix=key)
    assert key in [ref.key for ref in listed.items]
    await client.delete_entry(UNIVERSE, store, key)
    with pytest.raises(NotFound):
        await client.get_entry(UNIVERSE, store, key)
    # The verb-like key never touched a neighbour named by its prefix.
    with pytest.raises(NotFound):
        await client.get_entry(UNIVERSE, store, key.split(":")[0].split("@")[0] or "x")


@pytest.mark.parametrize("store", ["d:undelete", "d@x", "d/e", "d%", ":"])
async def test_the_client_deletes_and_undeletes_stores_with_reserved_names(
    client: OpenCloudClient, store: str
) -> None:
    await client.create_entry(UNIVERSE, store, "k", "1")
    deleted = await client.delete_data_store(UNIVERSE, store)
    assert deleted.name == store and deleted.state == "DELETED"
    restored = await client.undelete_data_store(UNIVERSE, store)
    assert restored.name == store and restored.state == "ACTIVE"
    assert (await client.get_entry(UNIVERSE, store, "k")).value_json == "1"


@pytest.mark.parametrize("entry_id", ["e:increment", "e@1", "e/f", "e%", ":", "é:😀"])
async def test_the_client_round_trips_ordered_ids(client: OpenCloudClient, entry_id: str) -> None:
    await client.ordered_create(UNIVERSE, "Board", entry_id, 5)
    assert (await client.ordered_get(UNIVERSE, "Board", entry_id)).value == 5
    assert (await client.ordered_increment(UNIVERSE, "Board", entry_id, 2)).value == 7
    await client.ordered_delete(UNIVERSE, "Board", entry_id)
    with pytest.raises(NotFound):
        await client.ordered_get(UNIVERSE, "Board", entry_id)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Server, str]]:
    async with running_server(tmp_path) as running:
        yield running, await running.pair()


async def call(
    running: Server, method: str, path: str, token: str, **kwargs: Any
) -> tuple[int, Any]:
    """Like Server.call, but the URL goes out exactly as encoded (HttpService does not
    normalise it; yarl would turn `%2E%2E` back into `..` and resolve it)."""
    url = URL(running.url("/api/v1" + path), encoded=True)
    if method in ("POST", "PUT") and "json" not in kwargs:
        kwargs["json"] = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with running.http.request(method, url, headers=headers, **kwargs) as response:
        return response.status, await response.json()


async def test_the_server_round_trips_every_key(server: tuple[Server, str]) -> None:
    running, token = server
    store = "Keys"
    # One universe per key: the server paces writes to each universe's Open Cloud budget.
    for universe, key in enumerate(KEYS, start=1):
        path = entry_path(universe, store, key)
        status, created = await call(
            running, "POST", path, token, json={"value_json": "1", "idempotency_key": idem()}
        )
        assert status == 200 and created["key"] == key, (key, created)
        status, read = await call(running, "GET", path, token)
        assert status == 200 and read["key"] == key and read["value_json"] == "1", (key, read)
        status, updated = await call(
            running,
            "PUT",
            path,
            token,
            json={
                "value_json": "2",
                "expected_revision": read["revision"],
                "idempotency_key": idem(),
            },
        )
        assert status == 200 and updated["value_json"] == "2", (key, updated)
        status, revisions = await call(running, "GET", path + "/revisions", token)
        assert status == 200 and revisions["items"], (key, revisions)
        status, old = await call(
            running, "GET", path + f"/revisions/{revisions['items'][-1]['revision']}", token
        )
        assert status == 200 and old["key"] == key, (key, old)
        status, bumped = await call(
            running,
            "POST",
            path + "/increment",
            token,
            json={"amount": 3, "idempotency_key": idem()},
        )
        assert status == 200 and bumped["value_json"] == "5", (key, bumped)
        status, journal = await call(running, "GET", "/journal", token, params={"key": key})
        assert status == 200 and {item["key"] for item in journal["items"]} == {key}
        status, deleted = await call(
            running, "DELETE", path, token, params={"idempotency_key": idem()}
        )
        assert status == 200, (key, deleted)
        status, gone = await call(running, "GET", path, token)
        assert status == 404, (key, gone)
        status, keys = await call(
            running,
            "GET",
            store_path(universe, store) + "/keys",
            token,
            params={"show_deleted": "true"},
        )
        assert status == 200 and [item["key"] for item in keys["items"]] == [key], keys
