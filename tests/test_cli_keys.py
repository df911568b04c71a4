"""`dsm key add | list | remove`, driven the way `dsm` itself parses and dispatches."""

from __future__ import annotations

import argparse
import io
import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backends.fail
import pytest
from keyring.backend import KeyringBackend

from dsm import cli_keys
from dsm.storage.vault import PASSPHRASE_ENV, KdfParams

PASSPHRASE = "a long enough passphrase"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """DSM_HOME in tmp, passphrase from the environment, cheap scrypt, no real OS keyring."""
    monkeypatch.setenv("DSM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.setattr(cli_keys, "VAULT_KDF", KdfParams(n=2**10))
    previous = keyring.get_keyring()
    keyring.set_keyring(fail_keyring())
    yield
    keyring.set_keyring(previous)


def fail_keyring() -> KeyringBackend:
    return keyring.backends.fail.Keyring()  # type: ignore[no-untyped-call]


@pytest.fixture
def canary() -> str:
    return "RBXCANARY" + secrets.token_urlsafe(60)


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def text(self) -> str:
        return self.out + self.err


def dsm(*argv: str, stdin: str = "") -> Result:
    """Parse and dispatch like `dsm.cli.main` does once `key` is wired in."""
    parser = argparse.ArgumentParser(prog="dsm")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_keys.register(sub)
    args = parser.parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    code = cli_keys.run(args, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return Result(code, out.getvalue(), err.getvalue())


def home_bytes(tmp_path: Path) -> list[bytes]:
    return [p.read_bytes() for p in (tmp_path / "home").rglob("*") if p.is_file()]


def test_add_list_remove_round_trip_never_prints_the_key(tmp_path: Path, canary: str) -> None:
    added = dsm(
        "key", "add", "--label", "live game", "--universe", "123", "--universe", "456",
        "--env", "production", "--stdin", stdin=canary + "\n",
    )  # fmt: skip
    assert added.code == 0, added.err
    assert "Added key 'live game'" in added.out and "123, 456" in added.out
    assert canary[:4] + "…" + canary[-4:] in added.out
    assert "no usable OS keyring" in added.err  # the passphrase fallback is announced

    listed = dsm("key", "list")
    assert listed.code == 0
    assert "live game" in listed.out and "production" in listed.out and "123,456" in listed.out
    assert canary[:4] + "…" + canary[-4:] in listed.out
    assert "passphrase-protected" in listed.out

    key_id = listed.out.splitlines()[1].split()[0]
    removed = dsm("key", "remove", key_id)
    assert removed.code == 0 and "Removed key 'live game'" in removed.out
    empty = dsm("key", "list")
    assert empty.code == 0 and "No Open Cloud API keys are stored" in empty.out

    for result in (added, listed, removed, empty):
        assert canary not in result.text and canary[4:-4] not in result.text
    for content in home_bytes(tmp_path):
        assert canary.encode() not in content


def test_remove_by_label_and_unknown_key(canary: str) -> None:
    assert dsm("key", "add", "--label", "Staging", "--universe", "9", "--env", "staging",
               "--stdin", stdin=canary).code == 0  # fmt: skip
    missing = dsm("key", "remove", "nope")
    assert missing.code == 1 and "error: no stored key has the id or label 'nope'" in missing.err
    assert dsm("key", "remove", "staging").code == 0


def test_wrong_passphrase_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, canary: str) -> None:
    assert dsm("key", "add", "--label", "a", "--universe", "1", "--env", "production",
               "--stdin", stdin=canary).code == 0  # fmt: skip
    monkeypatch.setenv(PASSPHRASE_ENV, "something else entirely")
    result = dsm("key", "list")
    assert result.code == 1
    assert result.err == "error: the vault passphrase is wrong\n"
    assert result.out == ""


def test_conflicts_and_bad_input_fail_with_a_message(canary: str) -> None:
    add = ("key", "add", "--label", "live", "--universe", "5", "--env", "production", "--stdin")
    assert dsm(*add, stdin=canary).code == 0
    again = dsm(*add, stdin=canary + "b")
    assert again.code == 1 and "already stored" in again.err

    empty = dsm("key", "add", "--label", "x", "--universe", "6", "--env", "staging", "--stdin")
    assert empty.code == 1 and "standard input was empty" in empty.err
    two = dsm("key", "add", "--label", "x", "--universe", "6", "--env", "staging", "--stdin",
              stdin=f"{canary}\n{canary}\n")  # fmt: skip
    assert two.code == 1 and "several lines" in two.err and canary not in two.text


@pytest.mark.parametrize(
    "argv",
    [
        ["key", "add", "--label", "x", "--universe", "abc", "--env", "production"],
        ["key", "add", "--label", "x", "--universe", "0", "--env", "production"],
        ["key", "add", "--label", "x", "--universe", "1", "--env", "prod"],
        ["key", "add", "--label", "x", "--env", "production"],
        ["key", "add", "--label", "x", "--universe", "1", "--env", "production", "KEY"],
        ["key", "add", "--label", "x", "--universe", "1", "--env", "production", "--key", "K"],
        ["key"],
    ],
    ids=["non-numeric", "zero", "bad-env", "no-universe", "positional-key", "key-option", "none"],
)
def test_usage_errors_exit_2_and_the_key_is_never_an_argument(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        dsm(*argv)
    assert caught.value.code == 2


def test_without_stdin_the_key_is_read_at_a_hidden_prompt(
    monkeypatch: pytest.MonkeyPatch, canary: str
) -> None:
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return canary

    monkeypatch.setattr(cli_keys, "has_terminal", lambda: True)
    monkeypatch.setattr("getpass.getpass", fake_getpass)
    result = dsm("key", "add", "--label", "typed", "--universe", "77", "--env", "development")
    assert result.code == 0 and canary not in result.text
    assert prompts == ["Open Cloud API key (input hidden): "]

    monkeypatch.setattr(cli_keys, "has_terminal", lambda: False)
    no_tty = dsm("key", "add", "--label", "t2", "--universe", "78", "--env", "development")
    assert no_tty.code == 1 and "--stdin" in no_tty.err


def test_real_process_with_production_scrypt_and_key_on_stdin(tmp_path: Path) -> None:
    """A separate interpreter: real stdin pipe, real env, the default scrypt cost."""
    canary = "RBXCANARY" + secrets.token_urlsafe(60)
    script = textwrap.dedent(
        """
        import argparse, sys
        import keyring, keyring.backends.fail
        from dsm import cli_keys
        keyring.set_keyring(keyring.backends.fail.Keyring())  # never the host's keyring
        parser = argparse.ArgumentParser(prog="dsm")
        cli_keys.register(parser.add_subparsers(dest="command", required=True))
        sys.exit(cli_keys.run(parser.parse_args()))
        """
    )
    env = {**os.environ, "DSM_HOME": str(tmp_path / "home"), PASSPHRASE_ENV: PASSPHRASE}

    def run(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    added = run("key", "add", "--label", "live", "--universe", "1", "--env", "production",
                "--stdin", stdin=canary + "\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = run("key", "list")
    assert listed.returncode == 0 and "live" in listed.stdout
    for proc in (added, listed):
        assert canary not in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
    for content in home_bytes(tmp_path):
        assert canary.encode() not in content
    wrong = subprocess.run(
        [sys.executable, "-c", script, "key", "list"],
        capture_output=True,
        text=True,
        env={**env, PASSPHRASE_ENV: "wrong passphrase!"},
        timeout=120,
        check=False,
    )
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == "error: the vault passphrase is wrong"
