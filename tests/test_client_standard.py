"""OpenCloudClient: Cloud v2 standard data stores against the emulator over loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from dsm.opencloud.client import (
    CARRY_OVER,
    AlreadyExists,
    Conflict,
    InvalidArgument,
    NotFound,
    OpenCloudClient,
    RetryPolicy,
)
from dsm.opencloud.wire import parse_time

from .conftest import API_KEY, RunningEmulator

U = 4242
DS = "players"


@pytest.fixture
async def client(emulator: RunningEmulator) -> AsyncIterator[OpenCloudClient]:
    fast = RetryPolicy(base_delay=0.001, max_delay=0.01)
    async with OpenCloudClient(api_key=API_KEY, base_url=emulator.base_url, retry=fast) as c:
        yield c


async def test_create_get_keeps_raw_value_and_metadata(client: OpenCloudClient) -> None:
    created = await client.create_entry(
        U,
        DS,
        "user_1",
        '{"coins": 5, "big": 12345678901234567890, "s": "é"}',
        attributes={"tier": "gold"},
        user_ids=[11, 22],
    )
    assert created.key == "user_1" and created.scope == "global"
    assert created.state == "ACTIVE"
    assert created.etag == created.revision_id
    got = await client.get_entry(U, DS, "user_1")
    # The value text is what the server stored, cut out of the body without re-encoding.
    assert got.value_json == '{"coins":5,"big":12345678901234567890,"s":"é"}'
    assert got.size_bytes == len(got.value_json.encode("utf-8"))
    assert got.attributes == {"tier": "gold"}
    assert got.user_ids == [11, 22]
    assert got.revision_id == created.revision_id
    assert got.create_time is not None and got.revision_create_time is not None


async def test_create_existing_raises_already_exists(client: OpenCloudClient) -> None:
    await client.create_entry(U, DS, "k", "1")
    with pytest.raises(AlreadyExists) as info:
        await client.create_entry(U, DS, "k", "2")
    assert isinstance(info.value, Conflict)
    assert info.value.status == 400
    assert "already exists" in str(info.value)


async def test_invalid_json_value_is_refused_before_sending(client: OpenCloudClient) -> None:
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        await client.create_entry(U, DS, "k", "{not json")
    with pytest.raises(InvalidArgument, match="NaN"):
        await client.create_entry(U, DS, "k", "NaN")


async def test_update_requires_explicit_metadata_and_etag_conflicts(
    client: OpenCloudClient,
) -> None:
    first = await client.create_entry(U, DS, "k", "1", attributes={"a": 1}, user_ids=[7])
    second = await client.update_entry(
        U, DS, "k", "2", attributes={"b": 2}, user_ids=[], etag=first.etag
    )
    assert second.value_json == "2" and second.attributes == {"b": 2} and second.user_ids == []
    with pytest.raises(Conflict) as info:
        await client.update_entry(U, DS, "k", "3", attributes=None, user_ids=[], etag=first.etag)
    assert info.value.status == 409
    assert "changed since it was read" in str(info.value)
    assert (await client.get_entry(U, DS, "k")).value_json == "2"


async def test_update_allow_missing_and_not_found(client: OpenCloudClient) -> None:
    with pytest.raises(NotFound):
        await client.update_entry(U, DS, "absent", "1", attributes=None, user_ids=[])
    made = await client.update_entry(
        U, DS, "absent", "1", attributes=None, user_ids=[], allow_missing=True
    )
    assert made.value_json == "1"


async def test_carry_over_keeps_attributes_and_users(client: OpenCloudClient) -> None:
    await client.create_entry(U, DS, "p", '{"v":1}', attributes={"owner": "x"}, user_ids=[1, 2])
    updated = await client.update_entry(
        U, DS, "p", '{"v":2}', attributes=CARRY_OVER, user_ids=CARRY_OVER
    )
    assert updated.attributes == {"owner": "x"} and updated.user_ids == [1, 2]
    # Mixed: carry users over, replace attributes.
    mixed = await client.update_entry(
        U, DS, "p", '{"v":3}', attributes={"owner": "y"}, user_ids=CARRY_OVER
    )
    assert mixed.attributes == {"owner": "y"} and mixed.user_ids == [1, 2]
    got = await client.get_entry(U, DS, "p")
    assert got.value_json == '{"v":3}' and got.user_ids == [1, 2]


async def test_carry_over_with_stale_etag_is_a_conflict_carrying_current(
    client: OpenCloudClient,
) -> None:
    first = await client.create_entry(U, DS, "p", "1", attributes={"a": 1}, user_ids=[])
    await client.update_entry(U, DS, "p", "2", attributes=CARRY_OVER, user_ids=CARRY_OVER)
    with pytest.raises(Conflict) as info:
        await client.update_entry(
            U, DS, "p", "3", attributes=CARRY_OVER, user_ids=CARRY_OVER, etag=first.etag
        )
    assert info.value.current is not None and info.value.current.value_json == "2"


async def test_carry_over_on_missing_entry(client: OpenCloudClient) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        await client.update_entry(U, DS, "nope", "1", attributes=CARRY_OVER, user_ids=CARRY_OVER)
    made = await client.update_entry(
        U, DS, "nope", "1", attributes=CARRY_OVER, user_ids=[5], allow_missing=True
    )
    assert made.user_ids == [5] and made.attributes is None


async def test_increment_explicit_and_carry_over(client: OpenCloudClient) -> None:
    first = await client.increment_entry(U, DS, "n", 5, attributes={"k": "v"}, user_ids=[3])
    assert first.value_json == "5" and first.attributes == {"k": "v"}
    second = await client.increment_entry(
        U, DS, "n", -2, attributes=CARRY_OVER, user_ids=CARRY_OVER
    )
    assert second.value_json == "3"
    assert second.attributes == {"k": "v"} and second.user_ids == [3]
    # Explicit metadata replaces it, as Open Cloud does.
    third = await client.increment_entry(U, DS, "n", 1, attributes=None, user_ids=[])
    assert third.value_json == "4" and third.attributes is None and third.user_ids == []
    # CARRY_OVER on a missing key creates it with the amount.
    fresh = await client.increment_entry(U, DS, "m", 9, attributes=CARRY_OVER, user_ids=CARRY_OVER)
    assert fresh.value_json == "9"


async def test_concurrent_carry_over_increments_never_lose_an_update(
    client: OpenCloudClient,
) -> None:
    await client.create_entry(U, DS, "c", "0", attributes={"keep": 1}, user_ids=[8])

    async def bump() -> None:
        await client.increment_entry(U, DS, "c", 1, attributes=CARRY_OVER, user_ids=CARRY_OVER)

    await asyncio.gather(*(bump() for _ in range(4)))
    final = await client.get_entry(U, DS, "c")
    assert final.value_json == "4"
    assert final.attributes == {"keep": 1} and final.user_ids == [8]


async def test_increment_non_integer_is_refused(client: OpenCloudClient) -> None:
    await client.create_entry(U, DS, "s", '"text"')
    with pytest.raises(InvalidArgument, match="not a whole number"):
        await client.increment_entry(U, DS, "s", 1, attributes=CARRY_OVER, user_ids=CARRY_OVER)
    with pytest.raises(InvalidArgument):
        await client.increment_entry(U, DS, "s", 1, attributes=None, user_ids=[])


async def test_delete_entry_and_show_deleted(client: OpenCloudClient) -> None:
    await client.create_entry(U, DS, "gone", "1")
    await client.create_entry(U, DS, "kept", "1")
    await client.delete_entry(U, DS, "gone")
    with pytest.raises(NotFound):
        await client.get_entry(U, DS, "gone")
    with pytest.raises(NotFound):
        await client.delete_entry(U, DS, "gone")
    live = [e.key async for e in client.iter_entries(U, DS)]
    every = [e.key async for e in client.iter_entries(U, DS, show_deleted=True)]
    assert live == ["kept"]
    assert sorted(every) == ["gone", "kept"]


async def test_list_entries_pages_prefix_and_scopes(client: OpenCloudClient) -> None:
    for i in range(7):
        await client.create_entry(U, DS, f"user_{i}", str(i))
    await client.create_entry(U, DS, "other", "0")
    await client.create_entry(U, DS, "user_x", "0", scope="season2")
    page = await client.list_entries_page(U, DS, prefix="user_", page_size=3)
    assert [e.key for e in page.items] == ["user_0", "user_1", "user_2"]
    assert page.next_page_token
    second = await client.list_entries_page(
        U, DS, prefix="user_", page_size=3, page_token=page.next_page_token
    )
    assert [e.key for e in second.items] == ["user_3", "user_4", "user_5"]
    everything = [e.key async for e in client.iter_entries(U, DS, prefix="user_", page_size=3)]
    assert everything == [f"user_{i}" for i in range(7)]
    scoped = [(e.scope, e.key) async for e in client.iter_entries(U, DS, scope="season2")]
    assert scoped == [("season2", "user_x")]
    all_scopes = {(e.scope, e.key) async for e in client.iter_entries(U, DS, scope="-")}
    assert ("season2", "user_x") in all_scopes and ("global", "other") in all_scopes
    assert len(all_scopes) == 9


async def test_get_at_revision_and_at_time_and_list_revisions(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    first = await client.create_entry(U, DS, "h", '"v1"')
    t1 = emulator.clock.now()
    emulator.clock.advance(hours=2)  # a new UTC hour keeps each revision (hourly collapse)
    await client.update_entry(U, DS, "h", '"v2"', attributes=None, user_ids=[])
    t2 = emulator.clock.now()
    emulator.clock.advance(hours=2)
    await client.update_entry(U, DS, "h", '"v3"', attributes=None, user_ids=[])

    at_first = await client.get_entry(U, DS, "h", revision_id=first.revision_id)
    assert at_first.value_json == '"v1"' and at_first.revision_id == first.revision_id
    at_time = await client.get_entry(U, DS, "h", at=t2 + timedelta(minutes=1))
    assert at_time.value_json == '"v2"'

    revisions = [r async for r in client.iter_revisions(U, DS, "h", page_size=2)]
    assert len(revisions) == 3
    assert all(r.id.startswith("h@") and r.key == "h" for r in revisions)
    windowed = [
        r
        async for r in client.iter_revisions(
            U, DS, "h", start_time=t1 + timedelta(minutes=1), end_time=t2 + timedelta(minutes=1)
        )
    ]
    assert len(windowed) == 1
    assert (await client.get_entry(U, DS, "h", revision_id=windowed[0].revision_id)).value_json == (
        '"v2"'
    )


async def test_keys_with_special_characters(client: OpenCloudClient) -> None:
    key = "a/b c@d?e#%"
    await client.create_entry(U, DS, key, "1")
    got = await client.get_entry(U, DS, key)
    assert got.value_json == "1" and got.key == key
    updated = await client.update_entry(U, DS, key, "2", attributes=CARRY_OVER, user_ids=CARRY_OVER)
    assert updated.value_json == "2"
    await client.delete_entry(U, DS, key)
    with pytest.raises(NotFound):
        await client.get_entry(U, DS, key)


async def test_data_store_list_delete_undelete_snapshot(client: OpenCloudClient) -> None:
    await client.create_entry(U, "alpha", "k", "1")
    await client.create_entry(U, "beta", "k", "1")
    await client.create_entry(U, "alpine", "k", "1")
    names = [s.name async for s in client.iter_data_stores(U, page_size=1)]
    assert names == ["alpha", "alpine", "beta"]
    prefixed = await client.list_data_stores_page(U, prefix="alp")
    assert [s.name for s in prefixed.items] == ["alpha", "alpine"]

    deleted = await client.delete_data_store(U, "beta")
    assert deleted.state == "DELETED" and deleted.expire_time is not None
    assert [s.name async for s in client.iter_data_stores(U)] == ["alpha", "alpine"]
    shown = {s.name: s.state async for s in client.iter_data_stores(U, show_deleted=True)}
    assert shown["beta"] == "DELETED"
    with pytest.raises(NotFound):
        await client.get_entry(U, "beta", "k")
    restored = await client.undelete_data_store(U, "beta")
    assert restored.state == "ACTIVE"
    assert (await client.get_entry(U, "beta", "k")).value_json == "1"

    snap = await client.snapshot_data_stores(U)
    again = await client.snapshot_data_stores(U)
    assert snap.new_snapshot_taken is True and again.new_snapshot_taken is False
    assert again.latest_snapshot_time == snap.latest_snapshot_time


# ------------------------------------------- answers shaped like the real Open Cloud's


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # recorded from Open Cloud: v2 times at 100 ns precision, v1 body and header times
        ("2024-07-22T19:06:55.829412600Z", datetime(2024, 7, 22, 19, 6, 55, 829412, UTC)),
        ("2022-02-18T22:38:59.9244932Z", datetime(2022, 2, 18, 22, 38, 59, 924493, UTC)),
        ("2022-02-02T23:30:06.5388799+00:00", datetime(2022, 2, 2, 23, 30, 6, 538879, UTC)),
        ("2023-07-05T12:34:56Z", datetime(2023, 7, 5, 12, 34, 56, tzinfo=UTC)),
        ("2023-07-05T14:34:56.5+02:00", datetime(2023, 7, 5, 12, 34, 56, 500000, UTC)),
    ],
)
def test_timestamps_parse_at_every_precision_roblox_sends(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


async def test_times_with_nine_digits_come_back_exact(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    emulator.clock.set(emulator.clock.now().replace(microsecond=829412))
    created = await client.create_entry(U, DS, "t", "1")
    assert created.create_time == emulator.clock.now()
    assert created.revision_create_time == emulator.clock.now()
    [revision] = [r async for r in client.iter_revisions(U, DS, "t")]
    assert revision.revision_create_time == emulator.clock.now()


async def test_delete_answering_an_empty_object_is_a_quiet_success(
    client: OpenCloudClient,
) -> None:
    await client.create_entry(U, DS, "gone", "1")
    assert await client.delete_entry(U, DS, "gone") is None
    with pytest.raises(NotFound):
        await client.delete_entry(U, DS, "gone")


async def test_revision_ids_with_hex_counters_round_trip(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    created = await client.create_entry(U, DS, "n", "0")
    kept = [created.revision_id]
    for value in range(1, 12):
        emulator.clock.advance(hours=1)
        updated = await client.update_entry(U, DS, "n", str(value), attributes=None, user_ids=[])
        kept.append(updated.revision_id)
    assert [r.split(".")[1] for r in kept[9:]] == ["000000000A", "000000000B", "000000000C"]
    for value, revision in enumerate(kept):
        got = await client.get_entry(U, DS, "n", revision_id=revision)
        assert got.value_json == str(value)


async def test_a_time_more_than_ten_minutes_ahead_is_invalid(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    await client.create_entry(U, DS, "f", "1")
    soon = emulator.clock.now() + timedelta(minutes=9)
    assert (await client.get_entry(U, DS, "f", at=soon)).value_json == "1"
    with pytest.raises(InvalidArgument, match="ten minutes"):
        await client.get_entry(U, DS, "f", at=emulator.clock.now() + timedelta(minutes=11))


async def test_undeleting_an_active_data_store_is_invalid(client: OpenCloudClient) -> None:
    await client.create_entry(U, "live", "k", "1")
    with pytest.raises(InvalidArgument, match="is not deleted"):
        await client.undelete_data_store(U, "live")


async def test_an_empty_page_with_a_token_is_not_the_end(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    """Open Cloud checks at most 512 data stores per call when hiding deleted ones: a page can
    be empty and still go on."""
    standard = emulator.ctx.standard
    for n in range(515):
        standard.write(str(U), f"old{n:03d}", "global", "k", "1", attributes=None, user_ids=[])
        standard.delete_datastore(str(U), f"old{n:03d}")
    await client.create_entry(U, "zeta", "k", "1")
    first = await client.list_data_stores_page(U, page_size=100)
    assert first.items == [] and first.next_page_token
    assert [s.name async for s in client.iter_data_stores(U)] == ["zeta"]
