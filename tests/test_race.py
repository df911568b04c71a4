"""Race a live game server against the API: no write of the game is ever lost unseen.

"The game" writes straight to the emulator (as a game server writes straight to Open Cloud,
unconditionally, like SetAsync) at a random moment while a user's update, delete, increment or
undo goes through the companion server. Each round starts from what the user just read, so the
game's write can land before the user's read-modify-write, in its middle, or after it. Once
both are done the key must hold the game's write (or, for increments, the game's write plus or
minus the delta applied on top of it): anything else erased the game's write. The same rounds
run again with latency injected into every emulator call, which widens every gap.

Rounds run on many keys at once so the whole run stays short; each key's rounds run in order.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dsm.opencloud.client import OpenCloudClient
from shared_schema.common import Role
from tools.testing.emulator import set_faults
from tools.testing.server import Server, entry_path, idem, running_server

U, DS = 1, "race"
ROUNDS = 300  # per operation and latency setting
WORKERS = 30  # keys raced at the same time
OPERATIONS = ("update", "delete", "increment", "undo")


@dataclass
class Race:
    server: Server
    token: str
    game: OpenCloudClient
    latency_s: float
    rng: random.Random
    outcomes: Counter[str] = field(default_factory=Counter)
    losses: list[str] = field(default_factory=list)

    async def api(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.server.call(method, path, self.token, **kwargs)

    async def read(self, key: str) -> dict[str, Any]:
        status, view = await self.api("GET", entry_path(U, DS, key))
        assert status == 200, view
        result: dict[str, Any] = view
        return result

    async def game_write(self, key: str, value: Any) -> None:
        # Up to three emulator round trips late: before, inside or after the user's write.
        await asyncio.sleep(self.rng.uniform(0, 3 * self.latency_s + 0.008))
        await self.game.update_entry(
            U, DS, key, json.dumps(value), attributes=None, user_ids=[], allow_missing=True
        )

    async def final(self, key: str) -> Any:
        entry = await self.game.get_entry(U, DS, key)
        return json.loads(entry.value_json or "null")

    async def race(self, user: Awaitable[tuple[int, Any]], key: str, game_value: Any) -> int:
        (status, answer), _ = await asyncio.gather(user, self.game_write(key, game_value))
        assert status in (200, 409), answer
        self.outcomes["conflict" if status == 409 else "applied"] += 1
        if status == 409 and "put back" in answer["error"]["message"]:
            self.outcomes["put back"] += 1
        return int(status)

    def check(self, what: str, final: Any, allowed: list[Any]) -> None:
        if final not in allowed:
            self.losses.append(f"{what}: the key holds {final!r}, not one of {allowed!r}")

    # ------------------------------------------------------------------- one round each

    async def update(self, key: str, n: int) -> None:
        seen = await self.read(key)
        body = {
            "value_json": json.dumps({"user": n}),
            "expected_revision": seen["revision"],
            "idempotency_key": idem(),
        }
        game = {"game": n}
        await self.race(self.api("PUT", entry_path(U, DS, key), json=body), key, game)
        self.check(f"update {key}#{n}", await self.final(key), [game])

    async def delete(self, key: str, n: int) -> None:
        seen = await self.read(key)
        params = {"expected_revision": seen["revision"], "idempotency_key": idem()}
        game = {"game": n}
        await self.race(self.api("DELETE", entry_path(U, DS, key), params=params), key, game)
        self.check(f"delete {key}#{n}", await self.final(key), [game])

    async def increment(self, key: str, n: int) -> None:
        await self.read(key)
        game = 1000 * n
        body = {"amount": 7, "idempotency_key": idem()}
        path = entry_path(U, DS, key) + "/increment"
        await self.race(self.api("POST", path, json=body), key, game)
        self.check(f"increment {key}#{n}", await self.final(key), [game, game + 7])

    async def undo(self, key: str, n: int) -> None:
        seen = await self.read(key)
        if n % 2:
            body = {
                "value_json": json.dumps({"user": n}),
                "expected_revision": seen["revision"],
                "idempotency_key": idem(),
            }
            status, _ = await self.api("PUT", entry_path(U, DS, key), json=body)
            game: Any = {"game": n}
            allowed = [game]
        else:
            body = {"amount": 5, "idempotency_key": idem()}
            path = entry_path(U, DS, key) + "/increment"
            status, _ = await self.api("POST", path, json=body)
            game = 1000 * n
            allowed = [game, game - 5]  # the compensating -5 may land after the game's write
        assert status == 200
        journal_id = await self.last_journal_id(key)
        undo = self.api("POST", f"/journal/{journal_id}/undo", json={"idempotency_key": idem()})
        await self.race(undo, key, game)
        self.check(f"undo {key}#{n}", await self.final(key), allowed)

    async def last_journal_id(self, key: str) -> int:
        status, page = await self.api("GET", "/journal", params={"key": key, "limit": "1"})
        assert status == 200
        return int(page["items"][0]["id"])


async def run_rounds(race: Race, operation: str) -> None:
    step: Callable[[str, int], Awaitable[None]] = getattr(race, operation)

    async def worker(w: int) -> None:
        key = f"{operation}-{w}"
        await race.game.update_entry(
            U, DS, key, "0", attributes=None, user_ids=[], allow_missing=True
        )
        for n in range(w, ROUNDS, WORKERS):
            await step(key, n + 1)

    await asyncio.gather(*(worker(w) for w in range(WORKERS)))


@pytest.mark.parametrize("latency_ms", [0, 15])
async def test_no_game_write_is_lost_to_update_delete_increment_or_undo(
    tmp_path: Path, latency_ms: int
) -> None:
    async with running_server(tmp_path, budget_rpm=1_000_000) as server:
        token = await server.pair("Studio", Role.EDITOR)
        emulator = server.upstream.emulator
        assert emulator is not None
        await set_faults(emulator.base_url, latency_ms=latency_ms)
        async with OpenCloudClient(api_key="game-server", base_url=emulator.base_url) as game:
            races = {}
            for operation in OPERATIONS:
                race = Race(server, token, game, latency_ms / 1000, random.Random(operation))
                await run_rounds(race, operation)
                races[operation] = race
    for operation, race in races.items():
        rounds = race.outcomes["applied"] + race.outcomes["conflict"]
        print(f"{operation} at {latency_ms} ms: {rounds} rounds, {dict(race.outcomes)}")
        assert rounds == ROUNDS
        assert race.losses == [], race.losses[:5]
    if latency_ms:
        # The game really did win some races: writes were refused or taken back and shown.
        for operation in ("update", "delete", "undo"):
            assert races[operation].outcomes["conflict"] > 0, operation
        assert races["delete"].outcomes["put back"] > 0
