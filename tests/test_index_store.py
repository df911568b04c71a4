"""The index store's own guarantees: grouped crawl writes, pages in order, spills encrypted,
figures from value counts and supply history against plain Python, user id mismatches."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dsm.services.index import store as store_module
from dsm.services.index.analytics import Analytics
from dsm.services.index.search import SearchEngine
from dsm.services.index.store import IndexedEntry, IndexStore, Scope
from shared_schema.analytics import AnomaliesRequest, AnomalyKind
from shared_schema.common import Backend
from shared_schema.search import SearchFilter

KEY = b"k" * 32
E = Backend.EMULATOR


def entry(key: str, value: object, revision: str = "r1", **more: object) -> IndexedEntry:
    return IndexedEntry(1, "P", "global", key, json.dumps(value), revision, **more)  # type: ignore[arg-type]


def crash(store: IndexStore) -> None:
    """The process dies: the connection goes without writing anything out."""
    assert store._con is not None
    store._con.close()
    store._con = None


def test_grouped_writes_are_lost_in_a_crash_but_a_crawl_batch_is_not(tmp_path: Path) -> None:
    store = IndexStore.open(tmp_path, KEY)
    store.mark_listed(E, 1, "P", [("global", "a"), ("global", "b")], "c1")
    store.ingest(
        E, [entry("a", {"coins": 1}), entry("b", {"coins": 2})], crawl_id="c1", listed=False
    )
    crash(store)  # grouped writes had not reached the file
    store = IndexStore.open(tmp_path, KEY)
    assert store.rows("SELECT count(*) FROM entries") == [(0,)]
    assert store.rows("SELECT count(*) FROM listed") == [(0,)]

    # A crawl job's batch is written out before the job records its items as done.
    store.index_crawled(E, 1, [("P", "global", "a"), ("P", "global", "b")], [], "c1")
    store.index_crawled(E, 1, [("P", "global", "a")], [entry("a", {"coins": 1})], "c1")
    hits, total = SearchEngine(store).search(
        Scope(E, 1), SearchFilter(universe_id=1, query="coins = 1"), **PAGE
    )
    assert total == 1 and hits[0].entry.key == "a"
    crash(store)
    store = IndexStore.open(tmp_path, KEY)
    assert store.rows("SELECT key FROM entries") == [("a",)]
    assert store.rows("SELECT key FROM listed ORDER BY key") == [("a",), ("b",)]
    store.close()


def test_a_key_read_twice_before_a_write_out_keeps_the_newer_revision(tmp_path: Path) -> None:
    store = IndexStore.open(tmp_path, KEY)
    store.mark_listed(E, 1, "P", [("global", "a")], "c1")
    store.ingest(E, [entry("a", {"coins": 1}, "r1")], crawl_id="c1", listed=False)
    store.ingest(E, [entry("a", {"coins": 5}, "r2"), entry("a", {"coins": 5}, "r2")], listed=False)
    assert store.rows("SELECT value, revision FROM entries") == [('{"coins": 5}', "r2")]
    assert store.rows("SELECT revision FROM revisions ORDER BY revision") == [("r1",), ("r2",)]
    assert store.rows("SELECT key, crawl_id FROM listed") == [("a", "c1")]
    store.close()


def test_a_value_that_is_not_json_fails_its_own_ingest(tmp_path: Path) -> None:
    store = IndexStore.open(tmp_path, KEY)
    with pytest.raises(Exception, match="JSON"):
        store.ingest(E, [IndexedEntry(1, "P", "global", "a", "{bad", "r")], listed=False)
    store.ingest(E, [entry("b", {"ok": True})], listed=False)
    assert store.rows("SELECT key FROM entries") == [("b",)]
    store.close()


PAGE = {"sort": None, "descending": False, "offset": 0, "limit": 500}


@pytest.mark.parametrize(
    ("stores", "query"),
    [
        (("P",), "n >= 30"),
        (("P", "Q"), "n >= 30"),
        (("P", "Q"), 'n >= 30 and datastore = "Q" and scope = "s2"'),
    ],
)
def test_pages_follow_store_scope_key_order(
    tmp_path: Path, stores: tuple[str, ...], query: str
) -> None:
    """Matches in one store and scope (one scan for page and count: the index holds one place,
    or the matches are checked to share one) or in several (sorted query): the same order."""
    rng = random.Random(3)
    keys = iter(rng.sample(range(10**6), 600))
    rows = [
        (store, scope, f"k{next(keys)}", rng.randrange(100))
        for store in stores
        for scope in ("global", "s2")[: len(stores)]
        for _ in range(150)
    ]
    index = IndexStore.open(tmp_path, KEY)
    index.ingest(E, [IndexedEntry(1, d, s, k, json.dumps({"n": n}), "r") for d, s, k, n in rows])
    place = ("Q", "s2") if "Q" in query else None
    expected = sorted((d, s, k) for d, s, k, n in rows if n >= 30 and place in (None, (d, s)))
    engine = SearchEngine(index)
    for descending in (False, True):
        want = expected[::-1] if descending else expected
        got: list[tuple[str, str, str]] = []
        for offset in range(0, len(want) + 40, 40):
            hits, total = engine.search(
                Scope(E, 1),
                SearchFilter(universe_id=1, query=query),
                sort=None,
                descending=descending,
                offset=offset,
                limit=40,
            )
            assert total == len(want)
            got += [(h.entry.datastore, h.entry.scope, h.entry.key) for h in hits]
        assert got == want
    index.close()


def test_spilled_intermediate_results_are_encrypted(tmp_path: Path) -> None:
    """DuckDB spills big sorts to disk; with the index encrypted, the spill files are too."""
    for key, encrypted in ((KEY, True), (None, False)):
        data = tmp_path / str(encrypted)
        data.mkdir()
        store = IndexStore.open(data, key)
        store.ingest(E, [entry("a", {"secret": "SECRETMARKER"})])
        store.con.execute("SET memory_limit = '100MB'; SET threads = 1")
        sorted_rows = store.con.execute(
            """SELECT (SELECT value::VARCHAR FROM entries) || i
               FROM range(1000000) t(i) ORDER BY hash(i)"""
        )
        sorted_rows.fetchmany(1)  # the sort is done and its runs are on disk
        spills = list((data / "index.tmp").iterdir())  # beside the index, not in the cwd
        assert spills, "the sort did not spill: the test proves nothing"
        plain = any(b"SECRETMARKER" in f.read_bytes() for f in spills)
        assert plain is not encrypted  # in clear only where the index itself is not encrypted
        sorted_rows.close()
        store.close()


def test_an_index_from_another_version_is_started_again(tmp_path: Path) -> None:
    store = IndexStore.open(tmp_path, KEY)
    store.ingest(E, [entry("a", {"coins": 1})])
    store.con.execute("UPDATE meta SET version = version - 1")
    store.close()
    store = IndexStore.open(tmp_path, KEY)
    assert store.rows("SELECT count(*) FROM entries") == [(0,)]
    assert store.rows("SELECT version FROM meta") == [(store_module.SCHEMA_VERSION,)]
    store.close()


def plain_percentile(ordered: list[float], q: float) -> float:
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def test_currency_figures_match_plain_python_with_ties_and_negatives(tmp_path: Path) -> None:
    rng = random.Random(11)
    values = [float(rng.choice([-50, 0, 0, 7, 7, 7, 120, 3000])) for _ in range(400)]
    values += [rng.uniform(-10, 10**6) for _ in range(250)] + [10.0**9]
    store = IndexStore.open(tmp_path, KEY)
    store.ingest(E, [entry(f"k{i}", {"gold": v}) for i, v in enumerate(values)])
    store.ingest(E, [entry("text", {"gold": "12"}), entry("none", {"silver": 1})])
    report = Analytics(store).currency(Scope(E, 1), "gold", top=3, history_days=2)

    ordered = sorted(values)
    assert report.holders == len(values)
    assert report.negative_holders == sum(1 for v in values if v < 0)
    assert report.total_supply == pytest.approx(math.fsum(values), rel=1e-12)
    p = report.percentiles
    assert p is not None and (p.min, p.max) == (ordered[0], ordered[-1])
    for got, q in ((p.p5, 0.05), (p.p50, 0.5), (p.p95, 0.95), (p.p99, 0.99)):
        assert got == pytest.approx(plain_percentile(ordered, q), rel=1e-12)
    mean = math.fsum(values) / len(values)
    assert p.mean == pytest.approx(mean, rel=1e-12)
    spread = math.fsum((v - mean) ** 2 for v in values) / len(values)
    assert p.stddev == pytest.approx(math.sqrt(spread), rel=1e-9)
    held = sorted(v for v in values if v >= 0)
    n, total = len(held), math.fsum(held)
    gini = math.fsum((2 * (i + 1) - n - 1) * x for i, x in enumerate(held)) / (n * total)
    assert report.gini == pytest.approx(gini, rel=1e-9)
    richest = math.fsum(held[n - math.ceil(n / 100) :]) / total
    assert report.top_1_percent_share == pytest.approx(richest, rel=1e-12)
    positive = [v for v in values if v > 0]
    assert sum(b.count for b in report.histogram) == len(positive)
    low, high = math.log10(min(positive)), math.log10(max(positive))
    width = (high - low) / 20
    for i, b in enumerate(report.histogram):
        inside = [v for v in positive if min(math.floor((math.log10(v) - low) / width), 19) == i]
        assert b.count == len(inside)
    assert [t.value for t in report.top_holders] == sorted(values, reverse=True)[:3]
    store.close()


def test_supply_history_of_several_currencies_matches_plain_python(tmp_path: Path) -> None:
    """Each day's supply: per key, its latest revision by the end of that day, summed."""
    now = datetime.now(UTC)
    rng = random.Random(2)
    store = IndexStore.open(tmp_path, KEY)
    revisions: list[IndexedEntry] = []
    for k in range(30):
        when = now - timedelta(days=rng.uniform(4, 12))
        for r in range(rng.randint(1, 4)):
            value = {"coins": rng.randint(0, 500), "gems": rng.choice([1, 5, "x"])}
            revisions.append(
                entry(f"k{k}", value, f"r{r}", updated_at=when, created_at=now - timedelta(30))
            )
            when += timedelta(hours=rng.uniform(1, 24))
    newest = {e.key: e for e in revisions}  # revisions are in time order per key
    store.ingest(E, list(newest.values()))
    store.add_revisions(E, [e for e in revisions if newest[e.key] is not e])
    store.finish_store(E, 1, "P", "c", scopes=(), key_prefix=None, complete=False)
    assert "/coins" in store.typed  # history read from typed columns as well as from JSON
    reports = Analytics(store).currencies(Scope(E, 1), ["coins", "gems"], top=1, history_days=10)
    for report, field in zip(reports, ("coins", "gems"), strict=True):
        assert len(report.history) == 10
        for point in report.history:
            latest: dict[str, IndexedEntry] = {}
            for e in revisions:
                assert e.updated_at is not None
                if e.updated_at.timestamp() < point.at.timestamp():
                    latest[e.key] = e
            amounts = [json.loads(e.value_json)[field] for e in latest.values()]
            assert point.total == sum(a for a in amounts if isinstance(a, int))
            assert point.entries == len(latest)
    store.close()


def test_user_id_mismatch_flags_tagged_entries_only_as_documented(tmp_path: Path) -> None:
    """docs/analytics.md: the key names a user the entry's user ids, when it has any, lack."""
    store = IndexStore.open(tmp_path, KEY)
    store.ingest(
        E,
        [
            entry("Player_1001", {}, user_ids=[1001]),  # matches
            entry("Player_1002", {}, user_ids=[9999]),  # tagged with someone else
            entry("Player_1003", {}),  # no user ids: not flagged
            entry("settings", {}, user_ids=[5]),  # the key names no user
        ],
    )
    found, counts, _, _ = Analytics(store).anomalies(
        Scope(E, 1), AnomaliesRequest(universe_id=1, kinds=[AnomalyKind.USER_ID_MISMATCH])
    )
    assert [a.entry.key for a in found] == ["Player_1002"]
    assert counts[0].count == 1
    store.close()
