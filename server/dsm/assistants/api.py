"""The companion server's API as the MCP server calls it: one bearer token, the error
envelope turned into an exception whose message an assistant can act on."""

from __future__ import annotations

from typing import Any

import aiohttp
from yarl import URL

TIMEOUT = aiohttp.ClientTimeout(total=120)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retryable = status, code, message, retryable


class CompanionApi:
    """`base_url` is the server's origin (http://127.0.0.1:PORT); paths are under /api/v1."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

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
