"""Emulator errors and the four error envelopes Open Cloud uses.

Each API family answers errors in its own shape (opencloud-api.md §7.1):
  gateway (auth, routing)  {"errors": [{"code": 0, "message": ...}]}
  v2                       {"code": "INVALID_ARGUMENT", "message": ..., "details": [...]}
  v1 standard data stores  {"error": "INVALID_ARGUMENT", "message": ..., "errorDetails": [...]}
  v1 ordered / messaging   {"code": "INVALID_ARGUMENT", "message": ...}
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

# The codes of the errors guide's v1 and v2 tables (INSUFFICIENT_SCOPE is v1 only) with their
# statuses, plus UNAUTHENTICATED, which only ever travels in the gateway envelope. Open Cloud
# answers no other code, so neither does the emulator (tests/test_emulator_v2.py checks).
STATUS_BY_CODE = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "INSUFFICIENT_SCOPE": 403,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "NOT_IMPLEMENTED": 501,
    "UNAVAILABLE": 503,
}


class Family(StrEnum):
    GATEWAY = "gateway"
    V1 = "v1"
    ORDERED_V1 = "ordered_v1"
    MESSAGING_V1 = "messaging_v1"
    V2 = "v2"


def family_for_path(path: str) -> Family:
    if path.startswith("/datastores/v1/"):
        return Family.V1
    if path.startswith("/ordered-data-stores/v1/"):
        return Family.ORDERED_V1
    if path.startswith("/messaging-service/v1/"):
        return Family.MESSAGING_V1
    if path.startswith("/cloud/v2/"):
        return Family.V2
    return Family.GATEWAY


class EmulatorError(Exception):
    """An Open Cloud error: a canonical code, a message, and v1's datastoreErrorCode."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        v1_code: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        if code not in STATUS_BY_CODE:
            raise ValueError(f"{code} is not an Open Cloud error code (errors guide)")
        self.code = code
        self.message = message
        self.v1_code = v1_code
        self.headers = headers or {}
        self.status = status or STATUS_BY_CODE.get(code, 500)

    def body(self, family: Family) -> dict[str, Any]:
        if family is Family.GATEWAY or self.status == 401:
            return {"errors": [{"code": 0, "message": self.message}]}
        if family is Family.V1:
            code = "INSUFFICIENT_SCOPE" if self.status == 403 else self.code
            body: dict[str, Any] = {"error": code, "message": self.message}
            if self.v1_code:
                body["errorDetails"] = [
                    {"errorDetailType": "DatastoreErrorInfo", "datastoreErrorCode": self.v1_code}
                ]
            return body
        return {"code": self.code, "message": self.message}


def invalid(message: str, v1_code: str | None = None) -> EmulatorError:
    return EmulatorError("INVALID_ARGUMENT", message, v1_code=v1_code)


def not_found(message: str, v1_code: str | None = None) -> EmulatorError:
    return EmulatorError("NOT_FOUND", message, v1_code=v1_code)
