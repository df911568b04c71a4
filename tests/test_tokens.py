"""Token store (hashed at rest, constant-time checks, revocation, restarts), CLI and admin routes."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import os
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dsm import cli_tokens
from dsm.paths import HOME_ENV
from dsm.services.errors import ServiceError
from dsm.services.tokens import DB_FILENAME, TOKEN_PREFIX, TokenStore
from shared_schema.common import Role
from shared_schema.errors import ErrorCode

from .test_security import FakeClock, FakeWallClock, Server, auth_header, running_server


@pytest.fixture
def clock() -> FakeClock:  # overrides the emulator's clock fixture in this module
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[TokenStore]:
    s = TokenStore.open(tmp_path, monotonic=clock, now=FakeWallClock(clock))
    yield s
    s.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path) as running:
        yield running


def secret_of(token: str) -> str:
    """The part after `dsm_<16 hex id>_` (the secret itself may contain underscores)."""
    return token[len(TOKEN_PREFIX) + 16 + 1 :]


# ---------------------------------------------------------------------------------------------
# Store


def test_issue_and_lookup(store: TokenStore) -> None:
    token, info = store.issue("Studio", Role.VIEWER)
    assert token.startswith(TOKEN_PREFIX + info.token_id + "_")
    secret = secret_of(token)
    assert len(secret) == 43  # token_urlsafe(32): 256 bits
    found = store.lookup(token)
    assert found is not None
    assert (found.token_id, found.name, found.role, found.revoked) == (
        info.token_id,
        "Studio",
        Role.VIEWER,
        False,
    )


def test_two_tokens_differ(store: TokenStore) -> None:
    a, info_a = store.issue("a", Role.EDITOR)
    b, info_b = store.issue("a", Role.EDITOR)
    assert a != b and info_a.token_id != info_b.token_id


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: t.upper(),
        lambda t: t + "x",
        lambda t: t + "\n",
        lambda t: t[len(TOKEN_PREFIX) :],
        lambda t: "",
        lambda t: t.replace("dsm_", "dsm_0", 1),
    ],
)
def test_altered_tokens_are_refused(store: TokenStore, mangle: Callable[[str], str]) -> None:
    token, _ = store.issue("Studio", Role.ADMIN)
    assert store.lookup(token) is not None
    assert store.lookup(mangle(token)) is None


def test_tokens_are_stored_only_as_hashes(store: TokenStore, tmp_path: Path) -> None:
    token, info = store.issue("Studio", Role.EDITOR)
    secret = secret_of(token)
    assert store.lookup(token) is not None
    files = [p for p in tmp_path.iterdir() if p.name.startswith(DB_FILENAME)]
    raw = b"".join(p.read_bytes() for p in files)
    assert info.token_id.encode() in raw  # the file really holds the row...
    assert secret.encode() not in raw  # ...but never the secret
    assert token.encode() not in raw
    assert hashlib.sha256(secret.encode()).digest() in raw


def test_token_file_is_owner_only(store: TokenStore, tmp_path: Path) -> None:
    if os.name != "posix":
        pytest.skip("POSIX modes only")
    mode = stat.S_IMODE((tmp_path / DB_FILENAME).stat().st_mode)
    assert mode == 0o600


def test_lookup_compares_in_constant_time(
    store: TokenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    token, _ = store.issue("Studio", Role.EDITOR)
    secret = secret_of(token)
    assert store.lookup(token) is not None
    digest = hashlib.sha256(secret.encode()).digest()
    assert calls == [(digest, digest)]
    # An unknown id still goes through the same comparison.
    assert store.lookup(f"{TOKEN_PREFIX}{'0' * 16}_{secret}") is None
    assert len(calls) == 2


def test_revoked_tokens_are_refused_and_listed(store: TokenStore) -> None:
    token, info = store.issue("Studio", Role.EDITOR)
    revoked = store.revoke(info.token_id)
    assert revoked.revoked
    assert store.lookup(token) is None
    assert store.revoke(info.token_id).revoked  # revoking twice is fine
    assert [t.revoked for t in store.list_tokens()] == [True]


def test_unknown_ids_are_not_found(store: TokenStore) -> None:
    actions: list[Callable[[], object]] = [
        lambda: store.revoke("0123456789abcdef"),
        lambda: store.set_role("0123456789abcdef", Role.ADMIN),
    ]
    for action in actions:
        with pytest.raises(ServiceError) as exc:
            action()
        assert exc.value.code is ErrorCode.NOT_FOUND
        assert "dsm tokens list" in exc.value.message


def test_role_of_a_revoked_token_cannot_change(store: TokenStore) -> None:
    _, info = store.issue("Studio", Role.EDITOR)
    store.revoke(info.token_id)
    with pytest.raises(ServiceError) as exc:
        store.set_role(info.token_id, Role.ADMIN)
    assert exc.value.code is ErrorCode.CONFLICT


def test_tokens_survive_a_restart(tmp_path: Path) -> None:
    first = TokenStore.open(tmp_path)
    token, info = first.issue("Studio", Role.ADMIN)
    first.close()
    second = TokenStore.open(tmp_path)
    try:
        found = second.lookup(token)
        assert found is not None and found.token_id == info.token_id and found.role is Role.ADMIN
    finally:
        second.close()


def test_revocation_by_another_process_applies_at_once(tmp_path: Path) -> None:
    server_side = TokenStore.open(tmp_path)
    cli_side = TokenStore.open(tmp_path)
    try:
        token, info = server_side.issue("Studio", Role.EDITOR)
        assert server_side.lookup(token) is not None
        cli_side.revoke(info.token_id)
        assert server_side.lookup(token) is None
    finally:
        cli_side.close()
        server_side.close()


def test_checked_tokens_are_remembered_until_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_side = TokenStore.open(tmp_path)
    cli_side = TokenStore.open(tmp_path)
    reads: list[str] = []
    real_row = server_side._row

    def counting_row(token_id: str) -> Any:
        reads.append(token_id)
        return real_row(token_id)

    monkeypatch.setattr(server_side, "_row", counting_row)
    try:
        token, info = server_side.issue("Studio", Role.EDITOR)
        assert server_side.lookup(token) is not None
        reads.clear()
        assert server_side.lookup(token) is not None
        assert reads == []  # the second lookup did not read the row
        # The right id with another secret is refused, remembered or not.
        assert server_side.lookup(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
        # Another process changes the role: the next lookup sees it.
        cli_side.set_role(info.token_id, Role.VIEWER)
        found = server_side.lookup(token)
        assert found is not None and found.role is Role.VIEWER
        # This process revokes: the next lookup is refused.
        server_side.revoke(info.token_id)
        assert server_side.lookup(token) is None
    finally:
        cli_side.close()
        server_side.close()


def test_last_used_is_recorded_but_writes_are_throttled(
    store: TokenStore, clock: FakeClock
) -> None:
    wall = FakeWallClock(clock)
    token, info = store.issue("Studio", Role.EDITOR)
    assert info.last_used_at is None
    first = store.lookup(token)
    assert first is not None and first.last_used_at == wall()
    clock.advance(30)
    within = store.lookup(token)
    assert within is not None and within.last_used_at == first.last_used_at
    clock.advance(30)
    after = store.lookup(token)
    assert after is not None and after.last_used_at == wall()
    assert after.last_used_at == first.last_used_at + timedelta(seconds=60)


# ---------------------------------------------------------------------------------------------
# CLI


def run_cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="dsm")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_tokens.register(sub)
    args = parser.parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    code = cli_tokens.run(args, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    return tmp_path


def test_cli_without_any_tokens(home: Path) -> None:
    code, out, _ = run_cli("tokens", "list")
    assert code == 0 and "No tokens yet" in out
    assert not (home / DB_FILENAME).exists()  # listing does not create the file
    code, _, err = run_cli("tokens", "revoke", "0123456789abcdef")
    assert code == 1 and "no tokens yet" in err


def test_cli_lists_revokes_and_changes_roles_while_the_server_runs(home: Path) -> None:
    running = TokenStore.open(home)  # the server's own handle stays open throughout
    try:
        token, info = running.issue("Alice\x1b[31m Studio", Role.EDITOR)
        code, out, _ = run_cli("tokens", "list")
        assert code == 0
        assert info.token_id in out and "editor" in out and "active" in out and "never" in out
        assert "\x1b" not in out  # names from clients cannot drive the terminal
        assert token not in out

        code, out, _ = run_cli("tokens", "role", info.token_id, "admin")
        assert code == 0 and "admin" in out
        found = running.lookup(token)
        assert found is not None and found.role is Role.ADMIN

        code, out, _ = run_cli("tokens", "revoke", info.token_id)
        assert code == 0 and f"Revoked token {info.token_id}" in out
        assert running.lookup(token) is None
        _, listing, _ = run_cli("tokens", "list")
        assert "revoked" in listing
    finally:
        running.close()


def test_cli_reports_unknown_ids_and_roles(home: Path) -> None:
    TokenStore.open(home).close()
    code, _, err = run_cli("tokens", "revoke", "ffffffffffffffff")
    assert code == 1 and "No token with id 'ffffffffffffffff'" in err
    with pytest.raises(SystemExit):
        run_cli("tokens", "role", "ffffffffffffffff", "owner")


# ---------------------------------------------------------------------------------------------
# Admin routes


async def test_admin_lists_tokens_without_secrets(server: Server) -> None:
    admin = server.token(Role.ADMIN, name="root")
    editor = server.token(Role.EDITOR, name="Bob")
    async with server.http.get(server.url("/api/v1/tokens"), headers=auth_header(admin)) as r:
        assert r.status == 200
        text = await r.text()
    assert admin not in text and editor not in text
    assert secret_of(editor) not in text
    body = await r.json()
    assert [(t["name"], t["role"], t["revoked"]) for t in body["tokens"]] == [
        ("root", "admin", False),
        ("Bob", "editor", False),
    ]
    assert set(body["tokens"][0]) == {
        "token_id",
        "name",
        "role",
        "created_at",
        "last_used_at",
        "revoked",
    }
    async with server.http.get(server.url("/api/v1/tokens"), headers=auth_header(editor)) as r:
        assert r.status == 403
        assert (await r.json())["error"]["code"] == "FORBIDDEN"


async def test_admin_revokes_a_token_over_http(server: Server) -> None:
    admin = server.token(Role.ADMIN)
    editor = server.token(Role.EDITOR)
    info = server.store.lookup(editor)
    assert info is not None
    async with server.http.delete(
        server.url(f"/api/v1/tokens/{info.token_id}"), headers=auth_header(editor)
    ) as forbidden:
        assert forbidden.status == 403
    async with server.http.delete(
        server.url(f"/api/v1/tokens/{info.token_id}"), headers=auth_header(admin)
    ) as r:
        assert r.status == 200
        assert (await r.json())["revoked"] is True
    async with server.http.get(server.url("/api/v1/whoami"), headers=auth_header(editor)) as r:
        assert r.status == 401
    async with server.http.delete(
        server.url("/api/v1/tokens/0123456789abcdef"), headers=auth_header(admin)
    ) as missing:
        assert missing.status == 404
        assert (await missing.json())["error"]["code"] == "NOT_FOUND"
