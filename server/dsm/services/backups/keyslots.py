"""The archive key and the slots that wrap it: the server's vault, a passphrase, or both.

Every archive has its own random 256-bit key. The key is stored in the archive's clear header
only wrapped (AES-GCM), once per *slot*:

- a **vault** slot wraps it under a key derived (HKDF-SHA256) from the server's vault data key,
  the same secret that seals the cache and the journal; a short fingerprint of that derived key
  tells "made by another server's vault" apart from "damaged";
- a **passphrase** slot wraps it under a key derived from a passphrase with scrypt (salt and
  cost in the slot), so the archive can be opened on another machine.

An archive made with `--passphrase` carries both slots: the server that made it can still list,
verify and rewrite it (erasure) without asking for the passphrase, and any machine with the
passphrase can read it. The associated data of each wrap names the key id and the slot kind, so
a slot copied from another archive or to another kind does not open.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict

from ...storage.crypto import KEY_BYTES, IntegrityError, RecordCipher, derive_key, new_key, slot
from ...storage.vault import MIN_PASSPHRASE_CHARS, KdfParams

PASSPHRASE_ENV = "DSM_BACKUP_PASSPHRASE"
_SALT_BYTES = 16
_VAULT_INFO = b"dsm backup archive key wrap v1"
_FINGERPRINT_INFO = b"dsm backup vault fingerprint v1"


class ArchiveKeyError(Exception):
    """The archive key cannot be unwrapped; the message says what the user must do."""


class WrongPassphraseError(ArchiveKeyError):
    def __init__(self) -> None:
        super().__init__("the passphrase does not open this archive (check it and try again)")


class ArchiveLockedError(ArchiveKeyError):
    """No key at hand opens any slot of this archive."""


class SlotModel(BaseModel):
    """One wrapped copy of the archive key, as stored in the clear header (no secret in clear)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["vault", "passphrase"]
    wrapped: str  # base64 of the sealed archive key
    fingerprint: str | None = None  # vault: which vault key wraps it
    salt: str | None = None  # passphrase: base64 scrypt salt
    n: int | None = None
    r: int | None = None
    p: int | None = None


@dataclass(frozen=True)
class ArchiveKeys:
    """What the caller can offer to open (or make) an archive: the vault data key, a passphrase.

    `kdf` is the scrypt cost for a new passphrase slot (tests pass a cheap one).
    """

    data_key: bytes | None = None
    passphrase: str | None = None
    kdf: KdfParams = field(default_factory=KdfParams)

    def __repr__(self) -> str:
        return (
            f"ArchiveKeys(data_key={'<set>' if self.data_key else None}, "
            f"passphrase={'<set>' if self.passphrase else None})"
        )


def _vault_kek(data_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_VAULT_INFO).derive(
        data_key
    )


def vault_fingerprint(data_key: bytes) -> str:
    """A short public name of the vault key (not of the data key itself)."""
    kek = _vault_kek(data_key)
    return hmac.new(kek, _FINGERPRINT_INFO, hashlib.sha256).hexdigest()[:16]


def _aad(key_id: str, kind: str) -> bytes:
    return slot("dsm-backup-archive-key", key_id, kind)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str | None) -> bytes:
    try:
        return base64.b64decode(text or "", validate=True)
    except ValueError:
        return b""


def new_archive_key() -> bytes:
    return new_key()


def make_slots(archive_key: bytes, key_id: str, keys: ArchiveKeys) -> list[SlotModel]:
    """Wrap a new archive's key in a vault slot (if a data key is given) and a passphrase slot."""
    slots: list[SlotModel] = []
    if keys.data_key is not None:
        sealed = RecordCipher(_vault_kek(keys.data_key)).seal(archive_key, _aad(key_id, "vault"))
        slots.append(
            SlotModel(
                kind="vault", wrapped=_b64(sealed), fingerprint=vault_fingerprint(keys.data_key)
            )
        )
    if keys.passphrase is not None:
        if len(keys.passphrase) < MIN_PASSPHRASE_CHARS:
            raise ArchiveKeyError(
                f"a backup passphrase needs at least {MIN_PASSPHRASE_CHARS} characters"
            )
        salt = os.urandom(_SALT_BYTES)
        kdf = keys.kdf
        kek = derive_key(keys.passphrase, salt, n=kdf.n, r=kdf.r, p=kdf.p)
        sealed = RecordCipher(kek).seal(archive_key, _aad(key_id, "passphrase"))
        slots.append(
            SlotModel(
                kind="passphrase", wrapped=_b64(sealed), salt=_b64(salt), n=kdf.n, r=kdf.r, p=kdf.p
            )
        )
    if not slots:
        raise ArchiveKeyError(
            "an archive needs the server's vault key or a passphrase to protect it; the vault "
            "is not available, so give a passphrase"
        )
    return slots


def unwrap(slots: list[SlotModel], key_id: str, keys: ArchiveKeys) -> bytes:
    """The archive key from the first slot the offered keys open.

    A passphrase is tried first when one is given (the user asked for it explicitly); a wrong
    one is an error even if the vault could open the archive, so a typo is never hidden.
    """
    by_kind = {s.kind: s for s in slots}
    if keys.passphrase is not None:
        chosen = by_kind.get("passphrase")
        if chosen is None:
            raise ArchiveLockedError(
                "this archive has no passphrase; it is opened with the vault of the server "
                "that made it (leave out --passphrase)"
            )
        return _open_passphrase(chosen, key_id, keys.passphrase)
    vault_slot = by_kind.get("vault")
    if keys.data_key is not None and vault_slot is not None:
        if vault_slot.fingerprint != vault_fingerprint(keys.data_key):
            raise ArchiveLockedError(
                "this archive was made by another server's vault (key fingerprint "
                f"{vault_slot.fingerprint}, this server's is {vault_fingerprint(keys.data_key)})"
                + ("; give its --passphrase" if "passphrase" in by_kind else "")
            )
        try:
            key = RecordCipher(_vault_kek(keys.data_key)).open(
                _unb64(vault_slot.wrapped), _aad(key_id, "vault")
            )
        except IntegrityError:
            raise ArchiveLockedError(
                "the archive's vault slot does not open with this server's vault key although "
                "the fingerprints match: the header was altered"
            ) from None
        return _checked(key)
    if "passphrase" in by_kind:
        raise ArchiveLockedError("this archive is protected by a passphrase: give --passphrase")
    raise ArchiveLockedError(
        "this archive is opened with the vault of the server that made it, and this server's "
        "vault is not available (unlock it, or run the command where the archive was made)"
    )


def _open_passphrase(chosen: SlotModel, key_id: str, passphrase: str) -> bytes:
    try:
        kdf = KdfParams(n=chosen.n or 0, r=chosen.r or 0, p=chosen.p or 0)
    except ValueError as exc:
        raise ArchiveLockedError(f"the archive's passphrase slot is malformed ({exc})") from None
    salt = _unb64(chosen.salt)
    if len(salt) != _SALT_BYTES:
        raise ArchiveLockedError("the archive's passphrase slot is malformed (salt)")
    kek = derive_key(passphrase, salt, n=kdf.n, r=kdf.r, p=kdf.p)
    try:
        key = RecordCipher(kek).open(_unb64(chosen.wrapped), _aad(key_id, "passphrase"))
    except IntegrityError:
        raise WrongPassphraseError() from None
    return _checked(key)


def _checked(key: bytes) -> bytes:
    if len(key) != KEY_BYTES:
        raise ArchiveLockedError("the archive key in the header is malformed")
    return key
