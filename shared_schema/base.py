"""Base classes fixing each message kind's validation policy in one place.

- Bodies the plugin sends are strict and closed: an unknown or misspelled field is an error, a
  string is never coerced to a number.
- Query parameters arrive as text, so they are parsed leniently ("50" -> 50, "true" -> True),
  but unknown parameters are still errors.
- Responses and events are strict but open: a newer server may add optional fields in a minor
  protocol version (additive only), and an older plugin must keep working.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class QueryParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)


class ResponseBody(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)
