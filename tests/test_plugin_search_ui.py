"""Search and Analytics in the plugin, end to end: the real plugin Luau in the harness against a
real companion server whose embedded emulator holds the generated sample game, driven like a user.

Covers the sample game offered on an empty emulator and indexed from the plugin, a query with a
syntax error shown where the server says it is, results opening their entry, Verify live marking
an entry a game server changed behind the index's back, the schema, a histogram and the planted
anomalies in Analytics, and progression's history read planned as a job (its cost seen) before it runs.
Nothing here answers for the server: every figure on screen came from it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dsm.emulator import sample_game
from dsm.emulator.context import EMULATOR
from dsm.http.appkeys import DATA
from tests.test_plugin_layout_ui import cut_off_sideways
from tools.luau_harness import LuauHarness, Node
from tools.testing import jobs
from tools.testing.plugin import PluginDriver
from tools.testing.server import Server, running_server

PLAYERS = 40


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    # A generous request budget so crawls are not paced for minutes (pacing has its own tests).
    async with running_server(tmp_path, budget_rpm=1_000_000) as s:
        yield s


async def load_and_crawl(server: Server) -> str:
    """The sample game loaded and indexed through the server's API, as another teammate would."""
    token = await server.pair("Teammate (Alex)")
    status, loaded = await server.call(
        "POST", "/sample-game", token, json={"seed": 3, "players": PLAYERS}
    )
    assert status == 200 and loaded["loaded"], loaded
    selection = {"universe_id": 1, "all_datastores": True, "all_scopes": True}
    job = await jobs.run(server.call, token, {"kind": "crawl", "selection": selection})
    assert job["state"] == "succeeded", job
    return token


def game_writes(server: Server, key: str, value_json: str) -> None:
    """A game server saving straight to Open Cloud (here its emulator), not through our server."""
    emulator = server.app[DATA].upstream.emulator
    assert emulator is not None
    ctx = emulator.runner.app[EMULATOR]
    ctx.standard.write("1", "PlayerData", "global", key, value_json, attributes=None, user_ids=[])


async def open_search(d: PluginDriver) -> None:
    await d.pair()
    await d.click("Universe_1")
    await d.wait_for(lambda: d.rendered("SearchButton"), "no Search action")
    await d.click("SearchButton")
    await d.wait_text("Index: sample game")
    await d.wait_text("matches")


def node(d: PluginDriver, name: str) -> Node:
    return d.element(name).node()


def drawn(d: PluginDriver, name: str, inside: str | None = None) -> list[Node]:
    found = [e.node() for e in d.h.find_all(name) if e.node().rendered]
    if inside is not None:
        found = [n for n in found if f"/{inside}/" in n.path]
    return found


async def test_the_sample_game_is_offered_on_an_empty_emulator_and_indexed(
    harness: LuauHarness,
    server: Server,
) -> None:
    d = await PluginDriver.open(harness, server)
    await d.pair()
    await d.click("Universe_1")
    await d.wait_for(lambda: d.rendered("LoadSampleGameButton"), "no sample game offer")
    assert d.has_text("This emulator holds no data yet")
    await d.click("LoadSampleGameButton")
    # The sample game's stores appear, and the offer is gone.
    await d.wait_text("PlayerData")
    assert not d.rendered("LoadSampleGameButton")
    await d.click("SearchButton")
    # The plugin crawled it: the index strip says what it holds, labelled as sample data.
    await d.wait_text("Index: sample game")
    token = await server.pair("checker")
    status, index = await server.call("GET", "/index", token, params={"universe_id": "1"})
    assert status == 200
    indexed = index["basis"]["coverage"]["entries_indexed"]
    assert indexed == 500 and index["basis"]["sample_data"] is True
    await d.wait_text(f"{indexed}/{indexed} indexed (100%)")


async def test_a_query_with_a_syntax_error_is_marked_where_the_server_says(
    harness: LuauHarness,
    server: Server,
) -> None:
    await load_and_crawl(server)
    d = await PluginDriver.open(harness, server)
    await open_search(d)
    # The second ">" is wrong: the server says column 9 (0-based position 8).
    await d.type("QueryInput", "coins > > 5", enter=False)
    await harness.advance_async(1)  # the check runs when typing pauses
    await d.wait_text("Column 9:")
    field = node(d, "QueryInput")
    mark = node(d, "ErrorMark")
    first = mark.x - field.x
    assert 6 < first < field.w / 2, (first, field.w)
    # The excerpt under the field marks the same characters.
    assert d.has_text("coins > > 5")
    assert node(d, "ErrorSpan").w > 0
    # An error further along the query is marked further right.
    await d.type("QueryInput", "coins > 5 and level ! 3", enter=False)
    await harness.advance_async(1)
    await d.wait_text("Column 21:")
    assert node(d, "ErrorMark").x - field.x > first
    # Searching anyway: the server refuses it, with the same position, and nothing is listed.
    await d.type("QueryInput", "level >", enter=True)
    await d.wait_text("nothing was searched")
    await d.wait_text("Column 8:")
    assert not drawn(d, "HitRow")
    # Fixing it clears the marks.
    await d.type("QueryInput", "level > 1000", enter=False)
    await harness.advance_async(1)
    await d.wait_for(lambda: not d.rendered("ErrorMark"), "the mark stayed after the fix")
    assert not d.rendered("QueryError")


async def test_results_open_their_entry_and_verify_live_marks_a_changed_one(
    harness: LuauHarness,
    server: Server,
) -> None:
    await load_and_crawl(server)
    outlier = sample_game.key_of(sample_game.LEVEL_OUTLIER)
    d = await PluginDriver.open(harness, server)
    await open_search(d)
    await d.type("QueryInput", "level > 1000", enter=True)
    await d.wait_text("1 match · ")
    d.row_with("HitRow", outlier)
    assert d.has_text("level = 5000")
    # A game server saves the player meanwhile; the index still holds the old value.
    game_writes(server, outlier, '{"level": 6}')
    await d.click("VerifyLiveButton")
    await d.wait_text("changed · no longer matches")
    await d.wait_text("verified 1: 1 changed, 0 deleted")
    # Its whole toolbar, "Stop verifying" and the source badge included, fits the default widget.
    assert d.has_text("Stop verifying") and d.rendered("SourceBadge")
    assert cut_off_sideways(harness, "Toolbar") == []
    # The result opens its entry, read fresh: the game's write is what it shows.
    await d.click(d.row_with("HitRow", outlier))
    await d.wait_text("Revision ")
    assert d.has_text(outlier)
    await d.wait_for(lambda: d.has_text("6"), "the entry does not show the game's write")


def stored_keys(server: Server) -> set[str]:
    """The sample game's player keys, straight from the emulator's tables."""
    emulator = server.app[DATA].upstream.emulator
    assert emulator is not None
    rows = emulator.runner.app[EMULATOR].db.conn.execute(
        "SELECT key FROM entries WHERE universe = '1' AND datastore = ? AND deleted = 0",
        (sample_game.PLAYER_STORE,),
    )
    return {row["key"] for row in rows}


async def test_key_search_modes(
    harness: LuauHarness,
    server: Server,
) -> None:
    await load_and_crawl(server)
    keys = stored_keys(server)
    d = await PluginDriver.open(harness, server)
    await open_search(d)

    async def expect_keys(mode: str, expected: set[str]) -> None:
        noun = "match" if len(expected) == 1 else "matches"
        shown = "" if len(expected) <= 100 else " (100 shown)"
        await d.wait_text(f"{len(expected)} {noun}{shown} · keys by {mode}")
        if len(expected) <= 6:  # all of them fit on screen
            shown = {n.text for n in drawn(d, "Key", inside="HitRow")}
            assert shown == expected

    await d.type("KeyPatternInput", "Player_1", enter=True)
    await expect_keys("prefix", {k for k in keys if k.startswith("Player_1")})
    # The mode button cycles prefix -> substring -> glob -> regex and searches again.
    await d.type("KeyPatternInput", "0000000", enter=False)
    await d.click("KeyMatchButton")
    await expect_keys("substring", {k for k in keys if "0000000" in k})
    await d.type("KeyPatternInput", "Player_?????????", enter=False)
    await d.click("KeyMatchButton")
    planted = {sample_game.key_of(u) for u in sample_game.PLANTED}
    assert {k for k in keys if len(k) == len("Player_") + 9} == planted
    await expect_keys("glob", planted)
    await d.type("KeyPatternInput", "^Player_90+[13]$", enter=False)
    await d.click("KeyMatchButton")
    await expect_keys(
        "regex",
        {sample_game.key_of(sample_game.COIN_DUPE), sample_game.key_of(sample_game.WRONG_USER_ID)},
    )


def chart_bars(d: PluginDriver, chart: str) -> list[Node]:
    """The drawn bars of the chart named `chart`, left to right."""
    return [
        n
        for root in d.h.tree()
        for n in root.walk()
        if n.rendered and n.name.startswith("Bar_") and f"/{chart}/" in n.path
    ]


async def test_analytics_shows_the_schema_a_histogram_and_the_planted_anomalies(
    harness: LuauHarness,
    server: Server,
) -> None:
    token = await load_and_crawl(server)
    d = await PluginDriver.open(harness, server)
    await open_search(d)
    await d.click("AnalyticsButton")
    # Schema: every field with its types and shares; coins holds one planted string.
    await d.wait_text(f"PlayerData · {PLAYERS} entries")
    await d.wait_for(lambda: d.has_text("integer 98% · string 3%"), "no type shares for coins")
    d.row_with("FieldRow", "coins")
    assert d.has_text("sample game") and d.has_text(f"{PLAYERS} of {PLAYERS} entries indexed")
    # A field opens its distribution: a histogram whose bars add up to the numeric entries.
    await d.click(d.row_with("FieldRow", "level"))
    await d.wait_text("Distribution of level")
    status, dist = await server.call(
        "POST",
        "/analytics/distribution",
        token,
        json={"universe_id": 1, "datastore": "PlayerData", "field": "level"},
    )
    assert status == 200
    shown = chart_bars(d, "FieldChart")
    assert len(shown) == len(dist["histogram"]) > 1
    tallest = max(shown, key=lambda n: n.h)
    counts = [b["count"] for b in dist["histogram"]]
    assert shown.index(tallest) == counts.index(max(counts))
    await d.wait_text("median")
    # Anomalies: the planted ones, each with its reason, linking to its entry.
    await d.click("AnomaliesTab")
    await d.wait_text("Anomalies found, by kind")
    for kind in ("near 4 MB", "user id mismatch", "type drift"):
        await d.wait_text(kind)
    kinds = chart_bars(d, "AnomalyKindChart")
    assert len(kinds) == 5 and any(n.h > 1 for n in kinds)
    mismatch = sample_game.key_of(sample_game.WRONG_USER_ID)
    assert d.has_text("an erasure request for user")
    row = d.row_with("AnomalyRow", mismatch)
    pane = node(d, "AnomaliesPane")
    await harness.scroll_to_async("AnomaliesPane", row.node().y - pane.y - 40)
    await d.click(d.row_with("AnomalyRow", mismatch))
    await d.wait_text("Revision ")
    assert d.has_text(mismatch)


async def test_progression_shows_the_cost_before_reading_history(
    harness: LuauHarness,
    server: Server,
) -> None:
    token = await load_and_crawl(server)
    d = await PluginDriver.open(harness, server)
    await open_search(d)
    await d.click("AnalyticsButton")
    await d.wait_text("PlayerData ·")
    await d.type("AnalyticsStoreInput", "PlayerData", enter=False)
    await d.click("ProgressionTab")
    await d.type("SampleSizeInput", "8", enter=False)
    await d.type("RevisionsInput", "10", enter=False)
    await d.click("PlanHistoryButton")
    # Reading history is a job: its plan opens first, with the sample and what it costs.
    await d.wait_text("8 entries selected.")
    assert any(t.startswith("Open Cloud: ") and "8 " in t for t in d.texts()), d.texts()
    status, page = await server.call(
        "GET", "/jobs", token, params={"kind": "crawl_history", "universe": "1"}
    )
    assert status == 200 and [j["state"] for j in page["jobs"]] == ["planned"]  # nothing read
    status, before = await server.call(
        "POST",
        "/analytics/progression",
        token,
        json={"universe_id": 1, "datastore": "PlayerData", "field": "level"},
    )
    assert status == 200, before  # the latest revisions only, from the crawl
    await d.click("StartButton")
    await d.wait_text("Succeeded", timeout=30)
    status, after = await server.call(
        "POST",
        "/analytics/progression",
        token,
        json={"universe_id": 1, "datastore": "PlayerData", "field": "level"},
    )
    assert status == 200 and after["revisions"] > before["revisions"] and after["points"], after


async def test_a_histogram_bar_searches_exactly_its_entries(
    harness: LuauHarness,
    server: Server,
) -> None:
    token = await load_and_crawl(server)
    d = await PluginDriver.open(harness, server)
    await open_search(d)
    await d.click("AnalyticsButton")
    await d.wait_text("PlayerData ·")
    await d.click("FieldsTab")
    await d.type("FieldInput", "xp", enter=True)
    await d.wait_text("Distribution of xp")
    status, dist = await server.call(
        "POST", "/analytics/distribution", token, json={"universe_id": 1, "field": "xp"}
    )
    assert status == 200
    counts = [b["count"] for b in dist["histogram"]]
    tallest = counts.index(max(counts))
    await d.click(chart_bars(d, "FieldChart")[tallest].name)
    # Search opens with the query for that bin, and finds as many entries as the bar counts.
    await d.wait_text("Index: sample game")
    noun = "match" if counts[tallest] == 1 else "matches"
    await d.wait_text(f"{counts[tallest]} {noun} · ")
    assert d.has_text("xp >= ")


async def test_act_on_these_results_plans_a_job_on_exactly_the_matches(
    harness: LuauHarness,
    server: Server,
) -> None:
    token = await load_and_crawl(server)
    query = "level >= 10"
    status, page = await server.call(
        "POST", "/search", token, json={"universe_id": 1, "query": query, "limit": 1}
    )
    assert status == 200 and page["total"] > 1, page
    d = await PluginDriver.open(harness, server)
    await open_search(d)
    await d.type("QueryInput", query, enter=True)
    await d.wait_text(f"{page['total']} matches · ")
    await d.click("ActOnResultsButton")
    await d.wait_for(lambda: d.rendered("ActOnResultsDialog"), "no Act on results dialog")
    assert d.has_text(f"Act on the entries matching `{query}` in every indexed data store.")
    await d.click("Option_export")
    await d.click("ConfirmButton")
    await d.wait_for(lambda: d.rendered("JobFormDialog"), "no job form")
    await d.click("ConfirmButton")  # Plan (dry run)
    # The plan: exactly the matches, taken from the index, with its coverage stated.
    await d.wait_text(f"{page['total']} entries selected.")
    await d.wait_text("Selected from the search index")
    assert any("(100%)" in t for t in d.texts()), d.texts()
    status, listed = await server.call("GET", "/jobs", token, params={"kind": "export"})
    assert status == 200 and len(listed["jobs"]) == 1
    status, job = await server.call("GET", f"/jobs/{listed['jobs'][0]['id']}", token)
    assert status == 200 and job["state"] == "planned"
    assert job["selection"]["search"]["query"] == query and job["selection"]["all_datastores"]
