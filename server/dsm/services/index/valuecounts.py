"""Exact figures of a numeric field from its value counts (synchronous; on the index thread).

A field's values are first counted (`x`, how many entries hold it) into a temporary table with
each value's rank offset (`before`: how many entries hold a smaller value). Percentiles, the
histogram, mean and deviation, the Gini coefficient and the richest 1%'s share then follow from
that table alone, exactly as from the sorted values: where values repeat (currencies, levels)
the table is a small fraction of the entries, and it is never larger than the values themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from shared_schema.analytics import HistogramBin, Percentiles

from .store import IndexStore

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@dataclass(frozen=True)
class Summary:
    count: int  # entries holding a number there
    total: float
    negative: int
    low: float | None
    high: float | None


class ValueCounts:
    """`with ValueCounts(store, where, params, x, xp) as counts:` over the rows `where` selects."""

    TABLE = "temp.value_counts"

    def __init__(self, store: IndexStore, where: str, params: list[Any], x: str, xp: list[Any]):
        self.store = store
        store.rows(
            f"""CREATE OR REPLACE TEMP TABLE value_counts AS
                SELECT x, c, sum(c) OVER (ORDER BY x ROWS UNBOUNDED PRECEDING) - c AS before
                FROM (SELECT x, count(*) AS c
                      FROM (SELECT {x} AS x FROM entries WHERE {where})
                      WHERE x IS NOT NULL GROUP BY x)""",
            [*xp, *params],
        )
        count, total, negative, low, high = store.one(
            f"""SELECT coalesce(sum(c), 0), coalesce(sum(x * c), 0),
                       coalesce(sum(c) FILTER (WHERE x < 0), 0), min(x), max(x)
                FROM {self.TABLE}"""
        )
        self.summary = Summary(
            int(count),
            float(total),
            int(negative),
            None if low is None else float(low),
            None if high is None else float(high),
        )

    def __enter__(self) -> ValueCounts:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.store.rows(f"DROP TABLE IF EXISTS {self.TABLE}")

    def ranks(self, wanted: list[int]) -> dict[int, float]:
        """The value at each 0-based rank of the sorted values."""
        rows = self.store.rows(
            f"""SELECT k, x FROM {self.TABLE}, unnest(?::BIGINT[]) AS t(k)
                WHERE k >= before AND k < before + c""",
            [sorted(set(wanted))],
        )
        return {int(k): float(x) for k, x in rows}

    def percentiles(self) -> Percentiles | None:
        """Linear interpolation between closest ranks, as quantile_cont and numpy's default."""
        s = self.summary
        if not s.count or s.low is None or s.high is None:
            return None
        positions = [(s.count - 1) * q for q in QUANTILES]
        values = self.ranks([k for h in positions for k in (math.floor(h), math.ceil(h))])
        quantiles = []
        for h in positions:
            low, high = values[math.floor(h)], values[math.ceil(h)]
            quantiles.append(low if low == high else low + (high - low) * (h - math.floor(h)))
        mean = s.total / s.count
        (spread,) = self.store.one(
            f"SELECT coalesce(sum(c * (x - ?) * (x - ?)), 0) FROM {self.TABLE}", [mean, mean]
        )
        p5, p25, p50, p75, p95, p99 = quantiles
        return Percentiles(
            min=s.low,
            p5=p5,
            p25=p25,
            p50=p50,
            p75=p75,
            p95=p95,
            p99=p99,
            max=s.high,
            mean=mean,
            stddev=math.sqrt(float(spread) / s.count),
        )

    def histogram(self, bins: int, log_scale: bool) -> list[HistogramBin]:
        """Equal-width bins over the values, or over log10 of the positive ones."""
        t = "log10(x)" if log_scale else "x"
        keep = "x > 0" if log_scale else "true"
        low, high = self.store.one(f"SELECT min({t}), max({t}) FROM {self.TABLE} WHERE {keep}")
        if low is None:
            return []
        low, high = float(low), float(high)
        width = (high - low) / bins if high > low else 1.0
        rows = self.store.rows(
            f"""SELECT least(floor(({t} - ?) / ?)::BIGINT, ?) AS b, sum(c)
                FROM {self.TABLE} WHERE {keep} GROUP BY b ORDER BY b""",
            [low, width, bins - 1],
        )
        counts = {int(b): int(n) for b, n in rows}
        edges = bins if high > low else 1
        out = []
        for b in range(edges):
            lo, hi = low + b * width, low + (b + 1) * width if b < edges - 1 else high
            if log_scale:
                lo, hi = 10**lo, 10**hi
            out.append(HistogramBin(low=lo, high=hi if high > low else lo, count=counts.get(b, 0)))
        return out

    def concentration(self) -> tuple[float | None, float | None]:
        """Gini over the non-negative holdings, and the richest 1%'s share of them.

        G = 2·Σ i·x₍ᵢ₎ / (n·Σx) − (n+1)/n over the holdings sorted ascending (ranks from 1); a
        value held c times at ranks b+1..b+c adds x·(c·b + c(c+1)/2). The richest 1% are the
        top ceil(n/100) ranks.
        """
        negative = self.summary.negative
        n, total = self.store.one(
            f"SELECT coalesce(sum(c), 0), coalesce(sum(x * c), 0) FROM {self.TABLE} WHERE x >= 0"
        )
        n, total = int(n), float(total)
        if n < 2 or not total:
            return None, None
        richest_from = n - math.ceil(n / 100.0)  # ranks after this are the richest 1%
        weighted, richest = self.store.one(
            f"""SELECT sum(x * (c * (before - ?) + c * (c + 1) / 2)),
                       sum(x * greatest(0, least(c, before - ? + c - ?)))
                FROM {self.TABLE} WHERE x >= 0""",
            [negative, negative, richest_from],
        )
        gini = (2.0 * float(weighted)) / (n * total) - (n + 1.0) / n
        return min(1.0, max(0.0, gini)), min(1.0, float(richest or 0.0) / total)
