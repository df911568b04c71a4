"""Property-based fuzzing of every route in the server's own OpenAPI document (schemathesis).

The server runs as `dsm serve` runs it (create_app behind GuardedAppRunner, on its embedded
emulator) in a thread of its own, and schemathesis sends valid and invalid requests generated
from `GET /api/v1/openapi.json` to every operation with an admin token. Whatever it sends, the
answer is never a 5xx and every non-2xx answer is the one error envelope.

Examples per operation are bounded (FUZZ_EXAMPLES, default 50; raise it locally for a deeper
run) so the whole module stays within about a minute in CI.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, settings

from dsm import __version__
from dsm.app import create_app
from dsm.config import ServerConfig
from dsm.http.connections import GuardedAppRunner
from dsm.http.guards import BoundPort
from dsm.services.tokens import TokenStore
from dsm.storage.crypto import new_key
from shared_schema.common import Role
from shared_schema.errors import ErrorEnvelope
from shared_schema.registry import openapi_document

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))


class ThreadedServer:
    """The real app on a loopback port, served from its own event loop in a thread."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.announced: list[str] = []
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="fuzz-server", daemon=True)

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the server did not start")
        return self

    def __exit__(self, *_: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        port = BoundPort(0)
        # The schedule loop is on, as in `dsm serve`: schedules the fuzz creates fall due and
        # start backups in the background while it sends "run now", changes and listings.
        config = ServerConfig(data_dir=self.data_dir, port=0, emulator_limits="off")
        app = create_app(
            config, keys=[], data_key=new_key(), port=port, announce=self.announced.append
        )
        runner = GuardedAppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.set(int(runner.addresses[0][1]))
        self.base_url = f"http://127.0.0.1:{port()}"
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadedServer, str]]:
    data_dir = tmp_path_factory.mktemp("fuzz")
    store = TokenStore.open(data_dir)  # an admin token, as `dsm tokens role ID admin` makes
    token, _ = store.issue("fuzzer", Role.ADMIN)
    store.close()
    with ThreadedServer(data_dir) as server:
        yield server, token


# The document GET /api/v1/openapi.json serves (test_the_fuzzed_document_is_the_served_one
# checks that they are the same), loaded at import so pytest can list one test per operation.
schema = schemathesis.openapi.from_dict(openapi_document(__version__))
schema.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
    max_examples=EXAMPLES,
)


def test_the_fuzzed_document_is_the_served_one(fuzz_server: tuple[ThreadedServer, str]) -> None:
    server, token = fuzz_server
    served = requests.get(
        server.base_url + "/api/v1/openapi.json",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    assert served == openapi_document(__version__)
    assert len(served["paths"]) >= 25


def _bounded_wait(case: Any) -> None:
    # A valid long poll waits up to 25 s for an event that never comes here; keep the fuzz
    # fast by capping the wait (invalid timeouts are still sent as generated).
    query = case.query if isinstance(case.query, dict) else None
    if case.operation.path.endswith("/events") and query is not None:
        raw = query.get("timeout")
        try:
            seconds = float(raw) if raw is not None else 20.0
        except (TypeError, ValueError):
            return
        if seconds == seconds and seconds > 0.05:
            query["timeout"] = "0.05"


_UNIVERSES = itertools.count(1_000)
# Loading the sample game answers when it is done: 20,000 players take several seconds (longer
# under a full suite on the shared machine). The fuzz checks answers, not loading speed: valid
# player counts are capped (invalid ones are still sent as generated).
_MAX_SAMPLE_PLAYERS = 500


def _bounded_sample_game(case: Any) -> None:
    body = case.body if isinstance(case.body, dict) else None
    if case.operation.path.endswith("/sample-game") and body is not None:
        players = body.get("players")
        if isinstance(players, int) and _MAX_SAMPLE_PLAYERS < players <= 20_000:
            body["players"] = _MAX_SAMPLE_PLAYERS


def _spread_universes(case: Any) -> None:
    # The server paces calls to each universe's Open Cloud budget (a burst of 10, then about
    # 2.5 a second), and generated ids cluster on small values: give each valid case a
    # universe of its own so the fuzz measures answers, not pacing. Invalid ids stay as sent.
    params = case.path_parameters
    if params and "universe_id" in params:
        value = str(params["universe_id"])
        if value.isascii() and value.isdigit() and 1 <= int(value) < 2**53:
            params["universe_id"] = str(next(_UNIVERSES))


@schema.parametrize()
@settings(
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_request_gets_a_5xx_or_an_answer_outside_the_envelope(
    case: Any, fuzz_server: tuple[ThreadedServer, str]
) -> None:
    _bounded_wait(case)
    _bounded_sample_game(case)
    _spread_universes(case)
    server, token = fuzz_server
    response = case.call(
        base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
    if response.status_code >= 300:
        # The one envelope, parsed with the protocol's own model (extra fields refused).
        ErrorEnvelope.model_validate(json.loads(response.text))
        headers = {name.lower(): value for name, value in response.headers.items()}
        content_type = headers["content-type"]
        if isinstance(content_type, list):
            content_type = content_type[0]
        assert content_type.startswith("application/json"), content_type
