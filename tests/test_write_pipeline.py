"""The one journaled write path: concurrent retries, and the four ways a write used to lose data.

Every test runs the real server on its embedded emulator; "the game" is a second Open Cloud
client writing straight to the emulator, as a live game server writes straight to Open Cloud.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dsm.http.appkeys import DATA
from dsm.opencloud.client import CARRY_OVER, NotFound, OpenCloudClient
from dsm.storage.crypto import new_key
from dsm.storage.journal import EntryImage, Status, WriteJournal
from shared_schema.common import Role
from tools.testing.emulator import set_faults
from tools.testing.server import Server, entry_path, idem, running_server

U, DS = 1, "players"
LB = f"/universes/{U}/ordered/wins/scopes/global/entries"


@dataclass
class Setup:
    server: Server
    token: str
    game: OpenCloudClient

    @property
    def journal(self) -> WriteJournal:
        return self.server.app[DATA].journal.journal

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.server.call(method, path, self.token, **kwargs)

    async def create(self, key: str, value: Any) -> dict[str, Any]:
        status, view = await self.call(
            "POST",
            entry_path(U, DS, key),
            json={"value_json": json.dumps(value), "idempotency_key": idem()},
        )
        assert status == 200, view
        result: dict[str, Any] = view
        return result

    async def value(self, key: str) -> Any:
        entry = await self.game.get_entry(U, DS, key)
        return json.loads(entry.value_json or "null")

    async def undo(self, journal_id: int) -> tuple[int, Any]:
        return await self.call(
            "POST", f"/journal/{journal_id}/undo", json={"idempotency_key": idem()}
        )


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with running_server(tmp_path) as server:
        token = await server.pair("Studio", Role.EDITOR)
        emulator = server.upstream.emulator
        assert emulator is not None
        async with OpenCloudClient(api_key="game-server", base_url=emulator.base_url) as game:
            yield Setup(server, token, game)


async def slow_emulator(setup: Setup, latency_ms: float) -> None:
    assert setup.server.upstream.emulator is not None
    await set_faults(setup.server.upstream.emulator.base_url, latency_ms=latency_ms)


# ------------------------------------------------------------------ concurrent retries


async def test_a_concurrent_retry_with_the_same_key_is_a_conflict_not_a_crash(
    setup: Setup,
) -> None:
    """Both requests pass the replay check before either journals (the reads are slowed), so
    the second meets the first's journal item: 409 naming it, never 500."""
    created = await setup.create("retry", {"n": 0})
    await slow_emulator(setup, 60)
    key = idem()
    body = {
        "value_json": '{"n":1}',
        "expected_revision": created["revision"],
        "idempotency_key": key,
    }
    answers = await asyncio.gather(
        setup.call("PUT", entry_path(U, DS, "retry"), json=body),
        setup.call("PUT", entry_path(U, DS, "retry"), json=body),
    )
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200, 409], answers
    conflict = next(body for status, body in answers if status == 409)["error"]
    record = setup.journal.find_by_idempotency_key(key)
    assert record is not None and record.status is Status.APPLIED
    assert conflict["code"] == "CONFLICT" and conflict["details"]["journal_id"] == record.id
    assert await setup.value("retry") == {"n": 1}


async def test_a_concurrent_ordered_retry_is_a_conflict_not_a_crash(setup: Setup) -> None:
    await slow_emulator(setup, 60)
    body = {"value": 5, "idempotency_key": idem(), "allow_missing": True}
    answers = await asyncio.gather(
        setup.call("PUT", f"{LB}/racer", json=body),
        setup.call("PUT", f"{LB}/racer", json=body),
    )
    assert sorted(status for status, _ in answers) == [200, 409], answers
    conflict = next(body for status, body in answers if status == 409)["error"]
    assert conflict["code"] == "CONFLICT" and "journal_id" in conflict["details"]


# ------------------------------------------------------------------ increments


async def test_undoing_an_increment_subtracts_its_delta_and_keeps_later_writes(
    setup: Setup,
) -> None:
    await setup.create("coins", 10)
    status, incremented = await setup.call(
        "POST",
        entry_path(U, DS, "coins") + "/increment",
        json={"amount": 5, "idempotency_key": idem()},
    )
    assert status == 200 and incremented["value_json"] == "15"
    journal_id = setup.journal.list(key="coins", limit=1)[0].id
    record = setup.journal.get(journal_id).record
    assert (record.delta, record.after_revision) == (5, incremented["revision"])
    # The game adds 100 after the increment; undo must take away only our 5.
    await setup.game.increment_entry(
        U, DS, "coins", 100, attributes=CARRY_OVER, user_ids=CARRY_OVER
    )
    status, undone = await setup.undo(journal_id)
    assert status == 200, undone
    assert await setup.value("coins") == 110
    undo = setup.journal.list(key="coins", limit=1)[0]
    assert (undo.operation, undo.undoes, undo.delta) == ("undo", journal_id, -5)


# ------------------------------------------------------------------ deletes


async def test_a_delete_that_removed_an_unseen_game_write_puts_it_back(setup: Setup) -> None:
    """Open Cloud's delete has no precondition: the game writes between our read and our
    delete (forced here by writing right after the user's read), the delete removes it, and
    the read-back finds out, puts the game's value back create-only and answers CONFLICT."""
    seen = await setup.create("hero", {"hp": 1})
    status, _ = await setup.call("GET", entry_path(U, DS, "hero"))
    assert status == 200
    entries = setup.server.app[DATA].journal.entries
    original = entries._read_fresh

    async def read_then_game_writes(ref: Any) -> Any:
        current = await original(ref)
        await setup.game.update_entry(
            U, DS, "hero", '{"hp":2}', attributes={"by": "game"}, user_ids=[7]
        )
        return current

    entries._read_fresh = read_then_game_writes  # type: ignore[method-assign]
    try:
        status, answer = await setup.call(
            "DELETE",
            entry_path(U, DS, "hero"),
            params={"expected_revision": seen["revision"], "idempotency_key": idem()},
        )
    finally:
        entries._read_fresh = original  # type: ignore[method-assign]
    assert status == 409, answer
    error = answer["error"]
    assert error["code"] == "CONFLICT" and "put back" in error["message"]
    assert json.loads(error["details"]["current"]["value_json"]) == {"hp": 2}
    assert json.loads(error["details"]["yours"]["value_json"]) == {"hp": 1}
    game_entry = await setup.game.get_entry(U, DS, "hero")
    assert json.loads(game_entry.value_json or "") == {"hp": 2}
    assert game_entry.attributes == {"by": "game"} and game_entry.user_ids == [7]
    record = setup.journal.list(key="hero", limit=1)[0]
    assert record.operation == "delete" and record.status is Status.FAILED
    assert "put back" in (record.reason or "")


async def test_a_delete_of_what_the_user_saw_is_applied_and_undone(setup: Setup) -> None:
    seen = await setup.create("plain", {"a": 1})
    status, deleted = await setup.call(
        "DELETE",
        entry_path(U, DS, "plain"),
        params={"expected_revision": seen["revision"], "idempotency_key": idem()},
    )
    assert status == 200, deleted
    record = setup.journal.get(deleted["journal_id"]).record
    assert record.status is Status.APPLIED and record.after_exists is False
    status, _ = await setup.undo(deleted["journal_id"])
    assert status == 200 and await setup.value("plain") == {"a": 1}


# ------------------------------------------------------------------ undo of older edits


async def test_every_edit_can_be_undone_newest_first(setup: Setup) -> None:
    created = await setup.create("hist", 0)
    revision = created["revision"]
    ids = []
    for n in (1, 2, 3):
        status, view = await setup.call(
            "PUT",
            entry_path(U, DS, "hist"),
            json={"value_json": str(n), "expected_revision": revision, "idempotency_key": idem()},
        )
        assert status == 200, view
        revision = view["revision"]
        ids.append(setup.journal.list(key="hist", limit=1)[0].id)
    # The oldest edit first is refused: the key no longer holds what it left.
    status, refused = await setup.undo(ids[0])
    assert status == 409 and refused["error"]["code"] == "CONFLICT"
    for journal_id, expected in zip(reversed(ids), (2, 1, 0), strict=True):
        status, undone = await setup.undo(journal_id)
        assert status == 200, undone
        assert await setup.value("hist") == expected
    # And the create itself, last: the key is deleted.
    status, _ = await setup.undo(setup.journal.list(key="hist", limit=10)[-1].id)
    assert status == 200
    with pytest.raises(NotFound):
        await setup.game.get_entry(U, DS, "hist")


# ------------------------------------------------------------------ settling after a crash


async def test_a_write_cut_by_a_crash_settles_even_when_its_json_was_not_compact(
    tmp_path: Path,
) -> None:
    key = new_key()
    spaced = '{ "b" : [1, 2.0],  "a" : "x" }'
    async with running_server(tmp_path, data_key=key) as server:
        token = await server.pair()
        journal = server.app[DATA].journal.journal
        cut = journal.record_intent(
            actor_id="t",
            actor_name="crashed run",
            universe=U,
            datastore=DS,
            scope="global",
            key="spaced",
            operation="create",
            before=None,
            intended=EntryImage(spaced),
        )
        # The write landed (Open Cloud stores it compact), then the server died.
        await server.upstream.client_for(U).create_entry(U, DS, "spaced", spaced)
        assert token
    async with running_server(tmp_path, data_key=key) as server:
        record = server.app[DATA].journal.journal.get(cut.id).record
        assert record.status is Status.APPLIED
