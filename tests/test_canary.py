"""The Open Cloud key never leaves the server: not in a response, a log line or a file it wrote.

A recognisable fake key goes into a real passphrase vault in the server's data directory; an
emulator started separately accepts exactly that key, so the server takes its LIVE code path
(the one used with https://apis.roblox.com). After a realistic session, including upstream
refusals and an unreachable upstream, every byte under the data directory (SQLite WAL files
included, read while the server runs and again after it stops), every log record, everything
printed and every response body is searched for the key in plain, base64 and hex forms.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from dsm.emulator.app import EmulatorConfig
from dsm.emulator.auth import KeyGrant
from dsm.emulator.throttle import LimitsConfig
from dsm.storage.vault import PASSPHRASE_ENV, KdfParams, Vault
from shared_schema.common import Role
from tools.testing.server import Server, entry_path, idem, running_server, store_path

from .conftest import start_emulator

ALL_SCOPES = [
    "universe-datastores.control:list",
    "universe-datastores.control:delete",
    "universe-datastores.control:snapshot",
    "universe-datastores.objects:list",
    "universe-datastores.objects:read",
    "universe-datastores.objects:create",
    "universe-datastores.objects:update",
    "universe-datastores.objects:delete",
    "universe-datastores.versions:list",
    "universe-datastores.versions:read",
    "universe.ordered-data-store.scope.entry:read",
    "universe.ordered-data-store.scope.entry:write",
    "memory-store.sorted-map:read",
    "memory-store.sorted-map:write",
]
READ_ONLY_SCOPES = [
    "universe-datastores.control:list",
    "universe-datastores.objects:list",
    "universe-datastores.objects:read",
]


def canary(tag: str) -> str:
    return f"CANARY-dsm-7f3a9c-{tag}-{secrets.token_hex(16)}"


def leak_forms(secret: str) -> list[bytes]:
    """Byte patterns that reveal `secret`: plain, UTF-16, hex, and base64 at every alignment."""
    raw = secret.encode("ascii")
    forms = [raw, secret.encode("utf-16-le"), raw.hex().encode(), raw.hex().upper().encode()]
    # The secret's random tail alone, so a partly masked or truncated copy is caught too.
    tail = secret.rsplit("-", 1)[1].encode("ascii")
    forms.append(tail)
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for offset in range(3):
            # Inside a longer base64 text the secret can start at any byte offset mod 3; the
            # characters not shared with the neighbours' bits are cut from both ends.
            encoded = encode(b"\0" * offset + raw)
            start = -(-offset * 4 // 3)
            forms.append(encoded[start + 1 : -4])
    return forms


def occurrences(haystack: bytes, forms: Iterable[bytes]) -> list[bytes]:
    lowered = haystack.lower()
    return [form for form in forms if form in haystack or form.lower() in lowered]


def scan_tree(root: Path, forms: list[bytes]) -> tuple[list[str], dict[str, list[bytes]]]:
    """Every regular file under root (all bytes); returns the names read and any hits."""
    seen: list[str] = []
    hits: dict[str, list[bytes]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        seen.append(str(path.relative_to(root)))
        found = occurrences(path.read_bytes(), forms)
        if found:
            hits[str(path)] = found
    return seen, hits


def test_the_search_finds_every_form_it_claims_to() -> None:
    secret = canary("probe")
    forms = leak_forms(secret)
    raw = secret.encode()
    for prefix in (b"", b"a", b"ab"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            assert occurrences(encode(prefix + raw + b"zz"), forms), (prefix, encode)
    assert occurrences(b"x-api-key: " + raw, forms)
    assert occurrences(b"..." + raw.hex().upper().encode() + b"...", forms)
    assert occurrences(("key=" + secret).encode("utf-16-le"), forms)
    assert occurrences(b"CANARY-dsm-7f3a9c-probe-" + b"..." + secret[-32:].encode(), forms)
    assert not occurrences(b"CANARY-dsm-7f3a9c-probe-" + secrets.token_hex(16).encode(), forms)


async def run_session(server: Server, seed: Any) -> None:
    """What a team does in an afternoon, with the failures that make servers print things."""
    status, hello = await server.call("GET", "/hello", None)
    assert status == 200 and hello["backend"] == "LIVE"
    admin = await server.pair("Alice (admin)", Role.ADMIN)
    editor = await server.pair("Bob", Role.EDITOR)
    viewer = await server.pair("Carol", Role.VIEWER)

    status, session = await server.call(
        "POST",
        "/sessions",
        editor,
        json={"client_name": "Bob", "studio_user_id": 42, "place_id": 7},
    )
    assert status == 200
    await server.call("POST", f"/sessions/{session['session_id']}/heartbeat", editor)
    assert (await server.call("GET", "/sessions", viewer))[0] == 200

    status, universes = await server.call("GET", "/universes", viewer)
    assert status == 200
    assert {u["universe_id"]: u["backend"] for u in universes["universes"]} == {
        1: "LIVE",
        2: "LIVE",
        3: "LIVE",
    }

    # Writes, reads, history and undo in the universe the full key serves.
    status, v1 = await server.call(
        "POST",
        entry_path(1, "Players", "p1"),
        editor,
        json={"value_json": '{"coins":1}', "attributes": {"a": 1}, "idempotency_key": idem()},
    )
    assert status == 200 and v1["source"]["kind"] == "LIVE"
    assert (await server.call("GET", entry_path(1, "Players", "p1"), viewer))[0] == 200
    status, v2 = await server.call(
        "PUT",
        entry_path(1, "Players", "p1"),
        editor,
        json={
            "value_json": '{"coins":2}',
            "expected_revision": v1["revision"],
            "idempotency_key": idem(),
        },
    )
    assert status == 200
    await seed(1, "Players", "p1", {"coins": 99})  # another writer
    status, conflict = await server.call(
        "PUT",
        entry_path(1, "Players", "p1"),
        editor,
        json={
            "value_json": '{"coins":3}',
            "expected_revision": v2["revision"],
            "idempotency_key": idem(),
        },
    )
    assert status == 409 and conflict["error"]["code"] == "CONFLICT"
    for path in (
        "/universes/1/datastores",
        "/universes/1/datastores/Players/keys",
        "/universes/1/datastores/Players/scopes",
        entry_path(1, "Players", "p1") + "/revisions",
    ):
        assert (await server.call("GET", path, viewer))[0] == 200, path
    # v2 is gone from Open Cloud's history already: a later write in the same hour replaced it.
    current = conflict["error"]["details"]["current"]["revision"]
    status, _ = await server.call(
        "GET",
        entry_path(1, "Players", "p1") + "/diff",
        viewer,
        params={"from": v1["revision"], "to": current},
    )
    assert status == 200
    status, _ = await server.call(
        "POST",
        entry_path(1, "Players", "coins") + "/increment",
        editor,
        json={"amount": 5, "idempotency_key": idem()},
    )
    assert status == 200
    status, journal = await server.call("GET", "/journal", viewer)
    assert status == 200
    status, _ = await server.call(
        "POST",
        f"/journal/{journal['items'][0]['id']}/undo",
        editor,
        json={"idempotency_key": idem()},
    )
    assert status == 200
    status, _ = await server.call(
        "POST",
        "/universes/1/ordered/Leaderboard/scopes/global/entries",
        editor,
        json={"id": "player1", "value": 10, "idempotency_key": idem()},
    )
    assert status == 200
    assert (
        await server.call("GET", "/universes/1/ordered/Leaderboard/scopes/global/entries", viewer)
    )[0] == 200
    assert (await server.call("GET", "/universes/1/memory/sorted-maps/m/items", viewer))[0] == 200
    status, _ = await server.call("DELETE", store_path(1, "Players"), admin)
    assert status == 200
    status, _ = await server.call("POST", store_path(1, "Players") + "/undelete", admin)
    assert status == 200

    # The read-only key: reading works, writing is refused by Open Cloud (403).
    await seed(2, "Saves", "s1", {"level": 3})
    status, read = await server.call("GET", entry_path(2, "Saves", "s1"), viewer)
    assert status == 200 and read["value_json"] == '{"level":3}'
    status, refused = await server.call(
        "PUT",
        entry_path(2, "Saves", "s1"),
        editor,
        json={"value_json": "{}", "expected_revision": read["revision"], "idempotency_key": idem()},
    )
    assert status == 403 and refused["error"]["code"] == "UPSTREAM_PERMISSION"
    assert "scope" in refused["error"]["message"]
    # A key Open Cloud does not accept at all (revoked on the Creator Dashboard): 401 upstream.
    status, rejected = await server.call("GET", entry_path(3, "Saves", "s1"), viewer)
    assert status == 403 and rejected["error"]["code"] == "UPSTREAM_PERMISSION"
    # A universe no key serves, a bad token, a bad body, a missing entry.
    status, none = await server.call("GET", entry_path(4, "Saves", "s1"), viewer)
    assert status == 404 and none["error"]["code"] == "NO_API_KEY"
    assert (await server.call("GET", "/universes", "dsm_wrong_token"))[0] == 401
    assert (await server.call("POST", entry_path(1, "Players", "x"), editor, json={"x": 1}))[
        0
    ] == 400
    assert (await server.call("GET", entry_path(1, "Players", "missing"), viewer))[0] == 404
    assert (await server.call("GET", "/events", viewer, params={"cursor": "0", "timeout": "0"}))[
        0
    ] == 200
    assert (await server.call("GET", "/metrics/summary", viewer))[0] == 200
    assert (await server.call("GET", "/metrics", viewer))[0] == 200
    assert (await server.call("GET", "/openapi.json", viewer))[0] == 200


async def test_the_api_key_appears_nowhere(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(PASSPHRASE_ENV, "canary passphrase " + secrets.token_hex(8))
    full, read_only, revoked = canary("full"), canary("readonly"), canary("revoked")
    secrets_forms = [form for key in (full, read_only, revoked) for form in leak_forms(key)]

    data_dir = tmp_path / "server"
    vault = Vault.open(data_dir, keyring_backend=None, kdf=KdfParams(n=2**10))
    vault.add_key(label="Main game", api_key=full, universes=[1], environment="production")
    vault.add_key(label="Saves viewer", api_key=read_only, universes=[2], environment="staging")
    vault.add_key(label="Old key", api_key=revoked, universes=[3], environment="development")
    # Reopened as `dsm serve` does: the records come from the encrypted file, not from memory.
    reopened = Vault.open(data_dir, keyring_backend=None, kdf=KdfParams(n=2**10))
    keys, data_key = reopened.records(), reopened.data_key()
    assert len(keys) == 3

    runner, emulator_url, _ = await start_emulator(
        EmulatorConfig(
            data_dir=tmp_path / "emulator",
            keys=[
                KeyGrant(key=full, universes=["1", "2"], scopes=ALL_SCOPES),
                KeyGrant(key=read_only, universes=["2"], scopes=READ_ONLY_SCOPES),
            ],
            limits=LimitsConfig(mode="off"),
        )
    )

    async def seed(universe: int, datastore: str, key: str, value: Any) -> None:
        # Another writer (a game server) using the full key straight against "Open Cloud".
        url = (
            f"{emulator_url}/cloud/v2/universes/{universe}/data-stores/{datastore}"
            f"/scopes/global/entries/{key}?allowMissing=true"
        )
        async with server.http.patch(url, json={"value": value}, headers={"x-api-key": full}) as r:
            assert r.status == 200, await r.text()

    try:
        async with running_server(
            data_dir, data_key=data_key, keys=keys, open_cloud_base_url=emulator_url
        ) as server:
            await run_session(server, seed)
            # Open Cloud goes away: reads fall back to the cache, writes fail with a message.
            await runner.cleanup()
            status, cached = await server.call(
                "GET", entry_path(2, "Saves", "s1"), await server.pair("Dave", Role.EDITOR)
            )
            assert status == 200 and cached["source"]["kind"] == "CACHED"
            status, down = await server.call(
                "POST",
                entry_path(1, "Players", "p9"),
                await server.pair("Erin", Role.EDITOR),
                json={"value_json": "1", "idempotency_key": idem()},
            )
            assert status == 503 and down["error"]["code"] == "UPSTREAM_UNAVAILABLE"
            # While the server runs its SQLite files have write-ahead logs: read those too.
            running_files, running_hits = scan_tree(data_dir, secrets_forms)
            transcript = list(server.transcript)
            announced = list(server.announced)
    finally:
        await runner.cleanup()
    stopped_files, stopped_hits = scan_tree(data_dir, secrets_forms)

    # The search looked at real material, so it cannot pass by looking at nothing.
    assert any(name.endswith("-wal") for name in running_files), running_files
    assert {"vault.bin"} <= set(stopped_files) and len(stopped_files) >= 3, stopped_files
    assert len(transcript) >= 40 and sum(map(len, transcript)) > 10_000
    assert len(announced) >= 5
    assert len(caplog.records) > 0
    printed = capsys.readouterr()

    assert running_hits == {}
    assert stopped_hits == {}
    for index, body in enumerate(transcript):
        assert not occurrences(body.encode(), secrets_forms), (index, body[:300])
    log_text = caplog.text + "\n".join(
        f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    )
    assert not occurrences(log_text.encode(), secrets_forms)
    assert not occurrences("\n".join(announced).encode(), secrets_forms)
    assert not occurrences((printed.out + printed.err).encode(), secrets_forms)
