"""Ordered data store and memory store routes over real HTTP, against the embedded emulator."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import BaseModel

from dsm.emulator.context import EMULATOR, EmulatorContext
from dsm.http import routes_memory, routes_ordered
from dsm.http.appkeys import DATA, PRINCIPAL
from dsm.http.binding import bind_routes
from dsm.http.errors import error_middleware
from dsm.http.guards import Handler
from dsm.opencloud.client import OpenCloudClient
from dsm.services.dataplane import DataPlane
from dsm.services.errors import ServiceError
from dsm.services.events import EventBus
from dsm.services.jobs.budget import BudgetPolicy, CcuSettings
from dsm.services.memory import PEEK_INVISIBILITY_SECONDS
from dsm.services.tokens import Principal
from dsm.services.upstream import Upstream
from dsm.storage.cache import EntryCache
from dsm.storage.crypto import RecordCipher, new_key
from dsm.storage.journal import EntryImage, Status, WriteJournal, value_sha256
from shared_schema.common import Role, SourceKind
from shared_schema.entries import DeleteResult
from shared_schema.errors import ErrorCode, ErrorEnvelope
from shared_schema.events import EntryChangedPayload, EventBatch
from shared_schema.memory import QueuePeek, SortedMapItemView, SortedMapPage
from shared_schema.ordered import OrderedEntryView, OrderedPage

U = 1
BASE = f"/api/v1/universes/{U}"
LB = f"{BASE}/ordered/wins/scopes/global/entries"
PEOPLE = {
    "viewer": Principal("1" * 16, "vera", Role.VIEWER),
    "editor": Principal("2" * 16, "eddie", Role.EDITOR),
    "admin": Principal("3" * 16, "ada", Role.ADMIN),
}


@web.middleware
async def principal_from_role(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Stands in for auth_middleware: `Authorization: Bearer <role>` picks a fixed caller."""
    scheme, _, who = request.headers.get("Authorization", "").partition(" ")
    if scheme == "Bearer" and who in PEOPLE:
        request[PRINCIPAL] = PEOPLE[who]
    return await handler(request)


@dataclass
class Server:
    base_url: str
    http: aiohttp.ClientSession
    app: web.Application
    upstream: Upstream
    journal: WriteJournal
    bus: EventBus

    @property
    def client(self) -> OpenCloudClient:
        return self.upstream.client_for(U)

    @property
    def emulator(self) -> EmulatorContext:
        assert self.upstream.emulator is not None
        return self.upstream.emulator.runner.app[EMULATOR]

    async def call(
        self,
        method: str,
        path: str,
        *,
        who: str | None = "editor",
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {who}"} if who else {}
        async with self.http.request(
            method, self.base_url + path, json=body, params=params, headers=headers
        ) as resp:
            return resp.status, await resp.json()

    def events(self) -> list[EntryChangedPayload]:
        answer = self.bus.check(0)
        assert isinstance(answer, EventBatch)
        return [parse(EntryChangedPayload, e.payload) for e in answer.events]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    upstream = await Upstream.start(
        keys=[],
        base_url="",
        emulator_dir=tmp_path / "emu",
        emulator_universes=[U],
        emulator_limits="off",
        reserve_share=0.0,
    )
    cipher = RecordCipher(new_key())
    journal = WriteJournal(tmp_path / "journal", cipher)
    cache = EntryCache(tmp_path / "cache", cipher)
    bus = EventBus(256)
    plane = DataPlane.build(upstream, cache, journal, bus, BudgetPolicy(CcuSettings(tmp_path)))
    app = web.Application(middlewares=[error_middleware, principal_from_role])
    app[DATA] = plane
    bind_routes(app, {**routes_ordered.HANDLERS, **routes_memory.HANDLERS})
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        async with aiohttp.ClientSession() as http:
            yield Server(f"http://127.0.0.1:{port}", http, app, upstream, journal, bus)
    finally:
        await runner.cleanup()
        await upstream.close()
        journal.close()
        cache.close()


def parse[M: BaseModel](model: type[M], body: Any) -> M:
    """Read a response as the plugin does: from JSON text, with the model's strict rules."""
    return model.model_validate_json(json.dumps(body))


def error_of(status: int, body: Any, expected_status: int, code: ErrorCode) -> str:
    assert status == expected_status, body
    envelope = ErrorEnvelope.model_validate(body)
    assert envelope.error.code is code, body
    return envelope.error.message


def create_body(entry_id: str, value: Any, key: str) -> dict[str, Any]:
    return {"id": entry_id, "value": value, "idempotency_key": key}


# ------------------------------------------------------------------------ ordered: reads


async def test_list_orders_filters_and_pages(server: Server) -> None:
    for name, value in [("a", 5), ("b", 50), ("c", 20), ("d", 35), ("e", 1)]:
        status, _ = await server.call("POST", LB, body=create_body(name, value, f"seed-{name}-01"))
        assert status == 200

    status, body = await server.call("GET", LB, who="viewer")
    assert status == 200
    page = parse(OrderedPage, body)
    assert [(e.id, e.value) for e in page.items] == [
        ("e", 1), ("a", 5), ("c", 20), ("d", 35), ("b", 50)
    ]  # fmt: skip
    assert page.next_cursor is None
    assert page.source.kind is SourceKind.EMULATOR

    status, body = await server.call(
        "GET", LB, who="viewer", params={"descending": "true", "limit": "2"}
    )
    first = parse(OrderedPage, body)
    assert [e.id for e in first.items] == ["b", "d"] and first.next_cursor
    status, body = await server.call(
        "GET",
        LB,
        who="viewer",
        params={"descending": "true", "limit": "2", "cursor": first.next_cursor},
    )
    assert [e.id for e in parse(OrderedPage, body).items] == ["c", "a"]

    status, body = await server.call("GET", LB, who="viewer", params={"min": "5", "max": "35"})
    assert [e.value for e in parse(OrderedPage, body).items] == [5, 20, 35]
    status, body = await server.call("GET", LB, who="viewer", params={"min": "21"})
    assert [e.value for e in parse(OrderedPage, body).items] == [35, 50]


async def test_list_of_an_unknown_store_is_empty_not_an_error(server: Server) -> None:
    status, body = await server.call(
        "GET", f"{BASE}/ordered/nothing/scopes/s/entries", who="viewer"
    )
    assert status == 200
    assert parse(OrderedPage, body).items == []


async def test_list_validation(server: Server) -> None:
    status, body = await server.call("GET", LB, who="viewer", params={"min": "10", "max": "2"})
    assert "greater than max" in error_of(status, body, 400, ErrorCode.BAD_REQUEST)
    status, body = await server.call("GET", LB, who="viewer", params={"limit": "0"})
    assert "limit" in error_of(status, body, 400, ErrorCode.BAD_REQUEST)
    status, body = await server.call("GET", LB, who="viewer", params={"limit": "101"})
    error_of(status, body, 400, ErrorCode.BAD_REQUEST)
    status, body = await server.call("GET", LB, who="viewer", params={"sort": "value"})
    assert "sort" in error_of(status, body, 400, ErrorCode.BAD_REQUEST)
    status, body = await server.call("GET", f"{BASE}/ordered/{'x' * 51}/scopes/s/entries")
    assert "50 bytes" in error_of(status, body, 400, ErrorCode.BAD_REQUEST)
    status, body = await server.call("GET", f"{BASE}/ordered/wins/scopes/global/entries/x")
    # No route reads one ordered entry: the path takes PUT and DELETE only (405 since issue 8).
    error_of(status, body, 405, ErrorCode.METHOD_NOT_ALLOWED)


# ----------------------------------------------------------------------- ordered: writes


async def test_create_is_journaled_and_published(server: Server) -> None:
    status, body = await server.call("POST", LB, body=create_body("alice", 10, "create-alice"))
    assert status == 200, body
    view = parse(OrderedEntryView, body)
    assert (view.universe_id, view.ordered_store, view.scope, view.id, view.value) == (
        U, "wins", "global", "alice", 10
    )  # fmt: skip
    assert view.source.kind is SourceKind.EMULATOR

    detail = server.journal.get(view.journal_id)
    record = detail.record
    assert (record.universe, record.datastore, record.scope, record.key) == (
        "1", "wins", "global", "alice"
    )  # fmt: skip
    assert (record.operation, record.store_kind) == ("create", "ordered")
    assert record.status is Status.APPLIED
    assert record.actor_name == "eddie"
    assert detail.before is None and not record.before_exists
    assert detail.after == EntryImage("10")
    assert record.intended_sha256 == value_sha256("10")
    assert record.after_revision is None  # ordered entries have no revisions

    [event] = server.events()
    assert event.store_kind.value == "ordered"
    assert (event.datastore, event.scope, event.key) == ("wins", "global", "alice")
    assert event.operation.value == "create" and event.state.value == "ACTIVE"
    assert event.journal_id == view.journal_id and event.actor == "eddie"

    assert (await server.client.ordered_get(U, "wins", "alice")).value == 10


async def test_create_existing_entry_is_refused_without_writing(server: Server) -> None:
    await server.client.ordered_create(U, "wins", "alice", 7)
    status, body = await server.call("POST", LB, body=create_body("alice", 10, "create-again"))
    assert "already exists (value 7)" in error_of(status, body, 409, ErrorCode.ALREADY_EXISTS)
    assert body["error"]["details"]["current"] == {"id": "alice", "value": 7}
    assert server.journal.list() == []
    assert (await server.client.ordered_get(U, "wins", "alice")).value == 7


async def test_update_increment_delete_keep_before_images(server: Server) -> None:
    await server.client.ordered_create(U, "wins", "bob", 10)

    status, body = await server.call(
        "PUT", f"{LB}/bob", body={"value": 25, "idempotency_key": "update-bob-1"}
    )
    assert status == 200
    updated = parse(OrderedEntryView, body)
    assert updated.value == 25
    detail = server.journal.get(updated.journal_id)
    assert (detail.record.operation, detail.record.store_kind) == ("update", "ordered")
    assert (detail.before, detail.after) == (EntryImage("10"), EntryImage("25"))

    status, body = await server.call(
        "POST", f"{LB}/bob/increment", body={"amount": -5, "idempotency_key": "incr-bob-01"}
    )
    assert status == 200
    incremented = parse(OrderedEntryView, body)
    assert incremented.value == 20
    detail = server.journal.get(incremented.journal_id)
    assert (detail.record.operation, detail.record.store_kind) == ("increment", "ordered")
    assert (detail.before, detail.after) == (EntryImage("25"), EntryImage("20"))

    status, body = await server.call(
        "DELETE", f"{LB}/bob", params={"idempotency_key": "delete-bob-1"}
    )
    assert status == 200
    deleted = parse(DeleteResult, body)
    detail = server.journal.get(deleted.journal_id)
    assert (detail.record.operation, detail.record.store_kind) == ("delete", "ordered")
    assert detail.before == EntryImage("20") and detail.after is None
    assert detail.record.after_exists is False

    status, body = await server.call("GET", LB, who="viewer")
    assert parse(OrderedPage, body).items == []
    assert [(e.operation.value, e.state.value) for e in server.events()] == [
        ("update", "ACTIVE"), ("increment", "ACTIVE"), ("delete", "DELETED")
    ]  # fmt: skip


async def test_missing_entries(server: Server) -> None:
    status, body = await server.call(
        "PUT", f"{LB}/ghost", body={"value": 3, "idempotency_key": "update-ghost"}
    )
    assert "allow_missing" in error_of(status, body, 404, ErrorCode.NOT_FOUND)
    status, body = await server.call(
        "DELETE", f"{LB}/ghost", params={"idempotency_key": "delete-ghost"}
    )
    assert "does not exist" in error_of(status, body, 404, ErrorCode.NOT_FOUND)
    assert server.journal.list() == []  # nothing was sent, so nothing was journaled

    status, body = await server.call(
        "PUT",
        f"{LB}/ghost",
        body={"value": 3, "allow_missing": True, "idempotency_key": "upsert-ghost"},
    )
    assert status == 200
    view = parse(OrderedEntryView, body)
    assert view.value == 3
    assert server.journal.get(view.journal_id).before is None

    # Increments create a missing entry, as Open Cloud does; the journal says it was absent.
    status, body = await server.call(
        "POST", f"{LB}/newbie/increment", body={"amount": 4, "idempotency_key": "incr-newbie"}
    )
    view = parse(OrderedEntryView, body)
    assert view.value == 4
    assert server.journal.get(view.journal_id).record.before_exists is False


async def test_idempotent_replay_never_writes_twice(server: Server) -> None:
    body = {"amount": 5, "idempotency_key": "incr-replay-1"}
    status, first = await server.call("POST", f"{LB}/carol/increment", body=body)
    assert status == 200
    status, second = await server.call("POST", f"{LB}/carol/increment", body=body)
    assert status == 200
    assert second["journal_id"] == first["journal_id"]
    assert second["value"] == 5  # not 10: the retry reported the first outcome
    assert len(server.journal.list()) == 1
    assert len(server.events()) == 1

    created = create_body("dave", 1, "create-dave-1")
    _, a = await server.call("POST", LB, body=created)
    _, b = await server.call("POST", LB, body=created)
    assert a["journal_id"] == b["journal_id"]

    delete = {"idempotency_key": "delete-dave-1"}
    _, a = await server.call("DELETE", f"{LB}/dave", params=delete)
    status, b = await server.call("DELETE", f"{LB}/dave", params=delete)
    assert status == 200 and a["journal_id"] == b["journal_id"]

    # The same key for another entry or operation is refused, not replayed.
    status, body = await server.call(
        "POST", f"{LB}/erin/increment", body={"amount": 1, "idempotency_key": "incr-replay-1"}
    )
    assert "already used" in error_of(status, body, 409, ErrorCode.CONFLICT)
    status, body = await server.call(
        "PUT", f"{LB}/carol", body={"value": 9, "idempotency_key": "incr-replay-1"}
    )
    error_of(status, body, 409, ErrorCode.CONFLICT)
    assert (await server.client.ordered_get(U, "wins", "carol")).value == 5


async def test_a_lost_increment_answer_is_unknown_and_never_repeated(server: Server) -> None:
    await server.client.ordered_create(U, "wins", "frank", 1)
    server.emulator.faults.update({"lost_response_rate": 1.0})
    body = {"amount": 10, "idempotency_key": "incr-lost-01"}
    status, answer = await server.call("POST", f"{LB}/frank/increment", body=body)
    error_of(status, answer, 502, ErrorCode.WRITE_OUTCOME_UNKNOWN)
    server.emulator.faults.update({"lost_response_rate": 0.0})
    [record] = server.journal.list()
    assert record.status is Status.UNKNOWN and (record.operation, record.store_kind) == (
        "increment",
        "ordered",
    )

    status, answer = await server.call("POST", f"{LB}/frank/increment", body=body)
    assert "not known yet" in error_of(status, answer, 502, ErrorCode.WRITE_OUTCOME_UNKNOWN)
    # The emulator applied it once; the retry did not apply it again.
    assert (await server.client.ordered_get(U, "wins", "frank")).value == 11


async def test_a_lost_update_answer_is_settled_by_rereading(server: Server) -> None:
    await server.client.ordered_create(U, "wins", "gina", 1)
    server.emulator.faults.update({"lost_response_rate": 1.0})
    status, body = await server.call(
        "PUT", f"{LB}/gina", body={"value": 2, "idempotency_key": "update-lost-1"}
    )
    server.emulator.faults.update({"lost_response_rate": 0.0})
    assert status == 200 and body["value"] == 2
    assert server.journal.get(body["journal_id"]).record.status is Status.APPLIED


async def test_a_refused_write_is_journaled_failed(server: Server) -> None:
    # Fail the write but not the re-read before it: each request draws once from the rng.
    seed = next(
        s for s in range(10_000) if (r := random.Random(s)).random() >= 0.5 and r.random() < 0.5
    )
    server.emulator.rng = random.Random(seed)
    server.emulator.faults.update({"error_rate": 0.5, "error_statuses": [403]})
    body = create_body("hank", 3, "create-hank-1")
    status, answer = await server.call("POST", LB, body=body)
    server.emulator.faults.update({"error_rate": 0.0})
    error_of(status, answer, 403, ErrorCode.UPSTREAM_PERMISSION)
    [record] = server.journal.list()
    assert record.status is Status.FAILED and record.reason

    status, answer = await server.call("POST", LB, body=body)
    assert "already failed" in error_of(status, answer, 409, ErrorCode.CONFLICT)
    status, answer = await server.call("POST", LB, body=create_body("hank", 3, "create-hank-2"))
    assert status == 200


async def test_roles(server: Server) -> None:
    await server.client.ordered_create(U, "wins", "ivy", 1)
    writes: list[tuple[str, str, Any, dict[str, str] | None]] = [
        ("POST", LB, create_body("x", 1, "viewer-create"), None),
        ("PUT", f"{LB}/ivy", {"value": 2, "idempotency_key": "viewer-update"}, None),
        ("POST", f"{LB}/ivy/increment", {"amount": 2, "idempotency_key": "viewer-incr"}, None),
        ("DELETE", f"{LB}/ivy", None, {"idempotency_key": "viewer-delete"}),
        ("GET", f"{BASE}/memory/queues/jobs/peek", None, None),
    ]
    for method, path, body, params in writes:
        status, answer = await server.call(method, path, who="viewer", body=body, params=params)
        message = error_of(status, answer, 403, ErrorCode.FORBIDDEN)
        assert "editor role" in message and "vera" in message
    assert server.journal.list() == []
    assert (await server.client.ordered_get(U, "wins", "ivy")).value == 1

    status, answer = await server.call("GET", LB, who=None)
    error_of(status, answer, 401, ErrorCode.UNAUTHENTICATED)
    status, _ = await server.call("GET", LB, who="admin")
    assert status == 200


async def test_write_validation(server: Server) -> None:
    bad_bodies: list[tuple[str, str, Any, str]] = [
        ("POST", LB, create_body("a", 1.5, "frac-value-1"), "value"),
        ("POST", LB, create_body("a", "5", "string-value"), "value"),
        ("POST", LB, create_body("a", 2**53, "too-big-val"), "value"),
        ("POST", LB, create_body("", 1, "empty-id-01"), "id"),
        ("POST", LB, create_body("x" * 64, 1, "long-id-001"), "id"),
        ("POST", LB, create_body("a", 1, "short"), "idempotency_key"),
        ("POST", LB, create_body("a", 1, "bad key!!"), "idempotency_key"),
        ("POST", LB, {"id": "a", "value": 1}, "idempotency_key"),
        ("POST", LB, {**create_body("a", 1, "extra-field"), "ttl": 5}, "ttl"),
        ("PUT", f"{LB}/a", {"value": True, "idempotency_key": "bool-value-1"}, "value"),
        ("POST", f"{LB}/a/increment", {"amount": 0.5, "idempotency_key": "frac-amount"}, "amount"),
    ]
    for method, path, body, field in bad_bodies:
        status, answer = await server.call(method, path, body=body)
        message = error_of(status, answer, 400, ErrorCode.BAD_REQUEST)
        assert field in message, (body, message)
    status, answer = await server.call("DELETE", f"{LB}/a")
    assert "idempotency_key" in error_of(status, answer, 400, ErrorCode.BAD_REQUEST)
    async with server.http.post(
        server.base_url + LB, data=b"{not json", headers={"Authorization": "Bearer editor"}
    ) as resp:
        error_of(resp.status, await resp.json(), 400, ErrorCode.BAD_REQUEST)
    assert server.journal.list() == []


# -------------------------------------------------------------------------- ordered: undo


async def test_undo_restores_value_conditionally(server: Server) -> None:
    service = server.app[DATA].journal
    editor = PEOPLE["editor"]
    await server.client.ordered_create(U, "wins", "jo", 10)
    _, body = await server.call(
        "PUT", f"{LB}/jo", body={"value": 99, "idempotency_key": "jo-up-01"}
    )
    undone = await service.undo(editor, body["journal_id"], "jo-undo-01")
    assert isinstance(undone, OrderedEntryView) and undone.value == 10
    assert server.journal.get(undone.journal_id).record.undoes == body["journal_id"]
    assert server.events()[-1].operation.value == "undo"

    replayed = await service.undo(editor, body["journal_id"], "jo-undo-01")
    assert isinstance(replayed, OrderedEntryView) and replayed.journal_id == undone.journal_id
    with pytest.raises(ServiceError) as again:
        await service.undo(editor, body["journal_id"], "jo-undo-02")
    assert again.value.code is ErrorCode.BAD_REQUEST and "already undone" in again.value.message

    # A create is undone by deleting; a delete by creating again.
    _, created = await server.call("POST", LB, body=create_body("kim", 4, "kim-create"))
    gone = await service.undo(editor, created["journal_id"], "kim-undo-01")
    assert isinstance(gone, DeleteResult)
    _, deleted = await server.call("DELETE", f"{LB}/jo", params={"idempotency_key": "jo-del-01"})
    back = await service.undo(editor, deleted["journal_id"], "jo-undo-03")
    assert isinstance(back, OrderedEntryView) and back.value == 10

    # Someone wrote after us: the undo is refused and the entry left alone.
    _, upd = await server.call("PUT", f"{LB}/jo", body={"value": 50, "idempotency_key": "jo-up-02"})
    await server.client.ordered_increment(U, "wins", "jo", 1)
    with pytest.raises(ServiceError) as changed:
        await service.undo(editor, upd["journal_id"], "jo-undo-04")
    assert changed.value.code is ErrorCode.CONFLICT
    assert changed.value.details == {
        "journal_id": upd["journal_id"],
        "current": {"id": "jo", "value": 51},
    }
    assert (await server.client.ordered_get(U, "wins", "jo")).value == 51


async def test_undo_refuses_standard_records(server: Server) -> None:
    record = server.journal.record_intent(
        actor_id="x",
        actor_name="x",
        universe=U,
        datastore="Players",
        scope="global",
        key="k",
        operation="create",
        before=None,
    )
    server.journal.mark_applied(record.id, EntryImage("1"), "rev1")
    with pytest.raises(ServiceError) as refused:
        await server.app[DATA].ordered.undo(
            PEOPLE["editor"], server.journal.undo_plan(record.id), "std-undo-01"
        )
    assert refused.value.code is ErrorCode.BAD_REQUEST and "standard" in refused.value.message


# --------------------------------------------------------------------------- sorted maps


async def test_sorted_map_list_and_get(server: Server) -> None:
    client = server.client
    await client.sorted_map_create(U, "lobby", "a", '{"n": 1}', sort_key="zeta")
    await client.sorted_map_create(U, "lobby", "b", "[1,2]", sort_key=7)
    await client.sorted_map_create(U, "lobby", "c", '"text"')
    maps = f"{BASE}/memory/sorted-maps/lobby/items"

    # Numeric sort keys first, then string sort keys, then items without one (Roblox's order).
    status, body = await server.call("GET", maps, who="viewer", params={"limit": "2"})
    assert status == 200
    page = parse(SortedMapPage, body)
    assert [(i.id, i.sort_key) for i in page.items] == [("b", 7), ("a", "zeta")]
    assert page.next_cursor
    assert page.items[1].value_json == '{"n":1}'  # as the emulator stored it (compact)
    assert page.source.kind is SourceKind.EMULATOR
    status, body = await server.call(
        "GET", maps, who="viewer", params={"limit": "2", "cursor": page.next_cursor}
    )
    rest = parse(SortedMapPage, body)
    assert [(i.id, i.sort_key) for i in rest.items] == [("c", None)]
    assert rest.next_cursor is None

    status, body = await server.call("GET", maps, who="viewer", params={"descending": "true"})
    assert [i.id for i in parse(SortedMapPage, body).items] == ["c", "a", "b"]

    status, body = await server.call("GET", f"{maps}/b", who="viewer")
    assert status == 200
    item = parse(SortedMapItemView, body)
    assert (item.sorted_map, item.id, item.value_json, item.sort_key) == ("lobby", "b", "[1,2]", 7)
    current = await client.sorted_map_get(U, "lobby", "b")
    assert item.etag == current.etag and item.expires_at == current.expire_time

    status, body = await server.call("GET", f"{maps}/nope", who="viewer")
    error_of(status, body, 404, ErrorCode.NOT_FOUND)
    status, body = await server.call("GET", maps, who="viewer", params={"limit": "500"})
    error_of(status, body, 400, ErrorCode.BAD_REQUEST)


# -------------------------------------------------------------------------------- queues


async def test_queue_peek_hides_items_briefly_and_discards_nothing(server: Server) -> None:
    client = server.client
    await client.queue_add(U, "jobs", '{"job": 1}', priority=5)
    await client.queue_add(U, "jobs", '{"job": 2}', priority=3)
    await client.queue_add(U, "jobs", '{"job": 3}', priority=1)
    peek = f"{BASE}/memory/queues/jobs/peek"

    status, body = await server.call("GET", peek, params={"count": "2"})
    assert status == 200
    first = parse(QueuePeek, body)
    assert first.queue == "jobs"
    assert [i.value_json for i in first.items] == ['{"job":1}', '{"job":2}']
    assert [i.priority for i in first.items] == [5, 3]
    assert first.invisibility_seconds == PEEK_INVISIBILITY_SECONDS == 1
    assert "hid the 2 items" in first.notice and "game servers" in first.notice
    assert "Nothing was removed" in first.notice
    assert first.read_id and first.source.kind is SourceKind.EMULATOR

    # While hidden, readers (game servers included) get the items behind them.
    status, body = await server.call("GET", peek, params={"count": "10"})
    second = parse(QueuePeek, body)
    assert [i.priority for i in second.items] == [1]

    await asyncio.sleep(PEEK_INVISIBILITY_SECONDS + 0.3)
    status, body = await server.call("GET", peek, params={"count": "10"})
    third = parse(QueuePeek, body)
    assert [i.priority for i in third.items] == [5, 3, 1]  # nothing was discarded


async def test_queue_peek_of_an_empty_queue_says_nothing_was_hidden(server: Server) -> None:
    status, body = await server.call("GET", f"{BASE}/memory/queues/empty/peek")
    assert status == 200
    peek = parse(QueuePeek, body)
    assert peek.items == [] and "Nothing was hidden or removed" in peek.notice


async def test_queue_peek_validation(server: Server) -> None:
    peek = f"{BASE}/memory/queues/jobs/peek"
    for count in ("0", "201", "many"):
        status, body = await server.call("GET", peek, params={"count": count})
        assert "count" in error_of(status, body, 400, ErrorCode.BAD_REQUEST)
