"""OpenCloudClient: ordered data stores v2, memory stores and messaging against the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from dsm.opencloud.client import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    OpenCloudClient,
    RetryPolicy,
)

from .conftest import API_KEY, RunningEmulator

U = 777


@pytest.fixture
async def client(emulator: RunningEmulator) -> AsyncIterator[OpenCloudClient]:
    fast = RetryPolicy(base_delay=0.001, max_delay=0.01)
    async with OpenCloudClient(api_key=API_KEY, base_url=emulator.base_url, retry=fast) as c:
        yield c


# ------------------------------------------------------------------ ordered data stores


async def test_ordered_create_get_update_increment_delete(client: OpenCloudClient) -> None:
    created = await client.ordered_create(U, "wins", "alice", 10)
    assert (created.id, created.value) == ("alice", 10)
    assert created.path == "universes/777/ordered-data-stores/wins/scopes/global/entries/alice"
    with pytest.raises(AlreadyExists):
        await client.ordered_create(U, "wins", "alice", 11)
    assert (await client.ordered_get(U, "wins", "alice")).value == 10
    assert (await client.ordered_update(U, "wins", "alice", 15)).value == 15
    with pytest.raises(NotFound):
        await client.ordered_update(U, "wins", "bob", 1)
    assert (await client.ordered_update(U, "wins", "bob", 1, allow_missing=True)).value == 1
    assert (await client.ordered_increment(U, "wins", "alice", -5)).value == 10
    await client.ordered_delete(U, "wins", "alice")
    with pytest.raises(NotFound):
        await client.ordered_get(U, "wins", "alice")
    with pytest.raises(NotFound):
        await client.ordered_delete(U, "wins", "alice")
    with pytest.raises(InvalidArgument):
        await client.ordered_create(U, "wins", "x", 1.5)  # type: ignore[arg-type]


async def test_ordered_list_order_filter_and_pages(client: OpenCloudClient) -> None:
    for name, value in [("a", 5), ("b", 50), ("c", 20), ("d", 35), ("e", 1)]:
        await client.ordered_create(U, "score", name, value, scope="s1")
    ascending = [e.value async for e in client.ordered_iter(U, "score", scope="s1", page_size=2)]
    assert ascending == [1, 5, 20, 35, 50]
    page = await client.ordered_list_page(U, "score", scope="s1", descending=True, page_size=2)
    assert [e.id for e in page.items] == ["b", "d"] and page.next_page_token
    ranged = [
        e.id async for e in client.ordered_iter(U, "score", scope="s1", min_value=5, max_value=35)
    ]
    assert ranged == ["a", "c", "d"]
    assert [e.value async for e in client.ordered_iter(U, "score")] == []  # other scope


# ---------------------------------------------------------------------- sorted maps


async def test_sorted_map_crud_and_listing(client: OpenCloudClient) -> None:
    first = await client.sorted_map_create(
        U, "lobby", "p1", '{"elo": 1200}', ttl_seconds=120, sort_key=1200
    )
    assert first.value_json == '{"elo":1200}' and first.numeric_sort_key == 1200
    assert first.path == "cloud/v2/universes/777/memory-store/sorted-maps/lobby/items/p1"
    assert first.expire_time is not None
    with pytest.raises(AlreadyExists):
        await client.sorted_map_create(U, "lobby", "p1", "1", ttl_seconds=60)
    await client.sorted_map_create(U, "lobby", "p2", '"two"', ttl_seconds=60, sort_key="b")
    await client.sorted_map_create(U, "lobby", "p3", "[3]", ttl_seconds=60)
    got = await client.sorted_map_get(U, "lobby", "p2")
    assert got.value_json == '"two"' and got.string_sort_key == "b"
    updated = await client.sorted_map_update(U, "lobby", "p2", '"2!"', ttl_seconds=60)
    assert updated.value_json == '"2!"'
    with pytest.raises(NotFound):
        await client.sorted_map_update(U, "lobby", "p9", "9", ttl_seconds=60)
    made = await client.sorted_map_update(U, "lobby", "p9", "9", ttl_seconds=60, allow_missing=True)
    assert made.value_json == "9"

    ids = [i.id async for i in client.sorted_map_iter(U, "lobby", page_size=2)]
    assert ids == ["p1", "p2", "p3", "p9"]
    desc = await client.sorted_map_list_page(U, "lobby", descending=True, page_size=10)
    assert [i.id for i in desc.items] == ["p9", "p3", "p2", "p1"]
    window = await client.sorted_map_list_page(
        U, "lobby", filter='id > "p1" && id < "p9"', page_size=10
    )
    assert [i.id for i in window.items] == ["p2", "p3"]

    await client.sorted_map_delete(U, "lobby", "p3")
    with pytest.raises(NotFound):
        await client.sorted_map_get(U, "lobby", "p3")


# --------------------------------------------------------------------------- queues


async def test_queue_add_read_invisibility_and_discard(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    low = await client.queue_add(U, "jobs", '{"job": "low"}', priority=1, ttl_seconds=600)
    assert low.data_json == '{"job":"low"}' and low.priority == 1
    await client.queue_add(U, "jobs", '{"job": "high"}', priority=5)
    read = await client.queue_read(U, "jobs", count=1, invisibility_window_seconds=30)
    assert [i.data_json for i in read.items] == ['{"job":"high"}'] and read.read_id
    # The read item is invisible to other readers during the window.
    other = await client.queue_read(U, "jobs", count=10)
    assert [i.data_json for i in other.items] == ['{"job":"low"}']
    await client.queue_discard(U, "jobs", read.read_id)
    emulator.clock.advance(seconds=60)  # undiscarded items come back after their window
    again = await client.queue_read(U, "jobs", count=10)
    assert [i.data_json for i in again.items] == ['{"job":"low"}']
    with pytest.raises(NotFound):
        await client.queue_read(U, "jobs", count=5, all_or_nothing=True)
    with pytest.raises(InvalidArgument):
        await client.queue_read(U, "jobs", invisibility_window_seconds=0)


# ------------------------------------------------------------- flush and messaging


async def test_flush_memory_store_and_poll(client: OpenCloudClient) -> None:
    await client.sorted_map_create(U, "m", "k", "1", ttl_seconds=60)
    operation = await client.flush_memory_store(U)
    assert operation.path.startswith("cloud/v2/universes/777/memory-store/operations/")
    polled = await client.get_flush_operation(U, operation.operation_id)
    assert polled.done and polled.error is None
    with pytest.raises(NotFound):
        await client.sorted_map_get(U, "m", "k")


async def test_publish_message(client: OpenCloudClient, emulator: RunningEmulator) -> None:
    await client.publish_message(U, "announcements", "server restart at 5")
    async with emulator.http.get(emulator.url("/_emulator/messages")) as resp:
        messages = (await resp.json())["messages"]
    assert [(m["topic"], m["message"]) for m in messages] == [
        ("announcements", "server restart at 5")
    ]
    with pytest.raises(InvalidArgument):
        await client.publish_message(U, "t" * 81, "too long a topic")


# ------------------------------------------- answers shaped like the real Open Cloud's


async def test_delete_discard_and_flush_answers_parse(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    """An ordered delete answers `{}` (recorded from Open Cloud), a queue discard no body at all
    (the spec), a finished flush carries `response`: the client takes each in its stride."""
    await client.ordered_create(U, "wins", "zed", 3)
    assert await client.ordered_delete(U, "wins", "zed") is None
    await client.queue_add(U, "q", "1")
    read = await client.queue_read(U, "q", count=1)
    assert await client.queue_discard(U, "q", read.read_id) is None
    emulator.clock.advance(seconds=60)
    assert (await client.queue_read(U, "q", count=5)).items == []
    started = await client.flush_memory_store(U)
    assert not started.done and started.response is None and started.error is None
    done = await client.get_flush_operation(U, started.operation_id)
    assert done.done and done.response == {} and done.error is None


async def test_expire_times_are_whole_seconds(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    emulator.clock.advance(seconds=0.25)
    now = emulator.clock.now()
    item = await client.sorted_map_create(U, "m", "k", "1", ttl_seconds=60)
    queued = await client.queue_add(U, "q", "1", ttl_seconds=60)
    for expire in (item.expire_time, queued.expire_time):
        assert expire is not None and expire.microsecond == 0
        assert expire == (now + timedelta(seconds=61)).replace(microsecond=0)
