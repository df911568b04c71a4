"""Pairing: console codes, attempt limits, expiry, single use, rate limits, and the HTTP flow."""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from dsm.app import tokens_and_pairing
from dsm.config import ServerConfig
from dsm.http import routes_pairing
from dsm.http.auth import auth_middleware
from dsm.http.binding import bind_routes
from dsm.http.errors import error_middleware
from dsm.http.guards import CLIENT_MAX_SIZE, BoundPort, guard_middleware
from dsm.services.errors import ServiceError
from dsm.services.pairing import (
    CODE_DIGITS,
    MAX_ATTEMPTS,
    PairingService,
    RateLimit,
    announce_on_console,
)
from dsm.services.tokens import TokenStore
from shared_schema.common import Role
from shared_schema.errors import ErrorCode

from .test_security import (
    FakeClock,
    FakeWallClock,
    Server,
    auth_header,
    running_server,
    serve,
)

CODE_RE = re.compile(r": (\d{4}) (\d{4}) \(expires in")


def code_from(announcement: str) -> str:
    match = CODE_RE.search(announcement)
    assert match is not None, announcement
    return "".join(match.groups())


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**CODE_DIGITS:0{CODE_DIGITS}d}"


class Setup:
    def __init__(self, tmp_path: Path, ttl_seconds: float = 300.0) -> None:
        self.clock = FakeClock()
        self.wall = FakeWallClock(self.clock)
        self.announced: list[str] = []
        self.store = TokenStore.open(tmp_path, monotonic=self.clock, now=self.wall)
        self.service = PairingService(
            self.store,
            announce=self.announced.append,
            monotonic=self.clock,
            now=self.wall,
            ttl_seconds=ttl_seconds,
        )

    def start(self, name: str = "Studio (place 1)") -> tuple[str, str]:
        ticket = self.service.start(name)
        return ticket.pairing_id, code_from(self.announced[-1])


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.store.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path) as running:
        yield running


def failure(exc: pytest.ExceptionInfo[ServiceError]) -> ErrorCode:
    return exc.value.code


# ---------------------------------------------------------------------------------------------
# The service


def test_guess_probability_per_code_is_below_one_in_a_million() -> None:
    assert MAX_ATTEMPTS / 10**CODE_DIGITS < 1e-6


def test_start_announces_an_8_digit_code_with_name_and_expiry(setup: Setup) -> None:
    ticket = setup.service.start("Studio (place 1)")
    assert len(setup.announced) == 1
    text = setup.announced[0]
    # The name comes first, on the code's line: it is how the user picks their own code out.
    assert text.startswith("Pairing code for Studio (place 1): ")
    assert "the plugin's pairing screen shows this same name" in text
    assert "(expires in 5 min)" in text
    assert len(code_from(text)) == CODE_DIGITS == ticket.code_length
    assert ticket.expires_at == setup.wall() + timedelta(seconds=300)
    assert len(ticket.pairing_id) >= 22  # 128 random bits


def test_codes_come_from_the_secrets_module(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    picks: list[str] = []

    def choice(alphabet: str) -> str:
        picks.append(alphabet)
        return "7"

    monkeypatch.setattr(secrets, "choice", choice)
    _, code = setup.start()
    assert code == "7" * CODE_DIGITS
    assert picks == ["0123456789"] * CODE_DIGITS


def test_right_code_issues_a_token_with_the_pairing_role(setup: Setup) -> None:
    pairing_id, code = setup.start("Alice's Studio")
    result = setup.service.complete(pairing_id, code, "Alice's Studio")
    assert result.role is Role.EDITOR
    info = setup.store.lookup(result.token)
    assert info is not None
    assert (info.token_id, info.name, info.role) == (result.token_id, "Alice's Studio", Role.EDITOR)


def test_code_is_single_use(setup: Setup) -> None:
    pairing_id, code = setup.start()
    setup.service.complete(pairing_id, code, "Studio (place 1)")
    with pytest.raises(ServiceError) as again:
        setup.service.complete(pairing_id, code, "Studio (place 1)")
    assert failure(again) is ErrorCode.PAIRING_FAILED
    assert len(setup.store.list_tokens()) == 1


def test_sixth_attempt_fails_even_with_the_right_code(setup: Setup) -> None:
    pairing_id, code = setup.start()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with pytest.raises(ServiceError) as exc:
            setup.service.complete(pairing_id, wrong(code), "Studio (place 1)")
        assert failure(exc) is ErrorCode.PAIRING_FAILED
        if attempt < MAX_ATTEMPTS:
            assert f"{MAX_ATTEMPTS - attempt} attempt(s) left" in exc.value.message
        else:
            assert "cancelled" in exc.value.message
    with pytest.raises(ServiceError) as sixth:
        setup.service.complete(pairing_id, code, "Studio (place 1)")
    assert failure(sixth) is ErrorCode.PAIRING_FAILED
    assert setup.store.list_tokens() == []


def test_fifth_attempt_with_the_right_code_still_works(setup: Setup) -> None:
    pairing_id, code = setup.start()
    for _ in range(MAX_ATTEMPTS - 1):
        with pytest.raises(ServiceError):
            setup.service.complete(pairing_id, wrong(code), "Studio (place 1)")
    assert setup.service.complete(pairing_id, code, "Studio (place 1)").token


def test_a_different_client_name_counts_as_a_wrong_attempt(setup: Setup) -> None:
    pairing_id, code = setup.start("Alice's Studio")
    with pytest.raises(ServiceError) as exc:
        setup.service.complete(pairing_id, code, "Mallory")
    assert "client name differs" in exc.value.message
    assert exc.value.details == {"attempts_left": MAX_ATTEMPTS - 1}
    assert setup.service.complete(pairing_id, code, "Alice's Studio").token


def test_code_expires(setup: Setup) -> None:
    pairing_id, code = setup.start()
    setup.clock.advance(299.9)
    other_id, other_code = setup.start()
    setup.clock.advance(0.1)  # the first code is now exactly 300 s old
    with pytest.raises(ServiceError) as exc:
        setup.service.complete(pairing_id, code, "Studio (place 1)")
    assert "expired" in exc.value.message
    assert setup.service.complete(other_id, other_code, "Studio (place 1)").token


def test_configured_ttl_is_used(tmp_path: Path) -> None:
    s = Setup(tmp_path, ttl_seconds=90.0)
    try:
        ticket = s.service.start("x")
        assert ticket.expires_at == s.wall() + timedelta(seconds=90)
        assert "(expires in 90 s)" in s.announced[0]
        code = code_from(s.announced[0])
        s.clock.advance(90)
        with pytest.raises(ServiceError):
            s.service.complete(ticket.pairing_id, code, "x")
    finally:
        s.store.close()


def test_starts_are_rate_limited_per_name_and_in_all(setup: Setup) -> None:
    for _ in range(5):
        setup.start("Studio")
    with pytest.raises(ServiceError) as by_name:
        setup.start("Studio")
    assert failure(by_name) is ErrorCode.RATE_LIMITED
    assert by_name.value.retry_after == pytest.approx(60.0)
    assert by_name.value.retryable and "'Studio'" in by_name.value.message
    for n in range(5):  # other names still pair, up to the limit of all starts
        setup.start(f"Studio {n}")
    with pytest.raises(ServiceError) as in_all:
        setup.start("Studio 8")
    assert failure(in_all) is ErrorCode.RATE_LIMITED
    assert in_all.value.retry_after == pytest.approx(60.0)
    assert "programs on this computer" in in_all.value.message
    codes = [text for text in setup.announced if "Pairing code" in text]
    assert len(codes) == 10  # a refused start shows no code (it says pairing is flooded)
    setup.clock.advance(60)
    setup.start("Studio")


def test_guesses_after_the_first_are_rate_limited_across_codes(setup: Setup) -> None:
    # 20 retries a minute in all, however many pairings they are spread over; a pairing's
    # first guess was counted with its start.
    for n in range(5):
        pairing_id, code = setup.start(f"Studio {n}")
        for _ in range(MAX_ATTEMPTS):
            with pytest.raises(ServiceError) as exc:
                setup.service.complete(pairing_id, wrong(code), f"Studio {n}")
            assert failure(exc) is ErrorCode.PAIRING_FAILED
    pairing_id, code = setup.start("Studio (place 1)")
    with pytest.raises(ServiceError) as first:
        setup.service.complete(pairing_id, wrong(code), "Studio (place 1)")
    assert failure(first) is ErrorCode.PAIRING_FAILED
    with pytest.raises(ServiceError) as limited:
        setup.service.complete(pairing_id, code, "Studio (place 1)")
    assert failure(limited) is ErrorCode.RATE_LIMITED
    assert limited.value.retry_after == pytest.approx(60.0)
    setup.clock.advance(60)
    assert setup.service.complete(pairing_id, code, "Studio (place 1)").token


def test_rate_limit_hourly_window() -> None:
    clock = FakeClock()
    limit = RateLimit("start", [(10, 60.0), (30, 3600.0)], clock)
    for _ in range(30):
        limit.consume()
        clock.advance(7.0)  # 30 starts in 210 s: never 10 in one minute
    with pytest.raises(ServiceError) as exc:
        limit.consume()
    # The oldest of the 30 ages out of the hour window first.
    assert exc.value.retry_after == pytest.approx(3600.0 - 210.0)
    clock.advance(3600.0 - 210.0)
    limit.consume()


def test_client_names_are_printed_without_terminal_escapes(setup: Setup) -> None:
    setup.service.start("evil\x1b[2J\x1b]0;pwned\x07\nFAKE: 0000 0000")
    text = setup.announced[0]
    assert "\x1b" not in text and "\x07" not in text
    assert "\nFAKE" not in text


def test_default_announcer_writes_a_banner_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    announce_on_console("Pairing code for x: 1234 5678 (expires in 5 min)")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Pairing code for x: 1234 5678 (expires in 5 min)" in captured.err
    assert "=" * 20 in captured.err


def test_compare_of_codes_is_constant_time(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    pairing_id, code = setup.start()
    with pytest.raises(ServiceError):
        setup.service.complete(pairing_id, wrong(code), "Studio (place 1)")
    assert (code.encode(), wrong(code).encode()) in calls


# ---------------------------------------------------------------------------------------------
# Over HTTP


async def _start(server: Server, name: str = "Studio") -> tuple[str, str]:
    async with server.http.post(
        server.url("/api/v1/pair/start"), json={"client_name": name}
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert body["code_length"] == CODE_DIGITS
    assert "8-digit code" in body["message"]
    assert body["expires_at"].endswith("Z") or body["expires_at"].endswith("+00:00")
    assert "code" not in body  # the code is shown only on the console
    return body["pairing_id"], code_from(server.announced[-1])


async def _complete(
    server: Server, pairing_id: str, code: str, name: str = "Studio"
) -> aiohttp.ClientResponse:
    return await server.http.post(
        server.url("/api/v1/pair/complete"),
        json={"pairing_id": pairing_id, "code": code, "client_name": name},
    )


async def test_pairing_over_http_gives_a_working_token(server: Server) -> None:
    pairing_id, code = await _start(server)
    async with await _complete(server, pairing_id, code) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
    assert body["role"] == "editor"
    async with server.http.get(
        server.url("/api/v1/whoami"), headers=auth_header(body["token"])
    ) as who:
        assert who.status == 200
        assert await who.json() == {
            "token_id": body["token_id"],
            "name": "Studio",
            "role": "editor",
        }


async def test_scripted_guesser_gets_five_tries_then_the_code_is_burned(server: Server) -> None:
    pairing_id, code = await _start(server)
    statuses = []
    for _ in range(MAX_ATTEMPTS):
        async with await _complete(server, pairing_id, wrong(code)) as response:
            statuses.append(response.status)
            assert (await response.json())["error"]["code"] == "PAIRING_FAILED"
    assert statuses == [400] * MAX_ATTEMPTS
    async with await _complete(server, pairing_id, code) as sixth:
        assert sixth.status == 400
    assert server.store.list_tokens() == []


async def test_http_rate_limit_answers_429_with_retry_after(server: Server) -> None:
    for _ in range(5):
        await _start(server)
    async with server.http.post(
        server.url("/api/v1/pair/start"), json={"client_name": "Studio"}
    ) as response:
        assert response.status == 429
        body = await response.json()
        assert body["error"]["code"] == "RATE_LIMITED"
        assert body["error"]["retryable"] is True
        assert body["error"]["message"].endswith("try again in 60 s.")
        assert body["error"]["details"] == {"retry_after_seconds": 60, "limit": "client_name"}
        assert response.headers["Retry-After"] == "60"


async def test_http_expiry_and_single_use(server: Server) -> None:
    pairing_id, code = await _start(server)
    server.clock.advance(301)
    async with await _complete(server, pairing_id, code) as expired:
        assert expired.status == 400
        assert "expired" in (await expired.json())["error"]["message"]
    pairing_id, code = await _start(server)
    async with await _complete(server, pairing_id, code) as first:
        assert first.status == 200
    async with await _complete(server, pairing_id, code) as second:
        assert second.status == 400
    assert len(server.store.list_tokens()) == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"client_name": ""},
        {"client_name": 5},
        {"client_name": "x", "role": "admin"},  # a client cannot ask for a role
    ],
)
async def test_invalid_start_bodies_are_400(server: Server, body: object) -> None:
    async with server.http.post(server.url("/api/v1/pair/start"), json=body) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "BAD_REQUEST"
    assert server.announced == []


async def test_code_with_separators_is_rejected_by_the_schema(server: Server) -> None:
    pairing_id, code = await _start(server)
    async with await _complete(server, pairing_id, f"{code[:4]} {code[4:]}") as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "BAD_REQUEST"
    # A malformed request does not use up an attempt.
    async with await _complete(server, pairing_id, code) as ok:
        assert ok.status == 200


async def test_lifecycle_wires_the_services_from_the_config(tmp_path: Path) -> None:
    announced: list[str] = []
    config = ServerConfig(data_dir=tmp_path, pairing_code_ttl_seconds=120.0)
    bound = BoundPort()

    def make_app() -> web.Application:
        app = web.Application(
            client_max_size=CLIENT_MAX_SIZE,
            middlewares=[error_middleware, guard_middleware(bound), auth_middleware],
        )
        app.cleanup_ctx.append(tokens_and_pairing(config, announce=announced.append))
        bind_routes(app, routes_pairing.HANDLERS)
        return app

    runner, port = await serve(make_app())
    bound.set(port)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/v1/pair/start", json={"client_name": "A"}) as r:
                assert r.status == 200
                pairing_id = (await r.json())["pairing_id"]
            assert "(expires in 2 min)" in announced[0]
            payload = {
                "pairing_id": pairing_id,
                "code": code_from(announced[0]),
                "client_name": "A",
            }
            async with http.post(f"{base}/api/v1/pair/complete", json=payload) as r:
                token = (await r.json())["token"]
    finally:
        await runner.cleanup()
    # The token survives a restart of the server on the same data directory.
    runner, port = await serve(make_app())
    bound.set(port)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/api/v1/tokens", headers=auth_header(token)) as r,
        ):
            assert r.status == 403  # alive (not 401), but pairing gives editor, not admin
            assert (await r.json())["error"]["details"]["needed_role"] == "admin"
    finally:
        await runner.cleanup()
