"""The key vault: the user's Open Cloud API keys and the data key, encrypted at rest.

Envelope design (reference/reliability.md §2): everything lives in one file, `vault.bin`, whose
body is sealed with AES-256-GCM under a random *vault key*. Only that 32-byte vault key is
protected differently per backend:

- OS keyring (macOS Keychain, Windows Credential Locker, Secret Service/KWallet) when a real one
  works: the vault key is stored in the keyring, base64, under service "DataStoreManagerPro" and
  an entry named after the vault's random id. We keep the key in the keyring rather than the whole
  vault because Windows caps a credential at 2,560 bytes and a dozen API keys would not fit, and
  because one file format for both backends keeps writes atomic in one place.
- Otherwise a passphrase: the vault key is wrapped under a key derived from the passphrase with
  scrypt; the salt and scrypt parameters sit in the file header so they can be raised later (a
  vault unlocked with weaker parameters than configured is re-wrapped on the spot).

A plaintext fallback does not exist. File layout:

    b"DSMVAULT" | u32 header length | header JSON | u32 body length | sealed body | SHA-256

The header holds no secret. The body's associated data is the exact header bytes, so any change
to the header is caught. The trailing SHA-256 is not security (an attacker can recompute it); it
tells accidental damage ("the file is corrupt") apart from a wrong passphrase, which otherwise
look identical to AES-GCM.

Several processes may hold the vault (`dsm serve` and `dsm key add` in another terminal): every
change re-reads the file under an exclusive lock before writing, and readers notice a newer file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import getpass
import hashlib
import json
import logging
import os
import re
import secrets
import struct
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Literal, cast, get_args

import keyring
import keyring.backends.chainer
import keyring.backends.fail
import keyring.backends.null
from keyring.backend import KeyringBackend
from pydantic import AwareDatetime, BaseModel, ConfigDict, SecretStr, ValidationError

from ..paths import ensure_private_dir
from .atomic import write_atomic
from .crypto import (
    KEY_BYTES,
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    IntegrityError,
    RecordCipher,
    derive_key,
    new_key,
    slot,
)

log = logging.getLogger(__name__)

VAULT_FILE = "vault.bin"
LOCK_FILE = "vault.lock"
KEYRING_SERVICE = "DataStoreManagerPro"
PASSPHRASE_ENV = "DSM_VAULT_PASSPHRASE"
MIN_PASSPHRASE_CHARS = 8

_MAGIC = b"DSMVAULT"
_FORMAT = 1
_SALT_BYTES = 16
_DIGEST_BYTES = 32
_MAX_SECTION = 16 * 1024 * 1024
_LABEL_MAX = 64
_MAX_UNIVERSE_ID = 2**63 - 1

Environment = Literal["production", "staging", "development"]
ENVIRONMENTS: tuple[str, ...] = get_args(Environment)
Backend = Literal["keyring", "passphrase"]


# ---------------------------------------------------------------------------------------------
# Errors: every message is meant to be shown to the user as is, and none carries a secret.


class VaultError(Exception):
    """Something the user must act on; the message says what."""


class WrongPassphraseError(VaultError):
    def __init__(self) -> None:
        super().__init__("the vault passphrase is wrong")


class VaultCorruptError(VaultError, IntegrityError):
    """vault.bin is damaged or was altered; it cannot be read."""


class VaultLockedError(VaultError):
    """The vault key could not be obtained (no passphrase given, keyring unavailable ...)."""


class KeyNotFoundError(VaultError):
    pass


class KeyRejectedError(VaultError):
    """An API key, label or universe list that cannot be stored."""


# ---------------------------------------------------------------------------------------------
# Records


class ApiKeyRecord(BaseModel):
    """One Open Cloud API key. `api_key` is a SecretStr: repr, str and model dumps mask it."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    id: str
    label: str
    api_key: SecretStr
    universes: list[int]
    environment: Environment
    added_at: AwareDatetime

    def summary(self) -> KeySummary:
        return KeySummary(
            id=self.id,
            label=self.label,
            masked_key=mask_key(self.api_key.get_secret_value()),
            universes=list(self.universes),
            environment=self.environment,
            added_at=self.added_at,
        )


class KeySummary(BaseModel):
    """What may be shown of a key: never more than a few characters of it."""

    model_config = ConfigDict(frozen=True)

    id: str
    label: str
    masked_key: str
    universes: list[int]
    environment: Environment
    added_at: AwareDatetime


def mask_key(api_key: str) -> str:
    """First and last few characters, at most 4 each and never more than a third of the key."""
    shown = min(4, len(api_key) // 6)
    if shown == 0:
        return "…"
    return f"{api_key[:shown]}…{api_key[-shown:]}"


class _Body(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True)

    format: Literal[1]
    keys: list[ApiKeyRecord]
    data_key: str | None  # base64; created on first use


# ---------------------------------------------------------------------------------------------
# Passphrases


class PassphrasePurpose(Enum):
    UNLOCK = "unlock"
    CREATE = "create"


PassphraseProvider = Callable[[PassphrasePurpose], str]


def has_terminal() -> bool:
    """True when there is a terminal to prompt on, even if stdin is a pipe (getpass uses it)."""
    if os.name != "posix":
        return sys.stdin is not None and sys.stdin.isatty()
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def env_or_prompt_passphrase(purpose: PassphrasePurpose) -> str:
    """`$DSM_VAULT_PASSPHRASE` for headless use, else a hidden prompt on the terminal."""
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env:
        return from_env
    if not has_terminal():
        raise VaultLockedError(
            "the key vault needs its passphrase but there is no terminal to ask on; "
            f"set {PASSPHRASE_ENV} for unattended use"
        )
    if purpose is PassphrasePurpose.UNLOCK:
        return getpass.getpass("Vault passphrase: ")
    print(
        "No usable OS keyring was found, so the API key vault is encrypted with a passphrase.\n"
        "Choose one you will remember: without it the stored keys cannot be recovered.",
        file=sys.stderr,
    )
    first = getpass.getpass("New vault passphrase: ")
    if getpass.getpass("Repeat the passphrase: ") != first:
        raise VaultError("the two passphrases differ; nothing was stored")
    return first


# ---------------------------------------------------------------------------------------------
# OS keyring detection


def detect_keyring(*, probe: bool = True) -> KeyringBackend | None:
    """The OS credential store if one really works, else None.

    keyring's "fail" and "null" backends and keyrings.alt (plaintext or home-made file formats)
    are not credential stores and are refused. `probe` writes, reads back and deletes a random
    entry, because on headless Linux a Secret Service can accept writes and then fail reads.
    """
    try:
        current = keyring.get_keyring()
    except Exception:  # a broken keyring configuration means "none", not a crash
        return None
    if isinstance(current, keyring.backends.chainer.ChainerBackend):
        candidates: Iterable[KeyringBackend] = current.backends
    else:
        candidates = [current]
    for backend in candidates:
        if _is_credential_store(backend) and (not probe or _probe(backend)):
            return backend
    return None


def _is_credential_store(backend: KeyringBackend) -> bool:
    refused = (
        keyring.backends.fail.Keyring,
        keyring.backends.null.Keyring,
        keyring.backends.chainer.ChainerBackend,
    )
    if isinstance(backend, refused) or type(backend).__module__.startswith("keyrings.alt"):
        return False
    try:
        return float(backend.priority) > 0
    except Exception:  # a backend whose priority check fails is not viable here
        return False


def _probe(backend: KeyringBackend) -> bool:
    username = f"probe-{secrets.token_hex(8)}"
    value = secrets.token_urlsafe(16)
    try:
        backend.set_password(KEYRING_SERVICE, username, value)
        try:
            return backend.get_password(KEYRING_SERVICE, username) == value
        finally:
            backend.delete_password(KEYRING_SERVICE, username)
    except Exception as exc:  # any failure means this store is not usable from here
        log.info("OS keyring %s is not usable: %s", type(backend).__name__, type(exc).__name__)
        return False


class _Auto(Enum):
    AUTO = "auto"


AUTO = _Auto.AUTO


# ---------------------------------------------------------------------------------------------
# File format


@dataclass(frozen=True)
class KdfParams:
    """scrypt cost. Production uses crypto's defaults; tests may pass a cheap `n`."""

    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    def __post_init__(self) -> None:
        # Bounds also stop a doctored header from demanding gigabytes of memory.
        if self.n < 2 or self.n & (self.n - 1) or self.n > 2**22:
            raise ValueError("scrypt n must be a power of two between 2 and 2**22")
        if not 1 <= self.r <= 32 or not 1 <= self.p <= 16:
            raise ValueError("scrypt r must be 1..32 and p 1..16")

    def weaker_than(self, other: KdfParams) -> bool:
        return self.n * self.r * self.p < other.n * other.r * other.p


@dataclass(frozen=True)
class _Header:
    vault_id: str
    backend: Backend
    kdf: KdfParams | None = None
    salt: bytes = b""
    wrapped_key: bytes = b""
    raw: bytes = field(default=b"", compare=False)

    @property
    def keyring_username(self) -> str:
        return f"vault-{self.vault_id}"

    def encode(self) -> bytes:
        doc: dict[str, Any] = {"format": _FORMAT, "vault_id": self.vault_id}
        if self.backend == "keyring":
            doc["backend"] = "keyring"
            doc["keyring"] = {"service": KEYRING_SERVICE, "username": self.keyring_username}
        else:
            assert self.kdf is not None
            doc["backend"] = "passphrase"
            doc["kdf"] = {
                "name": "scrypt",
                "n": self.kdf.n,
                "r": self.kdf.r,
                "p": self.kdf.p,
                "salt": _b64(self.salt),
            }
            doc["wrapped_key"] = _b64(self.wrapped_key)
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes) -> _Header:
        try:
            doc = json.loads(raw)
            if doc["format"] != _FORMAT:
                raise VaultCorruptError(
                    f"vault.bin has format {doc['format']!r}, which this version of "
                    "DataStore Manager Pro cannot read; update it"
                )
            vault_id = str(doc["vault_id"])
            if not re.fullmatch(r"[0-9a-f]{16}", vault_id):
                raise ValueError("vault id")
            if doc["backend"] == "keyring":
                return cls(vault_id=vault_id, backend="keyring", raw=raw)
            if doc["backend"] != "passphrase" or doc["kdf"]["name"] != "scrypt":
                raise ValueError("backend")
            kdf = doc["kdf"]
            params = KdfParams(n=int(kdf["n"]), r=int(kdf["r"]), p=int(kdf["p"]))
            salt = _unb64(kdf["salt"])
            wrapped = _unb64(doc["wrapped_key"])
        except VaultCorruptError:
            raise
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise VaultCorruptError(
                "vault.bin has an unreadable header: it is damaged or was altered"
            ) from None
        return cls(vault_id, "passphrase", params, salt, wrapped, raw)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise TypeError("expected base64 text")
    return base64.b64decode(text.encode("ascii"), validate=True)


def _pack(header_raw: bytes, sealed_body: bytes) -> bytes:
    out = (
        _MAGIC
        + struct.pack(">I", len(header_raw))
        + header_raw
        + struct.pack(">I", len(sealed_body))
        + sealed_body
    )
    return out + hashlib.sha256(out).digest()


def _unpack(blob: bytes) -> tuple[_Header, bytes]:
    damaged = VaultCorruptError(
        "vault.bin is damaged (it failed its checksum): restore it from a backup, or delete it "
        "and add the API keys again"
    )
    if not blob.startswith(_MAGIC):
        raise VaultCorruptError("vault.bin is not a DataStore Manager Pro vault file")
    if len(blob) < len(_MAGIC) + 8 + _DIGEST_BYTES:
        raise damaged
    content, digest = blob[:-_DIGEST_BYTES], blob[-_DIGEST_BYTES:]
    if not secrets.compare_digest(hashlib.sha256(content).digest(), digest):
        raise damaged
    pos = len(_MAGIC)
    (header_len,) = struct.unpack_from(">I", content, pos)
    pos += 4
    header_raw = content[pos : pos + header_len]
    pos += header_len
    if header_len > _MAX_SECTION or pos + 4 > len(content):
        raise damaged
    (body_len,) = struct.unpack_from(">I", content, pos)
    pos += 4
    if pos + body_len != len(content):
        raise damaged
    return _Header.decode(header_raw), content[pos:]


def _body_aad(header_raw: bytes) -> bytes:
    return slot("dsm-vault-body", header_raw.decode("utf-8"))


def _wrap_aad(vault_id: str) -> bytes:
    return slot("dsm-vault-key", vault_id)


@dataclass(frozen=True)
class _Stamp:
    """Identity of the file version last read, to notice another process's write cheaply."""

    ino: int
    size: int
    mtime_ns: int


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return _Stamp(st.st_ino, st.st_size, st.st_mtime_ns)


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Serialise vault changes between processes (advisory; only our own code takes it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # retries for 10 s, then raises
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock on both systems


# ---------------------------------------------------------------------------------------------
# The vault


@dataclass
class _State:
    header: _Header
    vault_key: bytes = field(repr=False)
    body: _Body = field(repr=False)
    stamp: _Stamp | None


class Vault:
    """The user's Open Cloud API keys and the server's data key.

    `Vault.open` unlocks an existing vault (asking the keyring or the passphrase provider). A
    vault that does not exist yet is created on the first change (`add_key`, `data_key`), so
    listing an empty vault never prompts for a passphrase.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        passphrase_provider: PassphraseProvider = env_or_prompt_passphrase,
        keyring_backend: KeyringBackend | _Auto | None = AUTO,
        kdf: KdfParams | None = None,
    ) -> None:
        """`keyring_backend`: AUTO detects the OS keyring; None forces the passphrase file."""
        self._dir = Path(data_dir)
        self._path = self._dir / VAULT_FILE
        self._passphrase_provider = passphrase_provider
        self._keyring_choice = keyring_backend
        self._kdf = kdf or KdfParams()
        self._state: _State | None = None

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        passphrase_provider: PassphraseProvider = env_or_prompt_passphrase,
        keyring_backend: KeyringBackend | _Auto | None = AUTO,
        kdf: KdfParams | None = None,
    ) -> Vault:
        vault = cls(
            data_dir,
            passphrase_provider=passphrase_provider,
            keyring_backend=keyring_backend,
            kdf=kdf,
        )
        ensure_private_dir(vault._dir)
        vault._refresh()
        return vault

    def __repr__(self) -> str:
        count = len(self._state.body.keys) if self._state else 0
        return f"Vault(path={str(self._path)!r}, backend={self.backend!r}, keys={count})"

    # -- read side ------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def backend(self) -> Backend | None:
        """Where the vault key lives; None while the vault has not been created."""
        return self._state.header.backend if self._state else None

    @property
    def has_keys(self) -> bool:
        self._refresh()
        return bool(self._state and self._state.body.keys)

    def list_keys(self) -> list[KeySummary]:
        self._refresh()
        return [record.summary() for record in self._records()]

    def records(self) -> list[ApiKeyRecord]:
        """Every stored key with its secret, for the server that uses them (never to show)."""
        self._refresh()
        return list(self._records())

    def key_for_universe(self, universe_id: int) -> ApiKeyRecord | None:
        self._refresh()
        for record in self._records():
            if universe_id in record.universes:
                return record
        return None

    def data_key(self) -> bytes:
        """The 32-byte key the cache and journal encrypt records with; created on first use."""
        self._refresh()
        if self._state is None or self._state.body.data_key is None:
            self._change(_ensure_data_key)
        assert self._state is not None and self._state.body.data_key is not None
        return base64.b64decode(self._state.body.data_key)

    # -- changes --------------------------------------------------------------------------------

    def add_key(
        self,
        *,
        label: str,
        api_key: str | SecretStr,
        universes: Iterable[int],
        environment: str,
    ) -> ApiKeyRecord:
        secret = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        secret = _check_api_key(secret)
        label = _check_label(label)
        universe_list = _check_universes(universes)
        if environment not in ENVIRONMENTS:
            raise KeyRejectedError(
                f"environment must be one of {', '.join(ENVIRONMENTS)}, not {environment!r}"
            )
        added: list[ApiKeyRecord] = []

        def apply(body: _Body) -> _Body:
            _check_no_conflict(body.keys, label, universe_list)
            taken = {r.id for r in body.keys} | {r.label.casefold() for r in body.keys}
            key_id = secrets.token_hex(4)
            while key_id in taken:
                key_id = secrets.token_hex(4)
            record = ApiKeyRecord(
                id=key_id,
                label=label,
                api_key=SecretStr(secret),
                universes=universe_list,
                environment=cast(Environment, environment),  # checked above
                added_at=datetime.now(UTC),
            )
            added.append(record)
            return body.model_copy(update={"keys": [*body.keys, record]})

        self._change(apply)
        log.debug("added Open Cloud key %s (%s) to the vault", added[0].id, added[0].label)
        return added[0]

    def remove_key(self, id_or_label: str) -> KeySummary:
        """Remove by exact id, else by label (case-insensitive)."""
        removed: list[ApiKeyRecord] = []

        def apply(body: _Body) -> _Body:
            wanted = id_or_label.strip()
            match = [r for r in body.keys if r.id == wanted] or [
                r for r in body.keys if r.label.casefold() == wanted.casefold()
            ]
            if not match:
                raise KeyNotFoundError(
                    f"no stored key has the id or label {wanted!r}; `dsm key list` shows them"
                )
            removed.append(match[0])
            return body.model_copy(update={"keys": [r for r in body.keys if r is not match[0]]})

        self._refresh()
        if self._state is None:
            raise KeyNotFoundError("the vault holds no API keys yet")
        self._change(apply)
        log.debug("removed Open Cloud key %s (%s) from the vault", removed[0].id, removed[0].label)
        return removed[0].summary()

    # -- internals ------------------------------------------------------------------------------

    def _records(self) -> list[ApiKeyRecord]:
        return list(self._state.body.keys) if self._state else []

    def _refresh(self) -> None:
        """Load vault.bin if another process changed it; raise a weak scrypt cost on unlock."""
        upgraded = self._load(force=False)
        if upgraded is not None:
            self._change(lambda body: body, upgrade=upgraded)

    def _load(self, *, force: bool) -> _Header | None:
        """Read vault.bin if it changed since we last read it (or always, with `force`).

        Returns a re-wrapped header to persist when the file's scrypt cost is below ours.
        """
        stamp = _stamp(self._path)
        if self._state is not None and not force and stamp == self._state.stamp:
            return None
        if stamp is None:
            if self._state is not None:
                raise VaultError(
                    f"{self._path} was deleted while in use; restart and add the API keys again"
                )
            return None
        try:
            blob = self._path.read_bytes()
        except FileNotFoundError:  # replaced between stat and read: read the new one
            return self._load(force=True)
        header, sealed = _unpack(blob)
        passphrase: str | None = None
        if self._state is not None and self._state.header.vault_id == header.vault_id:
            vault_key = self._state.vault_key  # same vault: re-wrapping never changes its key
        else:
            vault_key, passphrase = self._unlock(header)
        body = _open_body(header, sealed, vault_key)
        self._state = _State(header, vault_key, body, stamp)
        if passphrase is not None and header.kdf is not None and header.kdf.weaker_than(self._kdf):
            log.info("raising the vault's scrypt cost to n=%d", self._kdf.n)
            return _wrap(header.vault_id, vault_key, passphrase, self._kdf)
        return None

    def _unlock(self, header: _Header) -> tuple[bytes, str | None]:
        """The vault key, and the passphrase when one was used (to re-wrap at a higher cost)."""
        if header.backend == "keyring":
            return self._key_from_keyring(header), None
        assert header.kdf is not None
        passphrase = self._passphrase_provider(PassphrasePurpose.UNLOCK)
        kek = derive_key(passphrase, header.salt, n=header.kdf.n, r=header.kdf.r, p=header.kdf.p)
        try:
            vault_key = RecordCipher(kek).open(header.wrapped_key, _wrap_aad(header.vault_id))
        except IntegrityError:
            raise WrongPassphraseError() from None
        if len(vault_key) != KEY_BYTES:
            raise VaultCorruptError("vault.bin holds a malformed vault key")
        return vault_key, passphrase

    def _key_from_keyring(self, header: _Header) -> bytes:
        backend = self._keyring(probe=False)
        if backend is None:
            raise VaultLockedError(
                "this vault's key is kept in the OS keyring, which is not available now; "
                "log in to a desktop session (or unlock the keyring) and try again"
            )
        try:
            stored = backend.get_password(KEYRING_SERVICE, header.keyring_username)
        except Exception as exc:  # the keyring's own error text names no secret of ours
            raise VaultLockedError(
                f"the OS keyring refused to give the vault key ({type(exc).__name__}); "
                "unlock the keyring and try again"
            ) from None
        if stored is None:
            raise VaultLockedError(
                f"the OS keyring has no entry {header.keyring_username!r} for "
                f"{KEYRING_SERVICE}; it was deleted, or this vault.bin comes from another "
                "account or machine. The stored API keys cannot be recovered: delete "
                f"{self._path} and add them again"
            )
        try:
            vault_key = base64.b64decode(stored, validate=True)
        except (binascii.Error, ValueError):
            vault_key = b""
        if len(vault_key) != KEY_BYTES:
            raise VaultCorruptError("the vault key in the OS keyring is malformed")
        return vault_key

    def _keyring(self, *, probe: bool) -> KeyringBackend | None:
        if isinstance(self._keyring_choice, _Auto):
            return detect_keyring(probe=probe)
        return self._keyring_choice

    def _change(self, apply: Callable[[_Body], _Body], *, upgrade: _Header | None = None) -> None:
        """Re-read under the lock, apply, write atomically: no other process's change is lost."""
        ensure_private_dir(self._dir)
        with _exclusive_lock(self._dir / LOCK_FILE):
            before = self._state.header if self._state else None
            self._load(force=True)
            if self._state is None:
                header, vault_key = self._create()
                body = _Body(format=1, keys=[], data_key=None)
            else:
                header, vault_key, body = (
                    self._state.header,
                    self._state.vault_key,
                    self._state.body,
                )
                if upgrade is not None and header == before:
                    header = upgrade  # nobody re-wrapped it meanwhile
            body = apply(body)
            header_raw = header.raw or header.encode()
            sealed = RecordCipher(vault_key).seal(_encode_body(body), _body_aad(header_raw))
            write_atomic(self._path, _pack(header_raw, sealed), mode=0o600)
            self._state = _State(_Header.decode(header_raw), vault_key, body, _stamp(self._path))

    def _create(self) -> tuple[_Header, bytes]:
        vault_key = new_key()
        vault_id = secrets.token_hex(8)
        backend = self._keyring(probe=True)
        if backend is not None:
            header = _Header(vault_id=vault_id, backend="keyring")
            try:
                backend.set_password(KEYRING_SERVICE, header.keyring_username, _b64(vault_key))
                stored = backend.get_password(KEYRING_SERVICE, header.keyring_username)
            except Exception as exc:  # fall back to the passphrase file, never to plaintext
                log.warning("could not store the vault key in the OS keyring (%s)", exc)
                stored = None
            if stored == _b64(vault_key):
                log.info("created the key vault %s; its key is in the OS keyring", self._path)
                return header, vault_key
        passphrase = self._passphrase_provider(PassphrasePurpose.CREATE)
        if len(passphrase) < MIN_PASSPHRASE_CHARS:
            raise VaultError(
                f"the vault passphrase must have at least {MIN_PASSPHRASE_CHARS} characters"
            )
        header = _wrap(vault_id, vault_key, passphrase, self._kdf)
        log.info("created the key vault %s, encrypted with a passphrase", self._path)
        return header, vault_key


def _wrap(vault_id: str, vault_key: bytes, passphrase: str, kdf: KdfParams) -> _Header:
    salt = os.urandom(_SALT_BYTES)
    kek = derive_key(passphrase, salt, n=kdf.n, r=kdf.r, p=kdf.p)
    wrapped = RecordCipher(kek).seal(vault_key, _wrap_aad(vault_id))
    header = _Header(vault_id, "passphrase", kdf, salt, wrapped)
    return _Header(vault_id, "passphrase", kdf, salt, wrapped, header.encode())


def _encode_body(body: _Body) -> bytes:
    keys = []
    for record in body.keys:
        stored = record.model_dump(mode="json")
        stored["api_key"] = record.api_key.get_secret_value()  # the dump masks it by design
        keys.append(stored)
    doc = {"format": body.format, "keys": keys, "data_key": body.data_key}
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def _open_body(header: _Header, sealed: bytes, vault_key: bytes) -> _Body:
    try:
        plain = RecordCipher(vault_key).open(sealed, _body_aad(header.raw))
    except IntegrityError:
        raise VaultCorruptError(
            "vault.bin failed its integrity check: it was altered or belongs to another key; "
            "restore it from a backup, or delete it and add the API keys again"
        ) from None
    try:
        return _Body.model_validate_json(plain)
    except ValidationError:
        raise VaultCorruptError("vault.bin decrypted but its contents are malformed") from None


def _ensure_data_key(body: _Body) -> _Body:
    if body.data_key is not None:
        return body  # another process created it first
    return body.model_copy(update={"data_key": _b64(new_key())})


# ---------------------------------------------------------------------------------------------
# Input checks (messages never quote the API key)

_KEY_CHARS = re.compile(r"[\x21-\x7e]+")


def _check_api_key(api_key: str) -> str:
    api_key = api_key.strip()
    if not api_key:
        raise KeyRejectedError("the API key is empty")
    if not _KEY_CHARS.fullmatch(api_key):
        raise KeyRejectedError(
            "the API key contains spaces, line breaks or non-ASCII characters; paste it "
            "exactly as the Creator Dashboard shows it"
        )
    return api_key


def _check_label(label: str) -> str:
    label = label.strip()
    if not label or len(label) > _LABEL_MAX or not label.isprintable():
        raise KeyRejectedError(f"a label must be 1 to {_LABEL_MAX} printable characters")
    return label


def _check_universes(universes: Iterable[int]) -> list[int]:
    out: list[int] = []
    for universe in universes:
        if isinstance(universe, bool) or not isinstance(universe, int):
            raise KeyRejectedError(f"universe ids are whole numbers, not {universe!r}")
        if not 1 <= universe <= _MAX_UNIVERSE_ID:
            raise KeyRejectedError(f"universe id {universe} is out of range")
        if universe not in out:
            out.append(universe)
    if not out:
        raise KeyRejectedError("name at least one universe (experience) id the key is for")
    return out


def _check_no_conflict(records: list[ApiKeyRecord], label: str, universes: list[int]) -> None:
    for record in records:
        if record.label.casefold() == label.casefold() or record.id == label:
            raise KeyRejectedError(
                f"a key labelled {record.label!r} (id {record.id}) is already stored; "
                "choose another label or remove that key first"
            )
        shared = sorted(set(record.universes) & set(universes))
        if shared:
            # One key per universe, so the server never has to guess which key a call uses.
            raise KeyRejectedError(
                f"universe {shared[0]} already uses the key {record.label!r} (id {record.id}); "
                "remove that key first to replace it"
            )
