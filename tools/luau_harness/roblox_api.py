"""What the Roblox engine offers a plugin, derived from Roblox's API dump, for the stand-in to enforce.

Roblox's `Full-API-Dump.json` (Studio's own description of every class, member and enum, 2.7 MB)
is not part of this repository, so the harness ships the part it needs in `roblox_api.json`:

- every class: its superclass, whether it is a service / not creatable / deprecated, and every
  member a plugin may touch (Read security None or PluginSecurity, not NotScriptable), each as a
  kind letter (P property, F function, E event, C callback) and flags: `d` Deprecated (with the
  preferred replacement after a colon when the dump names one), `r` read-only for a plugin
  (ReadOnly tag, or write security above PluginSecurity), `y` yields;
- every enum with its items' values, and which items are deprecated.

A member missing from that file does not exist for a plugin: the stand-in raises Studio's
"X is not a valid member of Y" for it, and tests/test_roblox_api.py checks the stand-in's own
class tables against it.

Regenerate after Roblox ships a new dump (or check that the committed file is current):

    python -m tools.luau_harness.roblox_api [--dump PATH] [--check]

The dump is found through $ROBLOX_API_DUMP or `shared/roblox/Full-API-Dump.json` in a directory
above the repository (the project's reference material).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA_FILE = HERE / "roblox_api.json"
DUMP_ENV = "ROBLOX_API_DUMP"
_DUMP_REL = Path("shared/roblox/Full-API-Dump.json")

PLUGIN_SECURITY = frozenset({"None", "PluginSecurity"})
_KIND_LETTER = {"Property": "P", "Function": "F", "Event": "E", "Callback": "C"}
_CLASS_TAGS = ("Service", "NotCreatable", "Deprecated")


def _tags(entry: dict[str, Any]) -> list[Any]:
    return list(entry.get("Tags") or [])


def _preferred(tags: list[Any]) -> str | None:
    for tag in tags:
        if isinstance(tag, dict) and tag.get("PreferredDescriptorName"):
            return str(tag["PreferredDescriptorName"])
    return None


def member_code(member: dict[str, Any]) -> str | None:
    """The compact code for a member a plugin may use ("P", "Fy", "Fd:NewName", "Pr"), or None
    when a plugin cannot touch it at all (security above PluginSecurity, or NotScriptable)."""
    security = member["Security"]
    if isinstance(security, str):
        read = write = security
    else:
        read, write = security["Read"], security["Write"]
    tags = _tags(member)
    if read not in PLUGIN_SECURITY or "NotScriptable" in tags:
        return None
    kind = member["MemberType"]
    code = _KIND_LETTER[kind]
    if kind == "Property" and ("ReadOnly" in tags or write not in PLUGIN_SECURITY):
        code += "r"
    if "Yields" in tags:
        code += "y"
    if "Deprecated" in tags:
        code += "d"
        preferred = _preferred(tags)
        if preferred:
            code += ":" + preferred
    return code


def derive(dump: dict[str, Any], dump_bytes: bytes, studio_version: str | None) -> dict[str, Any]:
    """The subset of the dump the harness needs (see the module docstring)."""
    classes: dict[str, Any] = {}
    for cls in sorted(dump["Classes"], key=lambda c: c["Name"]):
        members: dict[str, str] = {}
        for member in sorted(cls["Members"], key=lambda m: (m["Name"], m["MemberType"])):
            code = member_code(member)
            if code is not None:
                members[member["Name"]] = code
        tags = [t for t in _tags(cls) if t in _CLASS_TAGS]
        classes[cls["Name"]] = [cls["Superclass"], " ".join(tags), members]
    enums: dict[str, Any] = {}
    for enum in sorted(dump["Enums"], key=lambda e: e["Name"]):
        items = {item["Name"]: item["Value"] for item in enum["Items"]}
        deprecated = sorted(i["Name"] for i in enum["Items"] if "Deprecated" in _tags(i))
        enums[enum["Name"]] = [items, deprecated]
    return {
        "about": "Derived from Roblox's Full-API-Dump.json by tools/luau_harness/roblox_api.py; "
        "regenerate, do not edit.",
        "studio_version": studio_version,
        "dump_sha256": hashlib.sha256(dump_bytes).hexdigest(),
        "classes": classes,
        "enums": enums,
    }


def render(data: dict[str, Any]) -> str:
    """JSON with one class or enum per line: small diffs when Roblox adds a member."""

    def one(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    lines = ["{"]
    for key in ("about", "studio_version", "dump_sha256"):
        lines.append(f"{one(key)}:{one(data[key])},")
    for section in ("classes", "enums"):
        lines.append(f"{one(section)}:{{")
        entries = list(data[section].items())
        for index, (name, value) in enumerate(entries):
            comma = "," if index < len(entries) - 1 else ""
            lines.append(f"{one(name)}:{one(value)}{comma}")
        lines.append("}," if section == "classes" else "}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def derive_file(dump_path: Path) -> str:
    raw = dump_path.read_bytes()
    version_file = dump_path.with_name("version.txt")  # Roblox ships it beside the dump
    version = version_file.read_text(encoding="utf-8").strip() if version_file.is_file() else None
    return render(derive(json.loads(raw), raw, version))


# -- lookups for the stand-in ----------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    owner: str  # the class that declares it (Instance for Name, GuiObject for Size...)
    kind: str  # Property | Function | Event | Callback
    read_only: bool
    yields: bool
    deprecated: bool
    preferred: str | None


_KINDS = {letter: kind for kind, letter in _KIND_LETTER.items()}


class RobloxApi:
    """Lookups over roblox_api.json: classes, inherited members, services, enums."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.studio_version: str | None = data["studio_version"]
        self._classes: dict[str, list[Any]] = data["classes"]
        self._enums: dict[str, list[Any]] = data["enums"]

    def has_class(self, name: str) -> bool:
        return name in self._classes

    def class_tags(self, name: str) -> set[str]:
        return set(self._classes[name][1].split())

    def superclass(self, name: str) -> str | None:
        parent: str = self._classes[name][0]
        return parent if parent in self._classes else None

    def ancestry(self, name: str) -> list[str]:
        chain: list[str] = []
        current: str | None = name
        while current is not None and current in self._classes:
            chain.append(current)
            current = self.superclass(current)
        return chain

    def member_code(self, class_name: str, member: str) -> tuple[str, str] | None:
        """(declaring class, code) of a member a plugin may use on `class_name`, inherited ones
        included; None when a plugin has no such member."""
        for owner in self.ancestry(class_name):
            code = self._classes[owner][2].get(member)
            if code is not None:
                return owner, code
        return None

    def member_names(self, class_name: str) -> set[str]:
        """Every member a plugin sees on `class_name`, inherited ones included."""
        names: set[str] = set()
        for owner in self.ancestry(class_name):
            names.update(self._classes[owner][2])
        return names

    def member(self, class_name: str, member: str) -> Member | None:
        found = self.member_code(class_name, member)
        if found is None:
            return None
        owner, code = found
        flags, _, preferred = code.partition(":")
        return Member(
            owner=owner,
            kind=_KINDS[flags[0]],
            read_only="r" in flags,
            yields="y" in flags,
            deprecated="d" in flags,
            preferred=preferred or None,
        )

    def enum(self, name: str) -> tuple[dict[str, int], list[str]] | None:
        entry = self._enums.get(name)
        if entry is None:
            return None
        return dict(entry[0]), list(entry[1])

    def enum_names(self) -> list[str]:
        return list(self._enums)


def find_dump() -> Path | None:
    """The dump named by $ROBLOX_API_DUMP, else `shared/roblox/` beside the repository or one of
    its parent directories (where the project keeps its reference material); None when absent."""
    named = os.environ.get(DUMP_ENV)
    if named:
        return Path(named)
    for parent in HERE.parents:
        candidate = parent / _DUMP_REL
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def load() -> RobloxApi:
    """The committed subset (parsed once per process)."""
    return RobloxApi(json.loads(DATA_FILE.read_text(encoding="utf-8")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.luau_harness.roblox_api")
    parser.add_argument("--dump", type=Path, default=find_dump(), help="Full-API-Dump.json")
    parser.add_argument("--check", action="store_true", help="only check the committed file")
    args = parser.parse_args(argv)
    if args.dump is None or not args.dump.is_file():
        print(f"error: API dump not found ({args.dump}); pass --dump PATH", file=sys.stderr)
        return 2
    text = derive_file(args.dump)
    if args.check:
        if DATA_FILE.read_text(encoding="utf-8") != text:
            print(f"{DATA_FILE} is stale: regenerate it from {args.dump}", file=sys.stderr)
            return 1
        print(f"{DATA_FILE} matches {args.dump}")
        return 0
    DATA_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {DATA_FILE} ({len(text) / 1024:.0f} KiB) from {args.dump}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
