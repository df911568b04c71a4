"""Analytics over the local index: schema, distributions, economy, progression, anomalies.

Every figure is computed from indexed entries (docs/analytics.md says how); every answer
carries the `IndexBasis` it was computed from. Nothing is estimated or filled in: a figure the
index cannot give is absent, with a note saying why.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .base import RequestBody, ResponseBody
from .constraints import Name, NonNegativeInt, PositiveInt, UtcDateTime
from .index import MAX_HISTORY_SAMPLE, MAX_REVISIONS_PER_KEY, IndexBasis
from .search import EntryLink


class AnalyticsScope(RequestBody):
    universe_id: PositiveInt
    datastore: Name | None = Field(default=None, description="Absent: every indexed store.")
    scope: Name | None = Field(default=None, description="Absent: every scope.")


# -- Schema ------------------------------------------------------------------------------------


class FieldType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"  # a number with a fraction
    BOOLEAN = "boolean"
    OBJECT = "object"
    ARRAY = "array"
    NULL = "null"


class TypeShare(ResponseBody):
    type: FieldType
    count: NonNegativeInt = Field(description="Entries where the field has this type.")
    share: float = Field(ge=0, le=1, description="Of the entries that have the field.")


class SchemaField(ResponseBody):
    path: str = Field(min_length=1, description="e.g. `settings.music`, `inventory[]`.")
    depth: PositiveInt = Field(description="1 for top-level fields.")
    parent: str | None = Field(default=None, description="The enclosing path; absent at top.")
    types: list[TypeShare] = Field(description="Most common first.")
    present: NonNegativeInt = Field(description="Entries that have the field.")
    presence: float = Field(ge=0, le=1, description="present / entries in the store.")
    examples: list[str] = Field(description="Up to 3 distinct values as JSON text.")
    typed_column: bool = Field(
        default=False, description="Materialised as a typed column (fast queries)."
    )


class DriftKind(StrEnum):
    APPEARED = "appeared"
    VANISHED = "vanished"
    TYPE_CHANGED = "type_changed"


class SchemaDrift(ResponseBody):
    path: str = Field(min_length=1)
    kind: DriftKind
    before: list[FieldType] = Field(description="Types at the previous crawl.")
    after: list[FieldType] = Field(description="Types now.")


class StoreSchema(ResponseBody):
    datastore: str = Field(min_length=1)
    entries: NonNegativeInt
    max_depth: NonNegativeInt
    fields: list[SchemaField]
    drift: list[SchemaDrift] = Field(description="Since the previous crawl of this store.")
    previous_crawl_at: UtcDateTime | None = Field(
        default=None, description="The crawl drift is measured from; absent on the first."
    )
    drift_note: str | None = None


class SchemaReport(ResponseBody):
    stores: list[StoreSchema]
    basis: IndexBasis


# -- Distributions -----------------------------------------------------------------------------


class DistributionRequest(AnalyticsScope):
    field: str = Field(min_length=1, max_length=200, description="A field path, e.g. `level`.")
    bins: int = Field(default=20, ge=1, le=200, description="Histogram bins.")
    top: int = Field(default=10, ge=1, le=100, description="Top-N entries and value counts.")
    log_scale: bool = Field(default=False, description="Bins of equal width in log10 (x > 0).")


class HistogramBin(ResponseBody):
    low: float = Field(description="Inclusive lower edge.")
    high: float = Field(description="Exclusive upper edge (inclusive on the last bin).")
    count: NonNegativeInt


class Percentiles(ResponseBody):
    """Linear-interpolated percentiles (numpy's default method) of the numeric values."""

    min: float
    p5: float
    p25: float
    p50: float
    p75: float
    p95: float
    p99: float
    max: float
    mean: float
    stddev: float = Field(description="Population standard deviation.")


class RankedEntry(ResponseBody):
    entry: EntryLink
    value: float
    share: float | None = Field(default=None, description="Of the total, for currencies.")


class ValueCount(ResponseBody):
    value_json: str = Field(description="The value as JSON text.")
    count: NonNegativeInt
    share: float = Field(ge=0, le=1)


class DistributionKind(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"  # strings or booleans: value counts
    EMPTY = "empty"  # no entry has a number, string or boolean there


class Distribution(ResponseBody):
    field: str
    kind: DistributionKind
    entries: NonNegativeInt = Field(description="Entries in scope.")
    numeric: NonNegativeInt = Field(description="Entries with a number at the field.")
    missing: NonNegativeInt = Field(description="Entries without the field.")
    other: NonNegativeInt = Field(description="Entries with another type there.")
    distinct: NonNegativeInt = Field(description="Distinct values at the field.")
    histogram: list[HistogramBin] = Field(default_factory=list)
    log_scale: bool = False
    percentiles: Percentiles | None = None
    top: list[RankedEntry] = Field(default_factory=list, description="Largest values first.")
    value_counts: list[ValueCount] = Field(default_factory=list, description="Most common first.")
    basis: IndexBasis


# -- Economy -----------------------------------------------------------------------------------


class EconomyRequest(AnalyticsScope):
    currencies: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Field paths that hold currency; empty: the suggested ones.",
    )
    top: int = Field(default=10, ge=1, le=100)
    history_days: int = Field(default=30, ge=1, le=365, description="Days of supply history.")


class SupplyPoint(ResponseBody):
    at: UtcDateTime = Field(description="End of the day (UTC) the point stands for.")
    total: float = Field(description="Sum of the latest known value of each key by then.")
    entries: NonNegativeInt = Field(description="Keys with a known value by then.")


class CurrencyReport(ResponseBody):
    field: str
    holders: NonNegativeInt = Field(description="Entries with a number at the field.")
    total_supply: float
    percentiles: Percentiles | None = None
    gini: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="0 equal, 1 one holder has all; absent if < 2 holders.",
    )
    top_1_percent_share: float | None = Field(
        default=None, ge=0, le=1, description="Share of the supply the richest 1% hold."
    )
    histogram: list[HistogramBin] = Field(default_factory=list, description="log10 bins.")
    top_holders: list[RankedEntry]
    negative_holders: NonNegativeInt = Field(default=0, description="Entries below zero.")
    history: list[SupplyPoint] = Field(
        default_factory=list, description="From indexed revisions (crawls, writes, history)."
    )
    history_note: str | None = None


class EconomyReport(ResponseBody):
    currencies: list[CurrencyReport]
    suggested: list[str] = Field(description="Numeric fields named like currencies.")
    basis: IndexBasis


# -- Progression -------------------------------------------------------------------------------


class ProgressionPlanRequest(RequestBody):
    universe_id: PositiveInt
    datastore: Name
    scope: Name | None = None
    sample_size: int = Field(default=50, ge=1, le=MAX_HISTORY_SAMPLE)
    max_revisions_per_key: int = Field(default=30, ge=1, le=MAX_REVISIONS_PER_KEY)


class ProgressionPlan(ResponseBody):
    """What reading the revision history would cost, shown before it runs."""

    keys_available: NonNegativeInt = Field(description="Indexed keys to sample from.")
    sample_size: NonNegativeInt
    keys_with_history: NonNegativeInt = Field(
        description="Sampled keys whose history is already indexed (not read again)."
    )
    requests_max: NonNegativeInt = Field(
        description="At most: one revision list per key plus one read per revision."
    )
    budget_per_minute: float = Field(description="Background reads a minute at today's budget.")
    minutes_max: float = Field(description="requests_max at that pace.")
    basis: IndexBasis


class ProgressionRequest(RequestBody):
    universe_id: PositiveInt
    datastore: Name
    scope: Name | None = None
    field: str = Field(min_length=1, max_length=200, description="e.g. `level` or `xp`.")
    bucket_days: float = Field(default=1.0, gt=0, le=365, description="Width of each x bucket.")
    series: int = Field(default=10, ge=0, le=50, description="Per-key lines to include.")


class ProgressPoint(ResponseBody):
    days: float = Field(description="Start of the bucket: days since the key was created.")
    keys: NonNegativeInt = Field(description="Keys with a revision in this bucket.")
    p25: float
    median: float
    p75: float
    mean: float


class ProgressSample(ResponseBody):
    days: float
    value: float


class ProgressSeries(ResponseBody):
    entry: EntryLink
    points: list[ProgressSample]


class Progression(ResponseBody):
    field: str
    keys: NonNegativeInt = Field(description="Keys whose history holds the field.")
    revisions: NonNegativeInt = Field(description="Revisions the chart is drawn from.")
    points: list[ProgressPoint]
    series: list[ProgressSeries]
    note: str | None = None
    basis: IndexBasis


# -- Anomalies ---------------------------------------------------------------------------------


class AnomalyKind(StrEnum):
    OUTLIER = "outlier"  # robust z-score (median/MAD) beyond the threshold
    SUDDEN_JUMP = "sudden_jump"  # a field multiplied between consecutive revisions
    TYPE_DRIFT = "type_drift"  # a field whose type differs from the store's usual one
    NEAR_SIZE_LIMIT = "near_size_limit"  # close to Open Cloud's 4 MiB per entry
    USER_ID_MISMATCH = "user_id_mismatch"  # the key names a user id the entry is not tagged with


class AnomaliesRequest(AnalyticsScope):
    kinds: list[AnomalyKind] = Field(default_factory=list, description="Empty: every kind.")
    robust_z: float = Field(
        default=3.5, gt=0, le=1000, description="Outlier threshold on |0.6745 (x - median) / MAD|."
    )
    jump_factor: float = Field(
        default=10.0, gt=1, le=1e9, description="A revision multiplying a field by this is a jump."
    )
    size_share: float = Field(
        default=0.9, gt=0, le=1, description="Entries above this share of 4 MiB are reported."
    )
    key_pattern: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Regex with one group capturing the user id in a key; absent: the key's "
        "last run of 3 or more digits.",
    )
    limit: int = Field(default=200, ge=1, le=2000)


class Anomaly(ResponseBody):
    kind: AnomalyKind
    entry: EntryLink
    field: str | None = None
    reason: str = Field(description="Why it was flagged, with the numbers.")
    value_json: str | None = Field(default=None, description="The value that was flagged.")
    score: float = Field(description="How far past the threshold; larger is stranger.")
    revision: str | None = None


class AnomalyCount(ResponseBody):
    kind: AnomalyKind
    count: NonNegativeInt


class AnomalyReport(ResponseBody):
    anomalies: list[Anomaly] = Field(description="Strangest first, at most `limit`.")
    counts: list[AnomalyCount] = Field(description="Found per kind, before the limit.")
    fields_checked: list[str]
    entries_checked: NonNegativeInt
    basis: IndexBasis
