"""Export writers and import readers for bulk jobs, streaming so memory stays flat.

Export (each writer is a context manager with ``write(entry)``; nothing is held per entry):

- ``JsonLinesWriter(stream)``: one JSON object a line: ``{"key", "scope", "value",
  "attributes", "user_ids", "revision", "created", "updated"}``. ``value`` is the stored JSON
  copied verbatim, so big integers and decimals survive exactly.
- ``CsvWriter(stream)``: columns ``key, scope, revision, created, updated, user_ids,
  attributes`` then one ``value.<field>`` column per top-level field of object values (a value
  that is not an object goes to a ``value`` column). Rows are spooled to a temporary file while
  the column set grows, and copied out under the header on ``close``. A cell holds a string
  as-is, any other JSON value as JSON text, and a string that would read back as JSON (``"5"``,
  ``"true"``, ``""``) as a quoted JSON string, so ``read_csv`` gives back what was written.
- ``SqliteWriter(path)``: table ``entries`` with the same fields, committed in batches.

Import: ``read_jsonl(binary_stream)`` and ``read_csv(text_stream)`` yield ``ImportRecord`` or
``BadLine`` for every line, each fully validated against Open Cloud's limits (key and scope
1-50 bytes, value JSON of at most 4 MiB, attributes an object under 300 bytes, at most 4
user ids) and for keys repeated in the file; ``validate(results)`` makes the report.
``plan_import(mode, record, current)`` says what one record does in a mode:

- ``create_only``: create missing keys; existing keys are skipped.
- ``overwrite``: the file's value replaces the stored one; attributes and user ids from the
  file replace the stored ones, and are carried over when the line does not give them.
- ``merge``: the file's value is applied to the stored one as a JSON Merge Patch (RFC 7396):
  object members in the file replace or add members, recursively; a member set to null removes
  it; arrays and other values replace whole. Attributes given in the file are merged the same
  way; user ids given replace the stored ones. A missing key is created from the file's value
  (nulls in it removed, as RFC 7396 does when patching nothing).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, TextIO

from pydantic import TypeAdapter, ValidationError

from shared_schema.constraints import (
    MAX_VALUE_BYTES,
    Attributes,
    JsonText,
    Name,
    UserIds,
)

from .jsontext import JsonTextError, dumps_exact, loads_exact, object_members

ImportMode = Literal["create_only", "overwrite", "merge"]
IMPORT_MODES: tuple[ImportMode, ...] = ("create_only", "overwrite", "merge")
DEFAULT_SCOPE = "global"
# A line holds a value of up to 4 MiB plus its metadata; anything longer cannot be valid.
MAX_LINE_BYTES = MAX_VALUE_BYTES + 64 * 1024
MAX_REPORTED_BAD_LINES = 1000
SQLITE_BATCH = 1000
CSV_FIXED_COLUMNS = ("key", "scope", "revision", "created", "updated", "user_ids", "attributes")

_NAME: TypeAdapter[str] = TypeAdapter(Name)
_VALUE: TypeAdapter[str] = TypeAdapter(JsonText)
_ATTRIBUTES: TypeAdapter[dict[str, Any]] = TypeAdapter(Attributes)
_USER_IDS: TypeAdapter[list[int]] = TypeAdapter(UserIds)

# Values of up to 4 MiB must fit in one CSV cell (the csv module's default cap is 128 KiB).
csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))


@dataclass(frozen=True)
class ExportEntry:
    key: str
    value_json: str
    scope: str = DEFAULT_SCOPE
    attributes: dict[str, Any] | None = None
    user_ids: list[int] = field(default_factory=list)
    revision: str | None = None
    created: datetime | None = None
    updated: datetime | None = None


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _one_line(value_json: str) -> str:
    # Raw line breaks can only be whitespace between tokens (JSON strings escape them).
    return value_json.replace("\r", " ").replace("\n", " ").strip()


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class JsonLinesWriter:
    def __init__(self, stream: TextIO) -> None:
        self._out = stream
        self.count = 0

    def __enter__(self) -> JsonLinesWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def write(self, entry: ExportEntry) -> None:
        self._out.write(
            '{"key":'
            + _dump(entry.key)
            + ',"scope":'
            + _dump(entry.scope)
            + ',"value":'
            + _one_line(entry.value_json)
            + ',"attributes":'
            + _dump(entry.attributes)
            + ',"user_ids":'
            + _dump(entry.user_ids)
            + ',"revision":'
            + _dump(entry.revision)
            + ',"created":'
            + _dump(_time(entry.created))
            + ',"updated":'
            + _dump(_time(entry.updated))
            + "}\n"
        )
        self.count += 1

    def close(self) -> None:
        self._out.flush()


def _cell(value_text: str) -> str:
    """A CSV cell for one JSON value's exact text."""
    try:
        decoded = json.loads(value_text)
    except (ValueError, RecursionError):
        return value_text
    if isinstance(decoded, str):
        try:
            json.loads(decoded)
        except (ValueError, RecursionError):
            return decoded if decoded else '""'
        return value_text  # "5", "true", "null"... stay quoted so they read back as strings
    return value_text


class CsvWriter:
    def __init__(self, stream: TextIO) -> None:
        self._out = stream
        self._fields: dict[str, None] = {}  # insertion-ordered set of value.<field> columns
        # Closed in close(); rows wait here until the set of columns is known.
        self._spool: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8", newline="")  # noqa: SIM115
        self._bare_value = False
        self.count = 0

    def __enter__(self) -> CsvWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def write(self, entry: ExportEntry) -> None:
        text = _one_line(entry.value_json)
        row: dict[str, str] = {
            "key": entry.key,
            "scope": entry.scope,
            "revision": entry.revision or "",
            "created": _time(entry.created) or "",
            "updated": _time(entry.updated) or "",
            "user_ids": _dump(entry.user_ids),
            "attributes": "" if entry.attributes is None else _dump(entry.attributes),
        }
        try:
            members = object_members(text)
        except JsonTextError:
            members = None
        if members is None:
            self._bare_value = True
            row["value"] = _cell(text)
        else:
            for name, start, end in members:
                column = "value." + name
                self._fields.setdefault(column, None)
                row[column] = _cell(text[start:end])
        self._spool.write(_dump(row) + "\n")
        self.count += 1

    def close(self) -> None:
        if self._spool.closed:
            return
        columns = [*CSV_FIXED_COLUMNS, *(["value"] if self._bare_value else []), *self._fields]
        writer = csv.DictWriter(self._out, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        self._spool.seek(0)
        for line in self._spool:
            writer.writerow(json.loads(line))
        self._spool.close()
        self._out.flush()


class SqliteWriter:
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS entries (
        scope      TEXT NOT NULL,
        key        TEXT NOT NULL,
        value_json TEXT NOT NULL,
        attributes TEXT,
        user_ids   TEXT NOT NULL,
        revision   TEXT,
        created    TEXT,
        updated    TEXT,
        PRIMARY KEY (scope, key)
    )
    """

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path)
        self._db.execute(self.SCHEMA)
        self._batch: list[tuple[Any, ...]] = []
        self.count = 0

    def __enter__(self) -> SqliteWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def write(self, entry: ExportEntry) -> None:
        self._batch.append(
            (
                entry.scope,
                entry.key,
                entry.value_json,
                None if entry.attributes is None else _dump(entry.attributes),
                _dump(entry.user_ids),
                entry.revision,
                _time(entry.created),
                _time(entry.updated),
            )
        )
        self.count += 1
        if len(self._batch) >= SQLITE_BATCH:
            self._flush()

    def _flush(self) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self._batch
            )
        self._batch.clear()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.ProgrammingError):  # closed already
            self._flush()
            self._db.close()


# ------------------------------------------------------------------------------------ import


@dataclass(frozen=True)
class ImportRecord:
    line: int
    key: str
    scope: str
    value_json: str
    attributes: dict[str, Any] | None  # None: the line does not give any
    user_ids: list[int] | None  # None: the line does not give any


@dataclass(frozen=True)
class BadLine:
    line: int
    message: str


@dataclass
class ImportReport:
    lines: int = 0
    valid: int = 0
    bad_count: int = 0
    bad: list[BadLine] = field(default_factory=list)  # the first MAX_REPORTED_BAD_LINES

    @property
    def ok(self) -> bool:
        return self.bad_count == 0 and self.valid > 0

    def describe(self) -> str:
        if self.lines == 0:
            return "The file holds no entries."
        head = f"{self.valid:,} of {self.lines:,} lines are valid; {self.bad_count:,} are not."
        shown = "\n".join(f"  line {b.line}: {b.message}" for b in self.bad[:20])
        more = self.bad_count - min(20, len(self.bad))
        tail = f"\n  ... and {more:,} more" if more > 0 else ""
        return head + ("\n" + shown + tail if shown else "")


def validate(results: Iterable[ImportRecord | BadLine]) -> ImportReport:
    """Count valid and bad lines; keeps the first MAX_REPORTED_BAD_LINES problems."""
    report = ImportReport()
    for item in results:
        report.lines += 1
        if isinstance(item, BadLine):
            report.bad_count += 1
            if len(report.bad) < MAX_REPORTED_BAD_LINES:
                report.bad.append(item)
        else:
            report.valid += 1
    return report


def _errors(exc: ValidationError) -> str:
    return "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())


class _Checker:
    """Field checks shared by both formats, and the repeated-key check across lines."""

    def __init__(self) -> None:
        # 16-byte digests, not the keys: a million entries cost tens of MB, not the keys' size.
        self._seen: dict[bytes, int] = {}

    def record(
        self,
        line: int,
        key: Any,
        scope: Any,
        value_json: str,
        attributes: Any,
        user_ids: Any,
    ) -> ImportRecord | BadLine:
        problems = []
        for label, item in (("key", key), ("scope", scope)):
            if not isinstance(item, str):
                problems.append(f"{label} must be a string")
                continue
            try:
                _NAME.validate_python(item)
            except ValidationError as exc:
                problems.append(f"{label} {_errors(exc)}")
        try:
            _VALUE.validate_python(value_json)
        except ValidationError as exc:
            problems.append(f"value {_errors(exc)}")
        if attributes is not None:
            try:
                attributes = _ATTRIBUTES.validate_python(attributes)
            except ValidationError as exc:
                problems.append(f"attributes {_errors(exc)}")
        if user_ids is not None:
            try:
                user_ids = _USER_IDS.validate_python(user_ids)
            except ValidationError as exc:
                problems.append(f"user_ids: {_errors(exc)}")
        if problems:
            return BadLine(line, "; ".join(problems))
        digest = hashlib.blake2b(f"{scope}\0{key}".encode(), digest_size=16).digest()
        first = self._seen.setdefault(digest, line)
        if first != line:
            return BadLine(line, f"key {key!r} in scope {scope!r} is already on line {first}")
        return ImportRecord(line, key, scope, value_json, attributes, user_ids)


def _read_lines(stream: BinaryIO) -> Iterator[tuple[int, str | None, str]]:
    """(line number, text or None, problem) for each line, never holding more than one line."""
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (more := stream.readline(1024 * 1024)) and not more.endswith(b"\n"):
                pass
            yield number, None, f"the line is longer than {MAX_LINE_BYTES:,} bytes"
            continue
        try:
            yield number, raw.decode("utf-8").rstrip("\r\n"), ""
        except UnicodeDecodeError as exc:
            yield number, None, f"not UTF-8 text (byte {exc.start + 1})"


_JSONL_FIELDS = {
    "key",
    "scope",
    "value",
    "attributes",
    "user_ids",
    "revision",
    "created",
    "updated",
}


def read_jsonl(stream: BinaryIO) -> Iterator[ImportRecord | BadLine]:
    """Records of a JSON Lines file in the export format (blank lines are skipped)."""
    checker = _Checker()
    for number, text, problem in _read_lines(stream):
        if text is None:
            yield BadLine(number, problem)
            continue
        if not text.strip():
            continue
        try:
            members = object_members(text)
        except JsonTextError as exc:
            yield BadLine(number, f"not a JSON object: {exc}")
            continue
        names = [m[0] for m in members]
        repeated = sorted({n for n in names if names.count(n) > 1})
        unknown = sorted(set(names) - _JSONL_FIELDS)
        if repeated or unknown or "key" not in names or "value" not in names:
            parts = []
            if "key" not in names or "value" not in names:
                parts.append('each line needs "key" and "value"')
            if repeated:
                parts.append(f"repeated field(s) {', '.join(repeated)}")
            if unknown:
                parts.append(f"unknown field(s) {', '.join(unknown)}")
            yield BadLine(number, "; ".join(parts))
            continue
        spans = {name: (start, end) for name, start, end in members}
        fields = {n: json.loads(text[s:e]) for n, (s, e) in spans.items() if n != "value"}
        start, end = spans["value"]
        yield checker.record(
            number,
            fields.get("key"),
            fields.get("scope", DEFAULT_SCOPE),
            text[start:end],
            fields.get("attributes"),
            fields.get("user_ids"),
        )


def _cell_json(cell: str) -> str:
    """A CSV cell as JSON text: JSON as written, anything else as a string."""
    stripped = cell.strip()
    try:
        json.loads(stripped)
    except (ValueError, RecursionError):
        return _dump(cell)
    return stripped


def read_csv(stream: TextIO) -> Iterator[ImportRecord | BadLine]:
    """Records of a CSV file with a header: ``key`` required; ``scope``, ``attributes``,
    ``user_ids`` optional; the value from a ``value`` column (JSON text) or ``value.<field>``
    columns (empty cells leave the field out)."""
    reader = csv.reader(stream)
    checker = _Checker()
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        yield BadLine(1, f"the header cannot be read as CSV: {exc}")
        return
    if "key" not in header:
        yield BadLine(1, 'the header must have a "key" column')
        return
    fields = [h for h in header if h.startswith("value.")]
    if "value" in header and fields:
        yield BadLine(1, 'use either a "value" column or "value.<field>" columns, not both')
        return
    if "value" not in header and not fields:
        yield BadLine(1, 'the header needs a "value" column or "value.<field>" columns')
        return
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield BadLine(reader.line_num, f"not valid CSV: {exc}")
            continue
        number = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield BadLine(number, f"has {len(row)} cells; the header has {len(header)}")
            continue
        cells = dict(zip(header, row, strict=True))
        try:
            attributes = json.loads(cells["attributes"]) if cells.get("attributes") else None
            user_ids = json.loads(cells["user_ids"]) if cells.get("user_ids") else None
        except ValueError as exc:
            yield BadLine(number, f"attributes and user_ids must be JSON: {exc}")
            continue
        if "value" in cells:
            value_json = cells["value"].strip()
        else:
            value_json = (
                "{"
                + ",".join(_dump(f[6:]) + ":" + _cell_json(cells[f]) for f in fields if cells[f])
                + "}"
            )
        yield checker.record(
            number,
            cells["key"],
            cells.get("scope") or DEFAULT_SCOPE,
            value_json,
            attributes,
            user_ids,
        )


# ------------------------------------------------------------------------------ import modes


@dataclass(frozen=True)
class CurrentEntry:
    """What the data store holds for a record's key (read by the engine before writing)."""

    value_json: str
    attributes: dict[str, Any] | None
    user_ids: list[int]


@dataclass(frozen=True)
class ImportAction:
    action: Literal["create", "update", "skip"]
    reason: str
    value_json: str | None = None
    attributes: dict[str, Any] | None = None
    user_ids: list[int] | None = None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch of ``patch`` onto ``target`` (neither is modified)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def plan_import(
    mode: ImportMode, record: ImportRecord, current: CurrentEntry | None
) -> ImportAction:
    """What importing ``record`` does in ``mode`` given the stored entry (None: no such key)."""
    if mode not in IMPORT_MODES:
        raise ValueError(f"unknown import mode {mode!r}; use one of {', '.join(IMPORT_MODES)}")
    if current is None:
        value_json = record.value_json
        if mode == "merge":
            value_json = dumps_exact(merge_patch(None, loads_exact(record.value_json)))
        return ImportAction(
            "create",
            "new key",
            value_json=value_json,
            attributes=record.attributes,
            user_ids=record.user_ids or [],
        )
    if mode == "create_only":
        return ImportAction("skip", "the key exists (create-only import)")
    if mode == "overwrite":
        value_json = record.value_json
        attributes = record.attributes if record.attributes is not None else current.attributes
    else:
        merged = merge_patch(loads_exact(current.value_json), loads_exact(record.value_json))
        value_json = dumps_exact(merged)
        attributes = current.attributes
        if record.attributes is not None:
            attributes = merge_patch(current.attributes or {}, record.attributes)
        try:
            _VALUE.validate_python(value_json)
            if attributes is not None:
                _ATTRIBUTES.validate_python(attributes)
        except ValidationError as exc:
            return ImportAction("skip", f"the merged entry would break a limit: {_errors(exc)}")
    user_ids = record.user_ids if record.user_ids is not None else current.user_ids
    same = (
        dumps_exact(loads_exact(value_json)) == dumps_exact(loads_exact(current.value_json))
        and attributes == current.attributes
        and user_ids == current.user_ids
    )
    if same:
        return ImportAction("skip", "already as in the file")
    return ImportAction(
        "update", mode, value_json=value_json, attributes=attributes, user_ids=user_ids
    )
