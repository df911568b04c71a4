"""Index analytics and search against figures computed independently here, in plain Python."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsm.services.index.analytics import Analytics
from dsm.services.index.query import QuerySyntaxError, compile_query
from dsm.services.index.search import SearchEngine
from dsm.services.index.store import IndexedEntry, IndexStore, Scope
from shared_schema.analytics import AnomaliesRequest, AnomalyKind
from shared_schema.common import Backend
from shared_schema.search import SearchFilter

SCOPE = Scope(Backend.EMULATOR, 1, ("P",))
OUTLIERS = {f"k{i}" for i in (3, 77, 150)}


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), written out."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def gini(values: list[float]) -> float:
    n = len(values)
    total = sum(values)
    # Mean absolute difference over all pairs / (2 * mean): the definition, O(n^2).
    return sum(abs(a - b) for a in values for b in values) / (2 * n * n * (total / n))


@pytest.fixture
def data(tmp_path: Path) -> Iterator[tuple[IndexStore, dict[str, dict[str, object]]]]:
    rng = random.Random(5)
    values: dict[str, dict[str, object]] = {}
    for i in range(300):
        value: dict[str, object] = {
            "coins": rng.randint(0, 5000),
            "level": rng.randint(1, 60),
            "tags": rng.sample(["a", "b", "c", "d"], rng.randint(0, 3)),
            "profile": {"name": rng.choice(["xXbob", "amy", "Xena", "xXzed"])},
        }
        if f"k{i}" in OUTLIERS:
            value["coins"] = 10_000_000 + i
        if i % 50 == 0:
            value["level"] = str(value["level"])  # type drift
        values[f"k{i}"] = value
    store = IndexStore.open(tmp_path, b"k" * 32)
    store.ingest(
        Backend.EMULATOR,
        [
            IndexedEntry(1, "P", "global", k, json.dumps(v), "r1", user_ids=[i])
            for i, (k, v) in enumerate(values.items())
        ],
        crawl_id="c1",
    )
    store.finish_store(Backend.EMULATOR, 1, "P", "c1", scopes=(), key_prefix=None, complete=True)
    yield store, values
    store.close()


def test_percentiles_gini_and_shares_match_plain_python(
    data: tuple[IndexStore, dict[str, dict[str, object]]],
) -> None:
    store, values = data
    analytics = Analytics(store)
    coins = [float(v["coins"]) for v in values.values()]  # type: ignore[arg-type]
    dist = analytics.distribution(SCOPE, "coins", bins=10, top=5, log_scale=False)
    p = dist.percentiles
    assert p is not None
    for got, q in (
        (p.p5, 0.05),
        (p.p25, 0.25),
        (p.p50, 0.5),
        (p.p75, 0.75),
        (p.p95, 0.95),
        (p.p99, 0.99),
    ):
        assert got == pytest.approx(percentile(coins, q), rel=1e-12)
    assert sum(b.count for b in dist.histogram) == len(coins)
    assert [t.value for t in dist.top] == sorted(coins, reverse=True)[:5]
    report = analytics.currency(SCOPE, "coins", top=3, history_days=3)
    assert report.gini == pytest.approx(gini(coins), rel=1e-9)
    assert report.total_supply == sum(coins)
    schema = {f.path: f for f in analytics.schema(SCOPE)[0].fields}
    level = {t.type.value: t.share for t in schema["level"].types}
    strings = sum(1 for v in values.values() if isinstance(v["level"], str))
    assert level == {"integer": (300 - strings) / 300, "string": strings / 300}
    with_tags = sum(1 for v in values.values() if v["tags"])
    assert schema["tags[]"].presence == with_tags / 300


def test_anomaly_recall_on_planted_outliers(
    data: tuple[IndexStore, dict[str, dict[str, object]]],
) -> None:
    store, values = data
    found, _, _, checked = Analytics(store).anomalies(SCOPE, AnomaliesRequest(universe_id=1))
    outliers = {a.entry.key for a in found if a.kind is AnomalyKind.OUTLIER and a.field == "coins"}
    assert outliers >= OUTLIERS  # every planted outlier is recalled
    drift = {a.entry.key for a in found if a.kind is AnomalyKind.TYPE_DRIFT}
    assert drift == {k for k, v in values.items() if isinstance(v["level"], str)}
    assert checked == 300


@pytest.mark.parametrize(
    ("query", "predicate"),
    [
        (
            'coins > 2500 and tags has "a"',
            lambda v: isinstance(v["coins"], int) and v["coins"] > 2500 and "a" in v["tags"],
        ),
        (
            "level between 10 and 20 or not exists(tags)",
            lambda v: isinstance(v["level"], int) and 10 <= v["level"] <= 20,
        ),
        ('profile.name ~ "^xX"', lambda v: v["profile"]["name"].startswith("xX")),
        ("not coins > 100", lambda v: not v["coins"] > 100),
        (
            "len(tags) >= 2 and level is string",
            lambda v: len(v["tags"]) >= 2 and isinstance(v["level"], str),
        ),
        ('profile.name in ["amy", "Xena"]', lambda v: v["profile"]["name"] in ("amy", "Xena")),
    ],
)
def test_query_results_match_a_filter_written_here(
    data: tuple[IndexStore, dict[str, dict[str, object]]], query: str, predicate: object
) -> None:
    store, values = data
    hits, total = SearchEngine(store).search(
        SCOPE,
        SearchFilter(universe_id=1, query=query),
        sort=None,
        descending=False,
        offset=0,
        limit=500,
    )
    expected = {k for k, v in values.items() if predicate(v)}  # type: ignore[operator]
    assert {h.entry.key for h in hits} == expected and total == len(expected)


def test_every_literal_and_path_is_a_bound_parameter() -> None:
    hostile = 'coins = "x\'); DROP TABLE entries; --" and ["a\'b"] = 1'
    _, compiled = compile_query(hostile, {})
    assert "DROP" not in compiled.sql and "a'b" not in compiled.sql
    assert "x'); DROP TABLE entries; --" in compiled.params and "/a'b" in compiled.params


def test_errors_point_at_the_position() -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        compile_query("level between 1 and", {})
    assert caught.value.error.position == len("level between 1 and")
    with pytest.raises(QuerySyntaxError) as caught:
        compile_query("key > 5", {})
    assert caught.value.error.column == 1 and "not a number" in caught.value.error.message
