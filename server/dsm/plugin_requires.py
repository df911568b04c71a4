"""Rewrite the plugin's static string requires into `script.Parent` chains at build time.

Luau's require-by-string (`require("./Core/Json")`) is documented for the engine, but no
first-party plugin is known to use it inside a plugin model. The paths in the plugin are static,
so the build turns each one into the instance path it names, which every Studio version resolves:

    require("./App")            from Main             -> require(script.Parent.App)
    require("../../Engine")     from UI/Components/X  -> require(script.Parent.Parent.Engine)
    require("@self/Part")       from Widget (init)    -> require(script.Part)

Resolution follows the same rules as the test harness (tools/luau_harness/runtime.luau): "./" and
"../" start from the script's parent, "@self/" from the script; a later ".." segment is the parent.
A name that is not a plain identifier, or that an instance's own member would shadow
(`script.Parent.Name` is the Name property, not a child called Name), becomes
`:FindFirstChild("...")`. A require whose target does not exist, or is not a ModuleScript, stops
the build: Studio would fail on it only when that code first runs.

Only a `require` call whose argument is one plain string literal is touched; comments, strings
and dynamic requires are left as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

# Members a Folder, ModuleScript or Script has in Roblox (Instance's included): a child with one
# of these names is reached with FindFirstChild. tests/test_plugin_build.py checks the list against
# the API dump the test harness ships (tools/luau_harness/roblox_api.json).
SHADOWING_MEMBERS = frozenset(
    {
        "AddTag",
        "AncestryChanged",
        "Archivable",
        "AttributeChanged",
        "Capabilities",
        "Changed",
        "ChildAdded",
        "ChildRemoved",
        "ClassName",
        "ClearAllChildren",
        "Clone",
        "DescendantAdded",
        "DescendantRemoving",
        "Destroy",
        "Destroying",
        "Disabled",
        "Enabled",
        "FindFirstAncestor",
        "FindFirstAncestorOfClass",
        "FindFirstAncestorWhichIsA",
        "FindFirstChild",
        "FindFirstChildOfClass",
        "FindFirstChildWhichIsA",
        "FindFirstDescendant",
        "GetActor",
        "GetAttribute",
        "GetAttributeChangedSignal",
        "GetAttributes",
        "GetChildren",
        "GetDebugId",
        "GetDescendants",
        "GetFullName",
        "GetPropertyChangedSignal",
        "GetStyled",
        "GetStyledPropertyChangedSignal",
        "GetTags",
        "HasTag",
        "IsA",
        "IsAncestorOf",
        "IsDescendantOf",
        "IsPropertyModified",
        "LinkedSource",
        "Name",
        "Parent",
        "QueryDescendants",
        "Remove",
        "RemoveTag",
        "ResetPropertyToDefault",
        "RobloxLocked",
        "RunContext",
        "Sandboxed",
        "SetAttribute",
        "Source",
        "StyledPropertiesChanged",
        "WaitForChild",
        "archivable",
        "childAdded",
        "children",
        "className",
        "clone",
        "destroy",
        "findFirstChild",
        "getChildren",
        "isA",
        "isDescendantOf",
        "remove",
    }
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LONG_BRACKET = re.compile(r"\[(=*)\[")


class RequireError(Exception):
    """A static require names a path the build cannot resolve; the message says where."""


@dataclass(frozen=True)
class StringRequire:
    """One `require("...")` call: the span of its argument (with parentheses) and the path."""

    start: int
    end: int
    path: str
    line: int


def find_string_requires(source: str) -> Iterator[StringRequire]:
    """Every call of the global `require` with one plain string literal as its argument."""
    i, n = 0, len(source)
    previous = ""  # the last significant character before the current token
    while i < n:
        c = source[i]
        if source.startswith("--", i):
            i = _skip_comment(source, i)
            continue
        if c in "\"'`":
            i = _skip_quoted(source, i)
            previous = c
            continue
        if c == "[" and (m := _LONG_BRACKET.match(source, i)):
            i = _skip_long(source, i, m.group(1))
            previous = "]"
            continue
        if c.isalpha() or c == "_":
            j = i
            while j < n and (source[j].isalnum() or source[j] == "_"):
                j += 1
            word = source[i:j]
            if word == "require" and previous not in (".", ":"):
                found = _call_argument(source, j)
                if found is not None:
                    start, end, path = found
                    yield StringRequire(start, end, path, source.count("\n", 0, i) + 1)
            i = j
            previous = "a"
            continue
        if not c.isspace():
            previous = c
        i += 1


def _skip_comment(source: str, i: int) -> int:
    m = _LONG_BRACKET.match(source, i + 2)
    if m:
        return _skip_long(source, i + 2, m.group(1))
    newline = source.find("\n", i)
    return len(source) if newline < 0 else newline


def _skip_long(source: str, i: int, level: str) -> int:
    close = source.find("]" + level + "]", i)
    return len(source) if close < 0 else close + len(level) + 2


def _skip_quoted(source: str, i: int) -> int:
    quote = source[i]
    j = i + 1
    while j < len(source):
        if source[j] == "\\":
            j += 2
            continue
        if source[j] == quote or (source[j] == "\n" and quote != "`"):
            return j + 1
        j += 1
    return j


def _skip_space(source: str, i: int) -> int:
    while i < len(source):
        if source[i].isspace():
            i += 1
        elif source.startswith("--", i):
            i = _skip_comment(source, i)
        else:
            break
    return i


def _plain_string(source: str, i: int) -> tuple[int, str] | None:
    """(end, text) of a quoted literal without escapes at i, else None."""
    if i >= len(source) or source[i] not in "\"'":
        return None
    end = _skip_quoted(source, i)
    body = source[i + 1 : end - 1]
    if source[end - 1] != source[i] or "\\" in body:
        return None
    return end, body


def _call_argument(source: str, after_name: int) -> tuple[int, int, str] | None:
    i = _skip_space(source, after_name)
    direct = _plain_string(source, i)  # require "./X"
    if direct is not None:
        return i, direct[0], direct[1]
    if i >= len(source) or source[i] != "(":
        return None
    j = _skip_space(source, i + 1)
    literal = _plain_string(source, j)
    if literal is None:
        return None
    k = _skip_space(source, literal[0])
    if k >= len(source) or source[k] != ")":
        return None
    return i, k + 1, literal[1]


@dataclass(frozen=True)
class Node:
    """What the rewrite needs to know of an instance: class, name, parent, children by name."""

    class_name: str
    name: str
    parent: Node | None
    children: dict[str, Node]


def instance_chain(script: Node, path: str) -> str:
    """The `script...` expression for a string require from `script`; RequireError when the path
    does not lead to a ModuleScript."""
    segments = path.split("/")
    head = segments[0]
    expression = "script"
    current: Node | None = script
    if head in (".", ".."):
        steps = 1 if head == "." else 2
        for _ in range(steps):
            current = current.parent if current else None
            expression += ".Parent"
    elif head != "@self":
        raise RequireError(f'require("{path}"): a path must start with "./", "../" or "@self/"')
    for segment in segments[1:]:
        if current is None:
            raise RequireError(f'require("{path}"): the path leaves the plugin')
        if segment == "..":
            current = current.parent
            expression += ".Parent"
            continue
        if segment in ("", "."):
            raise RequireError(f'require("{path}"): empty or "." path segment')
        child = current.children.get(segment)
        if child is None:
            raise RequireError(f'require("{path}"): {current.name} has no child named "{segment}"')
        current = child
        if _IDENTIFIER.match(segment) and segment not in SHADOWING_MEMBERS:
            expression += "." + segment
        else:
            expression += ':FindFirstChild("' + segment.replace('"', '\\"') + '")'
    if current is None:
        raise RequireError(f'require("{path}"): the path leaves the plugin')
    if current.class_name != "ModuleScript":
        raise RequireError(f'require("{path}"): {current.name} is a {current.class_name}')
    return expression


def rewrite_requires(source: str, script: Node) -> str:
    """`source` with every static string require replaced by its instance chain."""
    pieces: list[str] = []
    last = 0
    for found in find_string_requires(source):
        try:
            chain = instance_chain(script, found.path)
        except RequireError as exc:
            raise RequireError(f"line {found.line}: {exc}") from None
        pieces.append(source[last : found.start])
        pieces.append("(" + chain + ")")
        last = found.end
    pieces.append(source[last:])
    return "".join(pieces)
