"""Every job kind against the embedded emulator, through the real HTTP API.

Each test plans a job (dry run: counts, samples, estimate), runs it, checks what Open Cloud (the
emulator) holds afterwards and each item's outcome, and rolls back where the kind writes.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dsm.http.appkeys import JOBS
from dsm.opencloud.client import OpenCloudClient
from shared_schema.common import Role
from tools.testing import jobs
from tools.testing.server import Server, entry_path, idem, running_server

U, U2 = 1, 2


@dataclass
class Env:
    server: Server
    admin: str
    editor: str
    viewer: str

    async def call(self, method: str, path: str, token: str | None, **kwargs: Any) -> Any:
        return await self.server.call(method, path, token, **kwargs)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with running_server(
        tmp_path, budget_rpm=1_000_000, emulator_universes=[U, U2], job_plan_wait_seconds=20
    ) as server:
        yield Env(
            server,
            await server.pair("admin", role=Role.ADMIN),
            await server.pair("editor", role=Role.EDITOR),
            await server.pair("viewer", role=Role.VIEWER),
        )


def selection(store: str = "Players", **extra: Any) -> dict[str, Any]:
    return {"universe_id": U, "datastores": [store], **extra}


async def value(env: Env, key: str, store: str = "Players", **kw: Any) -> Any:
    view = await jobs.read_value(env.call, env.admin, kw.pop("universe", U), store, key, **kw)
    return None if view is None else json.loads(view["value_json"])


# ------------------------------------------------------------------------------- delete


async def test_delete_plans_runs_and_rolls_back_exactly(env: Env) -> None:
    players = {f"p{i}": {"coins": i, "name": f"player {i}"} for i in range(8)}
    await jobs.seed(env.call, env.admin, U, "Players", players, attributes={"v": 2}, user_ids=[7])
    await jobs.seed(env.call, env.admin, U, "Players", {"keep": {"coins": 99}})
    status, job = await jobs.create(
        env.call, env.admin, {"kind": "delete", "selection": selection(prefix="p")}
    )
    assert status == 200, job
    plan = job["plan"]
    assert job["state"] == "planned" and plan["complete"] and plan["items"] == 8
    assert len(plan["samples"]) == 5 and plan["samples"][0]["action"] == "delete"
    assert plan["samples"][0]["before"]["user_ids"] == [7]
    assert plan["estimate"]["requests"] == {"read": 16, "remove": 8, "list": 8}
    assert plan["estimate"]["seconds"] > 0 and "CCU 0" in plan["budget"]["headline"]
    assert job["actions"] == ["start", "cancel"]
    assert await value(env, "p0") is not None  # a dry run writes nothing

    status, job = await env.call("POST", f"/jobs/{job['id']}/start", env.admin, json={})
    assert status == 200, job
    job = await jobs.wait(env.call, env.admin, job["id"])
    assert job["state"] == "succeeded", job
    assert job["progress"] == {**job["progress"], "total": 8, "done": 8, "applied": 8}
    assert [await value(env, k) for k in players] == [None] * 8
    assert await value(env, "keep") == {"coins": 99}
    outcomes = await jobs.items(env.call, env.admin, job["id"])
    assert {i["state"] for i in outcomes} == {"applied"}
    assert all(len(i["journal_ids"]) == 1 for i in outcomes)

    rollback = await rollback_and_wait(env, job["id"])
    assert rollback["state"] == "succeeded" and rollback["progress"]["applied"] == 8
    for key, expected in players.items():
        view = await jobs.read_value(env.call, env.admin, U, "Players", key)
        assert view is not None and json.loads(view["value_json"]) == expected
        assert view["attributes"] == {"v": 2} and view["user_ids"] == [7]
    status, job = await env.call("GET", f"/jobs/{job['id']}", env.admin)
    assert job["state"] == "rolled_back" and job["rolled_back_by"] == rollback["id"]
    assert job["actions"] == []


async def rollback_and_wait(env: Env, job_id: str) -> dict[str, Any]:
    status, rollback = await env.call(
        "POST",
        f"/jobs/{job_id}/rollback",
        env.admin,
        json={"dry_run": False, "idempotency_key": idem()},
    )
    assert status == 200, rollback
    assert rollback["kind"] == "rollback" and rollback["rollback_of"] == job_id
    return await jobs.wait(env.call, env.admin, rollback["id"])


async def test_rollback_skips_entries_changed_since_and_lists_them(env: Env) -> None:
    await jobs.seed(env.call, env.admin, U, "Players", {"a": {"n": 1}, "b": {"n": 2}})
    job = await jobs.run(
        env.call,
        env.admin,
        {"kind": "transform", "selection": selection(), "params": {"program": ".n += 10"}},
    )
    assert job["progress"]["applied"] == 2
    # Someone writes `b` after the job: the rollback must leave that write alone.
    view = await jobs.read_value(env.call, env.admin, U, "Players", "b")
    assert view is not None
    status, _ = await env.call(
        "PUT",
        entry_path(U, "Players", "b"),
        env.admin,
        json={
            "value_json": '{"n":500}',
            "expected_revision": view["revision"],
            "idempotency_key": idem(),
        },
    )
    assert status == 200
    rollback = await rollback_and_wait(env, job["id"])
    assert rollback["progress"]["applied"] == 1 and rollback["progress"]["skipped"] == 1
    skipped = await jobs.items(env.call, env.admin, rollback["id"], state="skipped")
    assert [(i["key"], i["skip_code"]) for i in skipped] == [("b", "changed_since")]
    assert await value(env, "a") == {"n": 1} and await value(env, "b") == {"n": 500}


async def test_held_sessions_are_skipped_or_retried_until_released(env: Env) -> None:
    import time

    def profile(holder: list[Any] | None, coins: int) -> str:
        meta: dict[str, Any] = {
            "ProfileCreateTime": 1,
            "SessionLoadCount": 3,
            "LastUpdate": time.time(),
            "MetaTags": {},
        }
        if holder is not None:
            meta["ActiveSession"] = holder
        return json.dumps(
            {
                "Data": {"coins": coins},
                "MetaData": meta,
                "GlobalUpdates": [0, []],
                "RobloxMetaData": {},
                "UserIds": [],
            }
        )

    held = [123, "server-a", "guid-1"]
    await jobs.seed(
        env.call, env.admin, U, "Profiles", {"held": profile(held, 5), "free": profile(None, 6)}
    )
    job = await jobs.run(
        env.call, env.admin, {"kind": "delete", "selection": selection("Profiles")}
    )
    assert job["progress"]["applied"] == 1 and job["progress"]["skipped"] == 1
    [skipped] = await jobs.items(env.call, env.admin, job["id"], state="skipped")
    assert skipped["key"] == "held" and skipped["skip_code"] == "session_held"
    assert "place 123, server server-a" in skipped["message"]
    assert await value(env, "held", "Profiles") is not None


async def test_held_sessions_retry_applies_once_released(tmp_path: Path) -> None:
    import time

    def profile(holder: list[Any] | None) -> str:
        meta: dict[str, Any] = {"LastUpdate": time.time(), "SessionLoadCount": 1}
        if holder is not None:
            meta["ActiveSession"] = holder
        return json.dumps({"Data": {"coins": 1}, "MetaData": meta, "GlobalUpdates": [0, []]})

    async with running_server(
        tmp_path, budget_rpm=1_000_000, job_held_retry_seconds=0.3, job_held_wait_seconds=30
    ) as server:
        token = await server.pair("admin", role=Role.ADMIN)
        call = server.call
        await jobs.seed(call, token, U, "Profiles", {"held": profile([1, "srv", "g"])})
        status, job = await jobs.create(
            call,
            token,
            {
                "kind": "transform",
                "dry_run": False,
                "selection": selection("Profiles"),
                "params": {"program": ".coins += 1", "held_sessions": "retry"},
            },
        )
        assert status == 200, job
        await jobs.wait(call, token, job["id"], ("running",))
        # The game server releases the session (its last save keeps the data).
        view = await jobs.read_value(call, token, U, "Profiles", "held")
        assert view is not None
        status, answer = await call(
            "PUT",
            entry_path(U, "Profiles", "held"),
            token,
            json={
                "value_json": profile(None),
                "expected_revision": view["revision"],
                "idempotency_key": idem(),
            },
        )
        assert status == 200, answer
        job = await jobs.wait(call, token, job["id"])
        assert job["state"] == "succeeded" and job["progress"]["applied"] == 1, job
        view = await jobs.read_value(call, token, U, "Profiles", "held")
        assert view is not None and json.loads(view["value_json"])["Data"] == {"coins": 2}


# --------------------------------------------------------------------------- copy / move


async def test_copy_keeps_metadata_across_store_scope_and_universe(env: Env) -> None:
    await jobs.seed(
        env.call,
        env.admin,
        U,
        "Players",
        {"a": {"n": 1}, "b": {"n": 2}},
        attributes={"tier": "gold"},
        user_ids=[11, 12],
    )
    await jobs.seed(env.call, env.admin, U2, "Backup", {"b": {"n": 200}}, scope="beta")
    body = {
        "kind": "copy",
        "selection": selection(),
        "params": {"target": {"universe_id": U2, "datastore": "Backup", "scope": "beta"}},
    }
    job = await jobs.run(env.call, env.editor, body)
    assert job["state"] == "succeeded" and job["progress"]["applied"] == 1, job
    [skipped] = await jobs.items(env.call, env.admin, job["id"], state="skipped")
    assert skipped["key"] == "b" and skipped["skip_code"] == "exists"
    copy = await jobs.read_value(env.call, env.admin, U2, "Backup", "a", scope="beta")
    assert copy is not None and json.loads(copy["value_json"]) == {"n": 1}
    assert copy["attributes"] == {"tier": "gold"} and copy["user_ids"] == [11, 12]
    assert await value(env, "b", "Backup", universe=U2, scope="beta") == {"n": 200}

    body["params"]["on_exists"] = "overwrite"  # type: ignore[index]
    job = await jobs.run(env.call, env.editor, body)
    assert job["progress"]["applied"] == 2
    assert await value(env, "b", "Backup", universe=U2, scope="beta") == {"n": 2}
    rollback = await rollback_and_wait(env, job["id"])
    assert rollback["state"] == "succeeded", rollback
    # The overwrite is undone to the target's own earlier value, the re-copy of `a` likewise.
    assert await value(env, "b", "Backup", universe=U2, scope="beta") == {"n": 200}
    assert await value(env, "a", "Backup", universe=U2, scope="beta") == {"n": 1}


async def test_copy_on_exists_fail_stops_the_job(env: Env) -> None:
    await jobs.seed(env.call, env.admin, U, "Players", {"a": 1})
    await jobs.seed(env.call, env.admin, U, "Other", {"a": 2})
    job = await jobs.run(
        env.call,
        env.admin,
        {
            "kind": "copy",
            "selection": selection(),
            "params": {"target": {"datastore": "Other"}, "on_exists": "fail"},
        },
    )
    assert job["state"] == "failed" and job["failure"]["code"] == "ALREADY_EXISTS", job
    assert await value(env, "a", "Other") == 2


async def test_copy_refuses_a_target_that_is_the_source(env: Env) -> None:
    status, answer = await jobs.create(
        env.call,
        env.admin,
        {"kind": "copy", "selection": selection(), "params": {"target": {"datastore": "Players"}}},
    )
    assert status == 400 and "source itself" in answer["error"]["message"]


async def test_move_deletes_sources_and_rolls_back_both_sides(env: Env) -> None:
    await jobs.seed(env.call, env.admin, U, "Players", {"a": {"n": 1}, "b": {"n": 2}})
    job = await jobs.run(
        env.call,
        env.admin,
        {"kind": "move", "selection": selection(), "params": {"target": {"scope": "archive"}}},
    )
    assert job["state"] == "succeeded" and job["progress"]["applied"] == 2, job
    assert await value(env, "a") is None
    assert await value(env, "a", scope="archive") == {"n": 1}
    rollback = await rollback_and_wait(env, job["id"])
    assert rollback["progress"]["applied"] == 4  # two creates and two deletes undone
    assert await value(env, "a") == {"n": 1} and await value(env, "b") == {"n": 2}
    assert await value(env, "a", scope="archive") is None


# ---------------------------------------------------------------------------------- export


@pytest.mark.parametrize("format", ["jsonl", "csv", "sqlite"])
async def test_export_writes_every_entry_to_a_file(env: Env, format: str) -> None:
    big = 12345678901234567890
    values = {f"k{i}": f'{{"n":{i},"big":{big},"s":"x\\ny"}}' for i in range(30)}
    await jobs.seed(env.call, env.admin, U, "Players", values, attributes={"a": 1}, user_ids=[5])
    job = await jobs.run(
        env.call,
        env.editor,
        {"kind": "export", "selection": selection(), "params": {"format": format}},
    )
    assert job["state"] == "succeeded" and job["progress"]["applied"] == 30, job
    assert job["writes"] is False and job["actions"] == []
    path = Path(job["output_path"])
    assert path.parent.name == "exports" and path.suffix == "." + format
    if format == "jsonl":
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert sorted(line["key"] for line in lines) == sorted(values)
        assert all(line["value"]["big"] == big and line["user_ids"] == [5] for line in lines)
        assert all(line["attributes"] == {"a": 1} and line["revision"] for line in lines)
    elif format == "csv":
        with open(path, encoding="utf-8", newline="") as rows:
            read = list(csv.DictReader(rows))
        assert len(read) == 30 and read[0]["value.big"] == str(big)
    else:
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT key, value_json FROM entries").fetchall()
        assert sorted(k for k, _ in rows) == sorted(values)
        assert all(json.loads(v)["big"] == big for _, v in rows)
    assert not list(path.parent.glob(".*.partial.jsonl")) and not list(path.parent.glob(".*.tmp"))
    # Exports never overwrite: the same file name again is refused before anything runs.
    status, answer = await jobs.create(
        env.call,
        env.editor,
        {
            "kind": "export",
            "selection": selection(),
            "params": {"format": format, "file_name": path.name},
        },
    )
    assert status == 409 and answer["error"]["code"] == "ALREADY_EXISTS"


# ---------------------------------------------------------------------------------- import


async def test_import_reports_bad_lines_and_imports_the_valid_ones(env: Env) -> None:
    lines = [
        '{"key":"a","value":{"coins":1},"attributes":{"x":1},"user_ids":[3]}',
        '{"key":"b","value":{"coins":2}}',
        "not json at all",
        '{"key":"c"}',
        '{"key":"' + "k" * 51 + '","value":1}',
        '{"key":"a","value":5}',
        '{"key":"d","value":{"coins":4},"scope":"beta"}',
        '{"key":"e","value":1,"user_ids":[1,2,3,4,5]}',
    ]
    data = ("\n".join(lines) + "\n").encode()
    upload = await jobs.upload(env.call, env.admin, data, "players.jsonl", chunk_bytes=64 * 1024)
    body = {"kind": "import", "selection": selection(), "params": {"upload_id": upload}}
    status, job = await jobs.create(env.call, env.admin, body)
    assert status == 200, job
    plan = job["plan"]
    assert plan["items"] == 3 and plan["bad_line_count"] == 5
    assert [b["line"] for b in plan["bad_lines"]] == [3, 4, 5, 6, 8]
    assert "already on line 1" in plan["bad_lines"][3]["message"]
    assert plan["blocking"] and job["actions"] == ["cancel"]
    status, answer = await env.call("POST", f"/jobs/{job['id']}/start", env.admin, json={})
    assert status == 400 and "skip_bad_lines" in answer["error"]["message"]

    await jobs.seed(env.call, env.admin, U, "Players", {"b": {"coins": 100, "gems": 1}})
    body["params"] = {"upload_id": upload, "skip_bad_lines": True, "mode": "merge"}
    job = await jobs.run(env.call, env.admin, body)
    assert job["state"] == "succeeded" and job["progress"]["applied"] == 3, job
    view = await jobs.read_value(env.call, env.admin, U, "Players", "a")
    assert view is not None and view["attributes"] == {"x": 1} and view["user_ids"] == [3]
    assert await value(env, "b") == {"coins": 2, "gems": 1}  # merged
    assert await value(env, "d", scope="beta") == {"coins": 4}
    outcomes = await jobs.items(env.call, env.admin, job["id"])
    assert [i["line"] for i in outcomes] == [1, 2, 7]


async def test_an_import_file_full_of_bad_lines_is_reported_line_by_line(env: Env) -> None:
    kinds_of_bad = [
        "{not json",
        '{"key":"","value":1}',
        '{"value":1}',
        '{"key":"k","value":NaN}',
        '{"key":"k","value":1,"attributes":[1]}',
        '{"key":"k","value":1,"user_ids":[-1]}',
        '{"key":"k","value":1,"extra":true}',
        "BYTES-NOT-UTF-8",
    ]
    lines = []
    for i in range(3000):
        if i % 100 == 0:
            lines.append(f'{{"key":"good_{i}","value":{i}}}')
        else:
            lines.append(kinds_of_bad[i % len(kinds_of_bad)])
    data = "\n".join(lines).encode().replace(b"BYTES-NOT-UTF-8", b"\xff\xfe")
    upload = await jobs.upload(env.call, env.admin, data, "broken.jsonl")
    status, job = await jobs.create(
        env.call,
        env.admin,
        {"kind": "import", "selection": selection(), "params": {"upload_id": upload}},
    )
    assert status == 200, job
    plan = job["plan"]
    assert plan["items"] == 30 and plan["bad_line_count"] == 2970
    assert len(plan["bad_lines"]) == 1000  # the first thousand, by line number
    numbers = [b["line"] for b in plan["bad_lines"]]
    assert numbers == sorted(numbers) and numbers[:3] == [2, 3, 4]
    messages = " | ".join(b["message"] for b in plan["bad_lines"][:8])
    for expected in (
        "not a JSON object",
        "key must be at least 1 byte",
        'needs "key"',
        "unknown field(s) extra",
        "not UTF-8",
    ):
        assert expected in messages, (expected, messages)
    assert plan["blocking"] and job["actions"] == ["cancel"]
    assert await value(env, "good_0") is None  # nothing written


async def test_import_csv_create_only_leaves_existing_keys(env: Env) -> None:
    data = b"key,value.coins,value.name\na,1,ann\nb,2,bob\n"
    upload = await jobs.upload(env.call, env.admin, data, "players.csv")
    await jobs.seed(env.call, env.admin, U, "Players", {"b": {"coins": 50}})
    job = await jobs.run(
        env.call,
        env.admin,
        {"kind": "import", "selection": selection(), "params": {"upload_id": upload}},
    )
    assert job["progress"]["applied"] == 1 and job["progress"]["skipped"] == 1, job
    assert await value(env, "a") == {"coins": 1, "name": "ann"}
    assert await value(env, "b") == {"coins": 50}


async def test_uploads_are_checked_chunk_by_chunk(env: Env) -> None:
    import base64

    status, info = await env.call(
        "POST",
        "/uploads",
        env.admin,
        json={"file_name": "x.jsonl", "size_bytes": 70000, "chunk_bytes": 65536},
    )
    assert status == 200 and info["chunks"] == 2 and info["missing"] == [0, 1]
    upload = info["upload_id"]
    path = f"/uploads/{upload}/chunks"

    async def put(index: int, data: bytes) -> tuple[int, Any]:
        body = {"data_base64": base64.b64encode(data).decode()}
        result: tuple[int, Any] = await env.call("PUT", f"{path}/{index}", env.admin, json=body)
        return result

    assert (await put(0, b"x" * 100))[0] == 400  # not the chunk size
    assert (await put(2, b"x"))[0] == 400  # past the end
    status, answer = await env.call(
        "PUT", f"{path}/0", env.admin, json={"data_base64": "not base64!"}
    )
    assert status == 400 and "base64" in answer["error"]["message"]
    assert (await put(0, b"a" * 65536))[0] == 200
    assert (await put(0, b"a" * 65536))[0] == 200  # the same chunk again is harmless
    assert (await put(0, b"b" * 65536))[0] == 409  # other bytes for a chunk already received
    status, answer = await env.call("POST", f"/uploads/{upload}/complete", env.admin)
    assert status == 409 and answer["error"]["details"]["missing"] == [1]
    assert (await put(1, b"c" * (70000 - 65536)))[0] == 200
    status, info = await env.call("POST", f"/uploads/{upload}/complete", env.admin)
    assert status == 200 and info["state"] == "complete" and len(info["sha256"]) == 64
    # Editors cannot upload (imports need admin).
    status, _ = await env.call(
        "POST", "/uploads", env.editor, json={"file_name": "x", "size_bytes": 1}
    )
    assert status == 403
    status, _ = await env.call("DELETE", f"/uploads/{upload}", env.admin)
    assert status == 204


# ------------------------------------------------------------------------------- transform


async def test_transform_changes_skips_and_reports(env: Env) -> None:
    await jobs.seed(
        env.call,
        env.admin,
        U,
        "Players",
        {
            "a": {"coins": 1, "legacy": True},
            "b": {"coins": "many"},  # the program fails here: reported, left alone
            "c": '{"coins":2,"id":9007199254740993}',  # jq would round id: left alone
            "d": {"gems": 3},  # nothing to change
        },
    )
    job = await jobs.run(
        env.call,
        env.admin,
        {
            "kind": "transform",
            "selection": selection(),
            "params": {"program": "if .coins then .coins += 1 else . end | del(.legacy)"},
        },
    )
    assert job["state"] == "succeeded", job
    outcomes = {i["key"]: i for i in await jobs.items(env.call, env.admin, job["id"])}
    assert outcomes["a"]["state"] == "applied"
    assert outcomes["b"]["state"] == "failed" and outcomes["b"]["error_code"] == "BAD_REQUEST"
    assert outcomes["c"]["skip_code"] == "precision"
    assert outcomes["d"]["skip_code"] == "unchanged"
    assert await value(env, "a") == {"coins": 2}
    assert await value(env, "b") == {"coins": "many"}
    view = await jobs.read_value(env.call, env.admin, U, "Players", "c")
    assert view is not None and "9007199254740993" in view["value_json"]


async def test_transform_edits_only_the_data_of_a_session_wrapper(env: Env) -> None:
    wrapper = (
        '{"Data":{"coins":5},"MetaData":{"ProfileCreateTime":1,"SessionLoadCount":2,'
        '"LastUpdate":1,"MetaTags":{"big":12345678901234567890}},'
        '"GlobalUpdates":[0,[]],"RobloxMetaData":{},"UserIds":[]}'
    )
    await jobs.seed(env.call, env.admin, U, "Profiles", {"p": wrapper})
    status, job = await jobs.create(
        env.call,
        env.admin,
        {
            "kind": "transform",
            "selection": selection("Profiles"),
            "params": {"program": ".coins += 1"},
        },
    )
    assert status == 200
    [sample] = job["plan"]["samples"]
    assert sample["action"] == "write" and "not in use" in sample["session"]
    assert [p["path"] for p in sample["patch"]] == ["/Data/coins"]
    job = await jobs.run(
        env.call,
        env.admin,
        {
            "kind": "transform",
            "selection": selection("Profiles"),
            "params": {"program": ".coins += 1"},
        },
    )
    assert job["progress"]["applied"] == 1, job
    view = await jobs.read_value(env.call, env.admin, U, "Profiles", "p")
    assert view is not None
    assert view["value_json"] == wrapper.replace('"coins":5', '"coins":6')


async def test_transform_with_a_broken_program_is_refused(env: Env) -> None:
    status, answer = await jobs.create(
        env.call,
        env.admin,
        {"kind": "transform", "selection": selection(), "params": {"program": ".coins *="}},
    )
    assert status == 400 and "does not compile" in answer["error"]["message"]


# ---------------------------------------------------------------------------- set-metadata


async def test_set_metadata_keeps_values_byte_for_byte(env: Env) -> None:
    text = '{"b":1,"a":12345678901234567890}'
    await jobs.seed(
        env.call,
        env.admin,
        U,
        "Players",
        {"a": text, "b": text},
        attributes={"old": 1, "keep": 2},
        user_ids=[1, 2],
    )
    job = await jobs.run(
        env.call,
        env.editor,
        {
            "kind": "set_metadata",
            "selection": selection(keys=[{"key": "a"}]),
            "params": {
                "set_attributes": {"new": True},
                "remove_attributes": ["old"],
                "add_user_ids": [3],
                "remove_user_ids": [1],
            },
        },
    )
    assert job["progress"]["applied"] == 1, job
    view = await jobs.read_value(env.call, env.admin, U, "Players", "a")
    assert view is not None and view["value_json"] == text
    assert view["attributes"] == {"keep": 2, "new": True} and view["user_ids"] == [2, 3]
    untouched = await jobs.read_value(env.call, env.admin, U, "Players", "b")
    assert untouched is not None and untouched["attributes"] == {"old": 1, "keep": 2}


# --------------------------------------------------------------------------------- ordered


async def test_ordered_delete_and_copy_state_the_race(env: Env) -> None:
    base = f"/universes/{U}/ordered/Board/scopes/global/entries"
    for entry_id, score in (("ann", 10), ("bob", 20), ("cid", 30)):
        status, answer = await env.call(
            "POST",
            base,
            env.admin,
            json={"id": entry_id, "value": score, "idempotency_key": idem()},
        )
        assert status == 200, answer
    ordered = {"universe_id": U, "store_kind": "ordered", "datastores": ["Board"], "min_value": 15}
    status, job = await jobs.create(
        env.call,
        env.admin,
        {"kind": "copy", "selection": ordered, "params": {"target": {"datastore": "Board2"}}},
    )
    assert status == 200 and job["plan"]["items"] == 2
    assert any("overwritten" in w for w in job["plan"]["warnings"])
    await env.call("POST", f"/jobs/{job['id']}/start", env.admin, json={})
    assert (await jobs.wait(env.call, env.admin, job["id"]))["progress"]["applied"] == 2
    job = await jobs.run(env.call, env.admin, {"kind": "delete", "selection": ordered})
    assert job["progress"]["applied"] == 2
    status, page = await env.call("GET", base, env.admin)
    assert [e["id"] for e in page["items"]] == ["ann"]
    status, page = await env.call("GET", base.replace("Board", "Board2"), env.admin)
    assert sorted(e["value"] for e in page["items"]) == [20, 30]
    await rollback_and_wait(env, job["id"])
    status, page = await env.call("GET", base, env.admin)
    assert sorted(e["value"] for e in page["items"]) == [10, 20, 30]


async def test_ordered_stores_refuse_kinds_that_need_values(env: Env) -> None:
    ordered = {"universe_id": U, "store_kind": "ordered", "datastores": ["Board"]}
    status, answer = await jobs.create(
        env.call,
        env.admin,
        {"kind": "transform", "selection": ordered, "params": {"program": "."}},
    )
    assert status == 400 and "standard data stores only" in answer["error"]["message"]


# --------------------------------------------------------------------- roles and controls


async def test_roles(env: Env) -> None:
    body = {"kind": "delete", "selection": selection()}
    status, answer = await jobs.create(env.call, env.viewer, body)
    assert status == 403
    status, answer = await jobs.create(env.call, env.editor, body)
    assert status == 403 and "admin role" in answer["error"]["message"]
    for kind, params in (("transform", {"program": "."}), ("move", {"target": {"scope": "x"}})):
        status, _ = await jobs.create(
            env.call, env.editor, {"kind": kind, "selection": selection(), "params": params}
        )
        assert status == 403, kind
    status, job = await jobs.create(env.call, env.admin, body)
    assert status == 200
    # An editor may not start an admin-only job someone else planned, nor roll one back.
    status, answer = await env.call("POST", f"/jobs/{job['id']}/start", env.editor, json={})
    assert status == 403, answer
    status, _ = await env.call("GET", f"/jobs/{job['id']}", env.viewer)
    assert status == 200
    status, _ = await env.call("POST", f"/jobs/{job['id']}/cancel", env.viewer)
    assert status == 403


async def test_listing_jobs_of_a_universe_id_beyond_any_real_one_is_a_clear_400(env: Env) -> None:
    # Found by tests/test_fuzz_openapi.py: SQLite cannot hold the id, which was a 500.
    status, answer = await env.call("GET", "/jobs?universe=14455560167819422203904", env.admin)
    assert status == 400 and "universe" in answer["error"]["message"], answer


async def test_create_is_idempotent(env: Env) -> None:
    body = {"kind": "delete", "selection": selection(), "idempotency_key": idem()}
    status, first = await env.call("POST", "/jobs", env.admin, json=body)
    status, again = await env.call("POST", "/jobs", env.admin, json=body)
    assert status == 200 and again["id"] == first["id"]
    body["selection"] = selection("Other")
    status, answer = await env.call("POST", "/jobs", env.admin, json=body)
    assert status == 409 and answer["error"]["details"]["job_id"] == first["id"]


async def test_pause_resume_and_cancel(tmp_path: Path) -> None:
    # 600 writes a minute: slow enough to pause in the middle.
    async with running_server(tmp_path, budget_rpm=600) as server:
        token = await server.pair("admin", role=Role.ADMIN)
        call, service = server.call, server.app[JOBS]
        emulator = server.upstream.emulator
        assert emulator is not None
        async with OpenCloudClient(api_key="direct", base_url=emulator.base_url) as direct:
            # Written and read straight on the emulator, so only the job spends the budget.
            await asyncio.gather(
                *(
                    direct.create_entry(U, "Players", f"k{i:02}", json.dumps({"n": i}))
                    for i in range(40)
                )
            )
            body = {
                "kind": "transform",
                "dry_run": False,
                "selection": selection(),
                "params": {"program": ".n += 1"},
            }
            status, job = await jobs.create(call, token, body)
            assert status == 200, job
            job_id = job["id"]
            await jobs.wait(call, token, job_id, ("running",))
            status, paused = await call("POST", f"/jobs/{job_id}/pause", token)
            assert status == 200 and paused["state"] == "paused"
            assert paused["actions"] == ["resume", "cancel"]
            while service.is_running(job_id):  # items already writing finish; no more start
                await asyncio.sleep(0.02)
            status, view = await call("GET", f"/jobs/{job_id}", token)
            done = view["progress"]["done"]
            assert view["state"] == "paused" and done < 40
            assert done <= paused["progress"]["done"] + 12  # at most one per worker
            await asyncio.sleep(0.3)
            assert (await call("GET", f"/jobs/{job_id}", token))[1]["progress"]["done"] == done

            status, _ = await call("POST", f"/jobs/{job_id}/resume", token)
            assert status == 200
            while view["progress"]["done"] < done + 3:  # it goes on where it stopped
                await asyncio.sleep(0.05)
                status, view = await call("GET", f"/jobs/{job_id}", token)
            status, cancelled = await call("POST", f"/jobs/{job_id}/cancel", token)
            assert cancelled["state"] == "cancelled" and cancelled["actions"] == ["rollback"]
            assert cancelled["finished_at"]
            while service.is_running(job_id):
                await asyncio.sleep(0.02)
            status, view = await call("GET", f"/jobs/{job_id}", token)
            pending = await jobs.items(call, token, job_id, state="pending")
            applied = view["progress"]["applied"]
            assert applied + len(pending) == 40 and len(pending) > 0
            # Every applied item was applied exactly once, and no other.
            entries = await asyncio.gather(
                *(direct.get_entry(U, "Players", f"k{i:02}") for i in range(40))
            )
            bumped = {
                e.key
                for i, e in enumerate(entries)
                if json.loads(e.value_json or "null")["n"] == i + 1
            }
            assert bumped == {f"k{i:02}" for i in range(40)} - {p["key"] for p in pending}


async def test_job_events_on_the_stream(env: Env) -> None:
    _, now = await env.call("GET", "/events", env.admin, params={"timeout": "0"})
    cursor = now["next_cursor"]
    await jobs.seed(env.call, env.admin, U, "Players", {"a": 1})
    job = await jobs.run(env.call, env.admin, {"kind": "delete", "selection": selection()})
    _, batch = await env.call(
        "GET", "/events", env.admin, params={"cursor": str(cursor), "timeout": "0"}
    )
    mine = [e for e in batch["events"] if e["payload"].get("job_id") == job["id"]]
    states = [e["payload"]["state"] for e in mine if e["type"] == "job.state"]
    assert states[0] == "planned" and states[-1] == "succeeded" and "running" in states
    progress = [e["payload"] for e in mine if e["type"] == "job.progress"]
    assert progress and progress[-1]["progress"]["done"] == 1
    _status, text = await env.call("GET", "/metrics", env.admin)
    assert 'dsm_job_items_total{kind="delete",outcome="applied"} 1.0' in text
