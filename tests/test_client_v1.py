"""OpenCloudClient: legacy v1 standard data store calls against the emulator."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator

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

from .conftest import API_KEY, RunningEmulator

U = 555
DS = "inventory"


@pytest.fixture
async def client(emulator: RunningEmulator) -> AsyncIterator[OpenCloudClient]:
    fast = RetryPolicy(base_delay=0.001, max_delay=0.01)
    async with OpenCloudClient(api_key=API_KEY, base_url=emulator.base_url, retry=fast) as c:
        yield c


async def test_set_and_get_exact_bytes_with_md5(client: OpenCloudClient) -> None:
    raw = '{ "name" : "Ünïcode",  "n": 1.50 }'.encode()
    version = await client.v1_set_entry(
        U, DS, "k", raw, attributes={"a": "b"}, user_ids=[9], exclusive_create=True
    )
    assert version.content_length == len(raw) and not version.deleted
    got = await client.v1_get_entry(U, DS, "k")
    assert got.raw == raw  # byte for byte, no re-encoding
    assert got.value_json == raw.decode("utf-8")
    assert got.content_md5 == base64.b64encode(hashlib.md5(raw).digest()).decode()
    assert got.version == version.version
    assert got.attributes == {"a": "b"} and got.user_ids == [9]
    # The same entry through v2 has the same revision id.
    assert (await client.get_entry(U, DS, "k")).revision_id == got.version


async def test_match_version_and_412_conflict_carries_current(client: OpenCloudClient) -> None:
    first = await client.v1_set_entry(U, DS, "k", b"1", attributes=None, user_ids=[])
    second = await client.v1_set_entry(
        U, DS, "k", b"2", attributes=None, user_ids=[4], match_version=first.version
    )
    with pytest.raises(Conflict) as info:
        await client.v1_set_entry(
            U, DS, "k", b"3", attributes=None, user_ids=[], match_version=first.version
        )
    assert info.value.status == 412
    current = info.value.current
    assert current is not None
    assert current.raw == b"2" and current.version == second.version and current.user_ids == [4]


async def test_exclusive_create_conflict_is_already_exists(client: OpenCloudClient) -> None:
    await client.v1_set_entry(U, DS, "k", b"1", attributes=None, user_ids=[])
    with pytest.raises(AlreadyExists) as info:
        await client.v1_set_entry(
            U, DS, "k", b"2", attributes=None, user_ids=[], exclusive_create=True
        )
    assert info.value.current is not None and info.value.current.raw == b"1"
    with pytest.raises(InvalidArgument, match="not both"):
        await client.v1_set_entry(
            U,
            DS,
            "k",
            b"2",
            attributes=None,
            user_ids=[],
            exclusive_create=True,
            match_version="x",
        )


async def test_set_carry_over_keeps_metadata(client: OpenCloudClient) -> None:
    await client.v1_set_entry(U, DS, "k", b'"a"', attributes={"x": 1}, user_ids=[1, 2])
    await client.v1_set_entry(U, DS, "k", b'"b"', attributes=CARRY_OVER, user_ids=CARRY_OVER)
    got = await client.v1_get_entry(U, DS, "k")
    assert got.raw == b'"b"' and got.attributes == {"x": 1} and got.user_ids == [1, 2]
    # Carry-over on a missing key becomes an exclusive create.
    await client.v1_set_entry(U, DS, "new", b"0", attributes=CARRY_OVER, user_ids=CARRY_OVER)
    assert (await client.v1_get_entry(U, DS, "new")).raw == b"0"


async def test_versions_sort_order_and_get_version(
    client: OpenCloudClient, emulator: RunningEmulator
) -> None:
    written = []
    for value in (b"1", b"2", b"3"):
        written.append(await client.v1_set_entry(U, DS, "k", value, attributes=None, user_ids=[]))
        emulator.clock.advance(hours=1)
    await client.delete_entry(U, DS, "k")
    ascending = [v async for v in client.v1_iter_versions(U, DS, "k", page_size=2)]
    descending = [v async for v in client.v1_iter_versions(U, DS, "k", descending=True)]
    assert [v.version for v in ascending[:3]] == [w.version for w in written]
    assert [v.version for v in descending] == [v.version for v in reversed(ascending)]
    assert ascending[-1].deleted is True
    old = await client.v1_get_version(U, DS, "k", written[1].version)
    assert old.raw == b"2" and not old.deleted
    tomb = await client.v1_get_version(U, DS, "k", ascending[-1].version)
    assert tomb.deleted and tomb.raw == b"" and tomb.value_json is None
    with pytest.raises(NotFound):
        await client.v1_get_entry(U, DS, "k")


async def test_version_list_time_window(client: OpenCloudClient, emulator: RunningEmulator) -> None:
    await client.v1_set_entry(U, DS, "k", b"1", attributes=None, user_ids=[])
    emulator.clock.advance(hours=1)
    start = emulator.clock.now()
    await client.v1_set_entry(U, DS, "k", b"2", attributes=None, user_ids=[])
    emulator.clock.advance(hours=1)
    await client.v1_set_entry(U, DS, "k", b"3", attributes=None, user_ids=[])
    page = await client.v1_list_versions_page(U, DS, "k", start_time=start)
    assert len(page.items) == 2 and page.next_page_token is None


async def test_invalid_value_is_refused_before_sending(client: OpenCloudClient) -> None:
    with pytest.raises(InvalidArgument, match="UTF-8 JSON"):
        await client.v1_set_entry(U, DS, "k", b"\xff", attributes=None, user_ids=[])
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        await client.v1_set_entry(U, DS, "k", "{", attributes=None, user_ids=[])
