"""Thin views over the browse, entry and journal services (`/api/v1/universes/...`)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from shared_schema.journal import JournalPage

from ..services.browse import BrowseService
from ..services.entries import EntryRef, EntryService
from ..services.journal_view import journal_item
from ..services.ordered import is_ordered_operation
from .binding import Call, bind

BROWSE = web.AppKey("dsm.browse", BrowseService)
ENTRIES = web.AppKey("dsm.entries", EntryService)


def _ref(call: Call) -> EntryRef:
    return EntryRef(
        call.path["universe_id"], call.path["datastore"], call.query.scope, call.path["key"]
    )


async def list_universes(call: Call) -> BaseModel:
    return await call.request.app[BROWSE].universes()


async def list_datastores(call: Call) -> BaseModel:
    q = call.query
    return await call.request.app[BROWSE].datastores(
        call.path["universe_id"],
        prefix=q.prefix,
        cursor=q.cursor,
        limit=q.limit,
        show_deleted=q.show_deleted,
    )


async def delete_datastore(call: Call) -> BaseModel:
    return await call.request.app[BROWSE].delete_datastore(
        call.caller, call.path["universe_id"], call.path["datastore"]
    )


async def undelete_datastore(call: Call) -> BaseModel:
    return await call.request.app[BROWSE].undelete_datastore(
        call.caller, call.path["universe_id"], call.path["datastore"]
    )


async def list_keys(call: Call) -> BaseModel:
    q = call.query
    return await call.request.app[BROWSE].keys(
        call.path["universe_id"],
        call.path["datastore"],
        scope=q.scope,
        all_scopes=q.all_scopes,
        prefix=q.prefix,
        cursor=q.cursor,
        limit=q.limit,
        show_deleted=q.show_deleted,
    )


async def list_scopes(call: Call) -> BaseModel:
    return await call.request.app[BROWSE].scopes(call.path["universe_id"], call.path["datastore"])


async def get_entry(call: Call) -> BaseModel:
    return await call.request.app[ENTRIES].get(_ref(call))


async def create_entry(call: Call) -> BaseModel:
    b = call.body
    return await call.request.app[ENTRIES].create(
        call.caller,
        _ref(call),
        b.value_json,
        b.attributes or None,
        list(b.user_ids),
        b.idempotency_key,
    )


async def update_entry(call: Call) -> BaseModel:
    b = call.body
    return await call.request.app[ENTRIES].update(
        call.caller,
        _ref(call),
        b.value_json,
        b.expected_revision,
        b.attributes_for,
        b.user_ids_for,
        b.idempotency_key,
    )


async def delete_entry(call: Call) -> BaseModel:
    q = call.query
    return await call.request.app[ENTRIES].delete(
        call.caller, _ref(call), q.expected_revision, q.idempotency_key
    )


async def increment_entry(call: Call) -> BaseModel:
    return await call.request.app[ENTRIES].increment(
        call.caller, _ref(call), call.body.amount, call.body.idempotency_key
    )


async def list_revisions(call: Call) -> BaseModel:
    q = call.query
    return await call.request.app[ENTRIES].revisions(
        _ref(call), cursor=q.cursor, limit=q.limit, start=q.start, end=q.end
    )


async def get_revision(call: Call) -> BaseModel:
    return await call.request.app[ENTRIES].get_revision(_ref(call), call.path["revision"])


async def get_entry_at(call: Call) -> BaseModel:
    return await call.request.app[ENTRIES].get_at(_ref(call), call.query.time)


async def diff_entry(call: Call) -> BaseModel:
    q = call.query
    return await call.request.app[ENTRIES].diff(_ref(call), q.from_revision, q.to_revision)


async def revert_entry(call: Call) -> BaseModel:
    b = call.body
    return await call.request.app[ENTRIES].revert(
        call.caller, _ref(call), b.revision, b.expected_revision, b.idempotency_key
    )


async def list_journal(call: Call) -> BaseModel:
    q = call.query
    journal = call.request.app[ENTRIES].journal
    records = journal.list(
        universe=q.universe,
        datastore=q.datastore,
        key=q.key,
        limit=q.limit + 1,
        before_id=q.before,
    )
    page = records[: q.limit]
    return JournalPage(
        items=[journal_item(r) for r in page],
        next_before=page[-1].id if len(records) > q.limit and page else None,
    )


async def undo_journal(call: Call) -> BaseModel:
    from .routes_ordered import ORDERED

    entries = call.request.app[ENTRIES]
    journal_id = call.path["journal_id"]
    record = entries.journal_record(journal_id)
    if is_ordered_operation(record.operation):
        return await call.request.app[ORDERED].undo(
            call.caller, journal_id, call.body.idempotency_key
        )
    return await entries.undo(call.caller, journal_id, call.body.idempotency_key)


def setup(app: web.Application) -> None:
    bind(app, "list_universes", list_universes)
    bind(app, "list_datastores", list_datastores)
    bind(app, "delete_datastore", delete_datastore)
    bind(app, "undelete_datastore", undelete_datastore)
    bind(app, "list_keys", list_keys)
    bind(app, "list_scopes", list_scopes)
    bind(app, "get_entry", get_entry)
    bind(app, "create_entry", create_entry, large_body=True)
    bind(app, "update_entry", update_entry, large_body=True)
    bind(app, "delete_entry", delete_entry)
    bind(app, "increment_entry", increment_entry)
    bind(app, "list_revisions", list_revisions)
    bind(app, "get_revision", get_revision)
    bind(app, "get_entry_at", get_entry_at)
    bind(app, "diff_entry", diff_entry)
    bind(app, "revert_entry", revert_entry)
    bind(app, "list_journal", list_journal)
    bind(app, "undo_journal", undo_journal)
