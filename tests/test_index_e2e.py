"""The search index end to end over HTTP: the sample game is crawled through the one read path,
searched and analysed; writes through the server update the index at once; the same code path
against an upstream that does not say it is an emulator is labelled LIVE.

Expected figures are computed here from the emulator's own stored values (read straight from its
SQLite), never from the index code under test.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from dsm.emulator import sample_game
from dsm.emulator.app import EmulatorConfig
from dsm.emulator.context import EMULATOR, EmulatorContext
from dsm.emulator.throttle import LimitsConfig
from dsm.http.appkeys import DATA, INDEX
from shared_schema.common import Role
from tests.test_offline import serving
from tests.test_upstream_flag import SilentProxy
from tools.testing import jobs
from tools.testing.emulator import start_emulator
from tools.testing.server import Server, entry_path, idem, running_server

PLAYERS = 60


def emulator_of(server: Server) -> EmulatorContext:
    emulator = server.app[DATA].upstream.emulator
    assert emulator is not None
    return emulator.runner.app[EMULATOR]


def stored_players(ctx: EmulatorContext, universe: str = "1") -> dict[str, dict[str, Any]]:
    """Each player's newest value, straight from the emulator's tables."""
    rows = ctx.db.conn.execute(
        """SELECT r.key, r.value FROM revisions r JOIN entries e USING
           (universe, datastore, scope, key)
           WHERE r.universe = ? AND r.datastore = ? AND r.seq = e.head_seq AND e.deleted = 0""",
        (universe, sample_game.PLAYER_STORE),
    ).fetchall()
    return {row["key"]: json.loads(row["value"]) for row in rows}


async def crawl(server: Server, token: str, selection: dict[str, Any]) -> dict[str, Any]:
    """Run a crawl job over `selection` to its end; the finished job."""
    if "datastores" not in selection:
        selection = {"all_datastores": True, **selection}
    job = await jobs.run(server.call, token, {"kind": "crawl", "selection": selection})
    assert job["state"] == "succeeded", job
    return job


async def index_basis(server: Server, token: str, universe: int) -> dict[str, Any]:
    status, index = await server.call("GET", "/index", token, params={"universe_id": str(universe)})
    assert status == 200, index
    basis: dict[str, Any] = index["basis"]
    return basis


async def search(server: Server, token: str, **body: Any) -> dict[str, Any]:
    status, page = await server.call("POST", "/search", token, json={"universe_id": 1, **body})
    assert status == 200, page
    return page  # type: ignore[no-any-return]


async def all_keys(server: Server, token: str, **body: Any) -> set[str]:
    keys: set[str] = set()
    cursor = None
    while True:
        page = await search(
            server, token, limit=25, **({"cursor": cursor} if cursor else {}), **body
        )
        keys |= {hit["entry"]["key"] for hit in page["hits"]}
        cursor = page.get("next_cursor")
        if cursor is None:
            assert len(keys) == page["total"]
            return keys


async def test_sample_game_crawl_search_and_analytics(tmp_path: Path) -> None:
    async with running_server(tmp_path, budget_rpm=1_000_000) as server:
        token = await server.pair()
        status, offer = await server.call("GET", "/sample-game", token)
        assert (
            status == 200 and offer["available"] and offer["emulator_empty"] and not offer["loaded"]
        )
        status, offer = await server.call(
            "POST", "/sample-game", token, json={"seed": 7, "players": PLAYERS}
        )
        assert status == 200 and offer["loaded"] and offer["seed"] == 7, offer
        players = stored_players(emulator_of(server))
        assert len(players) == PLAYERS

        job = await crawl(server, token, {"universe_id": 1, "datastores": ["PlayerData"]})
        assert job["progress"]["applied"] == PLAYERS and job["plan"]["items"] == PLAYERS
        coverage = (await index_basis(server, token, 1))["coverage"]
        assert coverage["entries_indexed"] == coverage["entries_listed"] == PLAYERS

        # Value search: the result set equals a filter computed here over the stored values.
        def numeric(v: Any) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool)

        expected = {
            k
            for k, v in players.items()
            if numeric(v["coins"])
            and v["coins"] > 500
            and "sword" in v["inventory"]
            and "banned" not in v
        }
        got = await all_keys(
            server, token, query='coins > 500 and inventory has "sword" and not exists(banned)'
        )
        assert got == expected and expected
        between = {k for k, v in players.items() if numeric(v["level"]) and 2 <= v["level"] <= 4}
        assert await all_keys(server, token, query="level between 2 and 4") == between
        music = {k for k, v in players.items() if v["settings"]["music"] is True}
        assert await all_keys(server, token, query="settings.music = true") == music
        text_coins = {k for k, v in players.items() if isinstance(v["coins"], str)}
        assert await all_keys(server, token, query="coins is string") == text_coins
        planted = sample_game.key_of(sample_game.WRONG_USER_ID)
        assert await all_keys(server, token, query="userIds has 900000999") == {planted}

        # Key search.
        glob = {k for k in players if re.fullmatch(r"Player_9000000.*", k)}
        assert (
            await all_keys(server, token, key_pattern="Player_9000000*", key_match="glob") == glob
        )
        assert await all_keys(
            server, token, key_pattern="player_9", key_match="prefix", case_sensitive=False
        ) == {k for k in players if k.lower().startswith("player_9")}

        # Every answer is labelled: emulator sample data, full coverage, an as-of time.
        page = await search(
            server, token, query="coins > 0", sort="coins", descending=True, limit=3
        )
        basis = page["basis"]
        assert basis["backend"] == "EMULATOR" and basis["sample_data"] is True
        assert basis["coverage"]["entries_indexed"] == PLAYERS
        assert basis["coverage"]["entries_listed"] == PLAYERS and basis["coverage"]["complete"]
        assert basis["as_of"]
        top = max(v["coins"] for v in players.values() if numeric(v["coins"]))
        assert json.loads(page["hits"][0]["fields"]["coins"]) == top

        # A bad query says where it is wrong.
        status, error = await server.call(
            "POST", "/search", token, json={"universe_id": 1, "query": "coins > > 5"}
        )
        assert status == 400 and error["error"]["details"]["query_error"]["column"] == 9
        status, checked = await server.call(
            "POST", "/search/check", token, json={"query": "level >"}
        )
        assert status == 200 and checked["valid"] is False and checked["error"]["position"] == 7

        # Analytics: schema shares and economy figures against values computed here.
        status, schema = await server.call(
            "POST", "/analytics/schema", token, json={"universe_id": 1, "datastore": "PlayerData"}
        )
        assert status == 200, schema
        fields = {f["path"]: f for f in schema["stores"][0]["fields"]}
        coins_types = {t["type"]: t["count"] for t in fields["coins"]["types"]}
        assert coins_types == {
            "integer": sum(1 for v in players.values() if numeric(v["coins"])),
            "string": len(text_coins),
        }
        log = sum(1 for v in players.values() if "purchaseLog" in v)
        assert fields["purchaseLog"]["presence"] == log / PLAYERS

        status, economy = await server.call(
            "POST",
            "/analytics/economy",
            token,
            json={"universe_id": 1, "datastore": "PlayerData", "currencies": ["coins"]},
        )
        assert status == 200, economy
        assert "coins" in economy["suggested"] and "gems" in economy["suggested"]
        coins = sorted(v["coins"] for v in players.values() if numeric(v["coins"]))
        report = economy["currencies"][0]
        assert report["holders"] == len(coins) and report["total_supply"] == sum(coins)
        n = len(coins)
        gini = sum((2 * (i + 1) - n - 1) * x for i, x in enumerate(coins)) / (n * sum(coins))
        assert abs(report["gini"] - gini) < 1e-9
        assert report["top_holders"][0]["entry"]["key"] == sample_game.key_of(sample_game.COIN_DUPE)
        assert report["history"] and report["history"][-1]["total"] == sum(coins)

        # Anomalies: each planted one is found, with a reason and a link.
        status, anomalies = await server.call(
            "POST",
            "/analytics/anomalies",
            token,
            json={"universe_id": 1, "datastore": "PlayerData"},
        )
        assert status == 200, anomalies
        found = {(a["kind"], a["entry"]["key"]) for a in anomalies["anomalies"]}
        key = sample_game.key_of
        assert ("outlier", key(sample_game.COIN_DUPE)) in found
        assert ("outlier", key(sample_game.LEVEL_OUTLIER)) in found
        assert ("type_drift", key(sample_game.COINS_AS_TEXT)) in found
        assert ("near_size_limit", key(sample_game.HUGE_SAVE)) in found
        assert ("user_id_mismatch", key(sample_game.WRONG_USER_ID)) in found
        assert all(a["reason"] for a in anomalies["anomalies"])

        # Progression: the history read is a job whose plan says its cost first.
        history_body = {
            "kind": "crawl_history",
            "selection": {"universe_id": 1, "datastores": ["PlayerData"]},
            "params": {"sample_size": 10, "max_revisions_per_key": 20},
        }
        status, planned = await jobs.create(server.call, token, history_body)
        assert status == 200, planned
        planned = await jobs.wait(server.call, token, planned["id"], plan_complete=True)
        estimate = planned["plan"]["estimate"]
        assert planned["plan"]["items"] == 10 and estimate["requests"] == {"list": 10, "read": 200}
        history = await jobs.run(server.call, token, history_body)
        assert history["state"] == "succeeded" and history["progress"]["applied"] == 10, history
        status, progression = await server.call(
            "POST",
            "/analytics/progression",
            token,
            json={"universe_id": 1, "datastore": "PlayerData", "field": "level"},
        )
        assert status == 200 and progression["points"] and progression["series"], progression
        assert progression["points"][0]["days"] == 0

        # A write through the server shows up in the index at once, without a crawl.
        status, _ = await server.call(
            "POST",
            entry_path(1, "PlayerData", "Player_new"),
            token,
            json={
                "value_json": '{"coins": 123456789, "level": 3}',
                "user_ids": [77],
                "idempotency_key": idem(),
            },
        )
        assert status == 200
        for _ in range(100):
            if await all_keys(server, token, query="coins = 123456789"):
                break
            await asyncio.sleep(0.02)
        assert await all_keys(server, token, query="coins = 123456789 and userIds has 77") == {
            "Player_new"
        }
        status, _ = await server.call(
            "DELETE",
            entry_path(1, "PlayerData", "Player_new"),
            token,
            params={"idempotency_key": idem()},
        )
        assert status == 200
        for _ in range(100):
            if not await all_keys(server, token, query="coins = 123456789"):
                break
            await asyncio.sleep(0.02)
        assert not await all_keys(server, token, query="coins = 123456789")

        # Verify live: a change made behind the server's back is marked.
        target = sample_game.key_of(sample_game.LEVEL_OUTLIER)
        ctx = emulator_of(server)
        ctx.standard.write(
            "1", "PlayerData", "global", target, '{"level": 6}', attributes=None, user_ids=[]
        )
        page = await search(server, token, query="level > 1000", verify_live=True, limit=10)
        live = {hit["entry"]["key"]: hit["live"] for hit in page["hits"]}
        assert live[target]["state"] == "changed" and live[target]["still_matches"] is False

        # Erasure scrubs the index; drop removes it.
        removed = await server.app[INDEX].scrub_user(sample_game.COIN_DUPE)
        assert removed == 1
        assert not await all_keys(server, token, query="coins >= 2e9")
        status, _ = await server.call("DELETE", "/index", token)
        assert status == 403  # dropping the index is for admins
        admin = await server.pair("admin", role=Role.ADMIN)
        status, dropped = await server.call("DELETE", "/index", admin)
        assert (
            status == 200
            and dropped["dropped"] is True
            and dropped["entries_removed"] == PLAYERS - 1
        )
        status, index = await server.call("GET", "/index", token, params={"universe_id": "1"})
        assert status == 200 and index["basis"]["coverage"]["entries_indexed"] == 0


async def test_upstream_without_the_emulator_label_is_indexed_as_live(tmp_path: Path) -> None:
    runner, url, ctx = await start_emulator(EmulatorConfig(limits=LimitsConfig(mode="off")))
    try:
        sample_game.load(ctx, universe="5", seed=3, players=20)
        async with (
            serving(SilentProxy(url)) as proxy,
            running_server(tmp_path, upstream_url=proxy, budget_rpm=1_000_000) as server,
        ):
            token = await server.pair()
            job = await crawl(server, token, {"universe_id": 5})
            assert job["progress"]["applied"] == 20
            basis = await index_basis(server, token, 5)
            assert basis["backend"] == "LIVE" and basis["coverage"]["entries_indexed"] == 20
            status, page = await server.call(
                "POST", "/search", token, json={"universe_id": 5, "query": "level >= 1"}
            )
            assert status == 200 and page["total"] == 20
            # Sample data is only ever labelled as such on an emulator.
            assert page["basis"]["backend"] == "LIVE" and page["basis"]["sample_data"] is False
            status, offer = await server.call("GET", "/sample-game", token)
            assert status == 200 and offer["available"] is False and offer["backend"] == "LIVE"
            status, refused = await server.call("POST", "/sample-game", token, json={})
            assert status == 400, refused
    finally:
        await runner.cleanup()


async def test_a_crawl_of_several_named_scopes_ends_complete_and_drops_only_there(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, budget_rpm=1_000_000) as server:
        token = await server.pair()
        ctx = emulator_of(server)
        for scope in ("a", "b", "c"):
            for i in range(3):
                ctx.standard.write(
                    "1", "S", scope, f"k{i}", f'{{"n": {i}}}', attributes=None, user_ids=[]
                )
        await crawl(server, token, {"universe_id": 1, "datastores": ["S"], "all_scopes": True})
        # Gone behind the server's back: one key in a named scope, one in a scope left out.
        ctx.standard.delete("1", "S", "a", "k0")
        ctx.standard.delete("1", "S", "c", "k0")

        selection = {"universe_id": 1, "datastores": ["S"], "scopes": ["a", "b", "a"]}
        job = await crawl(server, token, selection)
        assert job["progress"]["applied"] == 5, job["progress"]
        coverage = (await index_basis(server, token, 1))["coverage"]
        # a/k0 was proved gone by the complete listing of a; c was not listed, so c/k0 stays.
        assert coverage["entries_indexed"] == coverage["entries_listed"] == 8, coverage
        assert coverage["complete"] is True and coverage["share"] == 1.0
        page = await search(server, token, key_pattern="k0", key_match="prefix")
        assert {(h["entry"]["scope"], h["entry"]["key"]) for h in page["hits"]} == {
            ("b", "k0"),
            ("c", "k0"),
        }
