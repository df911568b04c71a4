"""Which finished jobs a prune removes, and which it keeps and why (docs/jobs.md, "Pruning").

A job goes only when it is finished (succeeded, failed, cancelled, rolled back) before the
cutoff and nothing still needs it:

- jobs that name each other (a rollback and the job it undoes, a backup taken before a job and
  that job) go together or not at all, so no job is left naming a missing one, and a running,
  paused or recent job keeps every job linked to it;
- its export file or backup archive is still on disk (the archive's manifest names the job,
  and an erasure reads an export's job to know which store the file came from);
- it is a backup schedule's last run, or an erasure whose report was not yet forgotten;
- it could still be rolled back, unless the caller includes those: the write journal keeps
  every before-image on its own, so each entry can still be undone one at a time, but the
  job's one-step rollback needs the job.

The team audit log and the write journal keep their own copies of what they say about a job
(its id, kind, state, who, the entries it wrote); they never read the jobs file, so pruning
takes nothing from them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared_schema.jobs import TERMINAL_STATES, JobKind, PruneKeepReason

from .kinds.erase_user import report_path
from .store import JobRecord, JobStore

# What other services say they still need: job id -> why.
Referrer = Callable[[], Mapping[str, PruneKeepReason]]

KEEP_NOTES = {
    PruneKeepReason.ROLLBACKABLE: "they could still be rolled back; prune them with "
    "include_rollbackable (CLI: --include-rollbackable), which removes their one-step rollback",
    PruneKeepReason.LINKED: "they are linked to a job that stays (its rollback, the job it "
    "rolls back, or the backup taken before it): linked jobs go together",
    PruneKeepReason.OUTPUT_FILE: "their export file or backup archive is still on disk (the "
    "archive names its job; an erasure reads an export's job to scrub the file precisely); "
    "delete the file or archive first",
    PruneKeepReason.SCHEDULE: "each is the last run of a backup schedule",
    PruneKeepReason.ERASURE_REPORT: "their erasure report was not taken and forgotten yet",
}


@dataclass
class PruneSelection:
    prune: list[JobRecord] = field(default_factory=list)  # oldest first
    rollbackable: set[str] = field(default_factory=set)  # of `prune`
    kept: dict[PruneKeepReason, int] = field(default_factory=dict)


def select(
    store: JobStore,
    cutoff_ms: int,
    *,
    data_dir: Path | None,
    referrers: Iterable[Referrer],
    can_roll_back: Callable[[JobRecord], bool],
    include_rollbackable: bool,
) -> PruneSelection:
    old = store.finished_before(cutoff_ms, [s.value for s in TERMINAL_STATES])
    referenced: dict[str, PruneKeepReason] = {}
    for referrer in referrers:
        referenced.update(referrer())
    why: dict[str, PruneKeepReason] = {}
    rollbackable: set[str] = set()
    for record in old:
        reason = referenced.get(record.id) or _needed_for_itself(record, data_dir)
        if reason is None and can_roll_back(record):
            rollbackable.add(record.id)
            if not include_rollbackable:
                reason = PruneKeepReason.ROLLBACKABLE
        if reason is not None:
            why[record.id] = reason
    candidates = {r.id for r in old}
    groups = _groups(store.links())
    for record in old:
        if record.id in why:
            continue
        group = groups.get(record.id, {record.id})
        if any(other not in candidates or other in why for other in group):
            why[record.id] = PruneKeepReason.LINKED
    selection = PruneSelection()
    for record in old:
        if record.id in why:
            reason = why[record.id]
            selection.kept[reason] = selection.kept.get(reason, 0) + 1
        else:
            selection.prune.append(record)
    selection.rollbackable = {r.id for r in selection.prune if r.id in rollbackable}
    return selection


def _needed_for_itself(record: JobRecord, data_dir: Path | None) -> PruneKeepReason | None:
    if record.output_path is not None and Path(record.output_path).exists():
        return PruneKeepReason.OUTPUT_FILE
    if record.kind != JobKind.ERASE_USER.value or data_dir is None:
        return None
    if report_path(data_dir, record.id).exists():
        return PruneKeepReason.ERASURE_REPORT
    return None


def _groups(pairs: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """Job id -> every job linked to it, directly or through others."""
    parent: dict[str, str] = {}

    def root(job_id: str) -> str:
        parent.setdefault(job_id, job_id)
        while parent[job_id] != job_id:
            parent[job_id] = parent[parent[job_id]]
            job_id = parent[job_id]
        return job_id

    for a, b in pairs:
        parent[root(a)] = root(b)
    members: dict[str, set[str]] = {}
    for job_id in list(parent):
        members.setdefault(root(job_id), set()).add(job_id)
    return {job_id: members[root(job_id)] for job_id in parent}


__all__ = ["KEEP_NOTES", "PruneSelection", "Referrer", "select"]
