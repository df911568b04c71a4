"""Idempotency: what a repeated write request gets instead of writing again."""

from __future__ import annotations

from shared_schema.errors import ErrorCode

from ..storage.journal import JournalRecord, Status, WriteJournal
from .errors import ServiceError


def previous_attempt(
    journal: WriteJournal,
    idempotency_key: str,
    *,
    universe: int,
    datastore: str,
    scope: str,
    key: str,
    operation: str,
) -> JournalRecord | None:
    """The applied write made earlier with this key, None if there was none.

    A key reused for a different write, or whose write failed or is unsettled, is refused
    with a message saying what to do: a retry must never apply a change twice.
    """
    record = journal.find_by_idempotency_key(idempotency_key)
    if record is None:
        return None
    same_write = (
        record.universe == str(universe)
        and record.datastore == datastore
        and record.scope == scope
        and record.key == key
        and record.operation == operation
    )
    if not same_write:
        raise ServiceError(
            ErrorCode.CONFLICT,
            f"The idempotency key {idempotency_key} was already used for another write "
            f"(journal item {record.id}); send this change with a new key.",
            details={"journal_id": record.id},
        )
    if record.status is Status.FAILED:
        raise ServiceError(
            ErrorCode.CONFLICT,
            f"The write with idempotency key {idempotency_key} already failed "
            f"({record.reason}); send the change again with a new key.",
            details={"journal_id": record.id},
        )
    if record.status in (Status.INTENT, Status.UNKNOWN):
        raise ServiceError(
            ErrorCode.WRITE_OUTCOME_UNKNOWN,
            f"The write with idempotency key {idempotency_key} was sent but its outcome is "
            "not known yet; re-read the entry before trying again.",
            details={"journal_id": record.id},
        )
    return record
