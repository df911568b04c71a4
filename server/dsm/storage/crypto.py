"""Authenticated encryption for everything the server keeps on disk.

Records are sealed with AES-256-GCM under a random 96-bit nonce per record. The associated
data names the record's slot (universe, store, scope, key, revision ...), so a ciphertext
moved to another slot, or tampered with, fails to open instead of yielding wrong plaintext.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

FORMAT_VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32
# scrypt cost for a once-per-start unlock (pyca guidance: 2**14 interactive, 2**20 sensitive).
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1


class IntegrityError(Exception):
    """A sealed record failed authentication: tampered, truncated or in the wrong slot."""


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def slot(*parts: str | int) -> bytes:
    """Unambiguous associated data: each part length-prefixed, so ("a/b", "c") != ("a", "b/c")."""
    out = bytearray()
    for part in parts:
        raw = str(part).encode("utf-8")
        out += struct.pack(">I", len(raw)) + raw
    return bytes(out)


class RecordCipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("a record key must be 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "RecordCipher(<key hidden>)"

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return bytes([FORMAT_VERSION]) + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[0] != FORMAT_VERSION:
            raise IntegrityError("sealed record is truncated or of an unknown format")
        nonce, body = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, aad)
        except InvalidTag:
            raise IntegrityError("sealed record failed authentication") from None


def derive_key(
    passphrase: str, salt: bytes, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> bytes:
    """Key-encryption key from a passphrase; parameters are stored beside the ciphertext."""
    kdf = Scrypt(salt=salt, length=KEY_BYTES, n=n, r=r, p=p)
    return kdf.derive(passphrase.encode("utf-8"))
