"""`dsm serve --upstream URL`: several servers on one Open Cloud-compatible server, labelled by
what it says it is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from dsm import cli
from dsm.emulator.app import EmulatorConfig
from dsm.emulator.auth import KeyGrant
from dsm.emulator.throttle import LimitsConfig
from dsm.services.tokens import TokenStore
from dsm.services.upstream import UpstreamUnreachable
from dsm.storage.vault import ApiKeyRecord
from shared_schema.common import Role
from tests.test_offline import CuttableProxy, serving
from tests.test_serve_process import BANNER_END, dsm_serve, free_port
from tools.testing.emulator import start_emulator
from tools.testing.server import Server, entry_path, idem, running_server


@asynccontextmanager
async def emulator(**config: object) -> AsyncIterator[str]:
    runner, url, _ = await start_emulator(EmulatorConfig(limits=LimitsConfig(mode="off"), **config))  # type: ignore[arg-type]
    try:
        yield url
    finally:
        await runner.cleanup()


async def write(
    server: Server, token: str, universe: int, key: str, value: str
) -> dict[str, object]:
    status, body = await server.call(
        "POST",
        entry_path(universe, "players", key),
        token,
        json={"value_json": value, "idempotency_key": idem()},
    )
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def test_two_servers_share_one_emulator_and_both_say_emulator(tmp_path: Path) -> None:
    async with (
        emulator() as url,
        running_server(tmp_path / "a", upstream_url=url) as alice,
        running_server(tmp_path / "b", upstream_url=url) as bob,
    ):
        assert alice.upstream.emulator is None and bob.upstream.emulator is None  # none embedded
        alice_token, bob_token = await alice.pair("Alice"), await bob.pair("Bob")
        written = await write(alice, alice_token, 77, "p1", '{"coins":5}')
        assert written["source"]["kind"] == "EMULATOR"  # type: ignore[index]
        status, read = await bob.call("GET", entry_path(77, "players", "p1"), bob_token)
        assert status == 200 and read["value_json"] == '{"coins":5}'
        assert read["source"]["kind"] == "EMULATOR" and read["source"]["backend"] == "EMULATOR"
        status, hello = await bob.call("GET", "/hello", None)
        assert hello["backend"] == "EMULATOR"
        status, listed = await bob.call("GET", "/universes", bob_token)
        assert status == 200 and [u["universe_id"] for u in listed["universes"]] == [1, 77]
        assert all(u["backend"] == "EMULATOR" for u in listed["universes"])
        # Bob's edit conflicts with nothing Alice holds: they see one data store.
        status, updated = await bob.call(
            "PUT",
            entry_path(77, "players", "p1"),
            bob_token,
            json={
                "value_json": '{"coins":6}',
                "expected_revision": read["revision"],
                "idempotency_key": idem(),
            },
        )
        assert status == 200, updated
        status, again = await alice.call("GET", entry_path(77, "players", "p1"), alice_token)
        assert again["value_json"] == '{"coins":6}'


class SilentProxy(CuttableProxy):
    """An Open Cloud-compatible server that does not say it is an emulator."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = await super().handle(request)
        response.headers.popall("X-DSM-Emulator", None)
        return response


async def test_an_upstream_that_does_not_say_emulator_is_labelled_live(tmp_path: Path) -> None:
    async with (
        emulator() as url,
        serving(SilentProxy(url)) as proxy,
        running_server(tmp_path, upstream_url=proxy) as server,
    ):
        token = await server.pair()
        written = await write(server, token, 5, "k", "1")
        assert written["source"] == {**written["source"], "kind": "LIVE", "backend": "LIVE"}  # type: ignore[dict-item]
        _, hello = await server.call("GET", "/hello", None)
        assert hello["backend"] == "LIVE"
        binding = server.upstream.binding(5)
        assert (binding.backend.value, binding.environment) == ("LIVE", "production")


def record(key: str, universes: list[int]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=key,
        label=f"key {key}",
        api_key=SecretStr(key),
        universes=universes,
        environment="staging",
        added_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


async def test_vault_keys_with_narrow_scopes_are_used_against_the_upstream(tmp_path: Path) -> None:
    grants = [
        KeyGrant(
            key="writer-key",
            universes=["5"],
            scopes=["universe-datastores.objects:read", "universe-datastores.objects:create"],
        ),
        KeyGrant(key="reader-key", universes=["6"], scopes=["universe-datastores.objects:read"]),
    ]
    async with (
        emulator(keys=grants) as url,
        running_server(
            tmp_path, upstream_url=url, keys=[record("writer-key", [5]), record("reader-key", [6])]
        ) as server,
    ):
        token = await server.pair()
        written = await write(server, token, 5, "k", "1")
        assert written["source"]["backend"] == "EMULATOR"  # type: ignore[index]
        status, refused = await server.call(
            "POST",
            entry_path(6, "players", "k"),
            token,
            json={"value_json": "1", "idempotency_key": idem()},
        )
        # The key lacks the scope: Open Cloud's 403, passed on as the upstream's refusal.
        assert refused["error"]["code"] == "UPSTREAM_PERMISSION", (status, refused)
        assert "universe-datastores.objects:create" in refused["error"]["message"]
        status, missing = await server.call("GET", entry_path(7, "players", "k"), token)
        assert status in (400, 403, 404) and missing["error"]["code"] == "NO_API_KEY"
        labels = {
            u["universe_id"]: u["label"]
            for u in (await server.call("GET", "/universes", token))[1]["universes"]
        }
        assert labels == {5: "key writer-key", 6: "key reader-key"}


async def test_an_unreachable_upstream_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UpstreamUnreachable, match="did not answer"):
        async with running_server(tmp_path, upstream_url=f"http://127.0.0.1:{free_port()}"):
            pass


def test_the_flag_takes_only_http_urls(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--upstream", "ftp://example"])
    assert "--upstream must be an http(s) URL" in capsys.readouterr().err


async def test_two_dsm_serve_processes_on_one_emulator(tmp_path: Path) -> None:
    async with (
        emulator() as url,
        dsm_serve(tmp_path / "a", "--upstream", url) as a,
        dsm_serve(tmp_path / "b", "--upstream", url) as b,
        aiohttp.ClientSession() as http,
    ):
        for child in (a, b):
            await child.wait_for(child.out, lambda line: BANNER_END in line)
            assert f"backend   : EMULATOR - {url} (it says it is an emulator" in "".join(child.out)
        tokens = []
        for home in (tmp_path / "a" / "data", tmp_path / "b" / "data"):
            store = TokenStore.open(home)  # what `dsm tokens create` does
            tokens.append(store.issue("test script", Role.EDITOR)[0])
            store.close()
        path = "/api/v1" + entry_path(3, "players", "shared")
        async with http.post(
            a.base_url + path,
            json={"value_json": '{"from":"a"}', "idempotency_key": idem()},
            headers={"Authorization": f"Bearer {tokens[0]}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
        async with http.get(
            b.base_url + path, headers={"Authorization": f"Bearer {tokens[1]}"}
        ) as resp:
            body = await resp.json()
        assert body["value_json"] == '{"from":"a"}' and body["source"]["kind"] == "EMULATOR"


async def test_a_loopback_emulator_behind_the_wall_serves_upstream_by_its_loopback_names(
    tmp_path: Path,
) -> None:
    """`dsm emulator` on a loopback host guards itself as the server does (Host, Origin); a
    server given `--upstream` with any of our loopback names still reaches it."""
    bound = [0]
    config = EmulatorConfig(limits=LimitsConfig(mode="off"), guard_port=lambda: bound[0])
    runner, url, _ = await start_emulator(config)
    bound[0] = int(url.rsplit(":", 1)[1])
    try:
        for name in ("127.0.0.1", "localhost"):
            upstream = url.replace("127.0.0.1", name)
            async with running_server(tmp_path / name, upstream_url=upstream) as server:
                token = await server.pair()
                written = await write(server, token, 5, f"via-{name}", '{"n":1}')
                assert written["source"]["kind"] == "EMULATOR"  # type: ignore[index]
        async with (
            aiohttp.ClientSession() as http,
            http.get(url + "/", headers={"Origin": "https://example.com"}) as refused,
        ):
            assert refused.status == 403, await refused.text()
    finally:
        await runner.cleanup()
