"""The key vault: encryption at rest, backends, tamper detection, atomic writes, masking."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import keyring.backends.chainer
import keyring.backends.fail
import keyring.backends.null
import pytest
from keyring.backend import KeyringBackend

from dsm import paths
from dsm.storage import atomic, vault
from dsm.storage.crypto import SCRYPT_N, IntegrityError
from dsm.storage.vault import (
    KEYRING_SERVICE,
    PASSPHRASE_ENV,
    KdfParams,
    KeyNotFoundError,
    KeyRejectedError,
    PassphrasePurpose,
    Vault,
    VaultCorruptError,
    VaultError,
    VaultLockedError,
    WrongPassphraseError,
    detect_keyring,
    env_or_prompt_passphrase,
    mask_key,
)

CHEAP = KdfParams(n=2**10)
PASSPHRASE = "correct horse battery staple"


def fail_keyring() -> KeyringBackend:
    return keyring.backends.fail.Keyring()  # type: ignore[no-untyped-call]


def null_keyring() -> KeyringBackend:
    return keyring.backends.null.Keyring()  # type: ignore[no-untyped-call]


class MemoryKeyring(KeyringBackend):
    """A credential store that works, kept in memory (never the developer's real keyring)."""

    priority = 5

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.entries[(service, username)]


class ForgetfulKeyring(MemoryKeyring):
    """Accepts writes, then cannot read them back (a headless Secret Service's failure mode)."""

    def get_password(self, service: str, username: str) -> str | None:
        return None


class PlaintextLikeKeyring(MemoryKeyring):
    """Stands in for keyrings.alt's plaintext file backend."""


PlaintextLikeKeyring.__module__ = "keyrings.alt.file"


class Passphrases:
    """A passphrase provider that records what it was asked."""

    def __init__(self, passphrase: str = PASSPHRASE) -> None:
        self.passphrase = passphrase
        self.asked: list[PassphrasePurpose] = []

    def __call__(self, purpose: PassphrasePurpose) -> str:
        self.asked.append(purpose)
        return self.passphrase


def refuse_passphrase(purpose: PassphrasePurpose) -> str:
    raise AssertionError(f"the passphrase must not be needed here (asked to {purpose.value})")


@pytest.fixture(autouse=True)
def no_real_keyring() -> Iterator[None]:
    """Tests choose their keyring; nothing ever reaches the machine's real credential store."""
    previous = keyring.get_keyring()
    keyring.set_keyring(fail_keyring())
    yield
    keyring.set_keyring(previous)


@pytest.fixture
def canary() -> str:
    return "RBXCANARY" + secrets.token_urlsafe(48)


def open_file_vault(data_dir: Path, passphrase: str = PASSPHRASE) -> Vault:
    return Vault.open(
        data_dir, passphrase_provider=Passphrases(passphrase), keyring_backend=None, kdf=CHEAP
    )


def all_bytes(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]


def add(v: Vault, api_key: str, label: str = "live", universes: tuple[int, ...] = (111,)) -> str:
    return v.add_key(label=label, api_key=api_key, universes=universes, environment="production").id


# -- round trip -------------------------------------------------------------------------------


def test_round_trip_through_a_fresh_instance(tmp_path: Path, canary: str) -> None:
    v = open_file_vault(tmp_path)
    assert v.backend is None and not v.has_keys
    first = v.add_key(label="live", api_key=canary, universes=[111, 222], environment="production")
    second = v.add_key(
        label="test place", api_key=canary[::-1], universes=[333], environment="staging"
    )
    data_key = v.data_key()
    assert len(data_key) == 32

    reopened = open_file_vault(tmp_path)
    assert reopened.backend == "passphrase"
    assert reopened.has_keys
    live = reopened.key_for_universe(222)
    assert live is not None and live == first
    assert live.api_key.get_secret_value() == canary
    staging = reopened.key_for_universe(333)
    assert staging is not None and staging.api_key.get_secret_value() == canary[::-1]
    assert staging.environment == "staging" and staging.id == second.id
    assert reopened.key_for_universe(999) is None
    assert reopened.data_key() == data_key
    assert [s.label for s in reopened.list_keys()] == ["live", "test place"]


def test_data_key_is_created_once_and_kept(tmp_path: Path) -> None:
    v = open_file_vault(tmp_path)
    key = v.data_key()
    assert v.data_key() == key
    assert open_file_vault(tmp_path).data_key() == key
    assert not open_file_vault(tmp_path).has_keys


def test_listing_a_vault_that_does_not_exist_yet_asks_nothing(tmp_path: Path) -> None:
    v = Vault.open(tmp_path, passphrase_provider=refuse_passphrase, keyring_backend=None, kdf=CHEAP)
    assert v.list_keys() == [] and not v.has_keys and v.key_for_universe(1) is None
    assert not (tmp_path / "vault.bin").exists()
    with pytest.raises(KeyNotFoundError):
        v.remove_key("anything")


def test_remove_by_id_then_by_label(tmp_path: Path, canary: str) -> None:
    v = open_file_vault(tmp_path)
    first = add(v, canary, "Live", (1,))
    add(v, canary + "x", "Staging", (2,))
    assert v.remove_key(first).label == "Live"
    assert v.remove_key("staging").label == "Staging"  # labels match case-insensitively
    assert open_file_vault(tmp_path).list_keys() == []
    with pytest.raises(KeyNotFoundError, match="dsm key list"):
        v.remove_key("Live")


def test_changes_from_another_process_are_seen_and_never_lost(tmp_path: Path, canary: str) -> None:
    server = open_file_vault(tmp_path)
    server.data_key()
    cli = open_file_vault(tmp_path)
    add(cli, canary, "live", (42,))
    found = server.key_for_universe(42)  # the running server sees the key added meanwhile
    assert found is not None and found.api_key.get_secret_value() == canary
    add(server, canary + "2", "second", (43,))  # and its own write keeps the other's key
    assert {s.label for s in open_file_vault(tmp_path).list_keys()} == {"live", "second"}


# -- passphrase -------------------------------------------------------------------------------


def test_wrong_passphrase_is_a_clear_error_and_changes_nothing(tmp_path: Path, canary: str) -> None:
    add(open_file_vault(tmp_path), canary)
    before = (tmp_path / "vault.bin").read_bytes()
    with pytest.raises(WrongPassphraseError) as caught:
        open_file_vault(tmp_path, passphrase="not the passphrase")
    assert str(caught.value) == "the vault passphrase is wrong"
    assert isinstance(caught.value, VaultError)
    assert (tmp_path / "vault.bin").read_bytes() == before


def test_new_vault_refuses_a_short_passphrase(tmp_path: Path, canary: str) -> None:
    v = open_file_vault(tmp_path, passphrase="short")
    with pytest.raises(VaultError, match="at least 8 characters"):
        add(v, canary)
    assert not (tmp_path / "vault.bin").exists()


def test_passphrase_comes_from_the_environment_for_headless_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "from the environment")
    assert env_or_prompt_passphrase(PassphrasePurpose.UNLOCK) == "from the environment"
    monkeypatch.delenv(PASSPHRASE_ENV)
    monkeypatch.setattr(vault, "has_terminal", lambda: False)
    with pytest.raises(VaultLockedError, match=PASSPHRASE_ENV):
        env_or_prompt_passphrase(PassphrasePurpose.UNLOCK)


def test_new_passphrase_is_asked_twice_at_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    monkeypatch.setattr(vault, "has_terminal", lambda: True)
    answers = iter(["first try long", "second try long"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    with pytest.raises(VaultError, match="differ"):
        env_or_prompt_passphrase(PassphrasePurpose.CREATE)


def test_scrypt_header_records_parameters_and_weak_ones_are_raised_on_unlock(
    tmp_path: Path, canary: str
) -> None:
    add(open_file_vault(tmp_path), canary)
    assert header(tmp_path)["kdf"]["n"] == 2**10
    stronger = Passphrases()
    v = Vault.open(
        tmp_path, passphrase_provider=stronger, keyring_backend=None, kdf=KdfParams(2**11)
    )
    assert stronger.asked == [PassphrasePurpose.UNLOCK]  # the upgrade reuses that passphrase
    assert header(tmp_path)["kdf"]["n"] == 2**11
    found = v.key_for_universe(111)
    assert found is not None and found.api_key.get_secret_value() == canary
    open_file_vault(tmp_path)  # a weaker configuration never lowers the stored cost
    assert header(tmp_path)["kdf"]["n"] == 2**11
    assert open_file_vault(tmp_path).data_key() == v.data_key()


def test_production_scrypt_cost_follows_the_guidance() -> None:
    params = KdfParams()
    assert params.n == SCRYPT_N >= 2**17
    assert 128 * params.r * params.n >= 64 * 2**20  # memory per guess
    with pytest.raises(ValueError):
        KdfParams(n=1000)


def header(data_dir: Path) -> dict[str, Any]:
    blob = (data_dir / "vault.bin").read_bytes()
    (length,) = struct.unpack_from(">I", blob, 8)
    parsed: dict[str, Any] = json.loads(blob[12 : 12 + length])
    return parsed


# -- files on disk ----------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_vault_file_is_0600_in_a_0700_directory(tmp_path: Path, canary: str) -> None:
    data_dir = tmp_path / "state" / "dsm"
    old_umask = os.umask(0o022)
    try:
        add(open_file_vault(data_dir), canary)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "vault.bin").stat().st_mode) == 0o600
    assert stat.S_IMODE((data_dir / "vault.lock").stat().st_mode) == 0o600


def test_no_file_ever_holds_the_key_or_the_data_key(tmp_path: Path, canary: str) -> None:
    v = open_file_vault(tmp_path)
    add(v, canary, "live", (1,))
    add(v, "RBXOTHER" + secrets.token_urlsafe(40), "other", (2,))
    v.remove_key("other")
    data_key = v.data_key()
    files = all_bytes(tmp_path)
    assert [p.name for p, _ in files] == ["vault.bin", "vault.lock"]
    for path, content in files:
        assert canary.encode() not in content, path
        assert data_key not in content, path
        assert base64.b64encode(data_key) not in content, path


def test_written_files_leave_no_temporary_files(tmp_path: Path, canary: str) -> None:
    v = open_file_vault(tmp_path)
    for i in range(5):
        add(v, f"{canary}{i}", f"k{i}", (i + 1,))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vault.bin", "vault.lock"]


# -- tampering --------------------------------------------------------------------------------


def test_flipped_byte_is_reported_as_damage(tmp_path: Path, canary: str) -> None:
    add(open_file_vault(tmp_path), canary)
    path = tmp_path / "vault.bin"
    blob = bytearray(path.read_bytes())
    blob[len(blob) - 40] ^= 0x01  # inside the sealed body
    path.write_bytes(bytes(blob))
    with pytest.raises(VaultCorruptError, match="damaged") as caught:
        open_file_vault(tmp_path)
    assert isinstance(caught.value, IntegrityError)


def test_altered_body_with_a_recomputed_checksum_fails_authentication(
    tmp_path: Path, canary: str
) -> None:
    add(open_file_vault(tmp_path), canary)
    path = tmp_path / "vault.bin"
    content = bytearray(path.read_bytes()[:-32])
    content[-20] ^= 0x80
    path.write_bytes(bytes(content) + hashlib.sha256(content).digest())
    with pytest.raises(VaultCorruptError, match="integrity check") as caught:
        open_file_vault(tmp_path)
    assert isinstance(caught.value, IntegrityError)
    assert canary not in str(caught.value)


def test_truncated_or_foreign_file_is_refused(tmp_path: Path, canary: str) -> None:
    add(open_file_vault(tmp_path), canary)
    path = tmp_path / "vault.bin"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(VaultCorruptError):
        open_file_vault(tmp_path)
    path.write_bytes(b"{}")
    with pytest.raises(VaultCorruptError, match="not a DataStore Manager Pro vault"):
        open_file_vault(tmp_path)


# -- OS keyring -------------------------------------------------------------------------------


def test_usable_keyring_holds_the_vault_key_and_no_passphrase_is_asked(
    tmp_path: Path, canary: str
) -> None:
    store = MemoryKeyring()
    keyring.set_keyring(store)
    v = Vault.open(tmp_path, passphrase_provider=refuse_passphrase, kdf=CHEAP)
    add(v, canary)
    data_key = v.data_key()
    assert v.backend == "keyring"
    assert [service for service, _ in store.entries] == [KEYRING_SERVICE]  # probe entry gone
    (stored,) = store.entries.values()
    assert len(base64.b64decode(stored)) == 32 and canary not in stored

    reopened = Vault.open(tmp_path, passphrase_provider=refuse_passphrase, kdf=CHEAP)
    found = reopened.key_for_universe(111)
    assert found is not None and found.api_key.get_secret_value() == canary
    assert reopened.data_key() == data_key
    for _, content in all_bytes(tmp_path):
        assert canary.encode() not in content and data_key not in content


def test_keyring_vault_without_its_keyring_entry_says_so(tmp_path: Path, canary: str) -> None:
    store = MemoryKeyring()
    add(Vault.open(tmp_path, keyring_backend=store, kdf=CHEAP), canary)
    store.entries.clear()
    with pytest.raises(VaultLockedError, match="no entry"):
        Vault.open(tmp_path, keyring_backend=store, kdf=CHEAP)
    with pytest.raises(VaultLockedError, match="not available"):
        Vault.open(tmp_path, keyring_backend=None, kdf=CHEAP)


def test_unusable_keyring_falls_back_to_the_passphrase_file(tmp_path: Path, canary: str) -> None:
    keyring.set_keyring(fail_keyring())
    asked = Passphrases()
    v = Vault.open(tmp_path, passphrase_provider=asked, kdf=CHEAP)
    add(v, canary)
    assert v.backend == "passphrase"
    assert asked.asked == [PassphrasePurpose.CREATE]
    assert header(tmp_path)["backend"] == "passphrase"


def test_forced_fallback_when_detection_finds_nothing(
    tmp_path: Path, canary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring.set_keyring(MemoryKeyring())
    monkeypatch.setattr(vault, "detect_keyring", lambda probe=True: None)
    v = Vault.open(tmp_path, passphrase_provider=Passphrases(), kdf=CHEAP)
    add(v, canary)
    assert v.backend == "passphrase"


def test_keyring_that_loses_writes_is_not_used(tmp_path: Path, canary: str) -> None:
    keyring.set_keyring(ForgetfulKeyring())
    assert detect_keyring() is None
    v = Vault.open(tmp_path, passphrase_provider=Passphrases(), kdf=CHEAP)
    add(v, canary)
    assert v.backend == "passphrase"


@pytest.mark.parametrize(
    "backend",
    [fail_keyring(), null_keyring(), PlaintextLikeKeyring()],
    ids=["fail", "null", "plaintext"],
)
def test_non_credential_stores_are_refused(backend: KeyringBackend) -> None:
    keyring.set_keyring(backend)
    assert detect_keyring() is None


def test_chained_keyrings_skip_the_plaintext_one(monkeypatch: pytest.MonkeyPatch) -> None:
    real = MemoryKeyring()
    chainer = keyring.backends.chainer.ChainerBackend
    monkeypatch.setattr(chainer, "backends", [PlaintextLikeKeyring(), real])
    keyring.set_keyring(chainer())  # type: ignore[no-untyped-call]
    assert detect_keyring() is real


# -- never showing the key --------------------------------------------------------------------


def test_key_never_appears_in_repr_str_dumps_or_summaries(tmp_path: Path, canary: str) -> None:
    v = open_file_vault(tmp_path)
    record = v.add_key(label="live", api_key=canary, universes=[5], environment="development")
    (summary,) = v.list_keys()
    shown = [
        repr(record),
        str(record),
        record.model_dump_json(),
        str(record.model_dump()),
        repr(summary),
        summary.model_dump_json(),
        repr(v),
        str(v.key_for_universe(5)),
    ]
    for text in shown:
        assert canary not in text
        assert canary[4:-4] not in text
    assert summary.masked_key == canary[:4] + "…" + canary[-4:]


def test_mask_reveals_at_most_a_third_and_four_characters_each_side() -> None:
    assert mask_key("A" * 8 + "B" * 100 + "C" * 8) == "AAAA…CCCC"
    assert mask_key("abcdefghijkl") == "ab…kl"
    assert mask_key("abcde") == "…"
    assert mask_key("") == "…"


def test_rejected_input_never_quotes_the_key(tmp_path: Path, canary: str) -> None:
    v = open_file_vault(tmp_path)
    bad = canary[:20] + " " + canary[20:]
    with pytest.raises(KeyRejectedError, match="spaces") as caught:
        add(v, bad)
    assert canary[:20] not in str(caught.value)
    with pytest.raises(KeyRejectedError, match="empty"):
        add(v, "   ")
    with pytest.raises(KeyRejectedError, match="at least one universe"):
        add(v, canary, universes=())
    with pytest.raises(KeyRejectedError, match="environment"):
        v.add_key(label="x", api_key=canary, universes=[1], environment="prod")
    assert not (tmp_path / "vault.bin").exists()


def test_one_key_per_universe_and_unique_labels(tmp_path: Path, canary: str) -> None:
    v = open_file_vault(tmp_path)
    add(v, canary, "live", (10, 11))
    with pytest.raises(KeyRejectedError, match="universe 11 already uses the key 'live'"):
        add(v, canary + "b", "other", (11,))
    with pytest.raises(KeyRejectedError, match="already stored"):
        add(v, canary + "b", "LIVE", (12,))
    assert [s.label for s in v.list_keys()] == ["live"]


# -- atomic writes ----------------------------------------------------------------------------


def test_write_atomic_orders_fsync_rename_dirsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr("dsm.storage.atomic.os.fsync", fsync)
    monkeypatch.setattr("dsm.storage.atomic.os.replace", replace)
    atomic.write_atomic(tmp_path / "f.bin", b"payload")
    expected = ["fsync-file", "replace", "fsync-dir"] if os.name == "posix" else events
    assert events == expected
    assert (tmp_path / "f.bin").read_bytes() == b"payload"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_write_atomic_creates_the_file_private_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modes: list[int] = []
    real_write = os.write

    def write(fd: int, data: bytes | memoryview) -> int:
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    monkeypatch.setattr("dsm.storage.atomic.os.write", write)
    old_umask = os.umask(0)  # a permissive umask must not widen the file
    try:
        atomic.write_atomic(tmp_path / "secret", b"x" * 10)
    finally:
        os.umask(old_umask)
    assert modes and set(modes) == {0o600}
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600


def test_failed_write_keeps_the_old_file_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.bin"
    atomic.write_atomic(target, b"old")

    def broken_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("dsm.storage.atomic.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic.write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


# -- data directory ---------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_data_dir_honours_dsm_home_and_makes_it_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    monkeypatch.setenv(paths.HOME_ENV, str(home))
    assert paths.data_dir() == home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_data_dir_defaults_to_the_platform_user_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(paths.HOME_ENV, raising=False)
    seen: list[str] = []

    def user_data_dir(appname: str, appauthor: object = None) -> str:
        seen.append(appname)
        return str(tmp_path / "platform" / appname)

    monkeypatch.setattr("dsm.paths.platformdirs.user_data_dir", user_data_dir)
    result = paths.data_dir()
    assert seen == ["DataStoreManagerPro"]
    assert result == tmp_path / "platform" / "DataStoreManagerPro"
    assert stat.S_IMODE(result.stat().st_mode) == 0o700
