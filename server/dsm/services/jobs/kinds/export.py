"""`export`: the selected entries to a file on the server's machine (JSON Lines, CSV or SQLite).

Entries are read fresh, one by one, and appended to a JSON Lines spool next to the output file
(`.<job>.partial.jsonl`) as they arrive, so memory stays flat however many there are. Before
item outcomes are committed the spool is flushed and fsynced, and its length is committed with
them: after a crash the spool is cut back to that length and the items after it are read again.
When every item is done the spool becomes the output file (renamed for JSON Lines; streamed
through the CSV or SQLite writer otherwise). An existing file is never overwritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, ClassVar

from shared_schema.common import Role
from shared_schema.entries import StoreKind
from shared_schema.errors import ErrorCode
from shared_schema.jobs import (
    ExportFormat,
    ExportParams,
    JobKind,
    JobSample,
    SampleAction,
    SkipCode,
)

from ...errors import ServiceError
from ..formats import CsvWriter, ExportEntry, JsonLinesWriter, SqliteWriter
from ..jsontext import object_members
from ..kind import (
    ItemContext,
    ItemResult,
    JobEnv,
    JobKindHandler,
    JobSpec,
    JobStop,
    PlanNotes,
    RunResources,
    register,
)
from ..store import ItemRecord
from ..writes import image_of, read_entry, read_ordered, sample, sample_image

_EXTENSIONS = {ExportFormat.JSONL: "jsonl", ExportFormat.CSV: "csv", ExportFormat.SQLITE: "sqlite"}


def output_path(spec: JobSpec, env: JobEnv) -> Path:
    params: ExportParams = spec.params
    name = params.file_name or f"{spec.id}.{_EXTENSIONS[params.format]}"
    return env.exports_dir / name


def spool_path(spec: JobSpec, env: JobEnv) -> Path:
    return env.exports_dir / f".{spec.id}.partial.jsonl"


class ExportRun(RunResources):
    def __init__(self, spool: Path, offset: int) -> None:
        self.spool = spool
        # Cut back to what the last commit covered: lines after it belong to items read again.
        with open(spool, "ab") as out:
            out.truncate(offset)
        self._file: IO[str] = open(spool, "a", encoding="utf-8", newline="")  # noqa: SIM115
        self.writer = JsonLinesWriter(self._file)

    def write(self, entry: ExportEntry) -> None:
        self.writer.write(entry)

    def checkpoint(self) -> dict[str, Any] | None:
        if self._file.closed:
            return None
        self._file.flush()
        os.fsync(self._file.fileno())
        return {"offset": self._file.tell()}

    async def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class ExportKind(JobKindHandler):
    kind: ClassVar[JobKind] = JobKind.EXPORT
    params_model = ExportParams
    role: ClassVar[Role] = Role.EDITOR
    store_kinds = frozenset({StoreKind.STANDARD, StoreKind.ORDERED})
    rollback = "none"
    pace = "read"

    def check(self, spec: JobSpec, env: JobEnv) -> None:
        path = output_path(spec, env)
        if path.exists():
            raise ServiceError(
                ErrorCode.ALREADY_EXISTS,
                f"{path} already exists; choose another file name (exports never overwrite).",
            )

    def describe(self, spec: JobSpec) -> str:
        return f"Export {super().describe(spec)[len('Export ') :]} as {spec.params.format.value}"

    def requests(self, spec: JobSpec, items: int) -> dict[int, dict[str, int]]:
        name = "ordered.read" if spec.store_kind is StoreKind.ORDERED else "read"
        return {spec.universe: {name: items}}

    def plan_notes(
        self, spec: JobSpec, env: JobEnv, final_cursor: dict[str, Any] | None
    ) -> PlanNotes:
        notes = PlanNotes()
        notes.notes.append(
            f"The file is written on the server's machine: {output_path(spec, env)}. Nothing "
            "is written to Open Cloud."
        )
        if spec.params.format is ExportFormat.CSV:
            notes.notes.append(
                "CSV has one column per top-level field of the values (value.<field>); nested "
                "values are written as JSON text."
            )
        return notes

    async def sample(self, spec: JobSpec, item: ItemRecord, env: JobEnv) -> JobSample:
        if spec.store_kind is StoreKind.ORDERED:
            found = await read_ordered(
                env.plane, item.universe, item.datastore, item.scope, item.key
            )
            image = None if found is None else image_of(str(found.value))
        else:
            entry = await read_entry(env.plane, item.universe, item.datastore, item.scope, item.key)
            image = sample_image(entry)
        if image is None:
            return sample(item, SampleAction.SKIP, "would skip: it does not exist")
        return sample(item, SampleAction.READ, "would be written to the file", before=image)

    async def open_run(self, spec: JobSpec, env: JobEnv) -> RunResources:
        env.exports_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        offset = int((spec.record.kind_state or {}).get("offset", 0))
        return ExportRun(spool_path(spec, env), offset)

    async def execute(self, ctx: ItemContext) -> ItemResult:
        item = ctx.item
        run: ExportRun = ctx.resources
        if ctx.spec.store_kind is StoreKind.ORDERED:
            found = await read_ordered(ctx, item.universe, item.datastore, item.scope, item.key)
            if found is None:
                return ItemResult.skipped(SkipCode.NOT_FOUND, "It no longer exists.")
            run.write(ExportEntry(key=item.key, value_json=str(found.value), scope=item.scope))
            return ItemResult.applied()
        entry = await read_entry(ctx, item.universe, item.datastore, item.scope, item.key)
        if entry is None or entry.value_json is None:
            return ItemResult.skipped(SkipCode.NOT_FOUND, "It no longer exists.")
        run.write(
            ExportEntry(
                key=item.key,
                value_json=entry.value_json,
                scope=item.scope,
                attributes=entry.attributes,
                user_ids=list(entry.user_ids),
                revision=entry.revision_id,
                created=entry.create_time,
                updated=entry.revision_create_time,
            )
        )
        return ItemResult.applied()

    async def finish(self, spec: JobSpec, env: JobEnv, resources: RunResources) -> dict[str, Any]:
        assert isinstance(resources, ExportRun)
        resources.checkpoint()
        await resources.close()
        final = output_path(spec, env)
        if spec.record.output_path is None or not final.exists():
            try:
                # Off the event loop: a million lines take a while to convert.
                await asyncio.to_thread(publish, resources.spool, final, spec.params.format)
            except FileExistsError:
                raise JobStop(
                    ErrorCode.ALREADY_EXISTS,
                    f"{final} was created by something else while the job ran; the export is "
                    f"kept in {resources.spool}. Rename it, or export again with another name.",
                ) from None
            # Published: a restart from here on does not build it again.
            env.store.update(spec.id, output_path=str(final))
        for leftover in (resources.spool, building_path(final, spec.params.format)):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        return {"output_path": str(final)}


def building_path(final: Path, format: ExportFormat) -> Path:
    return final.with_name(f".{final.name}.tmp")


def publish(spool: Path, final: Path, format: ExportFormat) -> None:
    """Build the output beside `final`, then link it into place: never over an existing file,
    and a crash in between leaves either no output or the whole of it. The caller removes the
    spool and the built file once it has recorded that the output is published."""
    building = spool if format is ExportFormat.JSONL else building_path(final, format)
    if final.exists() and building.exists() and os.path.samefile(building, final):
        return  # linked just before a crash
    if building != spool:
        building.unlink(missing_ok=True)
        if format is ExportFormat.CSV:
            with open(building, "w", encoding="utf-8", newline="") as out, CsvWriter(out) as csv:
                for entry in _spooled(spool):
                    csv.write(entry)
        else:
            with SqliteWriter(building) as db:
                for entry in _spooled(spool):
                    db.write(entry)
    os.link(building, final)  # FileExistsError rather than replace someone's file


def _spooled(spool: Path) -> Iterator[ExportEntry]:
    """The entries of a JSON Lines export, values as their exact text."""
    with open(spool, encoding="utf-8") as lines:
        for line in lines:
            text = line.strip()
            members = {name: (start, end) for name, start, end in object_members(text)}
            fields = {n: json.loads(text[s:e]) for n, (s, e) in members.items() if n != "value"}
            start, end = members["value"]
            yield ExportEntry(
                key=fields["key"],
                value_json=text[start:end],
                scope=fields.get("scope") or "global",
                attributes=fields.get("attributes"),
                user_ids=fields.get("user_ids") or [],
                revision=fields.get("revision"),
                created=_time(fields.get("created")),
                updated=_time(fields.get("updated")),
            )


def _time(text: Any) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if isinstance(text, str) else None


register(ExportKind())
