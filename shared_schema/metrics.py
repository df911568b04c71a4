"""`GET /metrics/summary`: the server's own counters, as counted (no estimates)."""

from __future__ import annotations

from pydantic import Field

from .base import ResponseBody
from .constraints import UtcDateTime


class MetricSample(ResponseBody):
    name: str = Field(min_length=1, description="Prometheus metric name, e.g. dsm_requests_total.")
    labels: dict[str, str] = Field(description="Prometheus labels of this sample.")
    value: float
    help: str | None = Field(default=None, description="What the metric counts.")


class MetricsSummary(ResponseBody):
    instance_id: str = Field(min_length=1)
    started_at: UtcDateTime
    uptime_seconds: float = Field(ge=0)
    samples: list[MetricSample] = Field(description="Counters and gauges with their labels.")
