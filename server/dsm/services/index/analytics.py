"""Analytics over the index (synchronous; runs on the index thread). docs/analytics.md.

Every figure is a SQL aggregate over indexed rows; nothing is estimated. Percentiles are
linear-interpolated (`quantile_cont`, numpy's default), the Gini coefficient is computed over
the non-negative holdings sorted ascending, outliers use the robust z-score
0.6745 (x - median) / MAD (Iglewicz and Hoaglin).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from shared_schema.analytics import (
    AnomaliesRequest,
    Anomaly,
    AnomalyCount,
    AnomalyKind,
    CurrencyReport,
    Distribution,
    DistributionKind,
    DriftKind,
    FieldType,
    HistogramBin,
    Percentiles,
    Progression,
    ProgressPoint,
    ProgressSample,
    ProgressSeries,
    RankedEntry,
    SchemaDrift,
    SchemaField,
    StoreSchema,
    SupplyPoint,
    TypeShare,
    ValueCount,
)
from shared_schema.constraints import MAX_VALUE_BYTES
from shared_schema.search import EntryLink

from .fieldpath import FieldPath, FieldPathError, parse_path
from .store import IndexStore, Scope, pointer_text, to_datetime, walk_structure
from .valuecounts import ValueCounts

DAY = 86400.0
MAX_EXAMPLE_FIELDS = 200
MAX_ANOMALY_FIELDS = 40
CURRENCY_NAME = re.compile(
    r"coin|gem|cash|gold|money|credit|token|diamond|buck|currency|balance|crystal|robux|point",
    re.IGNORECASE,
)
_NUMERIC = "('BIGINT', 'UBIGINT', 'DOUBLE')"
_KIND_ORDER = [t.value for t in FieldType]


class AnalyticsError(ValueError):
    """A request the index cannot answer (bad field path); the message says why."""


def field_path(text: str) -> FieldPath:
    try:
        return parse_path(text)
    except FieldPathError as exc:
        raise AnalyticsError(
            f"{text!r} is not a field path: {exc} (at character {exc.position + 1})"
        ) from None


class Analytics:
    def __init__(self, store: IndexStore) -> None:
        self.store = store

    # -- expressions ----------------------------------------------------------------------

    def number(self, pointer: str, column: str = "value") -> tuple[str, list[Any]]:
        """A numeric field of an `entries` or `revisions` row (both have the typed columns)."""
        typed = self.store.typed.get(pointer) if column == "value" else None
        if typed is not None and typed.sql_type == "DOUBLE":
            return typed.column, []
        return (
            f"(CASE WHEN json_type({column}, ?) IN {_NUMERIC} "
            f"THEN json_extract({column}, ?)::DOUBLE END)",
            [pointer, pointer],
        )

    # -- schema ---------------------------------------------------------------------------

    def schema(self, scope: Scope) -> list[StoreSchema]:
        stores = scope.datastores or tuple(self.store.store_names(scope.backend, scope.universe_id))
        return [
            self._store_schema(Scope(scope.backend, scope.universe_id, (name,), scope.scopes))
            for name in stores
        ]

    def _store_schema(self, scope: Scope) -> StoreSchema:
        name = scope.datastores[0]
        where, params = scope.where()
        entries = int(self.store.one(f"SELECT count(*) FROM entries WHERE {where}", params)[0])
        summary: dict[str, dict[str, int]] = {}
        present: dict[str, int] = defaultdict(int)
        for structure, count in self.store.structures(scope):
            for pointer, kind, _ in walk_structure(structure):
                types = summary.setdefault(pointer, {})
                types[kind] = types.get(kind, 0) + count
                present[pointer] += count
        fields: list[SchemaField] = []
        ordered = sorted(summary, key=lambda p: (-present[p], p))
        for index, pointer in enumerate(ordered):
            types = summary[pointer]
            total = present[pointer]
            shares = sorted(
                (
                    TypeShare(type=_field_type(kind), count=n, share=n / total)
                    for kind, n in types.items()
                    if kind != "mixed"
                ),
                key=lambda t: (-t.count, _KIND_ORDER.index(t.type.value)),
            )
            depth = pointer.count("/")
            parent = pointer.rsplit("/", 1)[0]
            fields.append(
                SchemaField(
                    path=pointer_text(pointer),
                    depth=depth,
                    parent=pointer_text(parent) if parent else None,
                    types=shares,
                    present=total,
                    presence=min(1.0, total / entries) if entries else 0.0,
                    examples=self._examples(scope, pointer) if index < MAX_EXAMPLE_FIELDS else [],
                    typed_column=pointer in self.store.typed,
                )
            )
        drift, previous, note = self._drift(scope)
        return StoreSchema(
            datastore=name,
            entries=entries,
            max_depth=max((f.depth for f in fields), default=0),
            fields=fields,
            drift=drift,
            previous_crawl_at=previous,
            drift_note=note,
        )

    def _examples(self, scope: Scope, pointer: str) -> list[str]:
        where, params = scope.where()
        concrete = pointer.replace("/*", "/0")
        rows = self.store.rows(
            f"""SELECT v FROM (
                    SELECT json_extract(value, ?)::VARCHAR AS v FROM entries
                    WHERE {where} AND json_type(value, ?) IS NOT NULL LIMIT 200)
                GROUP BY v ORDER BY count(*) DESC, v LIMIT 3""",
            [concrete, *params, concrete],
        )
        return [str(r[0])[:200] for r in rows]

    def _drift(self, scope: Scope) -> tuple[list[SchemaDrift], Any, str | None]:
        rows = self.store.rows(
            """SELECT finished_at, schema_json FROM store_crawls
               WHERE backend = ? AND universe_id = ? AND datastore = ?
               ORDER BY finished_at DESC LIMIT 2""",
            [scope.backend.value, scope.universe_id, scope.datastores[0]],
        )
        if len(rows) < 2:
            return [], None, "Drift needs two crawls of this store; crawl it again later."
        now = json.loads(rows[0][1])
        before = json.loads(rows[1][1])
        drift: list[SchemaDrift] = []
        for pointer in sorted(set(now) | set(before)):
            after_types = _types_of(now.get(pointer))
            before_types = _types_of(before.get(pointer))
            if pointer not in before:
                kind = DriftKind.APPEARED
            elif pointer not in now:
                kind = DriftKind.VANISHED
            elif set(after_types) != set(before_types):
                kind = DriftKind.TYPE_CHANGED
            else:
                continue
            drift.append(
                SchemaDrift(
                    path=pointer_text(pointer), kind=kind, before=before_types, after=after_types
                )
            )
        return drift, to_datetime(rows[1][0]), None

    # -- distributions --------------------------------------------------------------------

    def distribution(
        self, scope: Scope, field: str, *, bins: int, top: int, log_scale: bool
    ) -> Distribution:
        pointer = field_path(field).pointer
        where, params = scope.where()
        x, xp = self.number(pointer)
        counts = self.store.one(
            f"""SELECT count(*),
                       count(*) FILTER (WHERE json_type(value, ?) IS NULL),
                       count({x}),
                       count(*) FILTER (WHERE json_type(value, ?) IN ('VARCHAR', 'BOOLEAN')),
                       count(DISTINCT json_extract(value, ?)::VARCHAR)
                FROM entries WHERE {where}""",
            [pointer, *xp, pointer, pointer, *params],
        )
        entries, missing, numeric, categorical, distinct = (int(c or 0) for c in counts)
        other = entries - missing - numeric
        if numeric and numeric >= categorical:
            stats = self._numeric_stats(scope, x, xp, bins=bins, top=top, log_scale=log_scale)
            return Distribution(
                field=field,
                kind=DistributionKind.NUMERIC,
                entries=entries,
                numeric=numeric,
                missing=missing,
                other=other,
                distinct=distinct,
                histogram=stats[0],
                log_scale=log_scale,
                percentiles=stats[1],
                top=stats[2],
                basis=self.store.basis(scope),
            )
        value_counts: list[ValueCount] = []
        kind = DistributionKind.EMPTY
        if categorical:
            kind = DistributionKind.CATEGORICAL
            rows = self.store.rows(
                f"""SELECT json_extract(value, ?)::VARCHAR AS v, count(*) AS n FROM entries
                    WHERE {where} AND json_type(value, ?) IN ('VARCHAR', 'BOOLEAN')
                    GROUP BY v ORDER BY n DESC, v LIMIT ?""",
                [pointer, *params, pointer, top],
            )
            value_counts = [
                ValueCount(value_json=v, count=n, share=n / categorical) for v, n in rows
            ]
        return Distribution(
            field=field,
            kind=kind,
            entries=entries,
            numeric=numeric,
            missing=missing,
            other=other,
            distinct=distinct,
            value_counts=value_counts,
            basis=self.store.basis(scope),
        )

    def _numeric_stats(
        self,
        scope: Scope,
        x: str,
        xp: list[Any],
        *,
        bins: int,
        top: int,
        log_scale: bool,
    ) -> tuple[list[HistogramBin], Percentiles | None, list[RankedEntry]]:
        where, params = scope.where()
        with ValueCounts(self.store, where, params, x, xp) as counts:
            percentiles = counts.percentiles()
            histogram = counts.histogram(bins, log_scale)
        return histogram, percentiles, self._top(scope, x, xp, top, None)

    def _top(
        self, scope: Scope, x: str, xp: list[Any], top: int, total: float | None
    ) -> list[RankedEntry]:
        where, params = scope.where()
        rows = self.store.rows(
            f"""SELECT universe_id, datastore, scope, key, {x} AS x FROM entries
                WHERE {where} AND x IS NOT NULL ORDER BY x DESC, datastore, scope, key LIMIT ?""",
            [*xp, *params, top],
        )
        return [
            RankedEntry(
                entry=EntryLink(universe_id=u, datastore=d, scope=s, key=k),
                value=float(v),
                share=(float(v) / total) if total else None,
            )
            for u, d, s, k, v in rows
        ]

    # -- economy --------------------------------------------------------------------------

    def suggested_currencies(self, scope: Scope) -> list[str]:
        numeric: dict[str, int] = defaultdict(int)
        for structure, count in self.store.structures(scope):
            for pointer, kind, in_array in walk_structure(structure):
                if not in_array and kind in ("integer", "number"):
                    numeric[pointer] += count
        names = [p for p in numeric if CURRENCY_NAME.search(p.rsplit("/", 1)[-1]) and "/*" not in p]
        return [pointer_text(p) for p in sorted(names, key=lambda p: (-numeric[p], p))]

    def currency(self, scope: Scope, field: str, *, top: int, history_days: int) -> CurrencyReport:
        return self.currencies(scope, [field], top=top, history_days=history_days)[0]

    def currencies(
        self, scope: Scope, fields: list[str], *, top: int, history_days: int
    ) -> list[CurrencyReport]:
        """Each currency's figures; the supply histories of all of them come from one pass."""
        pointers = [field_path(field).pointer for field in fields]
        histories, note = self._supply_history(scope, pointers, history_days)
        where, params = scope.where()
        reports = []
        for field, pointer, history in zip(fields, pointers, histories, strict=True):
            x, xp = self.number(pointer)
            with ValueCounts(self.store, where, params, x, xp) as counts:
                summary = counts.summary
                percentiles = counts.percentiles()
                histogram = counts.histogram(20, log_scale=True)
                gini, top_share = counts.concentration()
            reports.append(
                CurrencyReport(
                    field=field,
                    holders=summary.count,
                    total_supply=summary.total,
                    percentiles=percentiles,
                    gini=gini,
                    top_1_percent_share=top_share,
                    histogram=histogram,
                    top_holders=self._top(scope, x, xp, top, summary.total or None),
                    negative_holders=summary.negative,
                    history=history,
                    history_note=note,
                )
            )
        return reports

    def _supply_history(
        self, scope: Scope, pointers: list[str], days: int
    ) -> tuple[list[list[SupplyPoint]], str | None]:
        """Per field, the sum over keys of each key's latest known value at the end of each day.

        Built from every revision the index holds (crawls, writes through the server, history
        reads): a key counts from its first known revision on. One pass over the revisions
        serves every field.
        """
        if not pointers:
            return [], None
        where, params = scope.where()
        columns: list[str] = []
        column_params: list[Any] = []
        for pointer in pointers:
            x, xp = self.number(pointer)
            columns.append(f"coalesce({x}, 0)")
            column_params += xp
        xs = ", ".join(f"{c} AS x{i}" for i, c in enumerate(columns))
        lags = ", ".join(f"x{i}, lag(x{i}) OVER w AS p{i}" for i in range(len(columns)))
        sums = ", ".join(f"sum(x{i} - coalesce(p{i}, 0))" for i in range(len(columns)))
        end = math.ceil(time.time() / DAY) * DAY
        start = end - days * DAY
        rows = self.store.rows(
            f"""SELECT greatest(-1, floor((t - ?) / ?))::BIGINT AS day, {sums},
                       count(*) FILTER (WHERE p0 IS NULL)
                FROM (
                    SELECT t, {lags}
                    FROM (SELECT datastore, scope, key, revision, updated_at AS t, {xs}
                          FROM revisions WHERE {where} AND updated_at IS NOT NULL)
                    WINDOW w AS (PARTITION BY datastore, scope, key ORDER BY t, revision))
                GROUP BY day ORDER BY day""",
            [start, DAY, *column_params, *params],
        )
        if not rows:
            return [[] for _ in pointers], "No revisions with times are indexed yet."
        by_day = {int(r[0]): r[1:] for r in rows}
        histories: list[list[SupplyPoint]] = []
        for i in range(len(pointers)):
            before = by_day.get(-1)
            total = float(before[i]) if before else 0.0
            keys = int(before[-1]) if before else 0
            points = []
            for day in range(days):
                found = by_day.get(day)
                if found:
                    total += float(found[i])
                    keys += int(found[-1])
                points.append(
                    SupplyPoint(
                        at=datetime.fromtimestamp(start + (day + 1) * DAY, UTC),
                        total=total,
                        entries=keys,
                    )
                )
            histories.append(points)
        revisions = int(self.store.one(f"SELECT count(*) FROM revisions WHERE {where}", params)[0])
        note = (
            f"From {revisions} indexed revisions; keys count from their first known revision. "
            "Read revision history (progression) or crawl again to fill it in."
        )
        return histories, note

    # -- progression ----------------------------------------------------------------------

    def progression(
        self, scope: Scope, field: str, *, bucket_days: float, series: int
    ) -> Progression:
        pointer = field_path(field).pointer
        where, params = scope.where()
        x, xp = self.number(pointer)
        base = f"""SELECT universe_id, datastore, scope, key, {x} AS x,
                          (updated_at - coalesce(created_at, first_seen)) / {DAY} AS days
                   FROM (SELECT *, min(updated_at) OVER (PARTITION BY datastore, scope, key)
                                AS first_seen
                         FROM revisions WHERE {where} AND updated_at IS NOT NULL)"""
        base_params = [*xp, *params]
        keys, revisions = self.store.one(
            f"""SELECT count(DISTINCT (datastore, scope, key)), count(*)
                FROM ({base}) WHERE x IS NOT NULL""",
            base_params,
        )
        rows = self.store.rows(
            f"""SELECT floor(days / ?) * ? AS d, count(DISTINCT (datastore, scope, key)),
                       quantile_cont(x, [0.25, 0.5, 0.75]), avg(x)
                FROM ({base}) WHERE x IS NOT NULL AND days >= 0
                GROUP BY d ORDER BY d""",
            [bucket_days, bucket_days, *base_params],
        )
        points = [
            ProgressPoint(
                days=float(d),
                keys=int(k),
                p25=float(q[0]),
                median=float(q[1]),
                p75=float(q[2]),
                mean=float(m),
            )
            for d, k, q, m in rows
        ]
        lines: list[ProgressSeries] = []
        if series:
            chosen = self.store.rows(
                f"""SELECT universe_id, datastore, scope, key, count(*) AS n FROM ({base})
                    WHERE x IS NOT NULL GROUP BY ALL ORDER BY n DESC, datastore, scope, key LIMIT ?""",
                [*base_params, series],
            )
            for u, d, s, k, _ in chosen:
                samples = self.store.rows(
                    f"""SELECT days, x FROM ({base}) WHERE x IS NOT NULL AND datastore = ?
                        AND scope = ? AND key = ? ORDER BY days""",
                    [*base_params, d, s, k],
                )
                lines.append(
                    ProgressSeries(
                        entry=EntryLink(universe_id=u, datastore=d, scope=s, key=k),
                        points=[ProgressSample(days=float(a), value=float(b)) for a, b in samples],
                    )
                )
        multi = self.store.one(
            f"""SELECT count(*) FROM (SELECT datastore, scope, key FROM revisions WHERE {where}
                GROUP BY ALL HAVING count(*) > 1)""",
            params,
        )[0]
        note = None
        if int(multi) < max(1, int(keys) // 2):
            note = (
                f"Only {int(multi)} of {int(keys)} keys have more than one indexed revision: "
                "read the revision history of a sample first (see the progression plan)."
            )
        return Progression(
            field=field,
            keys=int(keys),
            revisions=int(revisions),
            points=points,
            series=lines,
            note=note,
            basis=self.store.basis(scope),
        )

    def sample_keys(self, scope: Scope, size: int, seed: int) -> list[tuple[str, str, str]]:
        """A deterministic sample of indexed keys (same seed, same keys)."""
        where, params = scope.where()
        rows = self.store.rows(
            f"""SELECT datastore, scope, key FROM entries WHERE {where}
                ORDER BY hash(key || ':' || scope || ':' || ?), key LIMIT ?""",
            [*params, str(seed), size],
        )
        return [(str(d), str(s), str(k)) for d, s, k in rows]

    def keys_with_history(self, scope: Scope, keys: list[tuple[str, str, str]]) -> int:
        if not keys:
            return 0
        where, params = scope.where()
        rows = self.store.rows(
            f"""SELECT datastore, scope, key FROM revisions WHERE {where}
                GROUP BY ALL HAVING count(*) > 1""",
            params,
        )
        have = {(str(d), str(s), str(k)) for d, s, k in rows}
        return sum(1 for k in keys if k in have)

    # -- anomalies ------------------------------------------------------------------------

    def anomalies(
        self, scope: Scope, request: AnomaliesRequest
    ) -> tuple[list[Anomaly], list[AnomalyCount], list[str], int]:
        kinds = set(request.kinds) or set(AnomalyKind)
        where, params = scope.where()
        entries = int(self.store.one(f"SELECT count(*) FROM entries WHERE {where}", params)[0])
        numeric, drifting = self._field_profile(scope)
        found: dict[AnomalyKind, list[Anomaly]] = {k: [] for k in AnomalyKind}
        if AnomalyKind.OUTLIER in kinds:
            for pointer in numeric:
                found[AnomalyKind.OUTLIER] += self._outliers(scope, pointer, request.robust_z)
        if AnomalyKind.SUDDEN_JUMP in kinds:
            for pointer in numeric:
                found[AnomalyKind.SUDDEN_JUMP] += self._jumps(scope, pointer, request.jump_factor)
        if AnomalyKind.TYPE_DRIFT in kinds:
            for pointer, dominant in drifting.items():
                found[AnomalyKind.TYPE_DRIFT] += self._type_drift(scope, pointer, dominant)
        if AnomalyKind.NEAR_SIZE_LIMIT in kinds:
            found[AnomalyKind.NEAR_SIZE_LIMIT] = self._near_limit(scope, request.size_share)
        if AnomalyKind.USER_ID_MISMATCH in kinds:
            found[AnomalyKind.USER_ID_MISMATCH] = self._user_ids(scope, request.key_pattern)
        everything = sorted(
            (a for kind in AnomalyKind for a in found[kind]),
            key=lambda a: (-a.score, a.kind.value, a.entry.datastore, a.entry.key),
        )
        counts = [AnomalyCount(kind=k, count=len(found[k])) for k in AnomalyKind if k in kinds]
        checked = [pointer_text(p) for p in numeric]
        checked += [pointer_text(p) for p in drifting if p not in numeric]
        return everything[: request.limit], counts, checked, entries

    def _field_profile(self, scope: Scope) -> tuple[list[str], dict[str, str]]:
        """Numeric fields to check for outliers and jumps; fields with one dominant type."""
        types: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for structure, count in self.store.structures(scope):
            for pointer, kind, in_array in walk_structure(structure):
                if not in_array:
                    group = "number" if kind in ("integer", "number") else kind
                    types[pointer][group] += count
        numeric: list[str] = []
        dominant: dict[str, str] = {}
        for pointer, counts in sorted(types.items(), key=lambda kv: -sum(kv[1].values())):
            total = sum(counts.values())
            top_kind, top = max(counts.items(), key=lambda kv: kv[1])
            if top_kind == "number" and len(numeric) < MAX_ANOMALY_FIELDS:
                numeric.append(pointer)
            if total >= 10 and top < total and top / total >= 0.9 and top_kind != "mixed":
                dominant[pointer] = top_kind
        return numeric, dominant

    def _outliers(self, scope: Scope, pointer: str, threshold: float) -> list[Anomaly]:
        where, params = scope.where()
        x, xp = self.number(pointer)
        median, mad, meanad = self.store.one(
            f"""WITH v AS (SELECT {x} AS x FROM entries WHERE {where}),
                     m AS (SELECT median(x) AS med FROM v)
                SELECT (SELECT med FROM m), median(abs(x - (SELECT med FROM m))),
                       avg(abs(x - (SELECT med FROM m)))
                FROM v WHERE x IS NOT NULL""",
            [*xp, *params],
        )
        if median is None:
            return []
        median = float(median)
        # MAD = 0 (most values equal): the mean absolute deviation stands in (scaled 1.2533).
        scale = float(mad) / 0.6745 if mad else (float(meanad) * 1.2533 if meanad else 0.0)
        if scale <= 0:
            return []
        rows = self.store.rows(
            f"""SELECT universe_id, datastore, scope, key, revision, x, abs(x - ?) / ? AS z
                FROM (SELECT *, {x} AS x FROM entries WHERE {where})
                WHERE x IS NOT NULL AND abs(x - ?) / ? > ? ORDER BY z DESC LIMIT 500""",
            [median, scale, *xp, *params, median, scale, threshold],
        )
        name = pointer_text(pointer)
        return [
            Anomaly(
                kind=AnomalyKind.OUTLIER,
                entry=EntryLink(universe_id=u, datastore=d, scope=s, key=k),
                field=name,
                reason=f"{name} = {_num(v)} is {z:.1f} robust standard deviations from the "
                f"median {_num(median)} (threshold {threshold:g}).",
                value_json=_num(v),
                score=float(z) / threshold,
                revision=r,
            )
            for u, d, s, k, r, v, z in rows
        ]

    def _jumps(self, scope: Scope, pointer: str, factor: float) -> list[Anomaly]:
        where, params = scope.where()
        x, xp = self.number(pointer)
        rows = self.store.rows(
            f"""SELECT universe_id, datastore, scope, key, revision, prev, x, t,
                       (abs(x) + 1) / (abs(prev) + 1) AS ratio
                FROM (SELECT universe_id, datastore, scope, key, revision, updated_at AS t,
                             {x} AS x,
                             lag({x}) OVER (PARTITION BY datastore, scope, key
                                            ORDER BY updated_at, revision) AS prev
                      FROM revisions WHERE {where} AND updated_at IS NOT NULL)
                WHERE x IS NOT NULL AND prev IS NOT NULL
                  AND (abs(x) + 1) / (abs(prev) + 1) >= ? AND abs(x) >= 100
                ORDER BY ratio DESC LIMIT 500""",
            [*xp, *xp, *params, factor],
        )
        name = pointer_text(pointer)
        return [
            Anomaly(
                kind=AnomalyKind.SUDDEN_JUMP,
                entry=EntryLink(universe_id=u, datastore=d, scope=s, key=k),
                field=name,
                reason=f"{name} went from {_num(p)} to {_num(v)} (x{ratio:.0f}) in one revision "
                f"on {to_datetime(t):%Y-%m-%d %H:%M} UTC.",
                value_json=_num(v),
                score=float(ratio) / factor,
                revision=r,
            )
            for u, d, s, k, r, p, v, t, ratio in rows
        ]

    def _type_drift(self, scope: Scope, pointer: str, dominant: str) -> list[Anomaly]:
        where, params = scope.where()
        wanted = {
            "number": _NUMERIC,
            "string": "('VARCHAR')",
            "boolean": "('BOOLEAN')",
            "object": "('OBJECT')",
            "array": "('ARRAY')",
            "null": "('NULL')",
        }[dominant]
        rows = self.store.rows(
            f"""SELECT universe_id, datastore, scope, key, revision, json_type(value, ?),
                       json_extract(value, ?)::VARCHAR
                FROM entries WHERE {where} AND json_type(value, ?) IS NOT NULL
                  AND json_type(value, ?) NOT IN {wanted}
                ORDER BY datastore, scope, key LIMIT 500""",
            [pointer, pointer, *params, pointer, pointer],
        )
        name = pointer_text(pointer)
        return [
            Anomaly(
                kind=AnomalyKind.TYPE_DRIFT,
                entry=EntryLink(universe_id=u, datastore=d, scope=s, key=k),
                field=name,
                reason=f"{name} is {_field_type(_duck_kind(t)).value} here but {dominant} in at "
                "least 90% of this store's entries.",
                value_json=(v or "")[:200],
                score=1.0,
                revision=r,
            )
            for u, d, s, k, r, t, v in rows
        ]

    def _near_limit(self, scope: Scope, share: float) -> list[Anomaly]:
        where, params = scope.where()
        floor_bytes = int(share * MAX_VALUE_BYTES)
        rows = self.store.rows(
            f"""SELECT universe_id, datastore, scope, key, revision, size_bytes FROM entries
                WHERE {where} AND size_bytes >= ? ORDER BY size_bytes DESC LIMIT 500""",
            [*params, floor_bytes],
        )
        return [
            Anomaly(
                kind=AnomalyKind.NEAR_SIZE_LIMIT,
                entry=EntryLink(universe_id=u, datastore=d, scope=s, key=k),
                reason=f"The value is {n:,} bytes, {n / MAX_VALUE_BYTES:.0%} of Open Cloud's "
                f"{MAX_VALUE_BYTES:,}-byte limit: the game's next save may fail.",
                score=n / floor_bytes,
                revision=r,
            )
            for u, d, s, k, r, n in rows
        ]

    def _user_ids(self, scope: Scope, pattern: str | None) -> list[Anomaly]:
        where, params = scope.where()
        regex = pattern or r"([0-9]{3,})[^0-9]*$"
        rows = self.store.rows(
            f"""SELECT universe_id, datastore, scope, key, revision, user_ids, id FROM (
                    SELECT *, TRY_CAST(regexp_extract(key, ?, 1) AS BIGINT) AS id FROM entries
                    WHERE {where})
                WHERE id IS NOT NULL AND len(user_ids) > 0 AND NOT list_contains(user_ids, id)
                ORDER BY datastore, scope, key LIMIT 500""",
            [regex, *params],
        )
        return [
            Anomaly(
                kind=AnomalyKind.USER_ID_MISMATCH,
                entry=EntryLink(universe_id=u, datastore=d, scope=s, key=k),
                reason=f"The key names user {i} but the entry is tagged with user ids "
                f"{list(ids)}: an erasure request for user {i} could miss it.",
                value_json=json.dumps(list(ids)),
                score=1.0,
                revision=r,
            )
            for u, d, s, k, r, ids, i in rows
        ]


def _types_of(info: dict[str, Any] | None) -> list[FieldType]:
    if not info:
        return []
    return sorted(
        {_field_type(kind) for kind in info.get("types", {}) if kind != "mixed"},
        key=lambda t: _KIND_ORDER.index(t.value),
    )


def _field_type(kind: str) -> FieldType:
    try:
        return FieldType(kind)
    except ValueError:
        return FieldType.OBJECT


def _duck_kind(json_type: str) -> str:
    return {
        "BIGINT": "integer",
        "UBIGINT": "integer",
        "DOUBLE": "number",
        "VARCHAR": "string",
        "BOOLEAN": "boolean",
        "OBJECT": "object",
        "ARRAY": "array",
        "NULL": "null",
    }.get(json_type, "object")


def _num(value: Any) -> str:
    number = float(value)
    if number.is_integer() and abs(number) < 2**53:
        return str(int(number))
    return repr(number)
