"""`set_metadata`: set or remove attributes and user ids, keeping every value byte for byte.

Each entry is read and written back with its exact value text and the new metadata,
conditionally on the revision read (a game server's write in between is never overwritten).
Entries already as asked are skipped; a change that would break a limit (attributes under 300
bytes, at most 4 user ids) is reported and the entry left untouched.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import TypeAdapter, ValidationError

from shared_schema.common import Role
from shared_schema.constraints import Attributes, UserIds
from shared_schema.errors import ErrorCode
from shared_schema.jobs import JobKind, JobSample, SampleAction, SetMetadataParams, SkipCode

from ....opencloud.models import DataStoreEntry
from ....opencloud.wire import attributes_equal
from ...errors import ServiceError
from ..kind import (
    MAX_ATTEMPTS,
    ItemContext,
    ItemResult,
    JobEnv,
    JobKindHandler,
    JobSpec,
    PlanNotes,
    register,
)
from ..store import ItemRecord
from ..writes import (
    conflict,
    held,
    image_of,
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

_ATTRIBUTES: TypeAdapter[dict[str, Any]] = TypeAdapter(Attributes)
_USER_IDS: TypeAdapter[list[int]] = TypeAdapter(UserIds)


def new_metadata(
    entry: DataStoreEntry, params: SetMetadataParams
) -> tuple[dict[str, Any] | None, list[int]]:
    attributes: dict[str, Any] = {} if params.clear_attributes else dict(entry.attributes or {})
    for name in params.remove_attributes:
        attributes.pop(name, None)
    attributes.update(params.set_attributes or {})
    if params.user_ids is not None:
        user_ids = list(params.user_ids)
    else:
        user_ids = [u for u in entry.user_ids if u not in params.remove_user_ids]
        user_ids += [u for u in params.add_user_ids if u not in user_ids]
    return attributes or None, user_ids


def _problem(attributes: dict[str, Any] | None, user_ids: list[int]) -> str | None:
    try:
        if attributes is not None:
            _ATTRIBUTES.validate_python(attributes)
        _USER_IDS.validate_python(user_ids)
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        return f"The new metadata breaks a limit: {problems}."
    return None


class SetMetadataKind(JobKindHandler):
    kind: ClassVar[JobKind] = JobKind.SET_METADATA
    params_model = SetMetadataParams
    role: ClassVar[Role] = Role.EDITOR

    def requests(self, spec: JobSpec, items: int) -> dict[int, dict[str, int]]:
        return {spec.universe: {"read": items, "write": items}}

    def plan_notes(
        self, spec: JobSpec, env: JobEnv, final_cursor: dict[str, Any] | None
    ) -> PlanNotes:
        notes = PlanNotes()
        notes.notes.append("Values are written back exactly as stored; only metadata changes.")
        notes.notes.append(held_note(spec.params.held_sessions.value))
        return notes

    async def sample(self, spec: JobSpec, item: ItemRecord, env: JobEnv) -> JobSample:
        entry = await read_entry(env.plane, item.universe, item.datastore, item.scope, item.key)
        if entry is None or entry.value_json is None:
            return sample(item, SampleAction.SKIP, "would skip: it does not exist")
        attributes, user_ids = new_metadata(entry, spec.params)
        before = sample_image(entry)
        after = image_of(entry.value_json, attributes, user_ids)
        lock = session_of(entry)
        if (problem := _problem(attributes, user_ids)) is not None:
            return sample(item, SampleAction.FAIL, problem, before=before, after=after)
        if _same(entry, attributes, user_ids):
            return sample(item, SampleAction.SKIP, "would skip: already as asked", before=before)
        if lock is not None and lock.held:
            return sample(item, SampleAction.SKIP, "would skip: a game server holds its session",
                          before=before, after=after, lock=lock)  # fmt: skip
        return sample(item, SampleAction.WRITE, "would change its metadata", before=before,
                      after=after, lock=lock)  # fmt: skip

    async def execute(self, ctx: ItemContext) -> ItemResult:
        if await ctx.applied("w") is not None:
            return ItemResult.applied()
        item, params = ctx.item, ctx.spec.params
        target = standard_target(item.universe, item.datastore, item.scope, item.key)
        for _ in range(MAX_ATTEMPTS):
            entry = await read_entry(ctx, item.universe, item.datastore, item.scope, item.key)
            if entry is None or entry.value_json is None:
                return missing()
            attributes, user_ids = new_metadata(entry, params)
            if _same(entry, attributes, user_ids):
                return ItemResult.skipped(SkipCode.UNCHANGED, "Its metadata is already as asked.")
            if (problem := _problem(attributes, user_ids)) is not None:
                return ItemResult.failed(ErrorCode.BAD_REQUEST, problem)
            if (result := held(ctx, session_of(entry), params.held_sessions)) is not None:
                return result
            try:
                await overwrite_entry(ctx, target, entry, entry.value_json, attributes, user_ids,
                                      "w")  # fmt: skip
            except ServiceError as error:
                if conflict(error):
                    continue
                raise
            return ItemResult.applied()
        return kept_writing()


def _same(entry: DataStoreEntry, attributes: dict[str, Any] | None, user_ids: list[int]) -> bool:
    return attributes_equal(entry.attributes, attributes) and list(entry.user_ids) == user_ids


register(SetMetadataKind())
