"""Pairing under a flood (security suite): limits survive restarts, forged ids cost the user
nothing, and the console says when pairing is being flooded."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsm.services.errors import ServiceError
from dsm.services.pairing import MAX_ATTEMPTS, PairingService
from dsm.services.pairing_limits import AttemptLog
from dsm.services.tokens import TokenStore
from shared_schema.errors import ErrorCode

from .test_pairing import code_from, wrong
from .test_security import FakeClock, FakeWallClock


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

    def start(self) -> tuple[str, str]:
        ticket = self.service.start("Studio")
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
    for _ in range(10):
        first.start()
    first.close()
    clock.advance(5)
    # A flood that restarts the server (or waits for it to restart) gets no fresh allowance.
    second = Console(tmp_path, clock)
    with pytest.raises(ServiceError) as limited:
        second.start()
    assert refused(limited) is ErrorCode.RATE_LIMITED
    assert limited.value.retry_after == pytest.approx(55.0)
    clock.advance(55)
    second.start()
    second.close()


def test_guess_limits_survive_a_restart(tmp_path: Path) -> None:
    clock = Clocks()
    first = Console(tmp_path, clock)
    for _ in range(4):
        pairing_id, code = first.start()
        for _ in range(MAX_ATTEMPTS):
            with pytest.raises(ServiceError):
                first.service.complete(pairing_id, wrong(code), "Studio")
    first.close()
    second = Console(tmp_path, clock)
    pairing_id, code = second.start()
    with pytest.raises(ServiceError) as limited:
        second.service.complete(pairing_id, wrong(code), "Studio")
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
    for _ in range(10):
        console.start()
    for _ in range(25):
        with pytest.raises(ServiceError):
            console.start()
    [notice] = console.flood_notices  # one notice, not one per refusal
    assert "1 pairing request(s) refused" in notice
    assert "a program on this computer" in notice
    assert "again in 60 s" in notice
    clock.advance(61)
    for _ in range(10):
        console.start()
    with pytest.raises(ServiceError):
        console.start()
    assert len(console.flood_notices) == 2
    assert "25 pairing request(s) refused" in console.flood_notices[1]
    console.close()
