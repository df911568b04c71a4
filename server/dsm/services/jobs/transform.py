"""Apply a jq program to an entry's value, and decide whether the result may be written.

jq (the ``jq`` package) computes with IEEE doubles: integers beyond 2**53, decimals with more
than 17 significant digits and numbers beyond the double range come out as *other* numbers even
when the program never touches them (``.coins *= 2`` turns an untouched 9007199254740993 into
9007199254740992). Values are therefore compared as parsed JSON with exact numbers (every input
number keeps its decimal literal's exact value), and:

- output equal to the input (numerically: ``1.0`` equals ``1``, ``-0`` equals ``0``) is
  ``unchanged``, and so is output that differs from the input only by jq's own rounding;
- output that carries a number jq rounded from an input number, anywhere (in place or moved),
  is ``precision``: left untouched and reported with the JSON pointers and both numbers;
- output over 4 MiB, not JSON (NaN), or nested deeper than MAX_JSON_DEPTH is ``invalid``;
- a runtime error, a program that yields no or several values, a time-out or a worker that ran
  out of memory is ``failed`` with jq's message.

jq holds the GIL while it runs and a program can loop forever (``[range(1e18)]``), so programs
run in a child process with a time and memory limit (``JqTransform``); ``evaluate`` is the pure
function that child runs. Usage::

    with JqTransform(".coins *= 2 | del(.legacyField)") as program:   # TransformError if bad
        outcome = program.apply(value_json)        # blocking: asyncio.to_thread(...) in a server
        if outcome.kind == "changed":
            write(outcome.value_json)
"""

from __future__ import annotations

import json
import math
import multiprocessing
import multiprocessing.connection
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from shared_schema.constraints import JsonText, compact_json

OutcomeKind = Literal["changed", "unchanged", "precision", "invalid", "failed"]

DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_MEMORY_BYTES = 1024 * 1024 * 1024
_MAX_DOUBLE = 1.7976931348623157e308
_JSON_TEXT: TypeAdapter[str] = TypeAdapter(JsonText)


class TransformError(Exception):
    """The program cannot be used at all (it does not compile); jq's message is kept."""


@dataclass(frozen=True)
class PrecisionLoss:
    pointer: str  # RFC 6901 JSON pointer into the output
    before: str  # the input number, exactly
    after: str  # what jq made of it


@dataclass(frozen=True)
class TransformOutcome:
    kind: OutcomeKind
    message: str
    value_json: str | None = None  # the compact output, only when kind == "changed"
    losses: tuple[PrecisionLoss, ...] = field(default_factory=tuple)


def check_program(program: str) -> None:
    """Raise TransformError with jq's own message when ``program`` does not compile."""
    import jq  # type: ignore[import-not-found]  # ships no type information

    try:
        jq.compile(program)
    except ValueError as exc:
        raise TransformError(_clean(str(exc))) from None


# ---------------------------------------------------------------------------------- numbers


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_exact(text: str) -> Any:
    """JSON with every number exact: ints as int, everything else as Decimal of its literal."""
    return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)


def _double_key(value: float) -> Decimal:
    """A double as the jq package hands it over: integral doubles as their exact integer value
    (2**53 + 1 comes back as 9007199254740992), others as their shortest round-trip decimal."""
    if not math.isfinite(value):
        value = math.copysign(_MAX_DOUBLE, value)
    if value.is_integer():
        return Decimal(int(value))
    return Decimal(repr(value))


def _jq_number(value: int | Decimal) -> Decimal:
    """The number jq makes of an input number: the nearest double, clamped to the double range
    (jq writes 1e400 as 1.7976931348623157e+308)."""
    try:
        return _double_key(float(value))
    except OverflowError:  # an int beyond the double range
        return _double_key(math.copysign(_MAX_DOUBLE, value))


def _number_key(value: int | float | Decimal) -> Decimal:
    return _double_key(value) if isinstance(value, float) else Decimal(value)


def _canonical(value: Any) -> Any:
    """A form where equal JSON values compare equal and no bool equals a number."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float | Decimal):
        return ("number", _number_key(value))
    if isinstance(value, list):
        return ("array", [_canonical(v) for v in value])
    if isinstance(value, dict):
        return ("object", {k: _canonical(v) for k, v in value.items()})
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _jq_view(value: Any) -> Any:
    """The input as jq sees it (every number rounded the way jq rounds it)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | Decimal):
        return _jq_number(value)
    if isinstance(value, list):
        return [_jq_view(v) for v in value]
    return {k: _jq_view(v) for k, v in value.items()}


def _numbers(value: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    stack: list[tuple[str, Any]] = [(pointer, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        if isinstance(item, int | float | Decimal):
            yield where, item
        elif isinstance(item, list):
            stack.extend((f"{where}/{i}", v) for i, v in enumerate(item))
        elif isinstance(item, dict):
            stack.extend((f"{where}/{_escape(k)}", v) for k, v in item.items())


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _at(value: Any, pointer: str) -> tuple[bool, Any]:
    current = value
    for raw in pointer.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return False, None
    return True, current


def _text(number: int | float | Decimal) -> str:
    if isinstance(number, Decimal):
        return str(number)
    return repr(number) if isinstance(number, float) else str(number)


# ------------------------------------------------------------------------------- evaluation


def evaluate(program: Any, value_json: str) -> TransformOutcome:
    """Run a compiled jq program (``jq.compile(...)``) on one value; decide what to do."""
    try:
        before = _parse_exact(value_json)
    except (ValueError, RecursionError) as exc:
        return TransformOutcome(
            "failed", f"The stored value is not JSON the server can read: {exc}"
        )
    try:
        outputs = program.input_text(value_json).all()
    except ValueError as exc:
        return TransformOutcome("failed", f"The jq program failed: {_clean(str(exc))}")
    if len(outputs) != 1:
        return TransformOutcome(
            "failed",
            f"The jq program produced {len(outputs)} values; it must produce exactly one "
            "(wrap several in [ ] or pick one with first(...)).",
        )
    after = outputs[0]
    try:
        after_canonical = _canonical(after)
        if after_canonical == _canonical(before):
            return TransformOutcome("unchanged", "The program leaves this value as it is.")
        if after_canonical == _canonical(_jq_view(before)):
            return TransformOutcome(
                "unchanged",
                "The program changes nothing here; writing its output would only round numbers "
                "jq cannot hold exactly, so the value is left as it is.",
            )
    except RecursionError:
        return TransformOutcome("invalid", "The output is nested too deeply to be compared.")
    losses = _precision_losses(before, after)
    if losses:
        listed = ", ".join(
            f"{x.pointer or '/'} ({x.before} would become {x.after})" for x in losses[:5]
        )
        more = f" and {len(losses) - 5} more" if len(losses) > 5 else ""
        return TransformOutcome(
            "precision",
            "Left untouched: jq would change numbers the program did not compute, because it "
            f"holds every number as a double: {listed}{more}.",
            losses=tuple(losses),
        )
    try:
        text = compact_json(after)
        _JSON_TEXT.validate_python(text)
    except ValueError as exc:  # NaN/Infinity, lone surrogates, or the pydantic checks
        return TransformOutcome("invalid", f"The output cannot be stored: {_reason(exc)}")
    except RecursionError:
        return TransformOutcome("invalid", "The output is nested too deeply to be stored.")
    return TransformOutcome("changed", "The program changes this value.", value_json=text)


def _precision_losses(before: Any, after: Any) -> list[PrecisionLoss]:
    rounded: dict[Decimal, str] = {}
    for _, number in _numbers(before):
        exact = Decimal(number)
        jq_made = _jq_number(number)
        if jq_made != exact:
            rounded.setdefault(jq_made, _text(number))
    if not rounded:
        return []
    losses = []
    for pointer, number in _numbers(after):
        key = _number_key(number)
        if key not in rounded:
            continue
        present, original = _at(before, pointer)
        exact_before = (
            present
            and isinstance(original, int | Decimal)
            and not isinstance(original, bool)
            and Decimal(original) == key
        )
        if exact_before:
            continue  # this number was already exactly this value in the input
        losses.append(PrecisionLoss(pointer, rounded[key], _text(number)))
    losses.sort(key=lambda x: x.pointer)
    return losses


def _clean(message: str) -> str:
    return " ".join(line.strip() for line in message.strip().splitlines() if line.strip())


def _reason(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
    if "Out of range float values" in str(exc):
        return "it holds NaN or an infinite number, which JSON cannot carry"
    return str(exc)


# ------------------------------------------------------------------------ the worker process


def _worker(conn: multiprocessing.connection.Connection, program: str, memory: int) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    except (ImportError, ValueError, OSError):  # not POSIX, or a lower hard limit: keep it
        pass
    import jq

    compiled = jq.compile(program)
    while True:
        try:
            value_json = conn.recv()
        except EOFError:
            return
        try:
            outcome = evaluate(compiled, value_json)
        except MemoryError:
            outcome = TransformOutcome("failed", "The jq program ran out of memory.")
        conn.send(outcome)


class JqTransform:
    """A compiled jq program running in its own process, one value at a time.

    ``apply`` blocks (it waits on a pipe, without holding the GIL); call it from a thread in
    async code. A value that takes longer than ``timeout`` seconds, or a worker that dies (out
    of memory), is reported ``failed`` and the worker is restarted for the next value.
    """

    def __init__(
        self,
        program: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
    ) -> None:
        check_program(program)
        self.program = program
        self._timeout = timeout
        self._memory = memory_bytes
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._conn: multiprocessing.connection.Connection | None = None

    def __enter__(self) -> JqTransform:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self) -> multiprocessing.connection.Connection:
        if self._conn is None:
            parent, child = self._context.Pipe()
            self._process = self._context.Process(
                target=_worker, args=(child, self.program, self._memory), daemon=True
            )
            self._process.start()
            child.close()
            self._conn = parent
        return self._conn

    def apply(self, value_json: str) -> TransformOutcome:
        conn = self._start()
        try:
            conn.send(value_json)
            if conn.poll(self._timeout):
                outcome: TransformOutcome = conn.recv()
                return outcome
            self.close()
            return TransformOutcome(
                "failed",
                f"The jq program took longer than {self._timeout:g} s on this value and was "
                "stopped.",
            )
        except (EOFError, OSError):
            self.close()
            return TransformOutcome(
                "failed", "The jq program stopped the worker running it (out of memory?)."
            )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=5)
            self._process = None
