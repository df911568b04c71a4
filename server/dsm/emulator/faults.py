"""The emulator's fault settings, checked at the edges (`dsm emulator` flags, POST
/_emulator/faults): rates are shares of requests, from 0 to 1; latency is non-negative and at
most a minute (Open Cloud clients time out well before); injected errors are HTTP error statuses.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_LATENCY_MS = 60_000.0

Rate = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
LatencyMs = Annotated[float, Field(ge=0.0, le=MAX_LATENCY_MS, allow_inf_nan=False)]
ErrorStatus = Annotated[int, Field(ge=400, le=599)]

# What each setting must be, in the words an error shows.
EXPECTED = {
    "latency_ms": f"a number of milliseconds from 0 to {MAX_LATENCY_MS:,.0f}",
    "error_rate": "a share of requests from 0 to 1",
    "drop_rate": "a share of requests from 0 to 1",
    "lost_response_rate": "a share of writes from 0 to 1",
    "error_statuses": "a list of 1 to 10 HTTP error statuses from 400 to 599",
    "seed": "a whole number, or null",
}


class FaultChanges(BaseModel):
    """Fault settings to change; those left out keep their value."""

    model_config = ConfigDict(extra="forbid", strict=True)

    latency_ms: LatencyMs | None = None
    error_rate: Rate | None = None
    error_statuses: Annotated[list[ErrorStatus], Field(min_length=1, max_length=10)] | None = None
    drop_rate: Rate | None = None
    lost_response_rate: Rate | None = None
    seed: int | None = None


class FaultSettingError(ValueError):
    """A fault setting out of range or unknown; the message names it and what it must be."""


def check_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """The changes, checked: raises FaultSettingError naming the first bad setting."""
    try:
        checked = FaultChanges.model_validate(changes)
    except ValidationError as error:
        raise FaultSettingError(_describe(error, changes)) from None
    fields = checked.model_dump(exclude_unset=True)
    for name in ("latency_ms", "error_rate", "drop_rate", "lost_response_rate", "error_statuses"):
        if name in fields and fields[name] is None:
            raise FaultSettingError(f"{name} must be {EXPECTED[name]}; got null.")
    return fields


def _describe(error: ValidationError, changes: dict[str, Any]) -> str:
    first = error.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else ""
    if first["type"] == "extra_forbidden":
        return f"Unknown fault setting {name!r}; known: {', '.join(EXPECTED)}."
    return f"{name} must be {EXPECTED.get(name, 'valid')}; got {changes.get(name)!r}."
