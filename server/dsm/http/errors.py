"""Every failure leaves the server as `{error: {code, message, retryable, details?}}`."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from shared_schema.errors import ErrorBody, ErrorCode, ErrorEnvelope

from ..services.errors import ServiceError

log = logging.getLogger("dsm.http")

STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.FORBIDDEN_HOST: 403,
    ErrorCode.FORBIDDEN_ORIGIN: 403,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.PAIRING_FAILED: 400,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.UPSTREAM_THROTTLED: 503,
    ErrorCode.UPSTREAM_UNAVAILABLE: 503,
    ErrorCode.UPSTREAM_PERMISSION: 403,
    ErrorCode.UPSTREAM_REJECTED: 502,
    ErrorCode.WRITE_OUTCOME_UNKNOWN: 502,
    ErrorCode.NO_API_KEY: 404,
    ErrorCode.SERVER_BUSY: 503,
    ErrorCode.INTERNAL: 500,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: ServiceError) -> web.Response:
    envelope = ErrorEnvelope(
        error=ErrorBody(
            code=error.code,
            message=error.message,
            retryable=error.retryable,
            details=error.details,
        )
    )
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return web.Response(
        text=envelope.model_dump_json(exclude_none=True),
        status=STATUS[error.code],
        content_type="application/json",
        headers=headers,
    )


def http_exception_error(exc: web.HTTPException) -> ServiceError:
    """An error aiohttp raised itself, as one of our codes (its text is a plain sentence)."""
    code = {
        404: ErrorCode.NOT_FOUND,
        405: ErrorCode.METHOD_NOT_ALLOWED,
        408: ErrorCode.REQUEST_TIMEOUT,
        413: ErrorCode.PAYLOAD_TOO_LARGE,
        415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        429: ErrorCode.RATE_LIMITED,
        503: ErrorCode.SERVER_BUSY,
    }.get(exc.status, ErrorCode.BAD_REQUEST if exc.status < 500 else ErrorCode.INTERNAL)
    text = " ".join((exc.text or exc.reason).split())
    return ServiceError(code, f"{exc.reason}: {text}" if text != exc.reason else text)


def validation_message(exc: ValidationError) -> tuple[str, dict[str, Any]]:
    problems = [
        {
            "field": ".".join(str(p) for p in err["loc"]) or "(body)",
            # "Value error, " is pydantic's prefix for our own validators' messages: noise.
            "problem": err["msg"].removeprefix("Value error, "),
        }
        for err in exc.errors(include_url=False, include_input=False)
    ]
    first = problems[0] if problems else {"field": "(body)", "problem": "invalid"}
    return f"Invalid request: {first['field']}: {first['problem']}", {"problems": problems}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServiceError as error:
        return error_response(error)
    except ValidationError as exc:
        message, details = validation_message(exc)
        return error_response(ServiceError(ErrorCode.BAD_REQUEST, message, details=details))
    except json.JSONDecodeError:
        return error_response(ServiceError(ErrorCode.BAD_REQUEST, "The body is not valid JSON."))
    except web.HTTPNotFound:
        return error_response(
            ServiceError(ErrorCode.NOT_FOUND, f"No API route matches {request.path}.")
        )
    except web.HTTPMethodNotAllowed as exc:
        allowed = sorted(exc.allowed_methods - {"HEAD"})
        response = error_response(
            ServiceError(
                ErrorCode.METHOD_NOT_ALLOWED,
                f"{request.method} is not allowed on {request.path}; it takes "
                f"{', '.join(allowed) or 'no method'}.",
                details={"allowed": allowed},
            )
        )
        response.headers["Allow"] = ", ".join(allowed)
        return response
    except web.HTTPRequestEntityTooLarge:
        return error_response(
            ServiceError(ErrorCode.PAYLOAD_TOO_LARGE, "The request body is too large.")
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are answers, not failures
        # aiohttp's own refusals (a WebSocket handshake without Upgrade, ...) in the envelope.
        return error_response(http_exception_error(exc))
    except Exception:
        log.exception("internal error while handling %s %s", request.method, request.path)
        return error_response(
            ServiceError(ErrorCode.INTERNAL, "Internal server error; see the server's log.")
        )
