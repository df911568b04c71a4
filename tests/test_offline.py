"""Open Cloud goes away mid-session: reads say CACHED (with age and why) or UNAVAILABLE, writes
fail with a clear error, and the journal keeps the before-image, so nothing is lost.

Two ways of losing the upstream are exercised: the embedded emulator stopping (connections
refused), and the network dropping while a write is in flight (the write lands, its answer is
lost, then nothing answers), which is the case the journal exists for. For the second, the
server runs on its LIVE code path against a separately started emulator reached through a
small loopback proxy that the test can cut.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from dsm.emulator.app import EmulatorConfig
from dsm.emulator.auth import KeyGrant
from dsm.emulator.throttle import LimitsConfig
from dsm.http.appkeys import DATA
from dsm.storage.vault import ApiKeyRecord
from shared_schema.common import Role
from tools.testing.server import Server, entry_path, idem, running_server

from .conftest import start_emulator

U = 1
DS = "Inventory"
HOP_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}
)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_hits(summary: dict[str, Any], kind: str = "entry") -> float:
    return sum(
        float(s["value"])
        for s in summary["samples"]
        if s["name"] == "dsm_cache_lookups_total"
        and s["labels"].get("result") == "hit"
        and s["labels"].get("kind") == kind
    )


async def direct_write(base_url: str, key: str, value: Any, api_key: str = "other-writer") -> None:
    """Another writer changes an entry upstream without going through the server."""
    url = (
        f"{base_url}/cloud/v2/universes/{U}/data-stores/{DS}/scopes/global/entries/{key}"
        "?allowMissing=true"
    )
    async with (
        aiohttp.ClientSession() as http,
        http.patch(url, json={"value": value}, headers={"x-api-key": api_key}) as resp,
    ):
        assert resp.status == 200, await resp.text()


# ---------------------------------------------------------------------------------------------
# The embedded emulator stops


async def test_reads_fall_back_to_the_cache_and_say_so(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        token = await server.pair("Studio", Role.EDITOR)
        emulator = server.upstream.emulator
        assert emulator is not None
        status, made = await server.call(
            "POST",
            entry_path(U, DS, "sword"),
            token,
            json={
                "value_json": '{"dmg":12,"tags":{}}',
                "attributes": {"r": 1},
                "idempotency_key": idem(),
            },
        )
        assert status == 200
        status, seen = await server.call("GET", entry_path(U, DS, "sword"), token)
        assert status == 200 and seen["source"]["kind"] == "EMULATOR"
        status, keys = await server.call("GET", f"/universes/{U}/datastores/{DS}/keys", token)
        assert status == 200 and keys["source"]["kind"] == "EMULATOR"
        status, stores = await server.call("GET", f"/universes/{U}/datastores", token)
        assert status == 200
        await direct_write(emulator.base_url, "shield", {"def": 3})  # never read by the server
        status, before = await server.call("GET", "/metrics/summary", token)
        journal_before = (await server.call("GET", "/journal", token))[1]["items"]

        stopped_at = datetime.now(UTC)
        await emulator.stop()

        requested_at = datetime.now(UTC)
        status, cached = await server.call("GET", entry_path(U, DS, "sword"), token)
        answered_at = datetime.now(UTC)
        assert status == 200
        assert cached["value_json"] == '{"dmg":12,"tags":{}}'
        assert cached["revision"] == made["revision"] and cached["attributes"] == {"r": 1}
        source = cached["source"]
        assert source["kind"] == "CACHED" and source["backend"] == "EMULATOR"
        # The age is that of the copy shown, read before the stop, at the time of answering.
        fetched_at = datetime.fromisoformat(source["fetched_at"])
        assert fetched_at < stopped_at
        age = source["age_seconds"]
        assert (requested_at - fetched_at).total_seconds() - 0.002 <= age
        assert age <= (answered_at - fetched_at).total_seconds() + 0.002
        assert "unreachable" in source["reason"]

        status, cached_keys = await server.call(
            "GET", f"/universes/{U}/datastores/{DS}/keys", token
        )
        assert status == 200 and cached_keys["items"] == keys["items"]
        assert cached_keys["source"]["kind"] == "CACHED" and cached_keys["source"]["reason"]
        status, cached_stores = await server.call("GET", f"/universes/{U}/datastores", token)
        assert status == 200 and cached_stores["items"] == stores["items"]
        assert cached_stores["source"]["kind"] == "CACHED"

        # Never read before: nothing to show, and the answer says why instead of inventing it.
        status, missing = await server.call("GET", entry_path(U, DS, "shield"), token)
        assert status == 503
        error = missing["error"]
        assert error["code"] == "UPSTREAM_UNAVAILABLE" and error["retryable"] is True
        assert error["details"]["source"]["kind"] == "UNAVAILABLE"
        assert "unreachable" in error["details"]["source"]["reason"]
        assert "No cached copy" in error["message"]
        status, unlisted = await server.call(
            "GET", f"/universes/{U}/datastores/{DS}/keys", token, params={"prefix": "s"}
        )
        assert status == 503 and unlisted["error"]["details"]["source"]["kind"] == "UNAVAILABLE"

        # A write fails clearly; it was refused before anything was sent, so nothing is pending.
        status, refused = await server.call(
            "PUT",
            entry_path(U, DS, "sword"),
            token,
            json={
                "value_json": '{"dmg":99}',
                "expected_revision": made["revision"],
                "idempotency_key": idem(),
            },
        )
        assert status == 503 and refused["error"]["code"] == "UPSTREAM_UNAVAILABLE"
        assert "unreachable" in refused["error"]["message"]
        assert (await server.call("GET", "/journal", token))[1]["items"] == journal_before
        # The cached copy is still the one shown, and the metrics counted the cache hits.
        status, again = await server.call("GET", entry_path(U, DS, "sword"), token)
        assert again["value_json"] == '{"dmg":12,"tags":{}}' and again["source"]["kind"] == "CACHED"
        assert again["source"]["age_seconds"] >= source["age_seconds"]
        status, after = await server.call("GET", "/metrics/summary", token)
        assert cache_hits(after) - cache_hits(before) == 2
        assert cache_hits(after, "list") - cache_hits(before, "list") == 2


async def test_universe_list_survives_an_unreachable_emulator(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        token = await server.pair("Studio", Role.VIEWER)
        emulator = server.upstream.emulator
        assert emulator is not None
        assert (await server.call("GET", "/universes", token))[0] == 200
        await emulator.stop()
        status, body = await server.call("GET", "/universes", token)
        # The configured universes are still known and are listed, with a source that says
        # the emulator's own list could not be read.
        assert status == 200, body
        assert [u["universe_id"] for u in body["universes"]] == [1]
        assert body["source"]["kind"] in ("CACHED", "UNAVAILABLE")


# ---------------------------------------------------------------------------------------------
# The network drops while a write is in flight (LIVE code path through a proxy)


class CuttableProxy:
    """A loopback HTTP proxy in front of Open Cloud (here an emulator) that a test can cut.

    `lose_next_write` forwards the next write so it really lands upstream, then closes the
    connection without the answer and stops answering anything: a network failure at the worst
    moment. `down` answers nothing; `target` can be moved to a restarted upstream.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.down = False
        self.lose_next_write = False
        self.writes_forwarded = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.down:
            return self._cut(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                request.method,
                self.target + request.rel_url.raw_path_qs,
                headers=headers,
                data=await request.read(),
                allow_redirects=False,
            ) as upstream,
        ):
            body = await upstream.read()
            answer = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
        if request.method in ("POST", "PATCH", "PUT", "DELETE"):
            self.writes_forwarded += 1
            if self.lose_next_write:
                self.lose_next_write = False
                self.down = True
                return self._cut(request)
        return web.Response(status=upstream.status, body=body, headers=answer)

    @staticmethod
    def _cut(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=502)


@asynccontextmanager
async def serving(proxy: CuttableProxy) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def emulator_config(data_dir: Path, api_key: str) -> EmulatorConfig:
    grant = KeyGrant(
        key=api_key,
        universes=[str(U)],
        scopes=[
            "universe-datastores.control:list",
            "universe-datastores.objects:list",
            "universe-datastores.objects:read",
            "universe-datastores.objects:create",
            "universe-datastores.objects:update",
            "universe-datastores.objects:delete",
            "universe-datastores.versions:list",
        ],
    )
    return EmulatorConfig(data_dir=data_dir, keys=[grant], limits=LimitsConfig(mode="off"))


async def test_a_write_whose_answer_is_lost_is_journaled_with_its_before_image(
    tmp_path: Path,
) -> None:
    api_key = "offline-test-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:24]
    record = ApiKeyRecord(
        id="0ff1ce01",
        label="Offline test",
        api_key=SecretStr(api_key),
        universes=[U],
        environment="development",
        added_at=datetime.now(UTC),
    )
    upstream_dir = tmp_path / "opencloud"
    runner, first_url, _ = await start_emulator(emulator_config(upstream_dir, api_key))
    runners = [runner]

    async def restart_upstream() -> str:
        """Stop Open Cloud and start it again on the same data, on another port."""
        await runners[-1].cleanup()
        again, url, _ = await start_emulator(emulator_config(upstream_dir, api_key))
        runners.append(again)
        return url

    proxy = CuttableProxy(first_url)
    try:
        async with (
            serving(proxy) as proxy_url,
            running_server(
                tmp_path / "server", keys=[record], open_cloud_base_url=proxy_url
            ) as server,
        ):
            await _lose_a_write_then_recover(server, proxy, restart_upstream)
    finally:
        for each in runners:
            await each.cleanup()


async def _lose_a_write_then_recover(
    server: Server, proxy: CuttableProxy, restart_upstream: Callable[[], Awaitable[str]]
) -> None:
    token = await server.pair("Studio", Role.EDITOR)
    status, v1 = await server.call(
        "POST",
        entry_path(U, DS, "bag"),
        token,
        json={
            "value_json": '{"gold":500}',
            "attributes": {"owner": "ana"},
            "user_ids": [11],
            "idempotency_key": idem(),
        },
    )
    assert status == 200 and v1["source"]["kind"] == "LIVE"

    proxy.lose_next_write = True
    change_key = idem()
    change = {
        "value_json": '{"gold":0}',
        "expected_revision": v1["revision"],
        "idempotency_key": change_key,
    }
    status, lost = await server.call("PUT", entry_path(U, DS, "bag"), token, json=change)
    assert status == 502, lost
    assert lost["error"]["code"] == "WRITE_OUTCOME_UNKNOWN" and lost["error"]["retryable"] is False
    assert "may or may not have been applied" in lost["error"]["message"]
    assert proxy.writes_forwarded == 2  # the create, and the update that landed unanswered

    # The journal shows the write as unknown and holds the value it replaced.
    item = (await server.call("GET", "/journal", token, params={"key": "bag"}))[1]["items"][0]
    assert item["operation"] == "update" and item["status"] == "unknown"
    assert item["before_sha256"] == sha256('{"gold":500}')
    detail = server.app[DATA].journal.journal.get(item["id"])
    assert detail.before is not None
    assert detail.before.value_json == '{"gold":500}'
    assert detail.before.metadata["attributes"] == {"owner": "ana"}
    assert detail.before.metadata["user_ids"] == [11]
    assert detail.before.metadata["revision"] == v1["revision"]

    # Repeating the request is not repeating the write: the outcome is still unknown.
    status, repeated = await server.call("PUT", entry_path(U, DS, "bag"), token, json=change)
    assert status == 502 and repeated["error"]["code"] == "WRITE_OUTCOME_UNKNOWN"
    assert proxy.writes_forwarded == 2
    # Undo is refused while the outcome is unknown rather than guessed.
    status, undo = await server.call(
        "POST", f"/journal/{item['id']}/undo", token, json={"idempotency_key": idem()}
    )
    assert status == 400 and "not known" in undo["error"]["message"]
    # The cached copy predates a write of unknown outcome, so it is not shown as current:
    # the read says UNAVAILABLE, with the reason, until Open Cloud can be asked again.
    status, unavailable = await server.call("GET", entry_path(U, DS, "bag"), token)
    assert status == 503 and unavailable["error"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert unavailable["error"]["details"]["source"]["kind"] == "UNAVAILABLE"

    # Open Cloud comes back (restarted on the same data): reads are fresh again and show that
    # the lost write had landed; the before-image in the journal is what makes going back
    # possible even though Open Cloud kept no separate version of it this hour.
    proxy.target = await restart_upstream()
    proxy.down = False
    status, fresh = await server.call("GET", entry_path(U, DS, "bag"), token)
    assert status == 200 and fresh["source"]["kind"] == "LIVE"
    assert fresh["value_json"] == '{"gold":0}'
    status, back = await server.call(
        "PUT",
        entry_path(U, DS, "bag"),
        token,
        json={
            "value_json": detail.before.value_json,
            "expected_revision": fresh["revision"],
            "attributes": detail.before.metadata["attributes"],
            "user_ids": detail.before.metadata["user_ids"],
            "idempotency_key": idem(),
        },
    )
    assert status == 200 and back["value_json"] == '{"gold":500}'
    assert back["attributes"] == {"owner": "ana"} and back["user_ids"] == [11]


def calls_observed(summary: dict[str, Any]) -> float:
    return sum(
        float(s["value"])
        for s in summary["samples"]
        if s["name"] == "dsm_opencloud_calls_observed_total"
    )


async def test_after_a_failed_read_cached_reads_skip_open_cloud_for_a_while(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server:
        token = await server.pair("Studio", Role.EDITOR)
        status, _ = await server.call(
            "POST",
            entry_path(U, DS, "shield"),
            token,
            json={"value_json": '{"def": 3}', "idempotency_key": idem()},
        )
        assert status == 200
        assert (await server.call("GET", entry_path(U, DS, "shield"), token))[0] == 200
        emulator = server.upstream.emulator
        assert emulator is not None
        await emulator.stop()
        status, first = await server.call("GET", entry_path(U, DS, "shield"), token)
        assert status == 200 and first["source"]["kind"] == "CACHED"
        _, before = await server.call("GET", "/metrics/summary", token)
        # The next reads do not spend the client's retry budget again: no Open Cloud call is
        # made, and the reason given is the failure that opened the breaker.
        for _ in range(3):
            status, again = await server.call("GET", entry_path(U, DS, "shield"), token)
            assert status == 200 and again["source"]["kind"] == "CACHED"
            assert again["source"]["reason"] == first["source"]["reason"]
        _, after = await server.call("GET", "/metrics/summary", token)
        assert calls_observed(after) == calls_observed(before)


async def test_while_open_cloud_throttles_reads_the_cached_copy_is_shown_labelled(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server:
        token = await server.pair("Studio", Role.EDITOR)
        status, _ = await server.call(
            "POST",
            entry_path(U, DS, "helm"),
            token,
            json={"value_json": '{"def": 1}', "idempotency_key": idem()},
        )
        assert status == 200
        status, fresh = await server.call("GET", entry_path(U, DS, "helm"), token)
        assert status == 200 and fresh["source"]["kind"] == "EMULATOR"
        limiter = server.upstream.limiter
        assert limiter is not None
        # What the client does on a 429 with retry-after: pause that universe's read budget.
        limiter.penalize(str(U), "read", 30.0)
        status, cached = await server.call("GET", entry_path(U, DS, "helm"), token)
        assert status == 200 and cached["source"]["kind"] == "CACHED"
        assert "throttling" in cached["source"]["reason"]
        assert cached["value_json"] == fresh["value_json"]
