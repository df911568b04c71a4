"""The assistant role through the real HTTP API: it reads, proposes dry runs a person starts,
and is held to its per-token caps (docs/assistants.md)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dsm.http.appkeys import ASSISTANT_CAPS
from dsm.http.assistant import CAPS_HEADER
from dsm.paths import HOME_ENV
from dsm.services.assistant_caps import WINDOW_SECONDS, AssistantCaps, not_charged
from dsm.services.assistant_usage import UsageLog
from dsm.services.errors import ServiceError
from dsm.services.tokens import DB_FILENAME, Principal, TokenStore
from shared_schema.common import Role
from tests.test_tokens import run_cli
from tools.testing import jobs
from tools.testing.server import Server, running_server

U = 1


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path, budget_rpm=1_000_000, emulator_universes=[U]) as server:
        yield server


def transform(key: str = "p1") -> dict[str, Any]:
    return {
        "kind": "transform",
        "selection": {"universe_id": U, "datastores": ["Players"], "keys": [{"key": key}]},
        "params": {"program": ".coins = 5"},
    }


async def test_an_assistant_proposes_and_only_a_person_starts(server: Server) -> None:
    admin = await server.pair("admin", role=Role.ADMIN)
    bot = await server.pair("claude", role=Role.ASSISTANT)
    await jobs.seed(server.call, admin, U, "Players", {"p1": {"coins": 1}})

    status, me = await server.call("GET", "/me", bot)
    assert status == 200 and (me["name"], me["role"]) == ("claude", "assistant")
    assert "token" not in me

    status, refused = await jobs.create(server.call, bot, {**transform(), "dry_run": False})
    assert status == 403 and "only propose" in refused["error"]["message"]
    status, job = await jobs.create(server.call, bot, transform())
    assert status == 200, job
    assert job["state"] == "planned" and job["proposed_by"] == "claude"
    # Planning read the entry for its sample diff: charged to the assistant's Open Cloud cap.
    assert server.app[ASSISTANT_CAPS].usage(me["token_id"]).opencloud >= 1
    assert job.get("approved_by") is None

    status, denied = await server.call("POST", f"/jobs/{job['id']}/start", bot, json={})
    assert status == 403, denied
    value = await jobs.read_value(server.call, admin, U, "Players", "p1")
    assert value is not None and value["value_json"] == '{"coins":1}'

    status, started = await server.call("POST", f"/jobs/{job['id']}/start", admin, json={})
    assert status == 200, started
    done = await jobs.wait(server.call, admin, job["id"])
    assert done["state"] == "succeeded" and done["approved_by"] == "admin"
    value = await jobs.read_value(server.call, admin, U, "Players", "p1")
    assert value is not None and value["value_json"] == '{"coins":5}'


async def test_an_assistant_cannot_plan_imports_or_write_entries(server: Server) -> None:
    bot = await server.pair("claude", role=Role.ASSISTANT)
    status, refused = await jobs.create(
        server.call, bot, {**transform(), "kind": "import", "params": {"upload_id": "x" * 16}}
    )
    assert status in (400, 403), refused
    status, body = await server.call(
        "PUT",
        f"/universes/{U}/datastores/Players/entries/p1",
        bot,
        json={"value": {"coins": 9}, "idempotency_key": "k" * 16},
    )
    assert status == 403, body


async def test_proposals_can_be_turned_off(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, emulator_universes=[U], assistant_proposals=False
    ) as server:
        bot = await server.pair("claude", role=Role.ASSISTANT)
        status, refused = await jobs.create(server.call, bot, transform())
        assert status == 403 and "turned off" in refused["error"]["message"]


async def test_a_viewer_cannot_even_propose(server: Server) -> None:
    viewer = await server.pair("viewer", role=Role.VIEWER)
    status, refused = await jobs.create(server.call, viewer, transform())
    assert status == 403, refused


async def test_request_cap_holds_under_a_tight_loop(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, emulator_universes=[U], assistant_requests_per_minute=5
    ) as server:
        bot = await server.pair("claude", role=Role.ASSISTANT)
        admin = await server.pair("admin", role=Role.ADMIN)
        statuses = [(await server.call("GET", "/me", bot))[0] for _ in range(12)]
        assert statuses == [200] * 5 + [429] * 7
        _, body = await server.call("GET", "/me", bot)
        assert body["error"]["code"] == "RATE_LIMITED" and "claude" in body["error"]["message"]
        assert (await server.call("GET", "/me", admin))[0] == 200  # people are not capped


async def test_open_cloud_cap_counts_calls_made_for_the_assistant(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, emulator_universes=[U], assistant_opencloud_per_minute=3
    ) as server:
        admin = await server.pair("admin", role=Role.ADMIN)
        bot = await server.pair("claude", role=Role.ASSISTANT)
        path = f"/universes/{U}/datastores/Players/entries/"
        statuses = []
        for i in range(6):  # keys never read before: each read is an Open Cloud call
            status, _ = await server.call("GET", path + f"unseen{i}", bot)
            statuses.append(status)
        assert statuses == [404, 404, 404, 429, 429, 429], statuses
        assert (await server.call("GET", path + "unseen9", admin))[0] == 404


def test_caps_slide_with_the_clock() -> None:
    now = [0.0]
    caps = AssistantCaps(2, 100, clock=lambda: now[0])
    bot = Principal("t1", "claude", Role.ASSISTANT)
    caps.admit(bot)
    caps.admit(bot)
    with pytest.raises(ServiceError) as refused:
        caps.admit(bot)
    assert refused.value.retry_after == pytest.approx(WINDOW_SECONDS)
    now[0] = WINDOW_SECONDS
    meter = caps.admit(bot)
    with caps.charging(meter):
        caps.on_call("read", 200, 0.01, "EMULATOR")
        with not_charged():  # a job a person started
            caps.on_call("write", 200, 0.01, "EMULATOR")
    caps.on_call("read", 200, 0.01, "EMULATOR")  # outside any assistant's request
    usage = caps.usage("t1")
    assert (usage.requests, usage.opencloud) == (1, 1)
    assert (usage.requests_left, usage.opencloud_left) == (1, 99)


async def caps_header(server: Server, token: str) -> str | None:
    async with server.http.get(
        f"{server.base_url}/api/v1/me", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status == 200, await response.text()
        return response.headers.get(CAPS_HEADER)


async def test_caps_usage_is_on_every_answer_in_the_list_and_survives_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    caps = {"assistant_requests_per_minute": 3, "assistant_opencloud_per_minute": 7}
    async with running_server(tmp_path, emulator_universes=[U], **caps) as server:
        bot = await server.pair("claude", role=Role.ASSISTANT)
        admin = await server.pair("admin", role=Role.ADMIN)
        assert await caps_header(server, bot) == "requests=1/3; opencloud=0/7; window=60"
        assert await caps_header(server, bot) == "requests=2/3; opencloud=0/7; window=60"
        assert await caps_header(server, admin) is None  # people are not capped
        status, listed = await server.call("GET", "/tokens", admin)
        assert status == 200, listed
        by_name = {t["name"]: t for t in listed["tokens"]}
        assert by_name["claude"]["caps"]["api_requests"] == {"used": 2, "cap": 3, "left": 1}
        assert by_name["claude"]["caps"]["opencloud_requests"] == {"used": 0, "cap": 7, "left": 7}
        assert by_name["admin"].get("caps") is None
        code, listing, _ = run_cli("tokens", "list")
        assert code == 0
        row = next(line for line in listing.splitlines() if "claude" in line)
        assert row.endswith("2/3 API, 0/7 Open Cloud"), listing
        assert next(line for line in listing.splitlines() if "admin " in line).endswith("-")
        assert "3 API requests and 7 Open Cloud requests per token" in listing
    # A restart within the minute: the two requests still count, so the third is the last.
    async with running_server(tmp_path, emulator_universes=[U], **caps) as again:
        status, me = await again.call("GET", "/me", bot)
        assert status == 200 and me["caps"]["api_requests"]["left"] == 0, me
        status, refused = await again.call("GET", "/me", bot)
        assert status == 429 and refused["error"]["code"] == "RATE_LIMITED", refused


def test_the_usage_log_keeps_only_the_last_minute(tmp_path: Path) -> None:
    now = [1000.0]
    bot = Principal("t1", "claude", Role.ASSISTANT)
    log = UsageLog.open(tmp_path)
    caps = AssistantCaps(2, 100, clock=lambda: now[0], log=log)
    caps.admit(bot)
    now[0] += 30
    caps.admit(bot)
    log.close()
    # Read back by a new process: both count, so a third is refused until the first is 60 s old.
    log = UsageLog.open(tmp_path)
    caps = AssistantCaps(2, 100, clock=lambda: now[0], log=log)
    assert caps.usage("t1").requests == 2
    with pytest.raises(ServiceError) as refused:
        caps.admit(bot)
    assert refused.value.retry_after == pytest.approx(30)
    now[0] += 30
    caps.admit(bot)
    assert log.counts(now[0] - WINDOW_SECONDS) == {"t1": (2, 0)}
    count = log._db.conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0]
    assert count == 2  # the first request, a minute old, was dropped when the third was written
    log.close()


def test_a_version_1_token_file_gains_the_assistant_role(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    store = TokenStore.open(tmp_path)
    _, info = store.issue("old", Role.EDITOR)
    store.close()
    with sqlite3.connect(path) as conn:  # back to how version 1 files look
        conn.executescript(
            "CREATE TABLE t1 AS SELECT * FROM tokens; DROP TABLE tokens;"
            "CREATE TABLE tokens (token_id TEXT PRIMARY KEY, secret_sha256 BLOB NOT NULL,"
            " name TEXT NOT NULL, role TEXT NOT NULL CHECK (role IN ('viewer','editor','admin')),"
            " created_at TEXT NOT NULL, last_used_at TEXT, revoked_at TEXT);"
            "INSERT INTO tokens SELECT token_id, secret_sha256, name, role, created_at,"
            " last_used_at, revoked_at FROM t1; DROP TABLE t1; PRAGMA user_version = 1;"
        )
    conn.close()
    store = TokenStore.open(tmp_path)
    try:
        assert store.get(info.token_id).role is Role.EDITOR
        _, bot = store.issue("claude", Role.ASSISTANT)
        assert store.get(bot.token_id).role is Role.ASSISTANT
        # ... and records the Studio user a plugin announces (the same migration, issue 13).
        assert store.get(info.token_id).studio_user_id is None
        store.record_identity(info.token_id, 42, "Ana")
        found = store.get(info.token_id)
        assert (found.studio_user_id, found.studio_user_name) == (42, "Ana")
    finally:
        store.close()
