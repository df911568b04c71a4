"""Live monitoring: time series of the server's own Open Cloud traffic, and which features work.

Every figure is counted from calls this server made (or cache answers it gave); a bucket with no
traffic is simply absent, never filled in.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator

from .base import QueryParams, ResponseBody
from .common import Backend
from .constraints import NonNegativeInt, PositiveInt, UtcDateTime

BUCKET_SIZES = (1, 10)


class TrafficBucket(ResponseBody):
    start: UtcDateTime
    seconds: PositiveInt = Field(description="How long the bucket is (1, 10 or a whole window).")
    calls: NonNegativeInt
    ok: NonNegativeInt
    throttled: NonNegativeInt = Field(description="429 answers.")
    client_errors: NonNegativeInt
    server_errors: NonNegativeInt
    no_answer: NonNegativeInt = Field(description="Timeouts and network errors.")
    by_operation: dict[str, NonNegativeInt]
    by_category: dict[str, NonNegativeInt] = Field(description="Calls per budget category.")
    errors_by_code: dict[str, NonNegativeInt] = Field(
        description="Failed calls by HTTP status (or timeout / network_error)."
    )
    latency_p50_ms: float | None = Field(default=None, ge=0)
    latency_p99_ms: float | None = Field(default=None, ge=0)
    cache_served: NonNegativeInt = Field(
        description="Reads answered from the cache because Open Cloud failed or throttled."
    )
    cache_missing: NonNegativeInt = Field(
        description="Reads that failed with no cached copy to fall back on."
    )
    job_items: NonNegativeInt = Field(description="Job items finished (fed by the jobs engine).")


class OperationTotal(ResponseBody):
    operation: str
    outcome: str
    calls: NonNegativeInt


class BudgetUse(ResponseBody):
    universe_id: str
    category: str
    used_last_minute: NonNegativeInt
    allowed_per_minute: float = Field(ge=0, description="This server's share of the budget.")
    paused_seconds: float = Field(ge=0)


class TrafficQuery(QueryParams):
    window_seconds: int = Field(default=300, ge=10, le=3600)
    bucket_seconds: int = Field(default=1, ge=1, le=10, description="1 or 10.")

    @field_validator("bucket_seconds")
    @classmethod
    def _known_size(cls, value: Any) -> Any:
        if value not in BUCKET_SIZES:
            raise ValueError("bucket_seconds must be 1 or 10")
        return value


class TrafficSeries(ResponseBody):
    window_seconds: PositiveInt
    bucket_seconds: PositiveInt
    start: UtcDateTime
    end: UtcDateTime
    counted_by: str = Field(description="Where the figures come from.")
    backend: Backend | None = None
    buckets: list[TrafficBucket] = Field(description="Only buckets with traffic, oldest first.")
    totals: TrafficBucket
    by_operation_outcome: list[OperationTotal]
    budget: list[BudgetUse]
    last_call_at: UtcDateTime | None = Field(default=None, description="Newest counted call.")
    counting_since: UtcDateTime = Field(
        description="When this server began counting (its start): a bucket after it with no "
        "traffic had zero calls; before it nothing was counted."
    )
    job_throughput: str = Field(description="Whether a jobs engine feeds job_items, and how.")


class MonitorTickPayload(ResponseBody):
    """One finished second with traffic (and, on 10-second boundaries, the 10 s bucket)."""

    second: TrafficBucket | None = Field(default=None, description="Absent: no calls that second.")
    ten_seconds: TrafficBucket | None = None
    budget: list[BudgetUse] | None = None


class FeatureStatus(StrEnum):
    AVAILABLE = "AVAILABLE"
    UNAVAILABLE = "UNAVAILABLE"
    EXPERIMENTAL = "EXPERIMENTAL"


class Feature(ResponseBody):
    feature_id: str = Field(min_length=1)
    name: str
    status: FeatureStatus
    reason: str | None = None
    universe_id: PositiveInt | None = None
    checked_at: UtcDateTime
    how: str = Field(description="What was checked.")


class FeatureList(ResponseBody):
    features: list[Feature]
    checked_at: UtcDateTime
    backend: Backend | None = None
