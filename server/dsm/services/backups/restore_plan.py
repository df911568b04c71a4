"""The restore plan page (GET /restores/{id}/plan): per key, what the plan found (kept with each
item when it was planned: action, source, precision, revisions) and what happened once run.

The value patch of keys to update is worked out when the page is asked for (a fresh read of
the key and of its wanted state), so the job's own tables never hold values.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

import jsonpatch

from shared_schema.backups import (
    MAX_PLAN_PATCH_OPS,
    PitPrecision,
    PitSourceName,
    RestoreAction,
    RestoreCounts,
    RestoreKeyPlan,
    RestorePlanPage,
    RestorePlanQuery,
    RestoreSummary,
)
from shared_schema.entries import StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.jobs import ItemState, SkipCode

from ...opencloud.wire import attributes_equal
from ..jobs.kind import handler_for, spec_of
from ..jobs.kinds.restore import RestoreKind, Wanted, source_name
from ..jobs.service import JobService
from ..jobs.store import ItemRecord, JobRecord
from ..jobs.writes import patch_operations

_SCAN = 1000


def _action(item: ItemRecord) -> RestoreAction:
    return RestoreAction((item.data or {}).get("action", RestoreAction.UNKNOWN.value))


def _all_items(jobs: JobService, job_id: str) -> list[ItemRecord]:
    found: list[ItemRecord] = []
    after = 0
    while page := jobs.store.items(job_id, after=after, limit=_SCAN):
        found += page
        after = page[-1].seq
    return found


def summary_of(record: JobRecord, items: list[ItemRecord]) -> RestoreSummary:
    params = record.params
    counts = Counter(_action(i).value for i in items)
    target = f"universe {record.universe}"
    if params.get("target_datastore"):
        target = f"data store {params['target_datastore']} of {target}"
    if params.get("target_scope"):
        target += f", scope {params['target_scope']}"
    return RestoreSummary(
        archive_id=params.get("archive_id"),
        at=datetime.fromisoformat(params["at"]) if params.get("at") else None,
        universe_id=params["source_universe"],
        target=target,
        complete=record.plan_complete,
        counts=RestoreCounts(**counts),
        by_source=dict(Counter((i.data or {}).get("source") or "none" for i in items)),
        by_precision=dict(Counter((i.data or {}).get("precision") or "unknown" for i in items)),
    )


async def restore_plan_page(
    jobs: JobService, record: JobRecord, query: RestorePlanQuery
) -> RestorePlanPage:
    items = _all_items(jobs, record.id)
    summary = summary_of(record, items)
    chosen = [
        i
        for i in items
        if i.seq > (query.after or 0) and (query.action is None or _action(i) is query.action)
    ]
    page = chosen[: query.limit]
    patches = await _patches(jobs, record, [i for i in page if _needs_patch(i)])
    keys = [_key_plan(record, item, patches.get(item.seq)) for item in page]
    more = len(chosen) > len(page)
    return RestorePlanPage(
        job_id=record.id,
        summary=summary,
        keys=keys,
        next_after=page[-1].seq if more and page else None,
    )


def _needs_patch(item: ItemRecord) -> bool:
    return _action(item) is RestoreAction.UPDATE and item.state == ItemState.PENDING.value


async def _patches(
    jobs: JobService, record: JobRecord, items: list[ItemRecord]
) -> dict[int, dict[str, Any]]:
    """For keys to update: the value patch and metadata changes, from a fresh read of both."""
    if not items:
        return {}
    handler = handler_for(record.kind)
    assert isinstance(handler, RestoreKind)
    spec = spec_of(record)
    wanted: list[Wanted] = await handler.wanted(spec, jobs.env, items)
    out: dict[int, dict[str, Any]] = {}
    for item, want in zip(items, wanted, strict=True):
        now, _ = await handler.current(jobs.env, item)
        then = want.state
        if then is None or not then.exists or not now.exists:
            continue
        try:
            ops = jsonpatch.make_patch(
                json.loads(now.value_json or "null"), json.loads(then.value_json or "null")
            ).patch
        except ValueError:
            ops = []
        users_change = tuple(now.user_ids) != tuple(then.user_ids)
        out[item.seq] = {
            "patch": patch_operations(ops[:MAX_PLAN_PATCH_OPS]),
            "patch_truncated": len(ops) > MAX_PLAN_PATCH_OPS,
            "attributes_change": not attributes_equal(now.attributes, then.attributes),
            "user_ids_now": list(now.user_ids) if users_change else None,
            "user_ids_then": list(then.user_ids) if users_change else None,
        }
    return out


def _key_plan(record: JobRecord, item: ItemRecord, patch: dict[str, Any] | None) -> RestoreKeyPlan:
    data = item.data or {}
    source = source_name(item)
    known_at = datetime.fromisoformat(data["known_at"]) if data.get("known_at") else None
    at = record.params.get("at")
    gap = None
    if at is not None and known_at is not None:
        gap = max(0.0, (datetime.fromisoformat(at) - known_at).total_seconds())
    standard = item.store_kind == StoreKind.STANDARD.value
    return RestoreKeyPlan(
        seq=item.seq,
        store_kind=StoreKind(item.store_kind),
        datastore=source.datastore,
        scope=source.scope,
        key=item.key,
        target_universe_id=item.universe,
        target_datastore=item.datastore,
        target_scope=item.scope,
        action=_action(item),
        source=PitSourceName(data["source"]) if data.get("source") else None,
        precision=PitPrecision(data.get("precision", PitPrecision.UNKNOWN.value)),
        known_at=known_at,
        gap_seconds=gap,
        revision=data.get("revision"),
        exists_then=data.get("then_exists"),
        current_revision=data.get("now_revision") if standard else None,
        reason=data.get("reason", ""),
        state=ItemState(item.state),
        skip_code=SkipCode(item.skip_code) if item.skip_code else None,
        error_code=ErrorCode(item.error_code) if item.error_code else None,
        message=item.message,
        **(patch or {}),
    )
