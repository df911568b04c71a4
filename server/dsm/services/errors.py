"""The one failure type services raise; the HTTP layer maps its code to a status."""

from __future__ import annotations

from typing import Any

from shared_schema.errors import RETRYABLE, ErrorCode


class ServiceError(Exception):
    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.retryable = code in RETRYABLE if retryable is None else retryable
        self.retry_after = retry_after
