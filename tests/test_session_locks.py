"""Session-locking save wrappers: detection, holders, staleness, byte-exact data edits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from dsm.services.jobs.session_locks import (
    SessionHolder,
    SessionLockError,
    detect,
    held_since,
    replace_data,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())

# As ProfileStore saves a profile held by a server (an empty Luau table is stored as []).
PROFILESTORE_HELD = (
    '{"Data":{"Coins":12345678901234567890,"Inventory":[],"Name":"Zoë"},'
    '"MetaData":{"ProfileCreateTime":1700000000,"SessionLoadCount":7,'
    '"ActiveSession":[1818,"6a1c3e2e-0000-4e5b-9d2a-1c2b3c4d5e6f","{A1B2C3D4-0000-1111-2222-333344445555}"],'
    f'"LastUpdate":{T - 100},"MetaTags":[]}},'
    '"RobloxMetaData":[],"UserIds":[42],"GlobalUpdates":[0,[]]}'
)
PROFILESTORE_RELEASED = (
    '{"Data":[],"MetaData":{"ProfileCreateTime":1700000000,"SessionLoadCount":3,'
    f'"LastUpdate":{T - 5000},"MetaTags":[]}},"RobloxMetaData":[],"UserIds":[],'
    '"GlobalUpdates":[2,[[2,{"gift":5}]]]}'
)
# ProfileService: a two-element ActiveSession, four-element global updates, no RobloxMetaData.
PROFILESERVICE_HELD = (
    '{ "Data" : { "Gems" : 5 } , "MetaData" : { "ProfileCreateTime" : 1600000000 ,'
    ' "SessionLoadCount" : 2 , "ActiveSession" : [ 920587237 , "" ] ,'
    f' "ForceLoadSession" : [ 555 , "waiting-job" ] , "LastUpdate" : {T - 1000} ,'
    ' "MetaTags" : { } } , "GlobalUpdates" : [ 1 , [ [ 1 , 1 , false , { "x" : 1 } ] ] ] }'
)
LAPIS_HELD = (
    '{"migrationVersion":2,"lastCompatibleVersion":1,"lockId":"8B1E-LOCK","data":{"level":3}}'
)
LAPIS_RELEASED = '{"migrationVersion":0,"data":[1,2,3]}'


def test_profilestore_held_with_holder_and_last_update() -> None:
    lock = detect(PROFILESTORE_HELD, now=NOW)
    assert lock is not None
    assert (lock.kind, lock.state, lock.held) == ("ProfileStore", "held", True)
    assert lock.holder == SessionHolder(
        1818, "6a1c3e2e-0000-4e5b-9d2a-1c2b3c4d5e6f", "{A1B2C3D4-0000-1111-2222-333344445555}"
    )
    assert lock.last_update == NOW - timedelta(seconds=100)
    assert lock.stale_after_seconds == 630 and lock.load_count == 7
    assert lock.data_json == '{"Coins":12345678901234567890,"Inventory":[],"Name":"Zoë"}'
    text = lock.describe(NOW)
    assert "Held by place 1818, server 6a1c3e2e" in text and "last saved 100 s ago" in text


def test_profilestore_session_past_assume_dead_is_stale() -> None:
    lock = detect(PROFILESTORE_HELD, now=NOW + timedelta(seconds=531))
    assert lock is not None and lock.state == "stale" and not lock.held
    assert "looks dead" in lock.describe(NOW + timedelta(seconds=531))
    assert detect(PROFILESTORE_HELD, now=NOW + timedelta(seconds=530)).held  # type: ignore[union-attr]


def test_released_profilestore() -> None:
    lock = detect(PROFILESTORE_RELEASED, now=NOW)
    assert lock is not None
    assert (lock.kind, lock.state, lock.holder, lock.data_json) == (
        "ProfileStore",
        "released",
        None,
        "[]",
    )
    assert "not in use" in lock.describe(NOW)


def test_profileservice_held_with_a_server_waiting() -> None:
    lock = detect(PROFILESERVICE_HELD, now=NOW)
    assert lock is not None
    assert (lock.kind, lock.state, lock.stale_after_seconds) == ("ProfileService", "held", 1800)
    assert lock.holder == SessionHolder(920587237, "", None)
    assert lock.waiting == SessionHolder(555, "waiting-job", None)
    assert lock.data_json == '{ "Gems" : 5 }'
    assert "(Studio, no job id)" in lock.describe(
        NOW
    ) and "waiting to take it over" in lock.describe(NOW)
    assert detect(PROFILESERVICE_HELD, now=NOW + timedelta(seconds=801)).state == "stale"  # type: ignore[union-attr]


def test_profileservice_recognised_when_released_by_its_global_updates() -> None:
    released = PROFILESERVICE_HELD.replace('"ActiveSession" : [ 920587237 , "" ] ,', "")
    lock = detect(released, now=NOW)
    assert lock is not None and (lock.kind, lock.state) == ("ProfileService", "released")


def test_a_session_without_last_update_counts_as_held() -> None:
    doc = json.loads(PROFILESTORE_HELD)
    del doc["MetaData"]["LastUpdate"]
    lock = detect(json.dumps(doc), now=NOW + timedelta(days=30))
    assert lock is not None and lock.held and lock.last_update is None


def test_lapis_uses_the_entry_updated_time() -> None:
    lock = detect(LAPIS_HELD, now=NOW, updated=NOW - timedelta(seconds=1799))
    assert lock is not None
    assert (lock.kind, lock.state, lock.data_member, lock.data_json) == (
        "Lapis",
        "held",
        "data",
        '{"level":3}',
    )
    assert lock.holder == SessionHolder(None, None, "8B1E-LOCK")
    assert "lock 8B1E-LOCK" in lock.describe(NOW)
    assert detect(LAPIS_HELD, now=NOW, updated=NOW - timedelta(seconds=1800)).state == "stale"  # type: ignore[union-attr]
    assert detect(LAPIS_HELD, now=NOW).held  # type: ignore[union-attr]  # unknown update time
    released = detect(LAPIS_RELEASED, now=NOW)
    assert released is not None and released.state == "released" and released.data_json == "[1,2,3]"


@pytest.mark.parametrize(
    "value",
    [
        '{"coins": 5}',
        "[1, 2]",
        "not json",
        '{"Data": 5, "MetaData": {}, "GlobalUpdates": [0, []]}',  # Data must be a table
        '{"Data": {}, "MetaData": [], "GlobalUpdates": [0, []]}',
        '{"data": 1}',  # no migrationVersion: not Lapis
        '{"Data": {}, "Data": {}, "MetaData": {}, "GlobalUpdates": [0, []]}',  # ambiguous
    ],
)
def test_other_values_are_not_wrappers(value: str) -> None:
    assert detect(value, now=NOW) is None


@pytest.mark.parametrize(
    ("value", "new", "member"),
    [
        (PROFILESTORE_HELD, '{"Coins":1,"Inventory":["sword"]}', "Data"),
        (PROFILESERVICE_HELD, '{"Gems": 6}', "Data"),
        (LAPIS_HELD, '"just a string"', "data"),
        (LAPIS_RELEASED, "null", "data"),
    ],
)
def test_replace_data_keeps_every_other_byte(value: str, new: str, member: str) -> None:
    lock = detect(value, now=NOW)
    assert lock is not None
    out = replace_data(value, new)
    start = value.index(lock.data_json, value.index(f'"{member}"'))
    end = start + len(lock.data_json)
    # Literally: the bytes before and after the data part are the original bytes.
    assert out.encode()[: len(value[:start].encode())] == value[:start].encode()
    assert out.endswith(value[end:])
    assert out == value[:start] + new + value[end:]
    after = detect(out, now=NOW)
    assert after is not None and after.data_json == new
    assert (after.holder, after.state, after.kind) == (lock.holder, lock.state, lock.kind)


def test_replace_data_refuses_what_would_break_the_wrapper() -> None:
    with pytest.raises(SessionLockError, match="needs its Data to be a table"):
        replace_data(PROFILESTORE_HELD, "5")
    with pytest.raises(SessionLockError, match="not JSON"):
        replace_data(PROFILESTORE_HELD, "{")
    with pytest.raises(SessionLockError, match="not a ProfileStore"):
        replace_data('{"coins": 1}', "{}")


def test_held_since_walks_the_revisions_of_the_same_session() -> None:
    lock = detect(PROFILESTORE_HELD, now=NOW)
    assert lock is not None
    other = PROFILESTORE_HELD.replace('"SessionLoadCount":7', '"SessionLoadCount":6')
    history = [
        (NOW - timedelta(minutes=1), PROFILESTORE_HELD),
        (NOW - timedelta(hours=1), PROFILESTORE_HELD.replace('"Coins":1234', '"Coins":1')),
        (NOW - timedelta(hours=2), other),  # the same server's previous session
        (NOW - timedelta(hours=3), PROFILESTORE_HELD),
    ]
    assert held_since(lock, history) == NOW - timedelta(hours=1)
    assert held_since(lock, []) is None
    released = detect(PROFILESTORE_RELEASED, now=NOW)
    assert released is not None and held_since(released, history) is None
