"""Bearer tokens issued by pairing: stored hashed in `server.sqlite3`, checked on every request.

Token format: `dsm_<token_id>_<secret>`. The id (16 hex digits) is public: it names the token in
`GET /tokens`, `dsm tokens list` and the journal, so a row is found by id and only the secret
part is compared. The prefix also lets secret scanners and our canary sweeps recognise a leak.

Why SHA-256 and not scrypt/argon2: the secret is 256 random bits from `secrets`, so its hash
cannot be reversed by guessing, however fast the hash is. Slow hashes exist to protect
low-entropy *passwords*; here they would only add tens of milliseconds to every request.

Tokens already checked are remembered in memory, but only while nothing else has written to the
file: `dsm tokens revoke` and `role` run in another process, and SQLite's `PRAGMA data_version`
(asked on every request, cheaper than reading the row and building its TokenInfo) changes as
soon as another connection commits, which forgets them all; this process's own writes forget the
token they change. So a revocation or role change still applies to the very next request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shared_schema.auth import TokenInfo
from shared_schema.common import Role
from shared_schema.errors import ErrorCode
from shared_schema.identity import Person, make_person

from ..storage.sqlite import SqliteFile
from .errors import ServiceError

log = logging.getLogger("dsm.tokens")

DB_FILENAME = "server.sqlite3"
SCHEMA_VERSION = 2
TOKEN_PREFIX = "dsm_"
SECRET_BYTES = 32  # 256 bits
# last_used_at is informational; writing it on every request would turn reads into writes.
TOUCH_INTERVAL_SECONDS = 60.0

_TOKEN_RE = re.compile(r"dsm_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_DUMMY_HASH = hashlib.sha256(b"no such token").digest()

_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    token_id      TEXT PRIMARY KEY,
    secret_sha256 BLOB NOT NULL,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'assistant', 'editor', 'admin')),
    created_at    TEXT NOT NULL,
    last_used_at  TEXT,
    revoked_at    TEXT,
    studio_user_id   INTEGER,
    studio_user_name TEXT
);
"""
_COLUMNS = "token_id, secret_sha256, name, role, created_at, last_used_at, revoked_at"
SCHEMA = _TABLE.format(name="tokens")

# Version 2 allows the assistant role (docs/assistants.md) and records the Studio user each
# token's plugin announces (docs/team.md, "Identity"). SQLite cannot change a CHECK constraint
# in place, so the table is copied into one with the new constraint and columns (in the
# migration's one transaction).
MIGRATIONS = {
    1: _TABLE.format(name="tokens_v2")
    + f"""
INSERT INTO tokens_v2 ({_COLUMNS}) SELECT {_COLUMNS} FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_v2 RENAME TO tokens;
""",
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token (its id, name and role decide what is allowed) and the Studio
    user its plugin announced (a label for journals, events and the audit log, never a
    permission)."""

    token_id: str
    name: str
    role: Role
    studio_user_id: int | None = None
    studio_user_name: str | None = None

    @property
    def label(self) -> str:
        """How events and job records name the caller: an AI assistant is named as one."""
        return f"{self.name} (assistant)" if self.role is Role.ASSISTANT else self.name

    @property
    def person(self) -> Person:
        """The caller as journals, events and the audit log name them."""
        return make_person(self.studio_user_id, self.studio_user_name, self.label)


def utc_now() -> datetime:
    return datetime.now(UTC)


def console_safe(text: str) -> str:
    """Text from a client, made safe to print on a terminal (no escape sequences, no newlines)."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class TokenStore:
    """The token table. All methods are synchronous and short; call them from the event loop."""

    def __init__(
        self,
        path: Path,
        *,
        now: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        touch_interval: float = TOUCH_INTERVAL_SECONDS,
    ) -> None:
        self.path = path
        self._db = SqliteFile(path, schema=SCHEMA, version=SCHEMA_VERSION, migrations=MIGRATIONS)
        self._now = now
        self._monotonic = monotonic
        self._touch_interval = touch_interval
        self._last_touch: dict[str, float] = {}
        self._revoke_listeners: list[Callable[[str], None]] = []
        # token_id -> (hash of its secret, info), valid while the file's data_version is unchanged.
        self._checked: dict[str, tuple[bytes, TokenInfo]] = {}
        self._checked_version: int | None = None

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        now: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> TokenStore:
        """The store in the server's state directory (shared by the server and `dsm tokens`)."""
        return cls(data_dir / DB_FILENAME, now=now, monotonic=monotonic)

    def close(self) -> None:
        self._db.close()

    def issue(self, name: str, role: Role) -> tuple[str, TokenInfo]:
        """Create a token; the plaintext is returned once and never stored."""
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        created = self._now()
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO tokens (token_id, secret_sha256, name, role, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (token_id, _hash(secret), name, role.value, _iso(created)),
            )
        return f"{TOKEN_PREFIX}{token_id}_{secret}", self.get(token_id)

    def lookup(self, token: str) -> TokenInfo | None:
        """The token's info if it is valid and not revoked, else None. Constant-time compare."""
        match = _TOKEN_RE.fullmatch(token)  # fullmatch: `$` would let a trailing newline in
        if match is None:
            return None
        token_id, secret = match.groups()
        digest = _hash(secret)
        version = self.data_version()
        if version != self._checked_version:
            self._checked.clear()  # another process wrote to the file: check rows again
            self._checked_version = version
        checked = self._checked.get(token_id)
        if checked is not None and hmac.compare_digest(checked[0], digest):
            if not self._touch(token_id):
                return checked[1]
            self._checked.pop(token_id, None)  # read again with the last use just recorded
        row = self._row(token_id)
        expected = _DUMMY_HASH if row is None else bytes(row["secret_sha256"])
        # Always compare, so an unknown id costs the same as a wrong secret.
        if not hmac.compare_digest(expected, digest) or row is None:
            return None
        if row["revoked_at"] is not None:
            return None
        if self._touch(token_id):
            row = self._row(token_id) or row  # with the last use just recorded
        info = _info(row)
        self._checked[token_id] = (expected, info)
        return info

    def get(self, token_id: str) -> TokenInfo:
        row = self._row(token_id)
        if row is None:
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                f"No token with id {token_id!r}. `dsm tokens list` shows the ids.",
            )
        return _info(row)

    def list_tokens(self) -> list[TokenInfo]:
        """All tokens, revoked ones included (the journal still names them), oldest first."""
        rows = self._query("SELECT * FROM tokens ORDER BY created_at, rowid")
        return [_info(row) for row in rows]

    def revoke(self, token_id: str) -> TokenInfo:
        """Revoke a token; its next request is refused. Revoking twice is not an error."""
        self.get(token_id)
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
                (_iso(self._now()), token_id),
            )
        self._checked.pop(token_id, None)
        self._last_touch.pop(token_id, None)
        for listener in list(self._revoke_listeners):
            listener(token_id)
        return self.get(token_id)

    def on_revoke(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(token_id)` after each revocation made through this store.

        Revocations by another process (`dsm tokens revoke`) are not seen here: compare
        `data_version()` and ask `revoked_among()`. Returns a function that unsubscribes.
        """
        self._revoke_listeners.append(listener)
        return lambda: self._revoke_listeners.remove(listener)

    def is_active(self, token_id: str) -> bool:
        """Whether the token exists and is not revoked (read from the file: any process)."""
        row = self._row(token_id)
        return row is not None and row["revoked_at"] is None

    def data_version(self) -> int:
        """Changes whenever another connection commits to the file (PRAGMA data_version)."""
        row = self._db.conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def revoked_among(self, token_ids: set[str]) -> set[str]:
        """Which of these token ids are revoked now (ids not in the table count as revoked)."""
        if not token_ids:
            return set()
        ids = sorted(token_ids)
        marks = ",".join("?" for _ in ids)
        rows = self._query(
            f"SELECT token_id FROM tokens WHERE revoked_at IS NULL AND token_id IN ({marks})",
            tuple(ids),
        )
        return set(ids) - {row["token_id"] for row in rows}

    def set_role(self, token_id: str, role: Role) -> TokenInfo:
        current = self.get(token_id)
        if current.revoked:
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"Token {token_id} is revoked; pair the client again for a new token.",
            )
        with self._db.transaction() as conn:
            conn.execute("UPDATE tokens SET role = ? WHERE token_id = ?", (role.value, token_id))
        self._checked.pop(token_id, None)
        return self.get(token_id)

    def record_identity(
        self, token_id: str, studio_user_id: int | None, studio_user_name: str | None
    ) -> None:
        """Remember the Studio user a plugin announced when it opened a session with this token.

        An announcement without a user id (Studio not logged in) leaves an earlier one alone.
        """
        if studio_user_id is None:
            return
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE tokens SET studio_user_id = ?, studio_user_name = ? WHERE token_id = ?",
                (studio_user_id, studio_user_name, token_id),
            )
        self._checked.pop(token_id, None)  # the next request's principal names the user

    def _touch(self, token_id: str) -> bool:
        """Record a use (at most once per touch interval); whether it was written now."""
        mono = self._monotonic()
        last = self._last_touch.get(token_id)
        if last is not None and mono - last < self._touch_interval:
            return False
        self._last_touch[token_id] = mono
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    "UPDATE tokens SET last_used_at = ? WHERE token_id = ?",
                    (_iso(self._now()), token_id),
                )
        except sqlite3.OperationalError as exc:
            # Informational only: a busy file (e.g. `dsm tokens` writing) must not fail the
            # request the token is authenticating.
            log.warning("could not record last use of token %s: %s", token_id, exc)
            return False
        return True

    def _row(self, token_id: str) -> sqlite3.Row | None:
        rows = self._query("SELECT * FROM tokens WHERE token_id = ?", (token_id,))
        return rows[0] if rows else None

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        cursor = self._db.conn.execute(sql, params)
        cursor.row_factory = sqlite3.Row
        return list(cursor.fetchall())


def principal_of(info: TokenInfo) -> Principal:
    return Principal(
        token_id=info.token_id,
        name=info.name,
        role=info.role,
        studio_user_id=info.studio_user_id,
        studio_user_name=info.studio_user_name,
    )


def _info(row: sqlite3.Row) -> TokenInfo:
    created = _parse_time(row["created_at"])
    assert created is not None  # NOT NULL column
    return TokenInfo(
        token_id=row["token_id"],
        name=row["name"],
        role=Role(row["role"]),
        created_at=created,
        last_used_at=_parse_time(row["last_used_at"]),
        revoked=row["revoked_at"] is not None,
        studio_user_id=row["studio_user_id"],
        studio_user_name=row["studio_user_name"],
    )
