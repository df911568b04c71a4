"""Thin views over the browse, entry and journal services (`/api/v1/universes/...`)."""

from __future__ import annotations

from pydantic import BaseModel

from ..services.entries import EntryRef
from .appkeys import DATA
from .binding import Call, Handler


def _ref(call: Call) -> EntryRef:
    return EntryRef(
        call.path["universe_id"], call.path["datastore"], call.query.scope, call.path["key"]
    )


async def list_universes(call: Call) -> BaseModel:
    return await call.app[DATA].browse.universes()


async def list_datastores(call: Call) -> BaseModel:
    q = call.query
    return await call.app[DATA].browse.datastores(
        call.path["universe_id"],
        prefix=q.prefix,
        cursor=q.cursor,
        limit=q.limit,
        show_deleted=q.show_deleted,
    )


async def delete_datastore(call: Call) -> BaseModel:
    return await call.app[DATA].browse.delete_datastore(
        call.caller, call.path["universe_id"], call.path["datastore"]
    )


async def undelete_datastore(call: Call) -> BaseModel:
    return await call.app[DATA].browse.undelete_datastore(
        call.caller, call.path["universe_id"], call.path["datastore"]
    )


async def list_keys(call: Call) -> BaseModel:
    q = call.query
    return await call.app[DATA].browse.keys(
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
    return await call.app[DATA].browse.scopes(call.path["universe_id"], call.path["datastore"])


async def get_entry(call: Call) -> BaseModel:
    return await call.app[DATA].entries.get(_ref(call))


async def create_entry(call: Call) -> BaseModel:
    b = call.body
    return await call.app[DATA].entries.create(
        call.caller,
        _ref(call),
        b.value_json,
        b.attributes or None,
        list(b.user_ids),
        b.idempotency_key,
    )


async def update_entry(call: Call) -> BaseModel:
    b = call.body
    return await call.app[DATA].entries.update(
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
    return await call.app[DATA].entries.delete(
        call.caller, _ref(call), q.expected_revision, q.idempotency_key
    )


async def increment_entry(call: Call) -> BaseModel:
    return await call.app[DATA].entries.increment(
        call.caller, _ref(call), call.body.amount, call.body.idempotency_key
    )


async def list_revisions(call: Call) -> BaseModel:
    q = call.query
    return await call.app[DATA].entries.revisions(
        _ref(call), cursor=q.cursor, limit=q.limit, start=q.start, end=q.end
    )


async def get_revision(call: Call) -> BaseModel:
    return await call.app[DATA].entries.get_revision(_ref(call), call.path["revision"])


async def get_entry_at(call: Call) -> BaseModel:
    return await call.app[DATA].entries.get_at(_ref(call), call.query.time)


async def diff_entry(call: Call) -> BaseModel:
    q = call.query
    return await call.app[DATA].entries.diff(_ref(call), q.from_revision, q.to_revision)


async def revert_entry(call: Call) -> BaseModel:
    b = call.body
    return await call.app[DATA].entries.revert(
        call.caller, _ref(call), b.revision, b.expected_revision, b.idempotency_key
    )


async def list_journal(call: Call) -> BaseModel:
    q = call.query
    return call.app[DATA].journal.page(
        universe=q.universe, datastore=q.datastore, key=q.key, limit=q.limit, before=q.before
    )


async def undo_journal(call: Call) -> BaseModel:
    return await call.app[DATA].journal.undo(
        call.caller, call.path["journal_id"], call.body.idempotency_key
    )


HANDLERS: dict[str, Handler] = {
    "list_universes": list_universes,
    "list_datastores": list_datastores,
    "delete_datastore": delete_datastore,
    "undelete_datastore": undelete_datastore,
    "list_keys": list_keys,
    "list_scopes": list_scopes,
    "get_entry": get_entry,
    "create_entry": create_entry,
    "update_entry": update_entry,
    "delete_entry": delete_entry,
    "increment_entry": increment_entry,
    "list_revisions": list_revisions,
    "get_revision": get_revision,
    "get_entry_at": get_entry_at,
    "diff_entry": diff_entry,
    "revert_entry": revert_entry,
    "list_journal": list_journal,
    "undo_journal": undo_journal,
}
