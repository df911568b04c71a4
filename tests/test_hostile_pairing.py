"""Pairing under a flood (security suite): limits survive restarts, forged ids cost the user
nothing, a flood under one name leaves the plugin free to pair (the old fixed plugin name
included: each install now pairs under its own), a code already shown keeps working through any
flood, and the console says when pairing is being flooded."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from dsm.http.appkeys import TOKEN_STORE
from dsm.services.errors import ServiceError
from dsm.services.pairing import MAX_ATTEMPTS, PairingService
from dsm.services.pairing_limits import AttemptLog
from dsm.services.tokens import TokenStore
from shared_schema.errors import ErrorCode
from tools.luau_harness import LuauHarness
from tools.testing.plugin import PLUGIN_SRC, PluginDriver
from tools.testing.server import running_server

from .test_pairing import code_from, wrong
from .test_security import FakeClock, FakeWallClock

# One install's client name (plugin/src/Core/ClientName.luau draws the suffix once per install)
# and the fixed name every install used before, which a flood can imitate without reading any
# install's settings.
PLUGIN = "DataStore Manager Pro (Studio · 7KQ2)"
OLD_FIXED_NAME = "DataStore Manager Pro (Studio)"


class Console:
    """A PairingService over real files in `data_dir`, as one `dsm serve` run opens them."""

    def __init__(self, data_dir: Path, clock: Clocks) -> None:
        self.clock = clock
        self.announced: list[str] = []
        wall = clock.wall  # one wall clock for the whole test, across "restarts"
        self.store = TokenStore.open(data_dir, monotonic=clock, now=wall)
        self.attempts = AttemptLog.open(data_dir)
        self.service = PairingService(
            self.store,
            announce=self.announced.append,
            monotonic=clock,
            now=wall,
            attempts=self.attempts,
        )

    def close(self) -> None:
        self.attempts.close()
        self.store.close()

    def start(self, name: str = "Studio") -> tuple[str, str]:
        ticket = self.service.start(name)
        return ticket.pairing_id, code_from(self.announced[-1])

    @property
    def flood_notices(self) -> list[str]:
        return [text for text in self.announced if "being flooded" in text]


class Clocks(FakeClock):
    """A monotonic clock with the wall clock that moves with it."""

    def __init__(self) -> None:
        super().__init__()
        self.wall = FakeWallClock(self)


def refused(exc: pytest.ExceptionInfo[ServiceError]) -> ErrorCode:
    return exc.value.code


def test_start_limits_survive_a_restart(tmp_path: Path) -> None:
    clock = Clocks()
    first = Console(tmp_path, clock)
    for n in range(10):
        first.start("Flood" if n < 5 else f"Flood {n}")
    first.close()
    clock.advance(5)
    # A flood that restarts the server (or waits for it to restart) gets no fresh allowance,
    # neither under its name nor in all.
    second = Console(tmp_path, clock)
    with pytest.raises(ServiceError) as by_name:
        second.start("Flood")
    assert refused(by_name) is ErrorCode.RATE_LIMITED
    assert by_name.value.details == {"retry_after_seconds": 55, "limit": "client_name"}
    with pytest.raises(ServiceError) as in_all:
        second.start("Studio")
    assert in_all.value.details == {"retry_after_seconds": 55, "limit": "all_starts"}
    clock.advance(55)
    second.start()
    second.close()


def test_guess_limits_survive_a_restart(tmp_path: Path) -> None:
    clock = Clocks()
    first = Console(tmp_path, clock)
    for n in range(5):  # 5 x 4 retries (each first guess was counted with its start)
        pairing_id, code = first.start(f"Flood {n}")
        for _ in range(MAX_ATTEMPTS):
            with pytest.raises(ServiceError):
                first.service.complete(pairing_id, wrong(code), f"Flood {n}")
    first.close()
    second = Console(tmp_path, clock)
    pairing_id, code = second.start()
    with pytest.raises(ServiceError) as first_guess:
        second.service.complete(pairing_id, wrong(code), "Studio")
    assert refused(first_guess) is ErrorCode.PAIRING_FAILED
    with pytest.raises(ServiceError) as limited:
        second.service.complete(pairing_id, code, "Studio")
    assert refused(limited) is ErrorCode.RATE_LIMITED
    second.close()


def test_forged_pairing_ids_do_not_use_up_the_users_guesses(tmp_path: Path) -> None:
    clock = Clocks()
    console = Console(tmp_path, clock)
    for n in range(1000):  # a local process floods complete with ids it made up
        with pytest.raises(ServiceError) as forged:
            console.service.complete(f"forged-{n}", "00000000", "Studio")
        assert refused(forged) is ErrorCode.PAIRING_FAILED
    pairing_id, code = console.start()
    assert console.service.complete(pairing_id, code, "Studio").token
    console.close()


def test_the_console_says_when_pairing_is_flooded_once_a_minute(tmp_path: Path) -> None:
    clock = Clocks()
    console = Console(tmp_path, clock)
    for _ in range(5):
        console.start("Flood")
    for _ in range(25):
        with pytest.raises(ServiceError):
            console.start("Flood")
    [notice] = console.flood_notices  # one notice, not one per refusal
    assert "1 pairing request(s) refused" in notice
    assert "starts named 'Flood'" in notice
    assert "a program on this computer" in notice
    assert "a code you asked for keeps working until it expires" in notice
    assert "again in 60 s" in notice
    clock.advance(61)
    for _ in range(5):
        console.start("Flood")
    with pytest.raises(ServiceError):
        console.start("Flood")
    assert len(console.flood_notices) == 2
    expected = (
        "25 pairing request(s) refused since the last notice (25 of them starts named 'Flood')"
    )
    assert expected in console.flood_notices[1]
    console.close()


def test_a_flood_under_the_old_plugin_name_leaves_an_install_its_whole_budget(
    tmp_path: Path,
) -> None:
    clock = Clocks()
    console = Console(tmp_path, clock)
    accepted = 0
    for minute in range(60):  # an hour of flooding at 60 starts a minute
        for _ in range(60):
            try:
                console.start(OLD_FIXED_NAME)
                accepted += 1
            except ServiceError as refusal:
                assert refusal.details is not None and refusal.details["limit"] == "client_name"
        # The install starts pairing every 4 minutes (someone who keeps asking for a new
        # code): its own name's 15 an hour, every one granted, each code shown under its name.
        if minute % 4 == 0:
            pairing_id, code = console.start(PLUGIN)
            assert f"Pairing code for {PLUGIN}: " in console.announced[-1]
            if minute == 56:
                assert console.service.complete(pairing_id, code, PLUGIN).token
        clock.advance(60)
    assert accepted == 15  # the old name's hourly budget, and nothing more
    assert "starts named 'DataStore Manager Pro (Studio)'" in console.flood_notices[0]
    console.close()


def test_a_flood_that_changes_names_cannot_lock_out_a_code_already_shown(tmp_path: Path) -> None:
    clock = Clocks()
    console = Console(tmp_path, clock)
    mine, my_code = console.start(PLUGIN)
    # The flood takes every start left, under a new name each time, and guesses at every
    # pairing it got until the retries of all pairings are used up.
    for n in range(9):
        pairing_id, code = console.start(f"Flood {n}")
        for _ in range(MAX_ATTEMPTS):
            with pytest.raises(ServiceError):
                console.service.complete(pairing_id, wrong(code), f"Flood {n}")
    # What it cannot do: evict the user's pairing or refuse its first guess.
    assert console.service.complete(mine, my_code, PLUGIN).token
    # What it can do (no identity tells the plugin from it): hold up new starts until the
    # window frees, with a 429 that says when, and a console notice that says why.
    with pytest.raises(ServiceError) as later:
        console.start(PLUGIN)
    assert later.value.details == {"retry_after_seconds": 60, "limit": "all_starts"}
    assert console.flood_notices
    console.close()


async def test_a_start_flood_over_http_leaves_the_users_pairings_working(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_server(tmp_path) as server:
        answers: list[str] = []

        async def post(path: str, body: dict[str, str]) -> tuple[int, Any, str | None]:
            async with server.http.post(server.url("/api/v1" + path), json=body) as response:
                text = await response.text()
                answers.append(text)
                return response.status, json.loads(text), response.headers.get("Retry-After")

        async def user_start() -> tuple[str, str]:
            status, ticket, _ = await post("/pair/start", {"client_name": PLUGIN})
            assert status == 200, ticket
            shown = [text for text in server.announced if f"code for {PLUGIN}:" in text]
            return ticket["pairing_id"], code_from(shown[-1])

        before = await user_start()
        flood = [
            asyncio.create_task(post("/pair/start", {"client_name": "Flood"})) for _ in range(60)
        ]
        during = await user_start()  # started while the flood is being answered
        results = await asyncio.gather(*flood)

        accepted = [body for status, body, _ in results if status == 200]
        assert len(accepted) == 5  # the per-name limit; the rest are clear 429s
        for status, body, retry_after in results:
            if status == 200:
                continue
            assert status == 429, body
            error = body["error"]
            assert error["code"] == "RATE_LIMITED" and error["retryable"] is True
            assert error["details"]["limit"] == "client_name"
            assert 1 <= error["details"]["retry_after_seconds"] <= 60
            assert retry_after == str(error["details"]["retry_after_seconds"])
            assert "'Flood'" in error["message"]
        # The flood guesses at the pairings it got: 5 x 5 wrong codes use up the retries.
        for ticket in accepted:
            for _ in range(MAX_ATTEMPTS):
                status, body, _ = await post(
                    "/pair/complete",
                    {
                        "pairing_id": ticket["pairing_id"],
                        "code": "00000000",
                        "client_name": "Flood",
                    },
                )
                assert status in (400, 429), body

        tokens = []
        for pairing_id, code in (before, during):
            status, paired, _ = await post(
                "/pair/complete", {"pairing_id": pairing_id, "code": code, "client_name": PLUGIN}
            )
            assert status == 200, paired
            tokens.append(paired["token"])
            status, me = await server.call("GET", "/me", paired["token"])
            assert status == 200 and me["name"] == PLUGIN, me

        [notice] = [text for text in server.announced if "being flooded" in text]
        assert "starts named 'Flood'" in notice and "a program on this computer" in notice
        # Codes are shown on the console only: never in an answer, never in the log.
        codes = [code_from(text) for text in server.announced if "Pairing code" in text]
        assert len(codes) == 7
        logged = caplog.text
        for secret in [*codes, *tokens]:
            assert secret not in logged
            assert not any(secret in text for text in answers if '"token"' not in text)
        assert before[0] not in logged and during[0] not in logged  # pairing ids neither


async def test_the_plugin_pairs_while_a_flood_imitates_its_old_fixed_name(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:

        async def flood_start() -> int:
            body = {"client_name": OLD_FIXED_NAME}
            async with server.http.post(server.url("/api/v1/pair/start"), json=body) as answer:
                return answer.status

        # The flood spends the old name's starts before the user opens the plugin, and goes on
        # while they pair.
        before = await asyncio.gather(*(flood_start() for _ in range(30)))
        assert before.count(200) == 5 and before.count(429) == 25
        with LuauHarness(PLUGIN_SRC) as h:
            d = await PluginDriver.open(h, server)
            assert d.client_name != OLD_FIXED_NAME
            during = [asyncio.create_task(flood_start()) for _ in range(30)]
            await d.pair()  # types the code the console shows under the plugin's own name
            assert set(await asyncio.gather(*during)) == {429}
            assert [t.name for t in server.app[TOKEN_STORE].list_tokens()] == [d.client_name]
        flood_codes = [t for t in server.announced if f"code for {OLD_FIXED_NAME}:" in t]
        assert len(flood_codes) == 5
