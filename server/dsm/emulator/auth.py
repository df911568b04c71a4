"""API-key checks: 401 for a missing or unknown key, 403 for a missing scope or universe.

Without a keys file any non-empty key has full access (announced at start-up). With one,
each key lists the universes it serves ("*" for all) and Roblox's scope names, such as
`universe-datastores.objects:read`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from .errors import EmulatorError


class KeyGrant(BaseModel):
    key: str = Field(min_length=1)
    universes: list[str] = Field(default_factory=lambda: ["*"])
    scopes: list[str] = Field(default_factory=list)
    # Roblox can restrict data store scopes to named data stores; empty means all.
    datastores: list[str] = Field(default_factory=list)


_GRANTS = TypeAdapter(list[KeyGrant])


def load_keys(path: Path) -> list[KeyGrant]:
    try:
        return _GRANTS.validate_python(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"Cannot read the keys file {path}: {exc}") from exc


def _scope_matches(granted: str, needed: str) -> bool:
    # Roblox's docs spell the flush scope both with and without the `universe.` prefix.
    return granted == needed or granted.removeprefix("universe.") == needed.removeprefix(
        "universe."
    )


@dataclass
class Authorizer:
    grants: list[KeyGrant] | None  # None: open mode, any non-empty key has full access

    @property
    def open_mode(self) -> bool:
        return self.grants is None

    def identify(self, api_key: str | None) -> KeyGrant | None:
        """Return the grant for a key (None in open mode) or raise 401."""
        if not api_key:
            raise EmulatorError("UNAUTHENTICATED", "Invalid API Key", status=401)
        if self.grants is None:
            return None
        for grant in self.grants:
            if grant.key == api_key:
                return grant
        raise EmulatorError("UNAUTHENTICATED", "Invalid API Key", status=401)

    @staticmethod
    def require(
        grant: KeyGrant | None, universe: str, scope: str, datastore: str | None = None
    ) -> None:
        if grant is None:
            return
        if "*" not in grant.universes and universe not in grant.universes:
            raise EmulatorError(
                "PERMISSION_DENIED",
                f"This API key is not authorized for universe {universe}.",
                v1_code="Forbidden",
            )
        if not any(_scope_matches(g, scope) for g in grant.scopes):
            raise EmulatorError(
                "PERMISSION_DENIED",
                f"This API key lacks the scope {scope} for universe {universe}.",
                v1_code="InsufficientScope",
            )
        if datastore is not None and grant.datastores and datastore not in grant.datastores:
            raise EmulatorError(
                "PERMISSION_DENIED",
                f"This API key is not authorized for data store {datastore!r}.",
                v1_code="Forbidden",
            )
