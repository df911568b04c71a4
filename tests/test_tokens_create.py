"""`dsm tokens create`: a token for scripts and CI, printed once, usable at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsm.paths import HOME_ENV
from dsm.services.tokens import DB_FILENAME, TokenStore
from shared_schema.common import Role
from tests.test_tokens import run_cli
from tools.testing.server import entry_path, idem, running_server


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("role", list(Role))
def test_create_prints_the_token_alone_once_and_stores_only_its_hash(
    home: Path, role: Role
) -> None:
    code, out, err = run_cli("tokens", "create", "--role", role.value, "--label", "nightly backup")
    assert code == 0
    token = out.strip()
    assert out == token + "\n"  # stdout is the token alone: TOKEN=$(dsm tokens create ...)
    assert token.startswith("dsm_")
    assert "shown only now" in err and token not in err
    store = TokenStore.open(home)
    try:
        info = store.lookup(token)
        assert info is not None and (info.name, info.role) == ("nightly backup", role)
    finally:
        store.close()
    assert token.encode() not in (home / DB_FILENAME).read_bytes()
    _, listing, _ = run_cli("tokens", "list")
    assert "nightly backup" in listing and role.value in listing and token not in listing


def test_two_creates_give_two_tokens(home: Path) -> None:
    _, first, _ = run_cli("tokens", "create", "--role", "viewer", "--label", "ci")
    _, second, _ = run_cli("tokens", "create", "--role", "viewer", "--label", "ci")
    assert first != second


@pytest.mark.parametrize("label", ["", "   ", "x" * 101, "bad\x1b[31mlabel"])
def test_create_refuses_bad_labels(home: Path, label: str) -> None:
    code, out, err = run_cli("tokens", "create", "--role", "editor", "--label", label)
    assert code == 2 and out == "" and "label must be 1-100 printable characters" in err
    assert "\x1b" not in err
    assert not (home / DB_FILENAME).exists()


def test_create_refuses_unknown_roles(home: Path) -> None:
    with pytest.raises(SystemExit):
        run_cli("tokens", "create", "--role", "owner", "--label", "x")


async def test_a_created_token_works_against_a_running_server_with_its_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    async with running_server(tmp_path) as server:
        _, viewer, _ = run_cli("tokens", "create", "--role", "viewer", "--label", "dashboard")
        _, editor, _ = run_cli("tokens", "create", "--role", "editor", "--label", "ci")
        path = entry_path(1, "players", "p1")
        body = {"value_json": '{"coins": 1}', "idempotency_key": idem()}
        status, refused = await server.call("POST", path, viewer.strip(), json=body)
        assert status == 403 and refused["error"]["code"] == "FORBIDDEN"
        status, created = await server.call("POST", path, editor.strip(), json=body)
        assert status == 200, created
        status, read = await server.call("GET", path, viewer.strip())
        assert status == 200 and read["value_json"] == '{"coins":1}'
        token_id = editor.strip().split("_")[1]
        assert run_cli("tokens", "revoke", token_id)[0] == 0
        status, _ = await server.call("GET", path, editor.strip())
        assert status == 401  # revocation applies at the next request
