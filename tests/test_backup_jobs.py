"""Backups, restores and erasure as jobs, through the real HTTP API against the emulator."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dsm.emulator.context import EmulatorConfig
from dsm.emulator.throttle import LimitsConfig
from dsm.http.appkeys import BACKUPS
from dsm.services.backups.archive import ArchiveReader
from dsm.services.backups.folder import list_archives
from dsm.services.backups.keyslots import ArchiveKeys
from dsm.storage.crypto import new_key
from shared_schema.common import Role
from tools.testing import jobs
from tools.testing.emulator import start_emulator
from tools.testing.server import Server, idem, running_server

from .test_jobs_safety import LABEL
from .test_jobs_safety import key as api_key

U, U2 = 1, 2


@dataclass
class Env:
    server: Server
    admin: str
    data_dir: Path

    async def call(self, method: str, path: str, token: str | None, **kwargs: Any) -> Any:
        return await self.server.call(method, path, token, **kwargs)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with running_server(
        tmp_path, budget_rpm=1_000_000, emulator_universes=[U, U2], job_plan_wait_seconds=20
    ) as server:
        yield Env(server, await server.pair("admin", role=Role.ADMIN), tmp_path)


async def start(env: Env, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create a job with its own route (dry_run false) and wait for it to end."""
    status, job = await env.call(
        "POST", path, env.admin, json={"dry_run": False, "idempotency_key": idem(), **body}
    )
    assert status == 200, job
    return await jobs.wait(env.call, env.admin, job["id"])


async def entry(env: Env, universe: int, store: str, key: str, scope: str = "global") -> Any:
    view = await jobs.read_value(env.call, env.admin, universe, store, key, scope=scope)
    if view is None:
        return None
    return json.loads(view["value_json"]), view.get("attributes"), view.get("user_ids")


async def seed_players(env: Env) -> dict[str, Any]:
    players = {f"p{i}": {"coins": i, "name": f"joueur é {i}"} for i in range(6)}
    await jobs.seed(env.call, env.admin, U, "Players", players, attributes={"v": 1}, user_ids=[7])
    await jobs.seed(env.call, env.admin, U, "Players", {"s": {"x": 1}}, scope="eu")
    await jobs.seed(env.call, env.admin, U, "Guilds", {"g1": {"members": [7, 8]}})
    return players


async def backup(env: Env, **body: Any) -> dict[str, Any]:
    job = await start(env, "/backups", {"universe_id": U, **body})
    assert job["state"] == "succeeded", job
    return job


async def test_backup_job_makes_an_archive_that_verifies(env: Env) -> None:
    await seed_players(env)
    status, plan = await env.call(
        "POST", "/backups", env.admin, json={"universe_id": U, "idempotency_key": idem()}
    )
    assert status == 200, plan
    plan = await jobs.wait(
        env.call, env.admin, plan["id"], ("planned", *jobs.TERMINAL), plan_complete=False
    )
    assert plan["plan"]["items"] == 8 and plan["kind"] == "backup"
    assert not list((env.data_dir / "backups").glob("*.dsmbak"))  # a dry run reads only

    job = await backup(env)
    assert job["progress"]["applied"] == 8
    status, listing = await env.call("GET", "/backups", env.admin)
    assert status == 200 and len(listing["archives"]) == 1, listing
    archive = listing["archives"][0]
    assert archive["entries"] == 8 and archive["job_id"] == job["id"]
    status, report = await env.call("POST", f"/backups/{archive['archive_id']}/verify", env.admin)
    assert status == 200 and report["ok"] and report["entries_checked"] == 8, report
    status, shown = await env.call("GET", f"/backups/{archive['archive_id']}", env.admin)
    assert shown["first_read_at"] is not None and shown["last_read_at"] is not None
    assert not list((env.data_dir / "backups").glob(".*.spool"))  # the spool is gone


async def test_backup_of_a_prefix_and_scope_only(env: Env) -> None:
    await seed_players(env)
    job = await backup(env, datastores=["Players"], scopes=["global"], prefix="p1")
    assert job["progress"]["applied"] == 1


async def archive_of(env: Env, job: dict[str, Any]) -> str:
    status, listing = await env.call("GET", "/backups", env.admin)
    assert status == 200, listing
    (found,) = [a for a in listing["archives"] if a["job_id"] == job["id"]]
    archive_id: str = found["archive_id"]
    return archive_id


async def test_restore_puts_back_exactly_what_the_archive_holds_and_rolls_back(env: Env) -> None:
    players = await seed_players(env)
    archive_id = await archive_of(env, await backup(env))
    before = {k: await entry(env, U, "Players", k) for k in players}
    # A bad release: two players broken, one deleted, one new key.
    await jobs.run(
        env.call,
        env.admin,
        {"kind": "transform", "selection": {"universe_id": U, "datastores": ["Players"],
         "keys": [{"key": "p1"}, {"key": "p2"}]}, "params": {"program": ".coins = -1"}},
    )  # fmt: skip
    await jobs.run(
        env.call,
        env.admin,
        {"kind": "delete", "selection": {"universe_id": U, "datastores": ["Players"],
         "keys": [{"key": "p3"}]}},
    )  # fmt: skip
    await jobs.seed(env.call, env.admin, U, "Players", {"newcomer": {"coins": 5}})

    status, plan = await env.call(
        "POST",
        "/restores",
        env.admin,
        json={"universe_id": U, "archive_id": archive_id, "part": {"datastores": ["Players"]},
              "idempotency_key": idem()},
    )  # fmt: skip
    assert status == 200, plan
    plan = await jobs.wait(env.call, env.admin, plan["id"], ("planned", *jobs.TERMINAL))
    assert plan["kind"] == "restore" and plan["plan"]["items"] == 7, plan
    status, page = await env.call("GET", f"/restores/{plan['id']}/plan", env.admin)
    assert status == 200, page
    counts = page["summary"]["counts"]
    assert (counts["update"], counts["create"], counts["unchanged"]) == (2, 1, 4), counts
    updates = [k for k in page["keys"] if k["action"] == "update"]
    assert {k["key"] for k in updates} == {"p1", "p2"}
    assert updates[0]["patch"][0]["path"] == "/coins" and updates[0]["source"] == "archive"
    assert await entry(env, U, "Players", "p3") is None  # the plan wrote nothing

    status, job = await env.call("POST", f"/jobs/{plan['id']}/start", env.admin, json={})
    assert status == 200, job
    job = await jobs.wait(env.call, env.admin, plan["id"])
    assert job["state"] == "succeeded", job
    assert job["progress"]["applied"] == 3 and job["progress"]["skipped"] == 4
    assert {k: await entry(env, U, "Players", k) for k in players} == before
    assert await entry(env, U, "Players", "newcomer") is not None  # left alone

    status, rollback = await env.call(
        "POST",
        f"/jobs/{job['id']}/rollback",
        env.admin,
        json={"dry_run": False, "idempotency_key": idem()},
    )
    assert status == 200, rollback
    rollback = await jobs.wait(env.call, env.admin, rollback["id"])
    assert rollback["state"] == "succeeded" and rollback["progress"]["applied"] == 3
    assert await entry(env, U, "Players", "p3") is None
    assert (await entry(env, U, "Players", "p1"))[0]["coins"] == -1


async def test_restore_into_another_universe_store_and_scope(env: Env) -> None:
    players = await seed_players(env)
    archive_id = await archive_of(env, await backup(env))
    job = await start(
        env,
        "/restores",
        {"universe_id": U, "archive_id": archive_id, "part": {"datastores": ["Players"],
         "scopes": ["global"]}, "target": {"universe_id": U2, "datastore": "Staging",
         "scope": "copy"}},
    )  # fmt: skip
    assert job["state"] == "succeeded" and job["progress"]["applied"] == len(players), job
    for key in players:
        assert await entry(env, U2, "Staging", key, scope="copy") == await entry(
            env, U, "Players", key
        )
    assert await entry(env, U2, "Players", "p0") is None


async def test_restore_skips_a_key_written_after_the_plan(env: Env) -> None:
    await seed_players(env)
    archive_id = await archive_of(env, await backup(env))
    status, plan = await env.call(
        "POST",
        "/restores",
        env.admin,
        json={"universe_id": U, "archive_id": archive_id, "part": {"datastores": ["Guilds"]},
              "target": {"datastore": "Guilds2"}, "idempotency_key": idem()},
    )  # fmt: skip
    assert status == 200, plan
    plan = await jobs.wait(env.call, env.admin, plan["id"], ("planned", *jobs.TERMINAL))
    # A game server creates the key between the plan and the run: it must win.
    await jobs.seed(env.call, env.admin, U, "Guilds2", {"g1": {"members": [1]}})
    status, _ = await env.call("POST", f"/jobs/{plan['id']}/start", env.admin, json={})
    job = await jobs.wait(env.call, env.admin, plan["id"])
    assert job["progress"]["skipped"] == 1, job
    (item,) = await jobs.items(env.call, env.admin, job["id"])
    assert item["skip_code"] == "changed_since"
    assert (await entry(env, U, "Guilds2", "g1"))[0] == {"members": [1]}


async def test_restore_at_a_moment_from_the_journal(env: Env) -> None:
    await jobs.seed(env.call, env.admin, U, "Players", {"a": {"n": 1}, "b": {"n": 2}})
    await asyncio.sleep(0.05)
    moment = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await jobs.run(
        env.call,
        env.admin,
        {"kind": "transform", "selection": {"universe_id": U, "datastores": ["Players"]},
         "params": {"program": ".n += 100"}},
    )  # fmt: skip
    await jobs.seed(env.call, env.admin, U, "Players", {"c": {"n": 3}})  # created after
    body = {
        "universe_id": U,
        "at": moment.isoformat().replace("+00:00", "Z"),
        "part": {"datastores": ["Players"]},
        "delete_absent": True,
    }
    job = await start(env, "/restores", body)
    assert job["state"] == "succeeded", job
    status, page = await env.call("GET", f"/restores/{job['id']}/plan", env.admin)
    assert status == 200, page
    by_key = {k["key"]: k for k in page["keys"]}
    assert by_key["a"]["source"] == "journal" and by_key["a"]["precision"] == "exact", by_key
    assert by_key["c"]["action"] == "delete" and by_key["c"]["exists_then"] is False
    assert (await entry(env, U, "Players", "a"))[0] == {"n": 1}
    assert (await entry(env, U, "Players", "b"))[0] == {"n": 2}
    assert await entry(env, U, "Players", "c") is None


# ------------------------------------------------------------------------------ erasure


def files_containing(root: Path, needles: list[bytes]) -> dict[str, list[bytes]]:
    """Every file under `root` (WAL files included) that holds one of `needles` in clear; the
    embedded emulator's own files stand for Roblox, which keeps old versions for 30 days."""
    found: dict[str, list[bytes]] = {}
    for path in root.rglob("*"):
        if path.is_file() and "emulator" not in path.relative_to(root).parts:
            data = path.read_bytes()
            hits = [n for n in needles if n in data]
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


async def test_erasure_removes_a_planted_player_everywhere_and_nothing_else(
    tmp_path: Path,
) -> None:
    uid = 900_000_000_000 + secrets.randbelow(99_999_999)
    marker = f"CANARY-erase-{secrets.token_hex(12)}"
    data_key = new_key()
    async with running_server(
        tmp_path, data_key=data_key, budget_rpm=1_000_000, emulator_universes=[U],
        job_plan_wait_seconds=20,
    ) as server:  # fmt: skip
        env = Env(server, await server.pair("admin", role=Role.ADMIN), tmp_path)
        status, _ = await env.call(
            "PUT",
            "/erasure-patterns",
            env.admin,
            json={"standard": {"*": ["Player_{userId}"], "Inventory": ["{userId}_inventory"]}},
        )
        assert status == 200
        mine = {"coins": 5, "secret": marker}
        await jobs.seed(env.call, env.admin, U, "Players", {f"Player_{uid}": mine},
                        attributes={"owner": marker}, user_ids=[uid])  # fmt: skip
        await jobs.seed(env.call, env.admin, U, "Players", {f"Player_{uid}": mine}, scope="eu")
        await jobs.seed(env.call, env.admin, U, "Inventory", {f"{uid}_inventory": [marker]})
        await jobs.seed(env.call, env.admin, U, "Guilds", {"g1": {"name": "shared"}},
                        user_ids=[7, uid])  # fmt: skip
        await jobs.seed(env.call, env.admin, U, "Players", {"Player_7": {"coins": 1}},
                        user_ids=[7])  # fmt: skip
        # A write through the journal (before-images) and a backup that holds the player.
        await jobs.run(
            env.call,
            env.admin,
            {"kind": "transform", "selection": {"universe_id": U, "datastores": ["Players"],
             "all_scopes": True}, "params": {"program": ".coins += 1"}},
        )  # fmt: skip
        await backup(env)
        # Exports holding the player and others: one store per file, and one of several stores.
        exports = {"players.jsonl": ("jsonl", ["Players"]), "players.csv": ("csv", ["Players"]),
                   "all.sqlite": ("sqlite", ["Players", "Inventory", "Guilds"])}  # fmt: skip
        for name, (format, stores) in exports.items():
            done = await jobs.run(env.call, env.admin, {
                "kind": "export", "params": {"format": format, "file_name": name},
                "selection": {"universe_id": U, "datastores": stores, "all_scopes": True}})  # fmt: skip
            assert done["state"] == "succeeded", done
        assert str(uid).encode() in (tmp_path / "exports" / "players.jsonl").read_bytes()
        # An import file sent for later naming the player, and another that does not.
        line = json.dumps({"key": f"Player_{uid}", "value": mine}) + "\n"
        mentioning = await jobs.upload(env.call, env.admin, line.encode(), "mine.jsonl")
        other = await jobs.upload(env.call, env.admin, b'{"key":"Player_7","value":1}\n', "7.jsonl")

        status, plan = await env.call(
            "POST", "/erasures", env.admin,
            json={"universe_id": U, "user_id": uid, "idempotency_key": idem()},
        )  # fmt: skip
        assert status == 200, plan
        plan = await jobs.wait(env.call, env.admin, plan["id"], ("planned", *jobs.TERMINAL))
        assert plan["plan"]["items"] == 4, plan
        assert plan["plan"]["confirmation"] == f"erase {uid}"
        status, view = await env.call("GET", f"/erasures/{plan['id']}", env.admin)
        assert status == 200 and view["user_id"] == uid and not view["redacted"], view
        actions = {(f["datastore"], f["scope"], f["key"]): f["action"] for f in view["found"]}
        assert actions[("Guilds", "global", "g1")] == "remove_user_id"
        assert actions[("Inventory", "global", f"{uid}_inventory")] == "delete_entry"

        status, refused = await env.call(
            "POST", f"/jobs/{plan['id']}/start", env.admin, json={"confirm": "yes"}
        )
        assert status >= 400, refused
        status, job = await env.call(
            "POST", f"/jobs/{plan['id']}/start", env.admin, json={"confirm": f"erase {uid}"}
        )
        assert status == 200, job
        job = await jobs.wait(env.call, env.admin, plan["id"])
        assert job["state"] == "succeeded" and job["progress"]["applied"] == 4, (
            job,
            await jobs.items(env.call, env.admin, job["id"]),
        )
        assert job["actions"] == []  # never rolled back

        # Gone from Open Cloud; the shared entry keeps its value; unrelated data untouched.
        assert await entry(env, U, "Players", f"Player_{uid}") is None
        assert await entry(env, U, "Players", f"Player_{uid}", scope="eu") is None
        assert await entry(env, U, "Inventory", f"{uid}_inventory") is None
        assert await entry(env, U, "Guilds", "g1") == ({"name": "shared"}, None, [7])
        assert await entry(env, U, "Players", "Player_7") == ({"coins": 2}, None, [7])

        status, report = await env.call("GET", f"/erasures/{job['id']}/report", env.admin)
        assert status == 200, report
        assert report["user_id"] == uid and len(report["roblox"]) == 4
        local = {s["where"]: s for s in report["local"]}
        assert set(local) >= {"cache", "journal", "backups", "index", "exports", "uploads",
                              "audit_log"}  # fmt: skip
        assert all(not s["problems"] for s in report["local"]), report["local"]
        # 2 player rows in each Players export (2 scopes), + the inventory in the SQLite one;
        # the guild keeps its row without the user id.
        assert local["exports"]["removed"] == 7 and local["exports"]["changed"] == 1
        assert local["exports"]["details"] == [
            "exports/all.sqlite: rewritten, 3 entries removed, 1 with the user id taken out (the "
            "patterns of every store applied)",
            "exports/players.csv: rewritten, 2 entries removed, 0 with the user id taken out",
            "exports/players.jsonl: rewritten, 2 entries removed, 0 with the user id taken out",
        ]
        assert local["uploads"]["details"] == [f"uploads/{mentioning}.bin: deleted"]
        assert "team sync is off" in local["audit_log"]["details"][0]
        assert "exports/players.csv: rewritten" in report["text"]
        assert "Still kept by Roblox" in report["text"]
        status, view = await env.call("GET", f"/erasures/{job['id']}", env.admin)
        assert view["redacted"] and view.get("user_id") is None and view["found_total"] == 4
        # Only the shared entry is still named (its key is not the player's).
        assert [f["key"] for f in view["found"]] == ["g1"]
        status, _ = await env.call("DELETE", f"/erasures/{job['id']}/report", env.admin)
        assert status == 204
        status, _ = await env.call("GET", f"/erasures/{job['id']}/report", env.admin)
        assert status == 404

        # The archive, rewritten, no longer holds the player.
        keys = ArchiveKeys(data_key=data_key)
        for listing in list_archives(tmp_path / "backups", keys):
            with ArchiveReader(listing.path, keys) as reader:
                for held in reader.entries():
                    assert str(uid) not in held.name.key and uid not in held.user_ids
                    assert marker not in held.value_json
        needles = [marker.encode(), f"Player_{uid}".encode(), str(uid).encode()]
        assert files_containing(tmp_path, needles) == {}
        # The other players' rows are still exported; the other upload is still there.
        kept = [json.loads(t) for t in (tmp_path / "exports" / "players.jsonl").open()]
        assert sorted(row["key"] for row in kept) == ["Player_7"] and kept[0]["user_ids"] == [7]
        assert "Player_7" in (tmp_path / "exports" / "players.csv").read_text()
        with sqlite3.connect(tmp_path / "exports" / "all.sqlite") as db:
            rows = db.execute("SELECT key, user_ids FROM entries ORDER BY key").fetchall()
        assert rows == [("Player_7", "[7]"), ("g1", "[7]")]
        status, _ = await env.call("GET", f"/uploads/{mentioning}", env.admin)
        assert status == 404
        status, _ = await env.call("GET", f"/uploads/{other}", env.admin)
        assert status == 200


# ---------------------------------------------------------------- the backup before a job


@pytest.fixture
async def emulator() -> AsyncIterator[str]:
    runner, base_url, _ = await start_emulator(EmulatorConfig(limits=LimitsConfig(mode="off")))
    yield base_url
    await runner.cleanup()


async def test_a_production_job_is_backed_up_first_unless_skipped(
    tmp_path: Path, emulator: str
) -> None:
    async with running_server(
        tmp_path, keys=[api_key("production")], open_cloud_base_url=emulator, budget_rpm=1_000_000
    ) as server:
        admin = await server.pair("admin", role=Role.ADMIN)
        call = server.call
        await jobs.seed(call, admin, U, "Players", {"a": {"n": 1}, "b": {"n": 2}}, user_ids=[4])
        delete = {"kind": "delete", "selection": {"universe_id": U, "datastores": ["Players"]}}
        status, job = await jobs.create(call, admin, delete)
        assert status == 200, job
        backup = job["plan"]["backup"]
        assert backup["required"] and not backup["skipped"] and backup["entries"] == 2
        assert backup["requests"] == {"read": 2} and "2 read requests" in backup["note"]

        status, job = await call("POST", f"/jobs/{job['id']}/start", admin,
                                 json={"confirm": LABEL})  # fmt: skip
        assert status == 200, job
        job = await jobs.wait(call, admin, job["id"])
        assert job["state"] == "succeeded" and job["progress"]["applied"] == 2, job
        (taken,) = job["plan"]["backup"]["job_ids"]
        backup_job = await jobs.wait(call, admin, taken)
        assert backup_job["kind"] == "backup" and backup_job["progress"]["applied"] == 2
        # The archive holds the entries as they were before the delete: restore puts them back.
        status, listing = await call("GET", "/backups", admin)
        (archive,) = [a for a in listing["archives"] if a["job_id"] == taken]
        status, restore = await call(
            "POST", "/restores", admin,
            json={"universe_id": U, "archive_id": archive["archive_id"], "dry_run": False,
                  "confirm": LABEL, "skip_backup": True, "idempotency_key": idem()},
        )  # fmt: skip
        assert status == 200, restore
        restore = await jobs.wait(call, admin, restore["id"])
        assert restore["state"] == "succeeded" and restore["plan"]["backup"]["skipped"], restore
        view = await jobs.read_value(call, admin, U, "Players", "b")
        assert view is not None and json.loads(view["value_json"]) == {"n": 2}
        assert view["user_ids"] == [4]
        status, listing = await call("GET", "/backups", admin)
        assert len(listing["archives"]) == 1  # skip_backup took none


async def test_ordered_entries_are_backed_up_and_restored(env: Env) -> None:
    base = f"/universes/{U}/ordered/Board/scopes/global/entries"
    for entry_id, score in (("ann", 10), ("bob", 20)):
        status, answer = await env.call(
            "POST",
            base,
            env.admin,
            json={"id": entry_id, "value": score, "idempotency_key": idem()},
        )
        assert status == 200, answer
    job = await backup(env, datastores=[], ordered_datastores=["Board"], scopes=["global"])
    assert job["progress"]["applied"] == 2
    archive_id = await archive_of(env, job)
    status, _ = await env.call(
        "DELETE", f"{base}/ann", env.admin, params={"idempotency_key": idem()}
    )
    restore = await start(
        env, "/restores", {"universe_id": U, "archive_id": archive_id,
                           "part": {"ordered_datastores": ["Board"]}},
    )  # fmt: skip
    assert restore["state"] == "succeeded", restore
    assert (restore["progress"]["applied"], restore["progress"]["skipped"]) == (1, 1)
    status, page = await env.call("GET", base, env.admin)
    assert sorted((e["id"], e["value"]) for e in page["items"]) == [("ann", 10), ("bob", 20)]


async def test_a_schedule_runs_a_backup_and_keeps_only_its_newest_archives(env: Env) -> None:
    await seed_players(env)
    status, view = await env.call(
        "PUT", "/backup-schedules/nightly", env.admin,
        json={"universe_id": U, "datastores": ["Players"], "every_seconds": 86400, "keep": 1},
    )  # fmt: skip
    assert status == 200 and view["next_run_at"] is not None, view
    schedules = env.server.app[BACKUPS].schedules
    await schedules.tick()  # a new schedule is due at once
    status, listing = await env.call("GET", "/backup-schedules", env.admin)
    first = listing["schedules"][0]["last_job_id"]
    assert (await jobs.wait(env.call, env.admin, first))["state"] == "succeeded"
    status, job = await env.call("POST", "/backup-schedules/nightly/run", env.admin)
    assert status == 200 and job["id"] != first, job  # a run of its own, even in that second
    assert (await jobs.wait(env.call, env.admin, job["id"]))["state"] == "succeeded"
    # Retention after the last run succeeded (the server's own loop may have applied it
    # already); not due again yet.
    await schedules.tick()
    status, listing = await env.call("GET", "/backups", env.admin)
    assert [a["job_id"] for a in listing["archives"]] == [job["id"]]
    status, listing = await env.call("GET", "/backup-schedules", env.admin)
    (nightly,) = listing["schedules"]
    assert nightly["archives"] == 1 and nightly["last_state"] == "succeeded"


async def test_a_job_list_for_a_universe_beyond_any_id_is_a_clear_400(env: Env) -> None:
    # Found by the OpenAPI fuzzer: a 24-digit universe id used to raise OverflowError (a 500).
    status, page = await env.call(
        "GET", "/jobs", env.admin, params={"universe": "405102547785154094432256"}
    )
    assert status == 400 and page["error"]["code"] == "BAD_REQUEST", page
    assert page["error"]["details"]["problems"][0]["field"] == "universe", page
