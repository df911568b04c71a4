"""The one journaled write path: every write to a data store goes through `JournaledWrites`.

One write (an edit from the plugin, an undo, or one item of a bulk job) is:

1. `previous()`: a retry with the same idempotency key reports the first outcome instead of
   writing again (a key reused for another write, or whose write failed or is unsettled, is
   refused with a typed error);
2. the caller reads the key fresh from Open Cloud and checks its preconditions (the revision
   the user saw, "must not exist", ...), building an `Intent`;
3. `run()` journals the intent durably *before* anything is sent: store kind, operation, the
   sealed before-image, the content hash of what the write should leave, an increment's delta;
4. `run()` sends the caller's write, which must be conditional (etag, create-only, or a
   compare-then-write where Open Cloud has no conditions) and may verify itself (a delete reads
   back the version it replaced);
5. the outcome is journaled: APPLIED with the after-image, FAILED when Open Cloud refused it or
   the write was taken back, UNKNOWN when the answer was lost (settled later by re-reading,
   never by sending again);
6. the cached copy is forgotten and one typed `entry.changed` event is published.

Two concurrent requests with one idempotency key: the second is answered 409 CONFLICT naming
the first's journal item.

Writes made inside `for_job(job_id)` (a bulk job's items, through any service) are journaled
with that job's id, so a rollback finds every write of the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel

from shared_schema.entries import EntryOperation, EntryState, StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.events import EntryChangedPayload, EventType
from shared_schema.identity import Person, make_person

from ..opencloud import errors as oc
from ..opencloud.client import OpenCloudClient
from ..storage.cache import EntryCache
from ..storage.journal import (
    EntryImage,
    IdempotencyConflict,
    JournalRecord,
    Status,
    UndoPlan,
    WriteJournal,
)
from .errors import ServiceError
from .provenance import upstream_error
from .upstream import Upstream

log = logging.getLogger("dsm.journaled")

_JOB: ContextVar[str | None] = ContextVar("dsm_journal_job", default=None)


@contextlib.contextmanager
def for_job(job_id: str) -> Iterator[None]:
    """Writes made inside (and in tasks started inside) are journaled as this job's."""
    token = _JOB.set(job_id)
    try:
        yield
    finally:
        _JOB.reset(token)


class Publisher(Protocol):
    def publish(self, type: EventType, payload: BaseModel) -> object: ...


class Actor(Protocol):
    """Who a write is made for: the paired token (a job passes its owner's). A Principal also
    carries the Studio user its plugin announced; `studio_identity` reads it where present."""

    @property
    def token_id(self) -> str: ...

    @property
    def name(self) -> str: ...


def studio_identity(actor: Actor) -> tuple[int | None, str | None]:
    """The Studio user id and name behind `actor`; (None, None) when it carries none (a job's
    stored owner from before identities, a script's token): the journal then says unknown."""
    user_id = getattr(actor, "studio_user_id", None)
    name = getattr(actor, "studio_user_name", None)
    return (
        user_id if isinstance(user_id, int) else None,
        name if isinstance(name, str) and user_id else None,
    )


def person_of_record(record: JournalRecord) -> Person:
    return make_person(record.actor_user_id, record.actor_user_name, record.actor_name)


# Called with every write once its outcome is journaled (APPLIED or FAILED) and `entry.changed`
# is out: team sync appends it to the shared audit log and the change feed from here.
SettledObserver = Callable[[JournalRecord, "Outcome"], None]
# Called before a write is journaled; raises ServiceError to refuse it (team roles use it).
WriteGuard = Callable[[Actor, "WriteTarget"], None]


@dataclass(frozen=True)
class WriteTarget:
    """The key one write touches; `store` is a data store or an ordered data store name."""

    kind: StoreKind
    universe_id: int
    store: str
    scope: str
    key: str

    @property
    def subject(self) -> str:
        if self.kind is StoreKind.ORDERED:
            return f"Entry {self.key!r} of ordered data store {self.store!r} (scope {self.scope!r})"
        return f"{self.store}/{self.scope}/{self.key}"


@dataclass(frozen=True)
class Intent:
    """What is about to be written, journaled before it is sent."""

    operation: EntryOperation
    before: EntryImage | None  # the key as just read; None: it did not exist
    base_revision: str | None = None  # the revision the write is conditional on
    intended: EntryImage | None = None  # what the write should leave, when known in advance
    delta: int | None = None  # an increment's amount
    undoes: int | None = None  # the journal item an undo reverses


@dataclass(frozen=True)
class Outcome:
    """What a sent write left. `refused` set: the write was taken back (journaled FAILED)."""

    after: EntryImage | None  # None: the key does not exist now
    revision: str | None = None
    refused: str | None = None


@dataclass
class JournaledWrites:
    upstream: Upstream
    journal: WriteJournal
    cache: EntryCache
    events: Publisher
    observers: list[SettledObserver] = field(default_factory=list)
    guards: list[WriteGuard] = field(default_factory=list)

    def previous(
        self, target: WriteTarget, operation: EntryOperation, idempotency_key: str
    ) -> JournalRecord | None:
        """The applied write made earlier with this key, None if there was none."""
        record = self.journal.find_by_idempotency_key(idempotency_key)
        if record is None:
            return None
        same_write = (
            record.store_kind == target.kind.value
            and record.universe == str(target.universe_id)
            and record.datastore == target.store
            and record.scope == target.scope
            and record.key == target.key
            and record.operation == operation.value
        )
        if not same_write:
            raise _key_reused(idempotency_key, record)
        return settled(record, idempotency_key)

    async def run[T](
        self,
        actor: Actor,
        target: WriteTarget,
        intent: Intent,
        idempotency_key: str | None,
        send: Callable[[OpenCloudClient], Awaitable[T]],
        outcome: Callable[[T], Outcome],
        *,
        job_id: str | None = None,
    ) -> tuple[JournalRecord, T]:
        """Journal `intent`, `send` the write, journal its outcome, publish `entry.changed`.

        Raises the typed error for a refused or lost write (after journaling it), and CONFLICT
        for an idempotency key another request is using.
        """
        for guard in self.guards:
            guard(actor, target)
        client = self.upstream.client_for(target.universe_id)
        backend = self.upstream.binding(target.universe_id).backend
        job_id = job_id if job_id is not None else _JOB.get()
        record = self._record_intent(actor, target, intent, idempotency_key, job_id)
        try:
            result = await send(client)
        except (oc.WriteOutcomeUnknown, oc.NetworkError, oc.ServerError) as exc:
            # The client settles lost answers by re-reading; reaching here means it could not,
            # so the outcome is unknown rather than failed, and the cached copy may be stale.
            self.journal.mark_unknown(record.id, str(exc))
            self.forget(target)
            raise upstream_error(exc, backend) from exc
        except oc.OpenCloudError as exc:
            self.journal.mark_failed(record.id, str(exc))
            raise upstream_error(exc, backend) from exc
        except (Exception, asyncio.CancelledError) as exc:
            self.journal.mark_unknown(record.id, f"interrupted: {type(exc).__name__}")
            self.forget(target)
            raise
        self.settle(record, outcome(result), actor_name=actor.name, undoes=intent.undoes)
        return record, result

    def settle(
        self,
        record: JournalRecord,
        outcome: Outcome,
        *,
        actor_name: str | None = None,
        undoes: int | None = None,
    ) -> JournalRecord:
        """Journal a write's outcome (sent just now, or found by re-reading) and publish it."""
        if outcome.refused is not None:
            done = self.journal.mark_failed(record.id, outcome.refused)
        else:
            done = self.journal.mark_applied(record.id, outcome.after, outcome.revision)
        target = target_of(record)
        self.forget(target)
        operation = EntryOperation.UNDO if undoes is not None else EntryOperation(record.operation)
        self._publish(self._changed(record, target, operation, outcome, actor_name))
        self._observe(done, outcome)
        return done

    def _changed(
        self,
        record: JournalRecord,
        target: WriteTarget,
        operation: EntryOperation,
        outcome: Outcome,
        actor_name: str | None,
    ) -> EntryChangedPayload:
        return EntryChangedPayload(
            universe_id=target.universe_id,
            store_kind=target.kind,
            datastore=target.store,
            scope=target.scope,
            key=target.key,
            operation=operation,
            state=EntryState.DELETED if outcome.after is None else EntryState.ACTIVE,
            revision=outcome.revision,
            actor=actor_name if actor_name is not None else record.actor_name,
            journal_id=record.id,
            person=person_of_record(record),
        )

    def _observe(self, record: JournalRecord, outcome: Outcome) -> None:
        # The write is journaled; an observer's failure must not turn it into a failed write.
        for observer in self.observers:
            try:
                observer(record, outcome)
            except Exception:
                log.exception("a write observer failed on journal item %s", record.id)

    def not_applied(self, record: JournalRecord) -> Status:
        """Re-reading found the key as the write found it: it never landed."""
        self.journal.mark_failed(record.id, "not applied: re-reading found the entry unchanged")
        return Status.FAILED

    def still_unknown(self, record: JournalRecord, why: str) -> Status:
        """Re-reading could not tell; the user judges (a fresh read may settle it later)."""
        if record.status is Status.INTENT:
            self.journal.mark_unknown(record.id, f"{why}; review it")
        return Status.UNKNOWN

    def forget(self, target: WriteTarget) -> None:
        """Drop cached copies a write to `target` makes stale."""
        if target.kind is StoreKind.ORDERED:
            self.cache.invalidate_datastore(target.universe_id, target.store)
        else:
            self.cache.invalidate_entry(target.universe_id, target.store, target.scope, target.key)

    def _record_intent(
        self,
        actor: Actor,
        target: WriteTarget,
        intent: Intent,
        idempotency_key: str | None,
        job_id: str | None,
    ) -> JournalRecord:
        user_id, user_name = studio_identity(actor)
        try:
            return self.journal.record_intent(
                actor_id=actor.token_id,
                actor_name=actor.name,
                actor_user_id=user_id,
                actor_user_name=user_name,
                universe=target.universe_id,
                datastore=target.store,
                scope=target.scope,
                key=target.key,
                operation=intent.operation.value,
                store_kind=target.kind.value,
                before=intent.before,
                intended=intent.intended,
                base_revision=intent.base_revision,
                idempotency_key=idempotency_key,
                job_id=job_id,
                undoes=intent.undoes,
                delta=intent.delta,
            )
        except IdempotencyConflict as conflict:
            # Another request with this key got here first (a concurrent retry).
            first = conflict.existing
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"Another request with idempotency key {idempotency_key} made this write first "
                f"(journal item {first.id}, {first.status.value}); re-read the entry instead of "
                "sending it again.",
                details={"journal_id": first.id},
            ) from None

    def _publish(self, payload: EntryChangedPayload) -> None:
        # The write has landed and is journaled: a failed notification must not report it as
        # failed (the user would retry a write that already happened).
        try:
            self.events.publish(EventType.ENTRY_CHANGED, payload)
        except Exception:
            log.exception("could not publish entry.changed for journal item %s", payload.journal_id)


def require_kind(plan: UndoPlan, kind: StoreKind) -> None:
    """Refuse to undo, through one store kind's service, a write made to the other kind."""
    if plan.store_kind != kind.value:
        made = "an ordered" if plan.store_kind == StoreKind.ORDERED.value else "a standard"
        raise ServiceError(
            ErrorCode.BAD_REQUEST,
            f"Journal item {plan.record_id} is {made} data store write, not a {kind.value} one.",
        )


def target_of(record: JournalRecord) -> WriteTarget:
    return WriteTarget(
        StoreKind(record.store_kind),
        int(record.universe),
        record.datastore,
        record.scope,
        record.key,
    )


def settled(record: JournalRecord, idempotency_key: str) -> JournalRecord:
    """`record` if its write applied; else the typed refusal a retry with its key gets."""
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


def _key_reused(idempotency_key: str, record: JournalRecord) -> ServiceError:
    return ServiceError(
        ErrorCode.CONFLICT,
        f"The idempotency key {idempotency_key} was already used for another write "
        f"(journal item {record.id}); send this change with a new key.",
        details={"journal_id": record.id},
    )
