"""Timestamps and version ids in the shapes Roblox's Open Cloud emits."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# .NET ticks are 100 ns units since 0001-01-01; Roblox version ids embed them in hex.
_DOTNET_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


def dotnet_ticks(when: datetime) -> int:
    delta = when - _DOTNET_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def version_id(entry_created: datetime, sequence: int, revision_created: datetime) -> str:
    """`HEX16(entry ticks).HEX10(counter).HEX16(revision ticks).01`, as seen in Roblox's examples.

    The format is inferred from Roblox's published examples (see opencloud-api.md §2.3):
    segment 1 decodes to the entry's creation time and segment 3 to this version's. Every
    segment is hexadecimal, the counter too: responses recorded from the real Open Cloud show
    `...000000000A...` after `...0000000009...`.
    """
    return (
        f"{dotnet_ticks(entry_created):016X}.{sequence:010X}."
        f"{dotnet_ticks(revision_created):016X}.01"
    )


def rfc3339(when: datetime) -> str:
    """v2 data store bodies: Z-normalised RFC 3339 with nine fractional digits at Roblox's 100 ns
    precision, like `2024-07-22T19:06:55.829412600Z` in responses recorded from Open Cloud (the
    types guide allows 0/3/6/9 digits). The emulator's clock is microsecond precise, so the last
    three digits are zeros here; clients must read all nine.
    """
    ticks = dotnet_ticks(when.astimezone(UTC)) % 10_000_000  # 100 ns units within the second
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ticks:07d}00Z"


def whole_seconds(when: datetime) -> str:
    """Memory store `expireTime`: RFC 3339 in whole seconds (as recorded from Open Cloud)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def v1_body_time(when: datetime) -> str:
    """v1 JSON bodies use seven fractional digits and a Z (e.g. 2022-02-18T22:38:59.9244932Z)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def v1_header_time(when: datetime) -> str:
    """v1 headers use seven fractional digits and +00:00 (2022-02-02T23:30:06.5388799+00:00)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+00:00"


# Open Cloud's types guide: RFC 3339 timestamps ("Offsets other than "Z" are also accepted") and
# durations of seconds with any fractional digits "as long as they fit into nano-seconds precision",
# the suffix "s" required, within +-315,576,000,000 s.
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)")
_DURATION = re.compile(r"(-?)(\d+)(?:\.(\d{1,9}))?s")
_DURATION_LIMIT_SECONDS = 315_576_000_000


def parse_rfc3339(text: str) -> datetime:
    """A v2 timestamp: RFC 3339 exactly (date, time with seconds, offset or Z); ValueError if not."""
    if not _RFC3339.fullmatch(text.strip()):
        raise ValueError(f"timestamp {text!r} is not RFC 3339 (like 2024-12-02T06:00:00Z)")
    return parse_time(text)


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with any offset; raise ValueError if it is not one."""
    cleaned = text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    # Python accepts at most 6 fractional digits; Roblox emits up to 9.
    if "." in cleaned:
        head, _, rest = cleaned.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        cleaned = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    parsed = datetime.fromisoformat(cleaned)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return parsed.astimezone(UTC)


def utc_hour(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def utc_day(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d")


def parse_duration(text: str) -> timedelta:
    """Open Cloud durations are strings like "30s" or "1.5s" (types guide): digits, at most nine
    fractional digits, the `s` suffix required; no exponents, spaces or signs other than `-`.
    The emulator's clock is microsecond precise: a fraction finer than that is rounded away from
    zero, so a positive duration never becomes 0."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"duration {text!r} is not a number of seconds ending in s, like 1.5s")
    sign, whole, fraction = match.groups()
    seconds = int(whole)
    if seconds > _DURATION_LIMIT_SECONDS:
        raise ValueError(f"duration {text!r} is out of range")
    micros = -(-int((fraction or "").ljust(9, "0")) // 1000)
    magnitude = timedelta(seconds=seconds, microseconds=micros)
    return -magnitude if sign else magnitude
