"""The companion server's API as the MCP server calls it: one bearer token, the error
envelope turned into an exception whose message an assistant can act on, and the token's use
of its caps as the latest answer stated it (the `DSM-Assistant-Caps` header)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
from yarl import URL

from ..http.assistant import CAPS_HEADER

TIMEOUT = aiohttp.ClientTimeout(total=120)
CAPS_NOTE = (
    "What this assistant token has used of its caps over a sliding minute, and what is left. "
    "Past a cap, calls answer RATE_LIMITED until older requests leave the window."
)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retryable = status, code, message, retryable


class CompanionApi:
    """`base_url` is the server's origin (http://127.0.0.1:PORT); paths are under /api/v1."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        # The caps as of the latest answer that stated them; None while no cap applies (a
        # viewer token, or nothing asked yet).
        self.caps: dict[str, Any] | None = None

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        params = {k: _query_text(v) for k, v in (query or {}).items() if v is not None}
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        # A session per call: calls are few and paced by the caps, and nothing outlives a loop.
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            try:
                async with http.request(
                    method,
                    URL(f"{self.base_url}/api/v1{path}", encoded=True),  # as quoted, dots too
                    params=params,
                    json=body if method != "GET" else None,
                    headers=headers,
                ) as response:
                    self.caps = caps_of(response.headers) or self.caps
                    answer = await response.json(content_type=None) if response.content else None
                    if response.status >= 400:
                        raise _api_error(response.status, answer)
                    return answer
            except aiohttp.ClientConnectionError as exc:
                raise ApiError(
                    0,
                    "UNREACHABLE",
                    f"The DataStore Manager server at {self.base_url} does not answer ({exc}); "
                    "is `dsm serve` running?",
                    retryable=True,
                ) from None


def caps_of(headers: Mapping[str, str]) -> dict[str, Any] | None:
    """`requests=12/120; opencloud=3/60; window=60` as used, cap and left of each cap."""
    header = headers.get(CAPS_HEADER)
    if header is None:
        return None
    fields = dict(part.strip().partition("=")[::2] for part in header.split(";"))
    try:
        caps: dict[str, Any] = {"window_seconds": int(fields["window"])}
        for name, field in (("api_requests", "requests"), ("opencloud_requests", "opencloud")):
            used, cap = (int(n) for n in fields[field].split("/"))
            caps[name] = {"used": used, "cap": cap, "left": max(0, cap - used)}
    except (KeyError, ValueError):
        return None  # a server that words it otherwise: say nothing rather than guess
    caps["note"] = CAPS_NOTE
    return caps


def _query_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _api_error(status: int, answer: Any) -> ApiError:
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return ApiError(status, "HTTP", f"The server answered HTTP {status}.")
    return ApiError(
        status,
        str(error.get("code", "HTTP")),
        str(error.get("message", "")),
        bool(error.get("retryable", False)),
    )
