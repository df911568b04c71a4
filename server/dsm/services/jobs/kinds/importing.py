"""`import`: the lines of an uploaded JSON Lines or CSV file into one data store.

Planning validates every line first (key and scope 1-50 bytes, value JSON of at most 4 MiB,
attributes an object under 300 bytes, at most 4 user ids, no key twice) and lists bad lines by
line number; a file with bad lines cannot be started unless `skip_bad_lines` says to import the
valid ones. Each valid line is an item; while running, the file is read again alongside the
items (never all of it in memory). Modes: create-only, overwrite, merge (see `formats`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar

from shared_schema.common import Role
from shared_schema.errors import ErrorCode
from shared_schema.jobs import (
    BadLineView,
    ImportFormat,
    ImportMode,
    ImportParams,
    JobKind,
    JobSample,
    SampleAction,
    SkipCode,
)

from ...errors import ServiceError
from ..formats import (
    MAX_REPORTED_BAD_LINES,
    BadLine,
    CurrentEntry,
    ImportRecord,
    plan_import,
    read_csv,
    read_jsonl,
)
from ..kind import (
    MAX_ATTEMPTS,
    ItemContext,
    ItemPage,
    ItemResult,
    JobEnv,
    JobKindHandler,
    JobSpec,
    PlanNotes,
    register,
)
from ..store import ItemRecord, NewItem
from ..writes import (
    conflict,
    create_entry,
    held,
    image_of,
    kept_writing,
    overwrite_entry,
    read_entry,
    sample,
    sample_image,
    session_of,
    standard_target,
)
from .delete import held_note

BATCH = 500
_LIMIT_BROKEN = "the merged entry would break a limit"


def file_format(spec: JobSpec, file_name: str) -> ImportFormat:
    chosen: ImportFormat | None = spec.params.format
    if chosen is not None:
        return chosen
    return ImportFormat.CSV if file_name.lower().endswith(".csv") else ImportFormat.JSONL


def records(path: Path, format: ImportFormat) -> Iterator[ImportRecord | BadLine]:
    """Every line of the file, validated, in order."""
    if format is ImportFormat.JSONL:
        with open(path, "rb") as binary:
            yield from read_jsonl(binary)
        return
    # Bytes that are not UTF-8 become lone surrogates, which the line checks report.
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as text:
        yield from read_csv(text)


async def batches(path: Path, format: ImportFormat) -> AsyncIterator[list[ImportRecord | BadLine]]:
    """The file's lines in batches, parsed in a thread so the server keeps answering."""
    lines = records(path, format)
    while batch := await asyncio.to_thread(lambda: list(islice(lines, BATCH))):
        yield batch


class ImportKind(JobKindHandler):
    kind: ClassVar[JobKind] = JobKind.IMPORT
    params_model = ImportParams
    role: ClassVar[Role] = Role.ADMIN

    def _file(self, spec: JobSpec, env: JobEnv) -> tuple[Path, ImportFormat]:
        record, path = env.uploads.complete_file(spec.params.upload_id)
        return path, file_format(spec, record.file_name)

    def check(self, spec: JobSpec, env: JobEnv) -> None:
        selection = spec.selection
        assert selection is not None
        if len(selection.datastores) != 1 or selection.keys is not None or selection.prefix:
            raise ServiceError(
                ErrorCode.BAD_REQUEST,
                "An import's selection names exactly one data store (and no keys or prefix): "
                "the file says which keys and scopes to write.",
            )
        self._file(spec, env)

    def describe(self, spec: JobSpec) -> str:
        selection = spec.selection
        assert selection is not None
        mode = spec.params.mode.value.replace("_", "-")
        return (
            f"Import upload {spec.params.upload_id} into data store {selection.datastores[0]} "
            f"(universe {spec.universe}, {mode})"
        )

    def requests(self, spec: JobSpec, items: int) -> dict[int, dict[str, int]]:
        return {spec.universe: {"read": items, "write": items}}

    async def enumerate(
        self, spec: JobSpec, env: JobEnv, cursor: dict[str, Any] | None
    ) -> AsyncIterator[ItemPage]:
        path, format = self._file(spec, env)
        store = spec.selection.datastores[0] if spec.selection else ""
        state = dict(cursor or {"line": 0, "bad": [], "bad_count": 0})
        done_line = int(state["line"])
        async for batch in batches(path, format):
            items = []
            for line in batch:
                if line.line <= done_line:
                    continue
                if isinstance(line, BadLine):
                    state["bad_count"] += 1
                    if len(state["bad"]) < MAX_REPORTED_BAD_LINES:
                        state["bad"].append([line.line, line.message])
                else:
                    items.append(
                        NewItem(spec.universe, "standard", store, line.scope, line.key, line.line)
                    )
                state["line"] = line.line
            yield ItemPage(items, dict(state), False)
        yield ItemPage([], dict(state), True)

    def plan_notes(
        self, spec: JobSpec, env: JobEnv, final_cursor: dict[str, Any] | None
    ) -> PlanNotes:
        state = final_cursor or {}
        notes = PlanNotes(
            bad_lines=[BadLineView(line=line, message=text) for line, text in state.get("bad", [])],
            bad_line_count=int(state.get("bad_count", 0)),
        )
        if notes.bad_line_count:
            what = f"{notes.bad_line_count:,} line(s) of the file are not valid"
            if spec.params.skip_bad_lines:
                notes.warnings.append(f"{what}; they are left out (skip_bad_lines).")
            else:
                notes.blocking.append(
                    f"{what} (see bad_lines). Fix the file and upload it again, or import only "
                    "the valid lines with skip_bad_lines."
                )
        notes.notes.append(
            {
                ImportMode.CREATE_ONLY: "Keys that already exist are left as they are.",
                ImportMode.OVERWRITE: "The file's values replace stored ones; attributes and "
                "user ids a line leaves out are kept.",
                ImportMode.MERGE: "The file's values are merged into stored ones (JSON Merge "
                "Patch: members set or replaced, null removes one).",
            }[spec.params.mode]
        )
        notes.notes.append(held_note(spec.params.held_sessions.value))
        return notes

    async def _record(self, spec: JobSpec, env: JobEnv, line: int) -> ImportRecord | None:
        path, format = self._file(spec, env)
        async for batch in batches(path, format):
            for found in batch:
                if found.line == line:
                    return found if isinstance(found, ImportRecord) else None
        return None

    async def sample(self, spec: JobSpec, item: ItemRecord, env: JobEnv) -> JobSample:
        record = await self._record(spec, env, item.line or 0)
        if record is None:
            return sample(item, SampleAction.FAIL, f"line {item.line} is gone from the upload")
        current = await read_entry(env.plane, item.universe, item.datastore, item.scope, item.key)
        action = plan_import(spec.params.mode, record, _current(current))
        before = sample_image(current)
        if action.action == "skip":
            return sample(item, SampleAction.SKIP, f"line {record.line}: would skip: {action.reason}",
                          before=before)  # fmt: skip
        assert action.value_json is not None
        after = image_of(action.value_json, action.attributes, action.user_ids)
        lock = session_of(current)
        if lock is not None and lock.held:
            summary = f"line {record.line}: would skip: a game server holds its session"
            return sample(item, SampleAction.SKIP, summary, before=before, after=after, lock=lock)
        verb = "create" if action.action == "create" else f"update ({action.reason})"
        return sample(item, SampleAction.WRITE, f"line {record.line}: would {verb}",
                      before=before, after=after, lock=lock)  # fmt: skip

    def with_payloads(
        self, spec: JobSpec, env: JobEnv, items: AsyncIterator[ItemRecord]
    ) -> AsyncIterator[tuple[ItemRecord, Any]]:
        async def walk() -> AsyncIterator[tuple[ItemRecord, Any]]:
            path, format = self._file(spec, env)
            lines = batches(path, format)
            ahead: deque[ImportRecord] = deque()
            exhausted = False
            async for item in items:
                line = item.line or 0
                while not exhausted and (not ahead or ahead[-1].line < line):
                    batch = await anext(lines, None)
                    if batch is None:
                        exhausted = True
                    else:
                        ahead.extend(r for r in batch if isinstance(r, ImportRecord))
                while ahead and ahead[0].line < line:
                    ahead.popleft()
                found = ahead[0] if ahead and ahead[0].line == line else None
                yield item, found

        return walk()

    async def execute(self, ctx: ItemContext) -> ItemResult:
        record: ImportRecord | None = ctx.payload
        if record is None:
            return ItemResult.failed(
                ErrorCode.NOT_FOUND, f"Line {ctx.item.line} is no longer in the uploaded file."
            )
        if await ctx.applied("w") is not None:
            return ItemResult.applied()
        item, params = ctx.item, ctx.spec.params
        target = standard_target(item.universe, item.datastore, item.scope, item.key)
        for _ in range(MAX_ATTEMPTS):
            current = await read_entry(ctx, item.universe, item.datastore, item.scope, item.key)
            action = plan_import(params.mode, record, _current(current))
            try:
                if action.action == "skip":
                    if action.reason.startswith(_LIMIT_BROKEN):
                        return ItemResult.failed(ErrorCode.BAD_REQUEST, action.reason)
                    code = (
                        SkipCode.EXISTS
                        if current and params.mode is ImportMode.CREATE_ONLY
                        else SkipCode.UNCHANGED
                    )
                    return ItemResult.skipped(code, f"Line {record.line}: {action.reason}.")
                assert action.value_json is not None
                if action.action == "create" or current is None:
                    await create_entry(ctx, target, action.value_json, action.attributes,
                                       list(action.user_ids or []), "w")  # fmt: skip
                    return ItemResult.applied()
                if (result := held(ctx, session_of(current), params.held_sessions)) is not None:
                    return result
                await overwrite_entry(ctx, target, current, action.value_json, action.attributes,
                                      list(action.user_ids or []), "w")  # fmt: skip
                return ItemResult.applied()
            except ServiceError as error:
                if error.code is ErrorCode.ALREADY_EXISTS or conflict(error):
                    continue  # written meanwhile by someone else: read it and decide again
                raise
        return kept_writing()


def _current(entry: Any) -> CurrentEntry | None:
    if entry is None or entry.value_json is None:
        return None
    return CurrentEntry(entry.value_json, entry.attributes, list(entry.user_ids))


register(ImportKind())
