"""Team sync: the service behind `/team/...`, `dsm team` and `dsm audit`.

Per opted-in universe it runs a LiveSync (presence, locks, change feed in the memory store) and
an AuditLog (the hash-chained log in a data store), each as its own task, and it sees every
write this server makes (an observer on the one write path) to feed both. Nothing here is
needed for anything else to work: a universe whose key cannot use the memory store shows team
sync UNAVAILABLE with the reason, and browsing and editing carry on.

Team roles are kept by each member's own server: a member whose role is viewer has this server
refuse writes to that universe. Anyone holding an API key for the universe can still write
through another tool; docs/team.md says what roles can and cannot enforce.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared_schema.common import Role, Source, SourceKind
from shared_schema.entries import EntryOperation
from shared_schema.errors import ErrorCode
from shared_schema.events import Event, EventType
from shared_schema.identity import Person, make_person
from shared_schema.jobs import TERMINAL_STATES, JobState, JobStatePayload
from shared_schema.team import (
    ActivityPage,
    ActivityQuery,
    AuditHead,
    AuditVerifyReport,
    BookmarkRequest,
    LockAnswer,
    NoteRequest,
    TeamCaps,
    TeamEnableRequest,
    TeamInvite,
    TeamInviteRequest,
    TeamJoinRequest,
    TeamMember,
    TeamOverview,
    TeamState,
    TeamStatus,
    Workspace,
)

from ...storage.cache import EntryCache
from ...storage.crypto import RecordCipher
from ...storage.journal import JournalRecord
from ..erasure import ErasureRules, ScrubOutcome
from ..errors import ServiceError
from ..events import EventBus
from ..journaled import Actor, JournaledWrites, Outcome, WriteTarget, person_of_record
from ..provenance import cached, fresh
from ..sessions import SessionRegistry
from ..tokens import Principal
from ..upstream import Upstream
from .audit import AuditLog, Redaction, redact_copy
from .chain import AuditEvent
from .erasure import audit_log_outcome, item_picker, kept_summaries, pending_scrubber
from .governor import DEFAULT_MAX_BYTES, DEFAULT_MAX_RPM, Caps, Governor
from .live import Change, LiveSync, Unavailable
from .names import NAMES, SORTED_MAP, presence_id
from .store import Space, TeamStore
from .workspace import WorkspaceStore, parse_code

log = logging.getLogger("dsm.team")


def person_of(principal: Principal) -> Person:
    return principal.person


@dataclass
class _Running:
    space: Space
    governor: Governor
    live: LiveSync
    audit: AuditLog
    workspace: WorkspaceStore
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


# A dry-run plan writes nothing, and "running" follows "queued" at once: neither is recorded.
_UNRECORDED_JOB_STATES = frozenset({JobState.PLANNED, JobState.RUNNING})


class TeamService:
    def __init__(
        self,
        store: TeamStore,
        *,
        upstream: Upstream,
        events: EventBus,
        cache: EntryCache,
        sessions: SessionRegistry,
        writes: JournaledWrites,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._upstream = upstream
        self._events = events
        self._cache = cache
        self._sessions = sessions
        self._clock = clock
        self._running: dict[int, _Running] = {}
        # Who set each job going (job events from the runner name nobody).
        self._job_people: dict[str, Person] = {}
        self.server_id = store.server_id
        writes.observers.append(self._on_write)
        writes.guards.append(self._guard)
        self._unobserve = events.observe(self._on_event)

    @classmethod
    @asynccontextmanager
    async def opened(
        cls,
        data_dir: Path,
        cipher: RecordCipher,
        *,
        upstream: Upstream,
        events: EventBus,
        cache: EntryCache,
        sessions: SessionRegistry,
        writes: JournaledWrites,
    ) -> AsyncIterator[TeamService]:
        """The service with every universe opted in earlier running (the server's lifecycle)."""
        store = TeamStore(data_dir, cipher)
        service = cls(
            store, upstream=upstream, events=events, cache=cache, sessions=sessions, writes=writes
        )
        try:
            for space in store.spaces():
                if space.enabled:
                    service._start(space)
            yield service
        finally:
            await service.close()
            store.close()

    async def close(self) -> None:
        self._unobserve()
        for universe_id in list(self._running):
            await self._stop(universe_id)

    # ------------------------------------------------------------------ running spaces

    def _start(self, space: Space) -> _Running:
        universe_id = space.universe_id
        governor = Governor(Caps(max_rpm=space.max_rpm, max_bytes=space.max_bytes))
        audit = AuditLog(universe_id, self._upstream, self._store, self.server_id)
        live = LiveSync(
            universe_id,
            upstream=self._upstream,
            server_id=self.server_id,
            governor=governor,
            events=self._events,
            cache=self._cache,
            local_sessions=self._sessions.list,
            on_audit_hint=audit.announced,
            on_state=lambda: self._publish_status(universe_id),
        )
        audit.on_appended = live.queue_audit_hint
        audit.on_head = lambda: self._publish_status(universe_id)
        running = _Running(
            space, governor, live, audit, WorkspaceStore(universe_id, self._upstream)
        )
        running.tasks = [
            asyncio.create_task(live.run(), name=f"dsm-team-live-{universe_id}"),
            asyncio.create_task(audit.run(), name=f"dsm-team-audit-{universe_id}"),
        ]
        self._running[universe_id] = running
        return running

    async def _stop(self, universe_id: int) -> None:
        running = self._running.pop(universe_id, None)
        if running is None:
            return
        for task in running.tasks:
            task.cancel()
        for task in running.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Teammates drop this server at once instead of when its presence item expires; what
        # is still pending in the audit log is written first.
        with contextlib.suppress(ServiceError, Unavailable, Exception):
            async with asyncio.timeout(5):
                await running.audit.flush()
                client = self._upstream.client_for(universe_id)
                await client.sorted_map_delete(universe_id, SORTED_MAP, presence_id(self.server_id))

    def _require(self, universe_id: int) -> _Running:
        running = self._running.get(universe_id)
        if running is None:
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                f"Team sync is off for universe {universe_id} on this server. Turn it on with "
                f"`dsm team enable --universe {universe_id}` (or Enable on the plugin's Team "
                "screen), or join a team with `dsm team join CODE`.",
            )
        return running

    # ------------------------------------------------------------------ what it sees

    def _on_write(self, record: JournalRecord, outcome: Outcome) -> None:
        running = self._running.get(int(record.universe))
        if running is None:
            return
        person = person_of_record(record)
        image = outcome.after
        user_ids = [
            i
            for i in (image.metadata.get("user_ids") if image is not None else None) or []
            if isinstance(i, int)
        ]
        operation = "undo" if record.undoes is not None else record.operation
        running.audit.add(
            AuditEvent(
                kind="write",
                operation=operation,
                person=person,
                store_kind=record.store_kind,
                datastore=record.datastore,
                scope=record.scope,
                key=record.key,
                user_ids=tuple(user_ids),
                status="APPLIED" if outcome.refused is None else "FAILED",
                revision=outcome.revision,
                journal_id=record.id,
                job_id=record.job_id,
            )
        )
        if outcome.refused is None:
            running.live.queue_change(
                Change(
                    kind=record.store_kind,
                    datastore=record.datastore,
                    scope=record.scope,
                    key=record.key,
                    operation=EntryOperation(operation).value,
                    state="DELETED" if image is None else "ACTIVE",
                    revision=outcome.revision,
                    person=person,
                    journal_id=record.id,
                )
            )

    def _on_event(self, event: Event) -> None:
        if event.type in (EventType.SESSION_JOINED, EventType.SESSION_LEFT):
            self.local_presence_changed()
            return
        if event.type != EventType.JOB_STATE:
            return  # job.progress comes several times a second: never worth a shared record
        job = JobStatePayload.model_validate(event.payload, strict=False)  # JSON-shaped payload
        person = job.person or make_person(None, None, job.actor)
        if job.actor is not None:
            self._job_people[job.job_id] = person
        else:  # the runner moved it on: name whoever set it going
            person = self._job_people.get(job.job_id, person)
        if job.state in _UNRECORDED_JOB_STATES:
            return
        summary = f"{job.kind} job {job.job_id} {job.state.value}"
        if job.message:
            summary += f": {job.message}"
        self.note_job(job.universe_id, job.job_id, job.state.value, summary, person)
        if job.state in TERMINAL_STATES:
            self._job_people.pop(job.job_id, None)

    def note_job(
        self, universe_id: int, job_id: str, operation: str, summary: str, person: Person
    ) -> None:
        """The hook for the jobs engine: a job started, finished, failed... in a universe."""
        running = self._running.get(universe_id)
        if running is None:
            return
        running.audit.add(
            AuditEvent(
                kind="job", operation=operation, person=person, job_id=job_id, summary=summary
            )
        )
        running.live.queue_job(job_id, summary, person)

    def local_presence_changed(self) -> None:
        for running in self._running.values():
            running.live.nudge()

    def _guard(self, actor: Actor, target: WriteTarget) -> None:
        running = self._running.get(target.universe_id)
        if running is not None and running.space.role is Role.VIEWER:
            raise ServiceError(
                ErrorCode.FORBIDDEN,
                f"Your team role in universe {target.universe_id} is viewer, so this server does "
                "not write to it. A team admin can invite this server again as an editor "
                "(`dsm team invite --role editor`). Roles are kept by each member's own server; "
                "see docs/team.md.",
            )

    # ------------------------------------------------------------------ status

    def status(self, universe_id: int, principal: Principal | None = None) -> TeamStatus:
        backend = self._upstream.binding(universe_id).backend
        running = self._running.get(universe_id)
        reason: str | None
        if running is None:
            reason = (
                f"Team sync is off for universe {universe_id}: turn it on with `dsm team enable "
                f"--universe {universe_id}` or the Enable button."
            )
            return TeamStatus(
                universe_id=universe_id,
                state=TeamState.OFF,
                reason=reason,
                server_id=self.server_id,
                names=NAMES,
                teammates=[],
                locks=[],
                audit_head=running_head(self._store, universe_id),
                source=Source(kind=SourceKind.UNAVAILABLE, backend=backend, reason=reason),
            )
        live, governor = running.live, running.governor
        caps = governor.caps
        if live.available is False:
            state, reason = TeamState.UNAVAILABLE, live.reason
            source = Source(kind=SourceKind.UNAVAILABLE, backend=backend, reason=live.reason)
        else:
            state = TeamState.ON
            reason = running.audit.problem or (
                None if live.available else "Connecting to the memory store…"
            )
            source = (
                fresh(backend, live.last_sync_at)
                if live.last_sync_at is not None
                else Source(kind=SourceKind.UNAVAILABLE, backend=backend, reason=reason)
            )
        return TeamStatus(
            universe_id=universe_id,
            state=state,
            reason=reason,
            role=running.space.role,
            server_id=self.server_id,
            names=NAMES,
            caps=TeamCaps(
                max_requests_per_minute=caps.max_rpm,
                requests_last_minute=governor.used_last_minute(),
                held_back=governor.held_back,
                max_bytes=caps.max_bytes,
                bytes_stored=governor.bytes_stored(),
                max_item_bytes=caps.max_item_bytes,
                presence_ttl_seconds=caps.presence_ttl,
                lock_ttl_seconds=caps.lock_ttl,
                change_ttl_seconds=caps.change_ttl,
            ),
            teammates=live.teammates(),
            locks=live.locks(principal),
            last_sync_at=live.last_sync_at,
            audit_head=running.audit.head(),
            audit_announced=running.audit.announced_seq or None,
            source=source,
        )

    def overview(self, principal: Principal | None = None) -> TeamOverview:
        universes = sorted({s.universe_id for s in self._store.spaces()} | set(self._running))
        return TeamOverview(
            server_id=self.server_id, spaces=[self.status(u, principal) for u in universes]
        )

    def _publish_status(self, universe_id: int) -> None:
        with contextlib.suppress(ServiceError):  # a universe no key serves any more
            self._events.publish(EventType.TEAM_STATUS, self.status(universe_id))

    # ------------------------------------------------------------------ opting in and out

    async def enable(
        self, universe_id: int, principal: Principal, request: TeamEnableRequest
    ) -> TeamStatus:
        if universe_id in self._running:
            return self.status(universe_id, principal)
        workspace = WorkspaceStore(universe_id, self._upstream)
        members = await workspace.members()
        mine = next((m for m in members if m.server_id == self.server_id), None)
        name = mine.name if mine is not None else f"{person_of(principal).label} ({self.server_id})"
        if not members:
            await workspace.add_member(
                TeamMember(server_id=self.server_id, name=name, role=Role.ADMIN, joined_at=_now()),
                create_team=True,
            )
            role = Role.ADMIN
        elif mine is not None:
            role = mine.role
        else:
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"Universe {universe_id} already has a team ({len(members)} member(s), e.g. "
                f"{members[0].name}). Ask a team admin for an invite (`dsm team invite "
                f"--universe {universe_id}`), then run `dsm team join CODE`.",
            )
        self._activate(universe_id, role, name, request, principal, "enable")
        return self.status(universe_id, principal)

    def _activate(
        self,
        universe_id: int,
        role: Role,
        name: str,
        request: TeamEnableRequest,
        principal: Principal,
        operation: str,
    ) -> None:
        space = Space(
            universe_id,
            True,
            role,
            name,
            request.max_requests_per_minute or DEFAULT_MAX_RPM,
            request.max_bytes or DEFAULT_MAX_BYTES,
        )
        self._store.save_space(space)
        running = self._start(space)
        running.audit.add(
            AuditEvent(
                kind="team",
                operation=operation,
                person=person_of(principal),
                summary=f"{name} turned team sync on as {role.value}",
            )
        )
        self._publish_status(universe_id)

    async def disable(self, universe_id: int, principal: Principal) -> TeamStatus:
        running = self._running.get(universe_id)
        if running is not None:
            running.audit.add(
                AuditEvent(
                    kind="team",
                    operation="disable",
                    person=person_of(principal),
                    summary=f"{running.space.name} turned team sync off",
                )
            )
            space = running.space
            await self._stop(universe_id)
            self._store.save_space(
                Space(universe_id, False, space.role, space.name, space.max_rpm, space.max_bytes)
            )
        self._publish_status(universe_id)
        return self.status(universe_id, principal)

    async def invite(
        self, universe_id: int, principal: Principal, request: TeamInviteRequest
    ) -> TeamInvite:
        running = self._require(universe_id)
        if running.space.role is not Role.ADMIN:
            raise ServiceError(
                ErrorCode.FORBIDDEN,
                f"Only a team admin can invite; this server's team role in universe "
                f"{universe_id} is {running.space.role.value}.",
            )
        expires_at = _now() + timedelta(seconds=request.expires_in_seconds)
        code, _ = await running.workspace.create_invite(
            request.role, expires_at, by=running.space.name
        )
        running.audit.add(
            AuditEvent(
                kind="team",
                operation="invite",
                person=person_of(principal),
                summary=f"{running.space.name} made a single-use invite for a "
                f"{request.role.value}, valid until {expires_at:%Y-%m-%d %H:%M} UTC",
            )
        )
        return TeamInvite(
            code=code, universe_id=universe_id, role=request.role, expires_at=expires_at
        )

    async def join(self, principal: Principal, request: TeamJoinRequest) -> TeamStatus:
        universe_id, secret = parse_code(request.code)
        if universe_id in self._running:
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"This server is already in the team of universe {universe_id}.",
            )
        workspace = WorkspaceStore(universe_id, self._upstream)
        role = await workspace.redeem_invite(secret, self.server_id, _now())
        name = request.name or f"{person_of(principal).label} ({self.server_id})"
        await workspace.add_member(
            TeamMember(server_id=self.server_id, name=name, role=role, joined_at=_now()),
            create_team=False,
        )
        self._activate(universe_id, role, name, TeamEnableRequest(), principal, "join")
        return self.status(universe_id, principal)

    # ------------------------------------------------------------------ locks

    async def lock(
        self, universe_id: int, principal: Principal, datastore: str, scope: str, key: str
    ) -> LockAnswer:
        live = self._require(universe_id).live
        try:
            return await live.acquire_lock(principal, person_of(principal), datastore, scope, key)
        except Unavailable as exc:
            raise ServiceError(exc.code, str(exc)) from exc

    async def unlock(
        self, universe_id: int, principal: Principal, datastore: str, scope: str, key: str
    ) -> LockAnswer:
        live = self._require(universe_id).live
        try:
            return await live.release_lock(principal, datastore, scope, key)
        except Unavailable as exc:
            raise ServiceError(exc.code, str(exc)) from exc

    # ------------------------------------------------------------------ the audit log

    async def activity(self, universe_id: int, query: ActivityQuery) -> ActivityPage:
        audit = self._require(universe_id).audit
        problem = None
        try:
            await audit.sync()
        except ServiceError as exc:
            problem = exc.message
        page = audit.activity(query)
        if problem is not None and audit.synced_at is not None:
            age = (datetime.now(UTC) - audit.synced_at).total_seconds()
            backend = self._upstream.binding(universe_id).backend
            page.source = cached(backend, audit.synced_at.timestamp(), age, problem)
        return page

    async def verify(self, universe_id: int) -> AuditVerifyReport:
        running = self._running.get(universe_id)
        if running is not None:
            await running.audit.flush()
            return await running.audit.verify()
        if self._store.space(universe_id) is None:
            self._require(universe_id)
        return await AuditLog(universe_id, self._upstream, self._store, self.server_id).verify()

    # ------------------------------------------------------------------ workspace

    async def workspace(self, universe_id: int) -> Workspace:
        workspace = self._require(universe_id).workspace
        members, bookmarks, notes = (
            await workspace.members(),
            await workspace.bookmarks(),
            await workspace.notes(),
        )
        return self._workspace(universe_id, members, bookmarks, notes)

    def _workspace(self, universe_id: int, members: Any, bookmarks: Any, notes: Any) -> Workspace:
        return Workspace(
            universe_id=universe_id,
            members=members,
            bookmarks=bookmarks,
            notes=notes,
            source=fresh(self._upstream.binding(universe_id).backend),
        )

    async def bookmark(
        self, universe_id: int, principal: Principal, request: BookmarkRequest
    ) -> Workspace:
        workspace = self._require(universe_id).workspace
        ref = (request.datastore, request.scope, request.key)
        bookmarks = await workspace.set_bookmark(
            ref, request.label, request.remove, person_of(principal), _now()
        )
        return self._workspace(
            universe_id, await workspace.members(), bookmarks, await workspace.notes()
        )

    async def note(self, universe_id: int, principal: Principal, request: NoteRequest) -> Workspace:
        workspace = self._require(universe_id).workspace
        ref = (request.datastore, request.scope, request.key)
        notes = await workspace.set_note(ref, request.text, person_of(principal), _now())
        return self._workspace(
            universe_id, await workspace.members(), await workspace.bookmarks(), notes
        )

    # ------------------------------------------------------------------ for features/benchmarks

    def is_on(self, universe_id: int) -> bool | None:
        """None: off; False: on but unavailable; True: working."""
        running = self._running.get(universe_id)
        if running is None:
            return None
        return running.live.available is not False

    async def erase_from_audit(self, rules: ErasureRules, universe_id: int) -> ScrubOutcome:
        """Take the player out of the audit log (the shared records when team sync is on, this
        server's copy, the events waiting) and say what was done, for the erasure report."""
        running = self._running.get(universe_id)
        picks = item_picker(rules)
        if running is not None:
            redaction: Redaction | None = await running.audit.redact(picks, pending_scrubber(rules))
        elif self._store.kept_count(universe_id) == 0:
            redaction = None
        else:
            seqs, records, items = redact_copy(self._store, universe_id, picks)
            redaction = Redaction(local_records=records, local_items=items)
            if seqs:
                redaction.shared_left = len(seqs)
                redaction.problem = f"team sync is off for universe {universe_id} on this server."
        summaries = kept_summaries(rules, self._store.records(universe_id))
        return audit_log_outcome(universe_id, redaction, summaries)

    def live(self, universe_id: int) -> LiveSync | None:
        running = self._running.get(universe_id)
        return None if running is None else running.live

    def reason(self, universe_id: int) -> str | None:
        running = self._running.get(universe_id)
        return None if running is None else running.live.reason


def running_head(store: TeamStore, universe_id: int) -> AuditHead | None:
    head = store.head(universe_id)
    return None if head is None else AuditHead(seq=head.seq, hash=head.hash)


def _now() -> datetime:
    return datetime.now(UTC)
