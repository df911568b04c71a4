"""Loading the sample game does not stop the server: it is generated in a thread and written on
the loop a slice at a time, so other requests are answered meanwhile; a second load is refused
while one runs, and status says how far the first got.

The slice is set to one player (SLICE_SECONDS = 0), so the load yields to the loop once per
player whatever the machine's speed: the ordering asserted here does not hang on timings.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dsm.emulator import sample_game
from dsm.emulator.app import EmulatorConfig
from dsm.emulator.throttle import LimitsConfig
from tools.testing.emulator import start_emulator
from tools.testing.server import running_server

PLAYERS = 1000


@pytest.fixture(autouse=True)
def one_player_a_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sample_game, "SLICE_SECONDS", 0.0)


async def test_the_server_answers_while_the_sample_game_loads(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        token = await server.pair()
        load = asyncio.create_task(
            server.call("POST", "/sample-game", token, json={"seed": 2, "players": PLAYERS})
        )
        # Status answers while the players are generated (in a thread), then while they are
        # written (on the loop).
        phases: set[str] = set()
        while "writing" not in phases:
            status, offer = await server.call("GET", "/sample-game", token)
            assert status == 200 and not load.done(), offer
            if "loading" in offer:
                phases.add("writing" if offer["loading"]["players_written"] else "generating")
            await asyncio.sleep(0)
        # Answered before the load ends: a plain request and a second load, refused.
        status, hello = await server.call("GET", "/hello", None)
        assert status == 200 and hello
        status, refused = await server.call(
            "POST", "/sample-game", token, json={"seed": 9, "players": 10}
        )
        assert status == 409 and refused["error"]["code"] == "CONFLICT", refused
        assert "already loading" in refused["error"]["message"]
        status, offer = await server.call("GET", "/sample-game", token)
        progress = offer["loading"]
        assert progress["seed"] == 2 and progress["players"] == PLAYERS
        assert 0 < progress["players_written"] < PLAYERS, progress
        assert not offer["loaded"]
        assert not load.done()

        status, loaded = await load
        assert status == 200 and loaded["loaded"] and loaded["players"] == PLAYERS, loaded
        assert "loading" not in loaded and loaded["seed"] == 2


async def test_serve_with_sample_game_loads_in_the_background(tmp_path: Path) -> None:
    async with running_server(tmp_path, sample_game_seed=4) as server:
        token = await server.pair()
        for _ in range(2000):
            status, offer = await server.call("GET", "/sample-game", token)
            assert status == 200, offer
            if offer["loaded"]:
                break
            await asyncio.sleep(0.01)
        assert offer["loaded"] and offer["seed"] == 4 and "loading" not in offer, offer


async def test_the_server_stops_cleanly_in_the_middle_of_a_load(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        token = await server.pair()
        load = asyncio.create_task(
            server.call("POST", "/sample-game", token, json={"seed": 2, "players": PLAYERS})
        )
        while True:
            status, offer = await server.call("GET", "/sample-game", token)
            assert status == 200 and not load.done(), offer
            if "loading" in offer and offer["loading"]["players_written"]:
                break
    # Left by the `async with` mid-load: the load was cancelled between two slices and the
    # server's cleanup ended; the caller's connection was closed.
    (outcome,) = await asyncio.gather(load, return_exceptions=True)
    assert isinstance(outcome, aiohttp.ClientError), outcome


async def test_the_emulator_refuses_a_second_load_while_one_runs() -> None:
    runner, url, ctx = await start_emulator(EmulatorConfig(limits=LimitsConfig(mode="off")))
    try:
        async with aiohttp.ClientSession(headers={"x-api-key": "k"}) as http:

            async def post(body: dict[str, int]) -> tuple[int, Any]:
                async with http.post(url + "/_emulator/sample-game", json=body) as resp:
                    return resp.status, await resp.json()

            first = asyncio.create_task(post({"players": PLAYERS}))
            while sample_game.loading(ctx) is None:
                await asyncio.sleep(0)
            async with http.get(url + "/_emulator/sample-game") as resp:
                during = await resp.json()
            assert during["loading"]["players"] == PLAYERS and during["loaded"] == []
            status, refused = await post({"players": 10})
            assert status == 409 and "already loading" in json.dumps(refused), refused
            status, body = await first
            assert status == 200 and body["players"] == PLAYERS
            assert sample_game.loading(ctx) is None
    finally:
        await runner.cleanup()
