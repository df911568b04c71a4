"""Start-up reconciliation of journaled writes, and the route table kept in step with the app."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from dsm.http.appkeys import DATA
from dsm.storage.crypto import new_key
from dsm.storage.journal import EntryImage, Status
from shared_schema.common import Role
from shared_schema.registry import OPEN_ROUTES, ROUTES, Route
from tools.testing.server import running_server

ENTRY = "/universes/1/datastores/players/entries/hero"


async def test_every_protocol_route_is_served_with_its_method(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        served = {
            (route.method, route.resource.canonical)
            for route in server.app.router.routes()
            if isinstance(route.resource, web.Resource) and route.resource is not None
        }
        missing = [
            (r.operation_id, r.method, r.full_path)
            for r in ROUTES
            if (r.method, r.full_path) not in served
        ]
        assert missing == []
        token = await server.pair(role=Role.VIEWER)
        status, document = await server.call("GET", "/openapi.json", token)
        assert status == 200
        assert set(document["paths"]) == {r.full_path for r in ROUTES}


async def test_writes_left_open_by_a_crash_are_settled_by_re_reading(tmp_path: Path) -> None:
    key = new_key()
    async with running_server(tmp_path, data_key=key) as server:
        token = await server.pair()
        status, created = await server.call(
            "POST",
            ENTRY,
            token,
            json={"value_json": '{"hp": 1}', "idempotency_key": "create-hero-1"},
        )
        assert status == 200, created
        journal = server.app[DATA].journal.journal
        before = EntryImage('{"hp":1}', {})
        # A crash right after journaling, before sending: the entry never changed.
        never_sent = journal.record_intent(
            actor_id="t",
            actor_name="crashed run",
            universe=1,
            datastore="players",
            scope="global",
            key="hero",
            operation="update",
            before=before,
            intended=EntryImage('{"hp":2}', {}),
            base_revision=created["revision"],
        )
        # A crash after sending: the write landed but its outcome was never recorded.
        client = server.upstream.client_for(1)
        landed_intent = journal.record_intent(
            actor_id="t",
            actor_name="crashed run",
            universe=1,
            datastore="players",
            scope="global",
            key="villain",
            operation="create",
            before=None,
            intended=EntryImage('{"hp":9}', {}),
        )
        await client.create_entry(1, "players", "villain", '{"hp":9}')

    async with running_server(tmp_path, data_key=key) as server:
        journal = server.app[DATA].journal.journal
        assert journal.get(never_sent.id).record.status is Status.FAILED
        landed = journal.get(landed_intent.id).record
        assert landed.status is Status.APPLIED
        assert landed.after_sha256 == EntryImage('{"hp":9}', {}).sha256
        assert journal.pending() == []


async def test_every_route_is_bound_through_the_route_table(tmp_path: Path) -> None:
    """Each served route is a view made by binding.view_for from its table entry (role checks,
    validation and responses alike); nothing is registered by hand, aliases included."""
    async with running_server(tmp_path) as server:
        bound: dict[str, set[tuple[str, str]]] = {}
        for route in server.app.router.routes():
            table_route = getattr(route.handler, "route", None)
            assert table_route is not None, f"{route.method} {route.resource} is bound by hand"
            assert isinstance(table_route, Route)
            assert route.resource is not None
            bound.setdefault(table_route.operation_id, set()).add(
                (route.method, route.resource.canonical)
            )
        for r in ROUTES:
            expected = {(r.method, path) for path in (r.full_path, *r.aliases)}
            if r.method == "GET":
                expected |= {("HEAD", path) for path in (r.full_path, *r.aliases)}
            assert bound.pop(r.operation_id) == expected, r.operation_id
        assert bound == {}
        assert {("GET", "/api/v1/hello"), ("HEAD", "/api/v1/hello"),
                               ("POST", "/api/v1/pair/start"), ("POST", "/api/v1/pair/complete")} == OPEN_ROUTES  # fmt: skip
