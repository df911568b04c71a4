"""Team sync between two companion servers on one emulator (`--upstream`), over real HTTP:
invites, presence both ways, soft locks, the change feed, the shared audit log and its
verification, and a key without memory-store scopes (team sync UNAVAILABLE, nothing else
broken). The plugin side of the same is in tests/test_team_e2e.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from dsm.emulator.app import EmulatorConfig
from dsm.emulator.auth import KeyGrant
from dsm.emulator.context import EmulatorContext
from dsm.emulator.throttle import LimitsConfig
from dsm.services.team.names import AUDIT_STORE, audit_key
from dsm.storage.vault import ApiKeyRecord
from shared_schema.common import Role
from tools.testing import jobs
from tools.testing.emulator import start_emulator
from tools.testing.server import Server, entry_path, idem, running_server

U = 77


@asynccontextmanager
async def emulator(**config: Any) -> AsyncIterator[tuple[str, EmulatorContext]]:
    runner, url, context = await start_emulator(
        EmulatorConfig(limits=LimitsConfig(mode="off"), **config)
    )
    try:
        yield url, context
    finally:
        await runner.cleanup()


async def eventually[T](
    probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 15.0
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def session(server: Server, token: str, user_id: int, name: str) -> dict[str, Any]:
    status, body = await server.call(
        "POST",
        "/sessions",
        token,
        json={"client_name": "Studio", "studio_user_id": user_id, "studio_user_name": name},
    )
    assert status == 200, body
    result: dict[str, Any] = body
    return result


async def team(server: Server, token: str) -> dict[str, Any]:
    status, body = await server.call("GET", f"/team/{U}", token)
    assert status == 200, body
    result: dict[str, Any] = body
    return result


@asynccontextmanager
async def two_servers(tmp_path: Path) -> AsyncIterator[tuple[Server, str, Server, str]]:
    """Alice's and Bob's servers on one emulator, in one team (Alice invited Bob)."""
    async with (
        emulator() as (url, _),
        running_server(tmp_path / "alice", upstream_url=url) as alice,
        running_server(tmp_path / "bob", upstream_url=url) as bob,
    ):
        alice_token = await alice.pair("Alice's Studio", role=Role.ADMIN)
        bob_token = await bob.pair("Bob's Studio", role=Role.ADMIN)
        await session(alice, alice_token, 1001, "AliceDev")
        await session(bob, bob_token, 2002, "BobDev")
        status, enabled = await alice.call("POST", f"/team/{U}/enable", alice_token)
        assert status == 200 and enabled["role"] == "admin", enabled
        status, invite = await alice.call(
            "POST", f"/team/{U}/invites", alice_token, json={"role": "editor"}
        )
        assert status == 200, invite
        status, joined = await bob.call(
            "POST", "/team/join", bob_token, json={"code": invite["code"], "name": "Bob's laptop"}
        )
        assert status == 200 and joined["role"] == "editor", joined
        yield alice, alice_token, bob, bob_token


async def test_presence_locks_and_changes_cross_servers(tmp_path: Path) -> None:
    async with two_servers(tmp_path) as (alice, alice_token, bob, bob_token):
        # Presence both ways, named by the Studio user each plugin announced.
        async def sees(server: Server, token: str, name: str) -> bool:
            shown = await team(server, token)
            return any(
                t["person"]["label"] == name and not t["this_server"] for t in shown["teammates"]
            )

        await eventually(lambda: sees(bob, bob_token, "AliceDev"), "Bob to see Alice")
        await eventually(lambda: sees(alice, alice_token, "BobDev"), "Alice to see Bob")

        # A soft lock taken on Alice's server is seen on Bob's; Bob cannot take it.
        lock = {"datastore": "PlayerData", "scope": "global", "key": "Player_1"}
        status, taken = await alice.call("POST", f"/team/{U}/locks", alice_token, json=lock)
        assert status == 200 and taken["held"], taken
        status, refused = await bob.call("POST", f"/team/{U}/locks", bob_token, json=lock)
        assert status == 200 and not refused["held"], refused
        assert refused["lock"]["holder"]["label"] == "AliceDev"
        assert refused["message"] == "AliceDev is editing this entry."

        async def lock_seen() -> bool:
            return any(lk["key"] == "Player_1" for lk in (await team(bob, bob_token))["locks"])

        await eventually(lock_seen, "Bob's server to list Alice's lock")
        # Alice renews it (still hers); then releases it; Bob can take it.
        status, renewed = await alice.call("POST", f"/team/{U}/locks", alice_token, json=lock)
        assert renewed["held"] and renewed["lock"]["mine"]
        status, released = await alice.call(
            "DELETE", f"/team/{U}/locks?datastore=PlayerData&key=Player_1", alice_token
        )
        assert status == 200 and released["message"] == "Released.", released
        status, taken = await bob.call("POST", f"/team/{U}/locks", bob_token, json=lock)
        assert taken["held"], taken

        # A write on Alice's server reaches Bob's event stream within 5 s, naming Alice.
        status, start = await bob.call("GET", "/events?timeout=0", bob_token)
        cursor = start["next_cursor"]
        began = time.monotonic()
        status, written = await alice.call(
            "POST",
            entry_path(U, "PlayerData", "Player_1"),
            alice_token,
            json={"value_json": '{"coins":5}', "idempotency_key": idem(), "user_ids": [1]},
        )
        assert status == 200, written
        change = None
        while change is None and time.monotonic() - began < 5.0:
            status, batch = await bob.call("GET", f"/events?cursor={cursor}&timeout=1", bob_token)
            cursor = batch["next_cursor"]
            change = next(
                (
                    e["payload"]
                    for e in batch["events"]
                    if e["type"] == "entry.changed" and e["payload"].get("via_team")
                ),
                None,
            )
        assert change is not None, "no change reached Bob within 5 s"
        assert change["key"] == "Player_1" and change["revision"] == written["revision"]
        assert change["person"]["label"] == "AliceDev"


async def test_audit_log_is_shared_verified_and_catches_tampering(tmp_path: Path) -> None:
    async with two_servers(tmp_path) as (alice, alice_token, bob, bob_token):
        for n in range(3):
            status, _ = await alice.call(
                "POST",
                entry_path(U, "PlayerData", f"Player_{n}"),
                alice_token,
                json={"value_json": str(n), "idempotency_key": idem(), "user_ids": [500 + n]},
            )
            assert status == 200
        status, _ = await bob.call(
            "POST",
            entry_path(U, "PlayerData", "Player_9"),
            bob_token,
            json={"value_json": "9", "idempotency_key": idem()},
        )

        # Both servers' writes end up in one chain, which each can read.
        async def activity(server: Server, token: str) -> list[dict[str, Any]] | None:
            status, page = await server.call("GET", f"/team/{U}/activity?limit=200", token)
            assert status == 200, page
            writes = [i for i in page["items"] if i["kind"] == "write"]
            return writes if len(writes) == 4 else None

        items = await eventually(lambda: activity(bob, bob_token), "four writes in the log")
        by = {i["key"]: i["person"]["label"] for i in items}
        assert by == {
            "Player_0": "AliceDev",
            "Player_1": "AliceDev",
            "Player_2": "AliceDev",
            "Player_9": "BobDev",
        }
        assert next(i for i in items if i["key"] == "Player_2")["user_ids"] == [502]
        status, filtered = await alice.call("GET", f"/team/{U}/activity?person=bob", alice_token)
        assert [i["key"] for i in filtered["items"] if i["kind"] == "write"] in ([], ["Player_9"])

        status, report = await alice.call("POST", f"/team/{U}/audit/verify", alice_token)
        assert status == 200 and report["ok"], report
        assert report["records"] >= 2 and report["head"]["seq"] == report["records"]

        # Change a record's content: the hash no longer matches.
        seq = next(i["seq"] for i in items if i["key"] == "Player_1")
        client = alice.upstream.client_for(U)  # the same key the server uses
        entry = await client.get_entry(U, AUDIT_STORE, audit_key(seq))
        record = json.loads(entry.value_json or "{}")
        record["chained"]["events"][0]["op"] = "delete"
        await client.update_entry(
            U,
            AUDIT_STORE,
            audit_key(seq),
            json.dumps(record),
            attributes=None,
            user_ids=[],
        )
        status, report = await bob.call("POST", f"/team/{U}/audit/verify", bob_token)
        assert not report["ok"]
        assert any(
            p["seq"] == seq and "does not match its hash" in p["problem"]
            for p in report["problems"]
        ), report["problems"]


def grant_without_memory_store(key: str) -> KeyGrant:
    return KeyGrant(
        key=key,
        universes=[str(U)],
        scopes=[
            "universe-datastores.objects:read",
            "universe-datastores.objects:create",
            "universe-datastores.objects:update",
            "universe-datastores.objects:list",
            "universe-datastores.control:list",
        ],
    )


async def test_a_key_without_memory_store_scopes_makes_team_sync_unavailable(
    tmp_path: Path,
) -> None:
    record = ApiKeyRecord(
        id="k",
        label="no memory store",
        api_key=SecretStr("ds-only"),
        universes=[U],
        environment="staging",
        added_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    async with (
        emulator(keys=[grant_without_memory_store("ds-only")]) as (url, _),
        running_server(tmp_path, upstream_url=url, keys=[record]) as server,
    ):
        token = await server.pair("Alice", role=Role.ADMIN)
        await session(server, token, 1001, "AliceDev")
        status, enabled = await server.call("POST", f"/team/{U}/enable", token)
        assert status == 200, enabled

        async def unavailable() -> dict[str, Any] | None:
            shown = await team(server, token)
            return shown if shown["state"] == "UNAVAILABLE" else None

        shown = await eventually(unavailable, "team sync to say UNAVAILABLE")
        assert "memory-store.sorted-map" in shown["reason"]
        assert shown["source"]["kind"] == "UNAVAILABLE"
        # Nothing else breaks: entries are written and read as before.
        status, written = await server.call(
            "POST",
            entry_path(U, "PlayerData", "p"),
            token,
            json={"value_json": "1", "idempotency_key": idem()},
        )
        assert status == 200, written
        status, read = await server.call("GET", entry_path(U, "PlayerData", "p"), token)
        assert status == 200 and read["value_json"] == "1"
        status, features = await server.call("GET", "/features", token)
        memory = next(
            f
            for f in features["features"]
            if f["feature_id"] == "memory" and f.get("universe_id") == U
        )
        assert memory["status"] == "UNAVAILABLE" and "memory-store" in memory["reason"]
        team_feature = next(
            f
            for f in features["features"]
            if f["feature_id"] == "team" and f.get("universe_id") == U
        )
        assert team_feature["status"] == "UNAVAILABLE"


async def test_a_viewer_members_server_refuses_writes_and_cannot_invite(tmp_path: Path) -> None:
    async with (
        emulator() as (url, _),
        running_server(tmp_path / "alice", upstream_url=url) as alice,
        running_server(tmp_path / "vic", upstream_url=url) as vic,
    ):
        alice_token = await alice.pair("Alice", role=Role.ADMIN)
        vic_token = await vic.pair("Vic", role=Role.ADMIN)
        status, _ = await alice.call("POST", f"/team/{U}/enable", alice_token)
        status, invite = await alice.call(
            "POST", f"/team/{U}/invites", alice_token, json={"role": "viewer"}
        )
        status, joined = await vic.call(
            "POST", "/team/join", vic_token, json={"code": invite["code"]}
        )
        assert status == 200 and joined["role"] == "viewer", joined
        status, refused = await vic.call(
            "POST",
            entry_path(U, "PlayerData", "p"),
            vic_token,
            json={"value_json": "1", "idempotency_key": idem()},
        )
        assert status == 403 and "team role in universe" in refused["error"]["message"]
        status, refused = await vic.call("POST", f"/team/{U}/invites", vic_token, json={})
        assert status == 403 and "Only a team admin can invite" in refused["error"]["message"]
        # Enabling a universe whose team this server is not in asks for an invite.
        status, _ = await vic.call("POST", f"/team/{U}/disable", vic_token)
        async with running_server(tmp_path / "other", upstream_url=url) as other:
            token = await other.pair("Other", role=Role.ADMIN)
            status, answer = await other.call("POST", f"/team/{U}/enable", token)
            assert status == 409 and "Ask a team admin for an invite" in answer["error"]["message"]


async def test_a_job_reaches_the_shared_log_once_per_state_and_the_monitor_counts_its_items(
    tmp_path: Path,
) -> None:
    async with two_servers(tmp_path) as (alice, alice_token, bob, bob_token):
        players = {f"p{i}": {"coins": i} for i in range(3)}
        await jobs.seed(alice.call, alice_token, U, "PlayerData", players)
        body = {"kind": "delete", "selection": {"universe_id": U, "datastores": ["PlayerData"]}}
        job = await jobs.run(alice.call, alice_token, body)
        assert job["state"] == "succeeded", job

        # Bob reads Alice's job in the shared log: queued and succeeded, never each progress
        # step, a dry-run plan or "running", named by the Studio user behind the token that
        # started it.
        async def job_records(server: Server, token: str) -> list[dict[str, Any]] | None:
            status, page = await server.call("GET", f"/team/{U}/activity?limit=200", token)
            assert status == 200, page
            found = [i for i in page["items"] if i["kind"] == "job"]
            return found if any(i["operation"] == "succeeded" for i in found) else None

        records = await eventually(lambda: job_records(bob, bob_token), "the job in the log")
        assert sorted(i["operation"] for i in records) == ["queued", "succeeded"]
        assert {i["job_id"] for i in records} == {job["id"]}
        assert {i["person"]["label"] for i in records} == {"AliceDev"}
        assert {i["person"]["token_name"] for i in records} == {"Alice's Studio"}
        assert all(i["summary"].startswith(f"delete job {job['id']} ") for i in records)

        # Alice's monitor counts the job's items, and says who feeds them.
        status, series = await alice.call("GET", "/monitor/traffic?window_seconds=600", alice_token)
        assert status == 200, series
        assert series["totals"]["job_items"] == len(players)
        assert series["job_throughput"].startswith("fed by the jobs engine")


def mentions_player(items: list[dict[str, Any]]) -> bool:
    return any("4242" in (i.get("key") or "") or 4242 in (i.get("user_ids") or []) for i in items)


async def test_an_erasure_redacts_the_player_from_the_shared_audit_log(tmp_path: Path) -> None:
    """Alice erases player 4242: the shared records lose the player's items (what was appended
    before, and the erasure's own delete, appended after), the chain still verifies, another
    player's items stay, and Bob's copy drops them when he verifies."""
    async with two_servers(tmp_path) as (alice, alice_token, bob, bob_token):
        for key, user_ids in (("Player_4242", [4242]), ("guild", [4242, 7]), ("Player_7", [7])):
            status, body = await alice.call(
                "POST", entry_path(U, "PlayerData", key), alice_token,
                json={"value_json": "{}", "user_ids": user_ids, "idempotency_key": idem()},
            )  # fmt: skip
            assert status in (200, 201), body

        async def keys_seen(server: Server, token: str) -> set[str] | None:
            status, page = await server.call("GET", f"/team/{U}/activity?limit=200", token)
            assert status == 200, page
            keys = {i["key"] for i in page["items"] if i["kind"] == "write" and i.get("key")}
            return keys if {"Player_4242", "guild", "Player_7"} <= keys else None

        await eventually(lambda: keys_seen(bob, bob_token), "Bob to copy Alice's writes")

        audit, text = await erase(alice, alice_token, 4242)
        assert audit["problems"] == [], audit
        assert audit["method"].startswith("redacted: ")
        # The creates of Player_4242 and guild (listing 4242) were appended before; the
        # erasure's delete of Player_4242 either too, or it was still waiting.
        shared, pending = audit["removed"], int(audit["details"][2].split(" ")[0])
        assert shared + pending == 3 and shared >= 2, audit
        assert audit["changed"] >= 1
        assert audit["details"][0].startswith(
            f"dsm-team-audit (shared by the team): {audit['changed']} record(s) rewritten, "
            f"{shared} item(s) redacted"
        )
        assert "drops these items when it runs `dsm audit verify`" in text

        # Verify flushes what was waiting; the chain is intact with the items gone.
        status, verified = await alice.call("POST", f"/team/{U}/audit/verify", alice_token)
        assert status == 200 and verified["ok"], verified
        assert verified["redacted_events"] == 3, verified
        client = alice.upstream.client_for(U)
        page = await client.list_entries_page(U, AUDIT_STORE, prefix="r")
        items = []
        for listed in page.items:
            entry = await client.get_entry(U, AUDIT_STORE, listed.key)
            items += [i for i in json.loads(entry.value_json or "{}")["redactable"] if i]
        assert not [i for i in items if "4242" in i["key"] or 4242 in i["user_ids"]], items
        assert {"key": "Player_7", "user_ids": [7]}.items() <= next(
            i for i in items if i["key"] == "Player_7"
        ).items()
        # Alice's own copy: the player's items are gone, Player_7's and the guild's (now
        # without the player: the erasure's write) stay.
        status, page_alice = await alice.call("GET", f"/team/{U}/activity?limit=200", alice_token)
        assert not mentions_player(page_alice["items"]), page_alice["items"]
        assert {"Player_7", "guild"} <= {i.get("key") for i in page_alice["items"]}

        # Bob's copy kept the records as he first read them, until he verifies the chain.
        status, page_before = await bob.call("GET", f"/team/{U}/activity?limit=200", bob_token)
        assert mentions_player(page_before["items"])
        status, verified = await bob.call("POST", f"/team/{U}/audit/verify", bob_token)
        assert status == 200 and verified["ok"], verified
        status, page_after = await bob.call("GET", f"/team/{U}/activity?limit=200", bob_token)
        writes = [i for i in page_after["items"] if i["kind"] == "write"]
        assert not mentions_player(writes), writes
        assert {i.get("key") for i in writes} == {None, "guild", "Player_7"}, writes
        assert sum(1 for i in writes if i["redacted"]) == 3


async def erase(server: Server, token: str, user_id: int) -> tuple[dict[str, Any], str]:
    """Run an erasure to the end; returns the report's audit log line and its text."""
    status, plan = await server.call(
        "POST", "/erasures", token,
        json={"universe_id": U, "user_id": user_id, "idempotency_key": idem()},
    )  # fmt: skip
    assert status == 200, plan
    await jobs.wait(server.call, token, plan["id"], ("planned", *jobs.TERMINAL))
    status, job = await server.call(
        "POST", f"/jobs/{plan['id']}/start", token, json={"confirm": f"erase {user_id}"}
    )
    assert status == 200, job
    job = await jobs.wait(server.call, token, plan["id"])
    assert job["state"] == "succeeded", job
    status, report = await server.call("GET", f"/erasures/{job['id']}/report", token)
    assert status == 200, report
    audit: dict[str, Any] = next(s for s in report["local"] if s["where"] == "audit_log")
    return audit, str(report["text"])


async def test_with_team_sync_off_the_shared_records_are_reported_not_rewritten(
    tmp_path: Path,
) -> None:
    """Off: this server's copy is redacted, the shared records are listed as not rewritten;
    an erasure run again once team sync is back on rewrites them."""
    async with emulator() as (url, _), running_server(tmp_path, upstream_url=url) as server:
        token = await server.pair("Alice's Studio", role=Role.ADMIN)
        await session(server, token, 1001, "AliceDev")
        status, _ = await server.call("POST", f"/team/{U}/enable", token)
        assert status == 200
        status, body = await server.call(
            "POST", entry_path(U, "PlayerData", "Player_4242"), token,
            json={"value_json": "{}", "user_ids": [4242], "idempotency_key": idem()},
        )  # fmt: skip
        assert status in (200, 201), body
        status, verified = await server.call("POST", f"/team/{U}/audit/verify", token)
        assert status == 200 and verified["ok"], verified
        status, _ = await server.call("POST", f"/team/{U}/disable", token)
        assert status == 200

        audit, _ = await erase(server, token, 4242)
        assert (audit["removed"], audit["changed"]) == (0, 0), audit
        assert (
            audit["details"][1] == "this server's copy: 1 record(s) rewritten, 1 item(s) redacted"
        )
        assert audit["problems"] == [
            "1 record(s) of dsm-team-audit were not checked or rewritten: team sync is off for "
            f"universe {U} on this server. Run the erasure again once team sync works."
        ]

        async def shared_items() -> list[dict[str, Any]]:
            client = server.upstream.client_for(U)
            page = await client.list_entries_page(U, AUDIT_STORE, prefix="r")
            found: list[dict[str, Any]] = []
            for listed in page.items:
                entry = await client.get_entry(U, AUDIT_STORE, listed.key)
                found += [i for i in json.loads(entry.value_json or "{}")["redactable"] if i]
            return found

        assert any(i["key"] == "Player_4242" for i in await shared_items())

        status, _ = await server.call("POST", f"/team/{U}/enable", token)
        assert status == 200
        again, _ = await erase(server, token, 4242)
        assert again["problems"] == [] and again["removed"] == 1, again
        assert not any("4242" in i["key"] for i in await shared_items())
        status, verified = await server.call("POST", f"/team/{U}/audit/verify", token)
        assert status == 200 and verified["ok"], verified


def test_a_bookmark_or_note_replaces_the_keys_old_one_and_an_empty_one_removes_it() -> None:
    from dsm.services.team.workspace import MAX_ITEMS, _keyed_change
    from shared_schema.identity import make_person

    ana = make_person(7, "Ana", "laptop")
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    ref = ("PlayerData", "global", "Player_1")
    doc = _keyed_change(ref, {"text": "refund pending"}, ana, now)(None)
    doc = _keyed_change(("PlayerData", "global", "Player_2"), {"text": "ok"}, ana, now)(doc)
    doc = _keyed_change(ref, {"text": "refunded"}, ana, now)(doc)
    assert [(i["k"], i["text"]) for i in doc["items"]] == [
        ("Player_2", "ok"),
        ("Player_1", "refunded"),
    ]
    assert doc["items"][-1]["by"]["name"] == "Ana" and doc["items"][-1]["at"].startswith(
        "2026-12-04"
    )
    doc = _keyed_change(ref, None, ana, now)(doc)
    assert [i["k"] for i in doc["items"]] == ["Player_2"]
    for n in range(MAX_ITEMS + 5):
        doc = _keyed_change(("S", "global", f"k{n}"), {"label": None}, ana, now)(doc)
    assert len(doc["items"]) == MAX_ITEMS and doc["items"][-1]["k"] == f"k{MAX_ITEMS + 4}"
