"""Driving bulk jobs over the real HTTP API, for tests, the crash test and benchmarks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .server import entry_path, idem

Call = Callable[..., Awaitable[tuple[int, Any]]]

TERMINAL = ("succeeded", "failed", "cancelled", "rolled_back")


async def seed(
    call: Call,
    token: str,
    universe: int,
    datastore: str,
    values: Mapping[str, Any],
    *,
    scope: str = "global",
    attributes: dict[str, Any] | None = None,
    user_ids: list[int] | None = None,
) -> None:
    """Create entries (value JSON-encoded unless it is already text) through the API."""
    for key, value in values.items():
        body: dict[str, Any] = {
            "value_json": value if isinstance(value, str) else json.dumps(value),
            "idempotency_key": idem(),
        }
        if attributes is not None:
            body["attributes"] = attributes
        if user_ids is not None:
            body["user_ids"] = user_ids
        status, answer = await call(
            "POST", entry_path(universe, datastore, key), token, params={"scope": scope}, json=body
        )
        assert status == 200, answer


async def read_value(
    call: Call, token: str, universe: int, datastore: str, key: str, scope: str = "global"
) -> dict[str, Any] | None:
    """The entry view, None when the key does not exist."""
    status, answer = await call(
        "GET", entry_path(universe, datastore, key), token, params={"scope": scope}
    )
    if status == 404:
        return None
    assert status == 200, answer
    view: dict[str, Any] = answer
    return view


async def create(call: Call, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    return await call("POST", "/jobs", token, json={"idempotency_key": idem(), **body})


async def wait(
    call: Call,
    token: str,
    job_id: str,
    states: tuple[str, ...] = TERMINAL,
    timeout: float = 60.0,
    *,
    plan_complete: bool = False,
) -> dict[str, Any]:
    """Poll the job until its state is one of `states` (or its plan is complete)."""
    deadline = time.monotonic() + timeout
    while True:
        status, job = await call("GET", f"/jobs/{job_id}", token)
        assert status == 200, job
        done = job["plan"]["complete"] if plan_complete else job["state"] in states
        if done:
            found: dict[str, Any] = job
            return found
        assert time.monotonic() < deadline, f"job {job_id} is still {job['state']}: {job}"
        await asyncio.sleep(0.05)


async def run(
    call: Call, token: str, body: dict[str, Any], timeout: float = 60.0
) -> dict[str, Any]:
    """Create a job with dry_run false and wait for it to end."""
    status, job = await create(call, token, {"dry_run": False, **body})
    assert status == 200, job
    return await wait(call, token, job["id"], timeout=timeout)


async def items(call: Call, token: str, job_id: str, state: str | None = None) -> list[Any]:
    """Every item of a job, following the pages."""
    found: list[Any] = []
    after = 0
    while True:
        params = {"after": str(after), "limit": "500"}
        if state is not None:
            params["state"] = state
        status, page = await call("GET", f"/jobs/{job_id}/items", token, params=params)
        assert status == 200, page
        found.extend(page["items"])
        if page.get("next_after") is None:
            return found
        after = page["next_after"]


async def upload(
    call: Call, token: str, data: bytes, file_name: str, chunk_bytes: int = 64 * 1024
) -> str:
    """Send a file in base64 chunks, as the plugin does; returns the completed upload's id."""
    status, info = await call(
        "POST",
        "/uploads",
        token,
        json={
            "file_name": file_name,
            "size_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "chunk_bytes": chunk_bytes,
        },
    )
    assert status == 200, info
    upload_id: str = info["upload_id"]
    for index in range(info["chunks"]):
        chunk = data[index * chunk_bytes : (index + 1) * chunk_bytes]
        status, answer = await call(
            "PUT",
            f"/uploads/{upload_id}/chunks/{index}",
            token,
            json={"data_base64": base64.b64encode(chunk).decode("ascii")},
        )
        assert status == 200, answer
    status, info = await call("POST", f"/uploads/{upload_id}/complete", token)
    assert status == 200 and info["state"] == "complete", info
    return upload_id
