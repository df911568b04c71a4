"""`erase_user`: find a player's data in a universe, erase it through the write path, scrub the
server's own copies, and produce the report (right to be forgotten).

Planning finds the player's entries with the erasure rules (`services.erasure`): keys matching
the configured patterns in every store and scope, ordered entries by id, and entries listing the
user id (from the search index and the newest archive of the universe: a key listing shows no
user ids). Each found entry is an item: deleted (the player's own) or the id taken out of its
user ids (a shared entry), journaled and conditional like every job write. An erasure cannot be
rolled back: that would put the player's data back.

After the last item, the server's copies are scrubbed in this order (the Roblox writes first:
they add journal records): the cache, the journal, the backup archives, the export files, the
uploads, the search index, the team audit log (the player's redactable items nulled in the
shared records, this server's copy and the events waiting: `services.team.erasure`), and the
keys in every job's items. The report (JSON and text) names the player, so it is kept only
sealed under the server's data key until it is taken and forgotten (DELETE .../report); the
job's own record keeps no user id or key once it has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel

from shared_schema.common import Role
from shared_schema.entries import StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.jobs import (
    HeldSessions,
    ItemState,
    JobKind,
    JobSample,
    SampleAction,
    SkipCode,
)

from ....paths import ensure_private_dir
from ....storage.atomic import write_atomic
from ....storage.crypto import KEY_BYTES, IntegrityError, RecordCipher
from ....storage.sqlite import RewriteIncomplete
from ...backups.archive import SUFFIX, ArchiveEntry, ArchiveReader, EntryName
from ...backups.folder import PARTIAL_SUFFIX, backups_dir, list_archives
from ...entries import EntryRef
from ...erasure import (
    Action,
    Candidate,
    ErasurePatterns,
    ErasureReport,
    ErasureRules,
    Match,
    Reason,
    RobloxAction,
    ScrubOutcome,
    find_candidates,
    scrub_archives,
    scrub_cache,
    scrub_journal,
)
from ...errors import ServiceError
from ...ordered import OrderedRef
from ...team.erasure import audit_log_outcome
from ..erasure_files import (
    ExportOrigin,
    export_origins,
    scrub_exports,
    uploads_mentioning,
    uploads_outcome,
)
from ..kind import (
    MAX_ATTEMPTS,
    ItemContext,
    ItemPage,
    ItemResult,
    JobEnv,
    JobKindHandler,
    JobSpec,
    JobStop,
    PlanNotes,
    RunResources,
    register,
)
from ..store import ItemRecord, JobRecord, NewItem
from ..writes import (
    conflict,
    delete_entry,
    delete_ordered,
    held,
    kept_writing,
    missing,
    overwrite_entry,
    read_entry,
    sample,
    sample_image,
    session_of,
    standard_target,
)
from .delete import held_note

REPORTS_DIRNAME = "erasure-reports"
_REPORT_INFO = b"dsm erasure report v1"


class ErasureParams(BaseModel):
    """An erasure's request; `user_id` is None once the job has finished (redacted)."""

    user_id: int | None
    held_sessions: HeldSessions = HeldSessions.SKIP


# ------------------------------------------------------------------------------ the report


def _report_cipher(data_key: bytes) -> RecordCipher:
    kek = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_REPORT_INFO)
    return RecordCipher(kek.derive(data_key))


def report_path(data_dir: Path, job_id: str) -> Path:
    return data_dir / REPORTS_DIRNAME / f"{job_id}.sealed"


def save_report(data_dir: Path, data_key: bytes, job_id: str, report: ErasureReport) -> None:
    ensure_private_dir(data_dir / REPORTS_DIRNAME)
    sealed = _report_cipher(data_key).seal(report.model_dump_json().encode(), job_id.encode())
    write_atomic(report_path(data_dir, job_id), sealed)


def load_report(data_dir: Path, data_key: bytes, job_id: str) -> ErasureReport | None:
    """The sealed report, None when it was forgotten (or never made)."""
    path = report_path(data_dir, job_id)
    if not path.exists():
        return None
    try:
        plain = _report_cipher(data_key).open(path.read_bytes(), job_id.encode())
    except IntegrityError:
        raise ServiceError(
            ErrorCode.CONFLICT,
            "The erasure report cannot be opened with this server's data key (its vault "
            "changed since).",
        ) from None
    return ErasureReport.model_validate_json(plain)


# ---------------------------------------------------------------------------- the kind


def _rules(spec: JobSpec, env: JobEnv) -> ErasureRules:
    assert env.data_dir is not None and spec.params.user_id is not None
    return ErasureRules(spec.params.user_id, ErasurePatterns.load(env.data_dir))


def _candidate(item: ItemRecord) -> Candidate:
    data = item.data or {}
    return Candidate(
        EntryName(StoreKind(item.store_kind), item.datastore, item.scope, item.key),
        Match(Action(data["action"]), Reason(data["reason"]), str(data.get("detail", ""))),
    )


class EraseUserKind(JobKindHandler):
    kind: ClassVar[JobKind] = JobKind.ERASE_USER
    params_model = ErasureParams
    role: ClassVar[Role] = Role.ADMIN
    store_kinds = frozenset({StoreKind.STANDARD, StoreKind.ORDERED})
    rollback = "none"  # never: a rollback would put the player's data back
    writes_open_cloud = True

    def check(self, spec: JobSpec, env: JobEnv) -> None:
        if env.data_dir is None or env.keys is None:
            raise ServiceError(ErrorCode.BAD_REQUEST, "This server has no data dir to scrub.")

    def confirmation(self, spec: JobSpec, env: JobEnv, production: Sequence[str]) -> str | None:
        erase = f"erase {spec.params.user_id}" if spec.params.user_id is not None else "erase"
        return " + ".join([erase, *production])

    def describe(self, spec: JobSpec) -> str:
        who = spec.params.user_id if spec.params.user_id is not None else "(redacted)"
        return f"Erase player {who}'s data in universe {spec.universe}"

    def requests(self, spec: JobSpec, items: int) -> dict[int, dict[str, int]]:
        return {spec.universe: {"read": items, "write": items}}

    async def enumerate(
        self, spec: JobSpec, env: JobEnv, cursor: dict[str, Any] | None
    ) -> AsyncIterator[ItemPage]:
        rules = _rules(spec, env)
        sources: list[str] = []

        async def metadata() -> AsyncIterator[tuple[EntryName, Sequence[int]]]:
            user_id = rules.user_id
            if env.index is not None:
                for store, scope, key, users in await env.index.listing_user(
                    spec.universe, user_id
                ):
                    yield EntryName(StoreKind.STANDARD, store, scope, key), users
                sources.append("the search index")
            newest = await asyncio.to_thread(self._newest_archive_entries, spec, env, user_id)
            if newest is not None:
                archive_id, entries = newest
                for entry in entries:
                    yield entry.name, entry.user_ids
                sources.append(f"the newest backup archive ({archive_id})")

        plan = await find_candidates(
            env.plane.upstream.call,
            spec.universe,
            rules,
            metadata=metadata(),
            metadata_source="the search index and the newest backup archive",
        )
        items = [
            NewItem(spec.universe, c.name.kind.value, c.name.datastore, c.name.scope, c.name.key,
                    data={"action": c.match.action.value, "reason": c.match.reason.value,
                          "detail": c.match.detail})
            for c in plan.candidates
        ]  # fmt: skip
        state = {"searched": plan.searched, "not_searched": plan.not_searched, "sources": sources}
        yield ItemPage(items, state, True)

    def _newest_archive_entries(
        self, spec: JobSpec, env: JobEnv, user_id: int
    ) -> tuple[str, list[ArchiveEntry]] | None:
        """Entries of the newest archive of the universe that list the player."""
        assert env.data_dir is not None and env.keys is not None
        keys = env.keys.keys()
        for listing in list_archives(backups_dir(env.data_dir), keys):
            manifest = listing.manifest
            if manifest is None or manifest.universe_id != spec.universe:
                continue
            with ArchiveReader(listing.path, keys) as reader:
                found = [e for e in reader.entries() if user_id in e.user_ids]
            return manifest.archive_id, found
        return None

    def plan_notes(
        self, spec: JobSpec, env: JobEnv, final_cursor: dict[str, Any] | None
    ) -> PlanNotes:
        state = final_cursor or {}
        notes = PlanNotes()
        notes.notes += [f"Searched: {s}" for s in state.get("searched", [])]
        notes.warnings += [f"Not searched: {s}" for s in state.get("not_searched", [])]
        notes.notes.append(
            "Entries named by a pattern are deleted; shared entries listing the player keep "
            "their value and lose the user id. Afterwards this server's cache, journal, backup "
            "archives, export files, uploads, search index, team audit log and job items are "
            "scrubbed, and a report is made. An erasure cannot be "
            "rolled back."
        )
        notes.notes.append(held_note(spec.params.held_sessions.value))
        return notes

    async def sample(self, spec: JobSpec, item: ItemRecord, env: JobEnv) -> JobSample:
        candidate = _candidate(item)
        verb = "delete" if candidate.match.action is Action.DELETE_ENTRY else "remove the user id"
        if item.store_kind == StoreKind.ORDERED.value:
            return sample(item, SampleAction.DELETE, f"would delete ({candidate.match.detail})")
        entry = await read_entry(env.plane, item.universe, item.datastore, item.scope, item.key)
        action = SampleAction.DELETE if verb == "delete" else SampleAction.WRITE
        return sample(item, action, f"would {verb} ({candidate.match.detail})",
                      before=sample_image(entry), lock=session_of(entry))  # fmt: skip

    async def execute(self, ctx: ItemContext) -> ItemResult:
        if await ctx.applied("e") is not None:
            return ItemResult.applied()
        item = ctx.item
        candidate = _candidate(item)
        if item.store_kind == StoreKind.ORDERED.value:
            try:
                await delete_ordered(ctx, OrderedRef(item.universe, item.datastore, item.scope,
                                                     item.key), "e")  # fmt: skip
            except ServiceError as error:
                if error.code is ErrorCode.NOT_FOUND:
                    return missing()
                raise
            return ItemResult.applied()
        user_id = ctx.spec.params.user_id
        for _ in range(MAX_ATTEMPTS):
            current = await read_entry(ctx, item.universe, item.datastore, item.scope, item.key)
            if current is None or current.value_json is None:
                return missing()
            lock = session_of(current)
            if (result := held(ctx, lock, ctx.spec.params.held_sessions)) is not None:
                return result
            try:
                if candidate.match.action is Action.DELETE_ENTRY:
                    ref = EntryRef(item.universe, item.datastore, item.scope, item.key)
                    await delete_entry(ctx, ref, current.revision_id, "e")
                    return ItemResult.applied()
                if user_id not in current.user_ids:
                    return ItemResult.skipped(SkipCode.UNCHANGED, "It no longer lists the player.")
                kept = [u for u in current.user_ids if u != user_id]
                target = standard_target(item.universe, item.datastore, item.scope, item.key)
                await overwrite_entry(ctx, target, current, current.value_json,
                                      current.attributes, kept, "e")  # fmt: skip
                return ItemResult.applied()
            except ServiceError as error:
                if error.code is ErrorCode.NOT_FOUND:
                    return missing()
                if conflict(error):
                    continue  # a game server wrote it meanwhile: read it and decide again
                raise
        return kept_writing()

    async def finish(self, spec: JobSpec, env: JobEnv, resources: RunResources) -> dict[str, Any]:
        assert env.data_dir is not None and env.keys is not None
        if spec.params.user_id is None:
            return {}  # finished (and redacted) before a restart
        rules = _rules(spec, env)
        request_id = spec.id
        actions = self._roblox_actions(spec, env)
        origins = export_origins(self._export_jobs(env))
        local = await asyncio.to_thread(self._scrub_files, spec, env, rules, origins)
        local.append(await self._scrub_uploads(env, rules.user_id))
        if env.index is not None:
            local.append(await self._scrub_index(env, rules.user_id))
        if env.team is not None:
            local.append(await env.team.erase_from_audit(rules, spec.universe))
        else:
            local.append(audit_log_outcome(spec.universe, None, 0))
        report = ErasureReport(
            request_id=request_id,
            user_id=rules.user_id,
            universe_id=spec.universe,
            backend=env.plane.upstream.binding(spec.universe).backend,
            requested_at=datetime.fromtimestamp(spec.record.created_ms / 1000, UTC),
            completed_at=datetime.now(UTC),
            searched=list((spec.record.plan_cursor or {}).get("searched", [])),
            not_searched=list((spec.record.plan_cursor or {}).get("not_searched", [])),
            roblox=actions,
            local=local,
        )
        await asyncio.to_thread(save_report, env.data_dir, env.keys.data_key, spec.id, report)
        # Last: the job's own record and items forget the player (the vacuum comes last).
        request = dict(spec.record.request)
        request["params"] = {**request["params"], "user_id": None}
        plan = env.store.get(spec.id).plan
        if plan is not None:  # its samples and confirmation name the player
            warnings = [w for w in plan.get("warnings", []) if str(rules.user_id) not in w]
            plan = {**plan, "samples": [], "confirmation": None, "warnings": warnings}
        scrubs = [s.where for s in local] + ["jobs"]
        env.store.update(
            spec.id, request=request, plan=plan, kind_state={"scrubs": scrubs, "report": True}
        )
        # Off the loop (the rewrite takes as long as the file is big); done only once it is.
        try:
            await asyncio.to_thread(
                env.store.redact_items,
                lambda *name: rules.match(_name(*name)) is not None,
                rules.user_id,
            )
        except (sqlite3.Error, RewriteIncomplete) as exc:
            raise JobStop(
                ErrorCode.INTERNAL,
                f"The jobs file could not be rewritten ({exc}), so its free pages may still "
                "hold the player's keys; run the erasure again.",
            ) from exc
        return {}

    def _roblox_actions(self, spec: JobSpec, env: JobEnv) -> list[RobloxAction]:
        actions: list[RobloxAction] = []
        after = 0
        while page := env.store.items(spec.id, after=after, limit=1000):
            for item in page:
                candidate = _candidate(item)
                done = item.state == ItemState.APPLIED.value
                action = RobloxAction.done(candidate, datetime.now(UTC))
                if not done:
                    outcome = "skipped" if item.state == ItemState.SKIPPED.value else "failed"
                    action = action.model_copy(
                        update={"outcome": outcome, "message": item.message or "",
                                "retained_until": None}
                    )  # fmt: skip
                actions.append(action)
            after = page[-1].seq
        return actions

    def _export_jobs(self, env: JobEnv) -> Iterator[JobRecord]:
        before: int | None = None
        while page := env.store.list_jobs(kind=JobKind.EXPORT.value, before_seq=before,
                                          limit=500):  # fmt: skip
            yield from page
            before = page[-1].seq

    async def _scrub_uploads(self, env: JobEnv, user_id: int) -> ScrubOutcome:
        found = await asyncio.to_thread(uploads_mentioning, env.uploads.dir, user_id)
        for path in found:
            with contextlib.suppress(ServiceError):  # a file whose record is gone
                env.uploads.delete(path.stem)
            path.unlink(missing_ok=True)
        return uploads_outcome([p.name for p in found])

    def _scrub_files(
        self, spec: JobSpec, env: JobEnv, rules: ErasureRules, origins: dict[str, ExportOrigin]
    ) -> list[ScrubOutcome]:
        assert env.data_dir is not None and env.keys is not None
        folder = backups_dir(env.data_dir)
        archives = sorted(folder.glob(f"*{SUFFIX}")) + sorted(folder.glob(f".*{PARTIAL_SUFFIX}"))
        outcomes = [
            scrub_cache(env.plane.cache),
            scrub_journal(env.plane.writes.journal, rules, request_id=spec.id),
            scrub_archives(archives, env.keys.keys(), rules, request_id=spec.id),
            scrub_exports(env.exports_dir, rules, origins),
        ]
        spools = sorted(folder.glob(".*.spool"))
        if spools:
            outcomes[2].problems.append(
                f"{len(spools)} backup(s) running now keep their entries in an encrypted spool "
                "until they finish; run the erasure again after they finish"
            )
        return outcomes

    async def _scrub_index(self, env: JobEnv, user_id: int) -> ScrubOutcome:
        assert env.index is not None
        removed = await env.index.scrub_user(user_id)
        return ScrubOutcome(
            where="index",
            method="rows listing the user id or whose key names it deleted, file checkpointed",
            at=datetime.now(UTC),
            removed=removed,
        )


def _name(kind: str, datastore: str, scope: str, key: str) -> EntryName:
    return EntryName(StoreKind(kind), datastore, scope, key)


register(EraseUserKind())
