"""Generate the protocol's JSON Schema and Luau module from shared_schema.

    python -m tools.codegen           # write shared_schema/generated/ and plugin/src/Protocol.luau
    python -m tools.codegen --check   # exit 1, naming the stale files, if regenerating changes them

The Luau module lives in the plugin's source tree so the plugin requires it as a sibling
(`require("./Protocol")`) and the .rbxmx builder bundles it like any other module.

Protocol.luau is data read from the JSON Schema (one validation spec per model, the route table,
the event payload table) plus a fixed validator runtime (LUAU_RUNTIME below). Any schema keyword
this generator does not understand is an error rather than a silently skipped check.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import shared_schema
from shared_schema import PROTOCOL_MAJOR, PROTOCOL_MINOR
from shared_schema.registry import MODELS, schema_document, schema_hash

GENERATED_DIR = Path(shared_schema.__file__).resolve().parent / "generated"
PLUGIN_SRC_DIR = Path(shared_schema.__file__).resolve().parent.parent / "plugin" / "src"
SCHEMA_FILE = "protocol.schema.json"
LUAU_FILE = "Protocol.luau"

COLUMN_WIDTH = 120  # StyLua's default column_width, with a tab counted as 4 columns
TAB_WIDTH = 4


class CodegenError(Exception):
    """The schema uses something the Luau generator cannot express."""


# -- JSON Schema -> validation spec ------------------------------------------------------------

_ANNOTATIONS = {"title", "description", "default", "examples"}
_STRING_KEYS = {
    "type",
    "minLength",
    "maxLength",
    "pattern",
    "x-luau-pattern",
    "x-min-bytes",
    "x-max-bytes",
    "format",
    "contentMediaType",
    "const",
    "enum",
}
_NUMBER_KEYS = {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "const"}
_ARRAY_KEYS = {"type", "items", "minItems", "maxItems"}
_MAP_KEYS = {"type", "additionalProperties", "x-max-encoded-bytes", "x-accepts-empty-array"}
_NULL = {"type": "null"}


def _refuse_unknown(schema: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(schema) - allowed - _ANNOTATIONS
    if unknown:
        raise CodegenError(f"{where}: schema keywords {sorted(unknown)} have no Luau check")


def _ref_name(ref: str) -> str:
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise CodegenError(f"unsupported $ref {ref!r}")
    return ref[len(prefix) :]


def _is_enum(definition: dict[str, Any]) -> bool:
    return "enum" in definition and definition.get("type") == "string"


class SpecBuilder:
    """Turns JSON Schema nodes into Luau validation specs (plain dicts rendered as tables)."""

    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs

    def spec(self, schema: dict[str, Any], where: str) -> tuple[dict[str, Any], bool]:
        """The spec for `schema` and whether it also allows null (Luau: nil, i.e. absent)."""
        if "$ref" in schema:
            _refuse_unknown(schema, {"$ref"}, where)
            name = _ref_name(schema["$ref"])
            if name not in self.defs:
                raise CodegenError(f"{where}: $ref to unknown definition {name}")
            ref_kind = "enum" if _is_enum(self.defs[name]) else "model"
            return {"kind": ref_kind, "name": name}, False
        if "anyOf" in schema:
            _refuse_unknown(schema, {"anyOf"}, where)
            options = [option for option in schema["anyOf"] if option != _NULL]
            nullable = len(options) < len(schema["anyOf"])
            if len(options) == 1:
                inner, inner_nullable = self.spec(options[0], where)
                return inner, nullable or inner_nullable
            specs = []
            for index, option in enumerate(options):
                inner, inner_nullable = self.spec(option, f"{where}|{index}")
                if inner_nullable:
                    raise CodegenError(f"{where}: nested nullable union")
                specs.append(inner)
            return {"kind": "union", "options": specs}, nullable
        kind = schema.get("type")
        if kind is None:
            _refuse_unknown(schema, set(), where)
            return {"kind": "any"}, False
        if kind == "string":
            return self._string(schema, where), False
        if kind in ("integer", "number"):
            _refuse_unknown(schema, _NUMBER_KEYS, where)
            spec: dict[str, Any] = {"kind": kind}
            for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                if key in schema:
                    spec[key] = schema[key]
            if "const" in schema:
                raise CodegenError(f"{where}: numeric const is not supported")
            return spec, False
        if kind == "boolean":
            _refuse_unknown(schema, {"type", "const"}, where)
            spec = {"kind": "boolean"}
            if "const" in schema:
                spec["equals"] = schema["const"]
            return spec, False
        if kind == "array":
            _refuse_unknown(schema, _ARRAY_KEYS, where)
            items, items_nullable = self.spec(schema.get("items", {}), f"{where}[]")
            if items_nullable:
                raise CodegenError(f"{where}: nullable array items cannot cross Luau (holes)")
            spec = {"kind": "array", "items": items}
            for key in ("minItems", "maxItems"):
                if key in schema:
                    spec[key] = schema[key]
            return spec, False
        if kind == "object":
            if "properties" in schema:
                raise CodegenError(f"{where}: inline object schemas are not supported; use a model")
            _refuse_unknown(schema, _MAP_KEYS, where)
            spec = {"kind": "map"}
            entries = schema.get("additionalProperties", True)
            if isinstance(entries, dict) and entries:
                entry_spec, entry_nullable = self.spec(entries, f"{where}{{}}")
                if entry_nullable:
                    raise CodegenError(f"{where}: nullable map values cannot cross Luau")
                spec["entries"] = entry_spec
            elif entries is not True and entries != {}:
                raise CodegenError(f"{where}: unsupported additionalProperties {entries!r}")
            if "x-max-encoded-bytes" in schema:
                spec["maxEncodedBytes"] = schema["x-max-encoded-bytes"]
            return spec, False
        raise CodegenError(f"{where}: unsupported type {kind!r}")

    def _string(self, schema: dict[str, Any], where: str) -> dict[str, Any]:
        _refuse_unknown(schema, _STRING_KEYS, where)
        if "enum" in schema:
            return {"kind": "enum", "values": list(schema["enum"])}
        spec: dict[str, Any] = {"kind": "string"}
        if "const" in schema:
            spec["equals"] = schema["const"]
        for source, target in (
            ("minLength", "minLength"),
            ("maxLength", "maxLength"),
            ("x-min-bytes", "minBytes"),
            ("x-max-bytes", "maxBytes"),
        ):
            if source in schema:
                spec[target] = schema[source]
        if "pattern" in schema:
            if "x-luau-pattern" not in schema:
                raise CodegenError(f"{where}: pattern {schema['pattern']!r} has no x-luau-pattern")
            spec["pattern"] = schema["x-luau-pattern"]
        if "format" in schema:
            if schema["format"] != "date-time":
                raise CodegenError(f"{where}: string format {schema['format']!r} has no Luau check")
            spec["dateTime"] = True
        if "contentMediaType" in schema:
            if schema["contentMediaType"] != "application/json":
                raise CodegenError(f"{where}: content type {schema['contentMediaType']!r}")
            spec["json"] = True
        return spec

    def model(self, name: str) -> dict[str, Any]:
        definition = self.defs[name]
        _refuse_unknown(
            definition, {"type", "properties", "required", "additionalProperties"}, name
        )
        if definition.get("type") != "object":
            raise CodegenError(f"{name}: a model must be an object schema")
        required = set(definition.get("required", []))
        fields = []
        for field, schema in definition.get("properties", {}).items():
            spec, nullable = self.spec(schema, f"{name}.{field}")
            if nullable and field in required:
                raise CodegenError(
                    f"{name}.{field}: required but nullable; Luau cannot tell null from absent, "
                    "so give it a default"
                )
            fields.append({"name": field, "required": field in required, "spec": spec})
        extra = definition.get("additionalProperties", True)
        if extra not in (True, False):
            raise CodegenError(f"{name}: additionalProperties must be true or false on a model")
        return {"closed": extra is False, "fields": fields}


# -- JSON Schema -> Luau type -------------------------------------------------------------------


def luau_type(schema: dict[str, Any], defs: dict[str, Any]) -> tuple[str, bool]:
    """The Luau type for `schema` and whether it is nullable (rendered `T?` by the caller)."""
    if "$ref" in schema:
        return _ref_name(schema["$ref"]), False
    if "anyOf" in schema:
        options = [option for option in schema["anyOf"] if option != _NULL]
        nullable = len(options) < len(schema["anyOf"])
        parts = []
        for option in options:
            part, _ = luau_type(option, defs)
            parts.append(part)
        if len(parts) == 1:
            return parts[0], nullable
        return "(" + " | ".join(parts) + ")", nullable
    kind = schema.get("type")
    if kind is None:
        return "any", False
    if kind == "string":
        if "enum" in schema:
            return "(" + " | ".join(lua_string(v) for v in schema["enum"]) + ")", False
        if "const" in schema:
            return lua_string(schema["const"]), False
        return "string", False
    if kind in ("integer", "number"):
        return "number", False
    if kind == "boolean":
        if "const" in schema:
            return ("true" if schema["const"] else "false"), False
        return "boolean", False
    if kind == "array":
        item, _ = luau_type(schema.get("items", {}), defs)
        return "{ " + item + " }", False
    if kind == "object":
        entries = schema.get("additionalProperties", True)
        value = luau_type(entries, defs)[0] if isinstance(entries, dict) and entries else "any"
        return "{ [string]: " + value + " }", False
    raise CodegenError(f"no Luau type for {schema!r}")


# -- Luau source rendering ---------------------------------------------------------------------

_LUAU_RESERVED = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "if", "in",
    "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
}  # fmt: skip
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def lua_string(text: str) -> str:
    """A Luau string literal, quoted the way StyLua prefers (double unless that needs escapes)."""
    quote = "'" if '"' in text and "'" not in text else '"'
    out = []
    for char in text:
        if char == quote or char == "\\":
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 32 or ord(char) == 127:
            out.append(f"\\{ord(char):03d}")
        else:
            out.append(char)
    return quote + "".join(out) + quote


def lua_key(name: str) -> str:
    """A table-constructor key: `name` when it is an identifier, else `["name"]`."""
    if _IDENTIFIER.match(name) and name not in _LUAU_RESERVED:
        return name
    return f"[{lua_string(name)}]"


def _lua_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    if isinstance(value, str):
        return lua_string(value)
    raise CodegenError(f"cannot render {value!r} in Luau")


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{lua_key(k)} = {_inline(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        if not value:
            return "{}"
        return "{ " + ", ".join(_inline(v) for v in value) + " }"
    return _lua_scalar(value)


def render_value(value: Any, depth: int, prefix: str = "", suffix: str = "") -> list[str]:
    """Lines of `prefix value suffix` at `depth` tabs: inline if it fits in 120 columns."""
    indent = "\t" * depth
    inline = _inline(value)
    fits = depth * TAB_WIDTH + len(prefix) + len(inline) + len(suffix) <= COLUMN_WIDTH
    if fits or not isinstance(value, (dict, list)) or not value:
        return [f"{indent}{prefix}{inline}{suffix}"]
    lines = [f"{indent}{prefix}{{"]
    if isinstance(value, dict):
        for key, item in value.items():
            lines += render_value(item, depth + 1, f"{lua_key(key)} = ", ",")
    else:
        for item in value:
            lines += render_value(item, depth + 1, "", ",")
    lines.append(f"{indent}}}{suffix}")
    return lines


def _wrap_comment(text: str, depth: int) -> list[str]:
    """`--- ` doc comment lines for a description, wrapped below 100 columns."""
    indent = "\t" * depth
    width = 100 - depth * TAB_WIDTH - 4
    lines: list[str] = []
    for paragraph in text.strip().splitlines():
        words = paragraph.split()
        if not words:
            lines.append(f"{indent}---")
            continue
        current = ""
        for word in words:
            if current and len(current) + 1 + len(word) > width:
                lines.append(f"{indent}--- {current}")
                current = word
            else:
                current = f"{current} {word}" if current else word
        lines.append(f"{indent}--- {current}")
    return lines


def _type_alias(name: str, union: list[str]) -> list[str]:
    one_line = f"export type {name} = " + " | ".join(union)
    if len(one_line) <= COLUMN_WIDTH:
        return [one_line]
    return [f"export type {name} =", f"\t{union[0]}"] + [f"\t| {part}" for part in union[1:]]


def _field_lines(key: str, text: str, optional: str) -> list[str]:
    """A record field; a union too long for one line is split one member a line, as StyLua does."""
    line = f"\t{key}: {text}{optional},"
    parts = text[1:-1].split(" | ") if text.startswith("(") and text.endswith(")") else []
    simple = len(parts) > 1 and not any(c in part for part in parts for c in "(){}")
    if len(line) + TAB_WIDTH - 1 <= COLUMN_WIDTH or not simple:
        return [line]
    return [f"\t{key}: (", f"\t\t{parts[0]}", *(f"\t\t| {p}" for p in parts[1:]), f"\t){optional},"]


def _type_lines(defs: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name in sorted(defs):
        definition = defs[name]
        if lines:
            lines.append("")
        if "description" in definition:
            lines += _wrap_comment(definition["description"], 0)
        if _is_enum(definition):
            lines += _type_alias(name, [lua_string(value) for value in definition["enum"]])
            continue
        if not definition.get("properties"):
            lines.append(f"export type {name} = {{}}")  # as StyLua writes an empty table type
            continue
        lines.append(f"export type {name} = {{")
        required = set(definition.get("required", []))
        for field, schema in definition.get("properties", {}).items():
            if "description" in schema:
                lines += _wrap_comment(schema["description"], 1)
            text, nullable = luau_type(schema, defs)
            optional = nullable or field not in required
            key = field if _IDENTIFIER.match(field) and field not in _LUAU_RESERVED else None
            key_text = key if key is not None else f"[{lua_string(field)}]"
            lines += _field_lines(key_text, text, "?" if optional else "")
        lines.append("}")
    return lines


def render_luau() -> str:
    document = schema_document()
    defs: dict[str, Any] = document["$defs"]
    builder = SpecBuilder(defs)
    enums = {name: list(d["enum"]) for name, d in sorted(defs.items()) if _is_enum(d)}
    models = {name: builder.model(name) for name in sorted(defs) if not _is_enum(defs[name])}
    path_params = {
        name: builder.spec(schema, f"path parameter {name}")[0]
        for name, schema in document["x-path-params"].items()
    }
    routes = {
        route["operation_id"]: {
            key: value
            for key, value in route.items()
            if key != "operation_id" and value is not None
        }
        for route in document["x-routes"]
    }
    out: list[str] = [
        "--!strict",
        "-- Protocol.luau: generated by tools/codegen.py — do not edit.",
        "-- Regenerate with `python -m tools.codegen` after changing shared_schema/ (CI runs --check).",
        "-- Types and runtime validators for every message of the plugin <-> server protocol.",
        "",
        "local Protocol = {}",
        "",
        f"Protocol.PROTOCOL_MAJOR = {PROTOCOL_MAJOR}",
        f"Protocol.PROTOCOL_MINOR = {PROTOCOL_MINOR}",
        f"Protocol.SCHEMA_HASH = {lua_string(schema_hash())}",
        "",
    ]
    out += _type_lines(defs)
    out += [
        "",
        "export type Route = {",
        "\tmethod: string,",
        "\tpath: string,",
        '\t--- "none", "viewer", "editor" or "admin"',
        "\tauth: string,",
        "\tstatus: number,",
        "\tmedia_type: string,",
        "\tbody: string?,",
        "\tquery: string?,",
        "\tresponses: { string },",
        "}",
        "",
        "--- Every endpoint, keyed by operation id; paths include the /api/v1 prefix.",
    ]
    out += render_value(routes, 0, "local ROUTES: { [string]: Route } = ")
    out += [
        "Protocol.ROUTES = ROUTES",
        "",
        "--- Event type -> the model of its payload; ignore (and log once) types not listed here.",
    ]
    payloads = document["x-event-payloads"]
    out += render_value(payloads, 0, "local EVENT_PAYLOADS: { [string]: string } = ")
    out += ["Protocol.EVENT_PAYLOADS = EVENT_PAYLOADS", ""]
    out += LUAU_SPEC_TYPES.splitlines()
    out.append("")
    out += render_value(enums, 0, "local ENUMS: { [string]: { string } } = ")
    out.append("")
    out += render_value(models, 0, "local MODELS: { [string]: ModelSpec } = ")
    out.append("")
    out += render_value(path_params, 0, "local PATH_PARAMS: { [string]: Spec } = ")
    out.append("")
    out += LUAU_RUNTIME.splitlines()
    out += ["", "local validate = {}", ""]
    for model in MODELS:
        name = model.__name__
        if name not in models:
            raise CodegenError(f"{name} is in MODELS but not in the schema's $defs")
    for name in models:
        out += [
            f"--- Check a decoded {name}: true, or false and the first problem found.",
            f"function validate.{name}(value: any): (boolean, string?)",
            f"\treturn run({lua_string(name)}, value)",
            "end",
            "",
        ]
    out += ["Protocol.validate = validate", "", "return Protocol", ""]
    return "\n".join(out)


def render_schema() -> str:
    document = schema_document()
    document["x-schema-hash"] = schema_hash()
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def outputs() -> dict[Path, str]:
    return {GENERATED_DIR / SCHEMA_FILE: render_schema(), PLUGIN_SRC_DIR / LUAU_FILE: render_luau()}


def stale_files() -> list[Path]:
    """Generated files whose content differs from what the models produce now."""
    return [
        path
        for path, text in outputs().items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.codegen", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--check", action="store_true", help="only report stale generated files (exit 1 if any)"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            names = ", ".join(str(path) for path in stale)
            print(f"generated protocol files are stale: {names}", file=sys.stderr)
            print("run `python -m tools.codegen` and commit the result", file=sys.stderr)
            return 1
        print("generated protocol files are up to date")
        return 0
    for path, text in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8", newline="\n")
            print(f"wrote {path}")
    return 0


# -- The fixed Luau parts ------------------------------------------------------------------------

# Spec shapes the generated MODELS/PATH_PARAMS tables follow.
LUAU_SPEC_TYPES = r"""
type Spec = {
	kind: string,
	name: string?,
	values: { string }?,
	equals: (string | number | boolean)?,
	minLength: number?,
	maxLength: number?,
	minBytes: number?,
	maxBytes: number?,
	pattern: string?,
	dateTime: boolean?,
	json: boolean?,
	minimum: number?,
	maximum: number?,
	exclusiveMinimum: number?,
	exclusiveMaximum: number?,
	items: Spec?,
	minItems: number?,
	maxItems: number?,
	entries: Spec?,
	maxEncodedBytes: number?,
	options: { Spec }?,
}

type FieldSpec = { name: string, required: boolean, spec: Spec }

type ModelSpec = { closed: boolean, fields: { FieldSpec } }
""".strip()

# The validator runtime: interprets the specs. Kept StyLua-formatted so the output is a fixed
# point of StyLua.
LUAU_RUNTIME = r"""
local function describe(value: any): string
	local kind = typeof(value)
	if kind == "string" then
		return if #value > 40 then 'a string starting "' .. string.sub(value, 1, 40) .. '"' else '"' .. value .. '"'
	elseif kind == "number" then
		return "the number " .. tostring(value)
	elseif kind == "boolean" then
		return tostring(value)
	elseif kind == "table" then
		return "a table"
	end
	return kind
end

local function expected(path: string, what: string, value: any): string
	return path .. ": expected " .. what .. ", got " .. describe(value)
end

-- JSON text (RFC 8259) well-formedness, without building the value: Luau would reshape it.

local JSON_SHORT_ESCAPES: { [number]: boolean } = {
	[34] = true, -- "
	[92] = true, -- \
	[47] = true, -- /
	[98] = true, -- b
	[102] = true, -- f
	[110] = true, -- n
	[114] = true, -- r
	[116] = true, -- t
}

local function skipSpace(s: string, pos: number): number
	local _, last = string.find(s, "^[ \t\r\n]*", pos)
	return (last :: number) + 1
end

-- The position after the string that starts (with its quote) at `pos`, or nil if malformed.
local function scanString(s: string, pos: number): number?
	local i = pos + 1
	while true do
		local at = string.find(s, '[\0-\31"\\]', i)
		if at == nil then
			return nil
		end
		local byte = string.byte(s, at)
		if byte == 34 then
			return at + 1
		elseif byte ~= 92 then
			return nil -- a raw control character
		end
		local escaped = string.byte(s, at + 1)
		if escaped == 117 then
			if string.find(s, "^%x%x%x%x", at + 2) == nil then
				return nil
			end
			i = at + 6
		elseif escaped ~= nil and JSON_SHORT_ESCAPES[escaped] then
			i = at + 2
		else
			return nil
		end
	end
end

-- The position after the number that starts at `pos`, or nil if malformed or not finite.
local function scanNumber(s: string, pos: number): number?
	local i = pos
	if string.byte(s, i) == 45 then
		i += 1
	end
	local first = string.byte(s, i)
	if first == 48 then
		i += 1
	elseif first ~= nil and first >= 49 and first <= 57 then
		local _, last = string.find(s, "^%d*", i + 1)
		i = (last :: number) + 1
	else
		return nil
	end
	if string.byte(s, i) == 46 then
		local _, last = string.find(s, "^%d+", i + 1)
		if last == nil then
			return nil
		end
		i = last + 1
	end
	local exponent = string.byte(s, i)
	if exponent == 101 or exponent == 69 then
		local _, last = string.find(s, "^[+-]?%d+", i + 1)
		if last == nil then
			return nil
		end
		i = last + 1
	end
	local number = tonumber(string.sub(s, pos, i - 1))
	if number == nil or math.abs(number) == math.huge then
		return nil
	end
	return i
end

local JSON_LITERALS: { [number]: string } = { [116] = "true", [102] = "false", [110] = "null" }

local IN_ARRAY, IN_OBJECT = 1, 2

-- Why `s` is not one JSON value surrounded by optional whitespace, or nil if it is.
local function jsonTextProblem(s: string): string?
	local stack: { number } = {}
	local pos = skipSpace(s, 1)
	while true do
		-- A value starts at `pos`.
		local byte = string.byte(s, pos)
		local after: number? = nil
		if byte == 123 then
			pos = skipSpace(s, pos + 1)
			if string.byte(s, pos) == 125 then
				after = pos + 1
			else
				local keyEnd = if string.byte(s, pos) == 34 then scanString(s, pos) else nil
				if keyEnd == nil then
					return "expected a string key at byte " .. pos
				end
				pos = skipSpace(s, keyEnd)
				if string.byte(s, pos) ~= 58 then
					return "expected ':' at byte " .. pos
				end
				pos = skipSpace(s, pos + 1)
				table.insert(stack, IN_OBJECT)
			end
		elseif byte == 91 then
			pos = skipSpace(s, pos + 1)
			if string.byte(s, pos) == 93 then
				after = pos + 1
			else
				table.insert(stack, IN_ARRAY)
			end
		elseif byte == 34 then
			after = scanString(s, pos)
			if after == nil then
				return "malformed string at byte " .. pos
			end
		elseif byte ~= nil and JSON_LITERALS[byte] ~= nil then
			local word = JSON_LITERALS[byte]
			if string.sub(s, pos, pos + #word - 1) ~= word then
				return "unexpected word at byte " .. pos
			end
			after = pos + #word
		elseif byte == 45 or (byte ~= nil and byte >= 48 and byte <= 57) then
			after = scanNumber(s, pos)
			if after == nil then
				return "malformed or infinite number at byte " .. pos
			end
		elseif byte == nil then
			return "unexpected end of text"
		else
			return "unexpected character at byte " .. pos
		end
		if after ~= nil then
			-- A value ended: close finished containers until one wants another value.
			pos = after
			local wantValue = false
			while not wantValue do
				pos = skipSpace(s, pos)
				local top = stack[#stack]
				local byteHere = string.byte(s, pos)
				if top == nil then
					if byteHere ~= nil then
						return "unexpected text after the value at byte " .. pos
					end
					return nil
				elseif byteHere == 44 then
					pos = skipSpace(s, pos + 1)
					if top == IN_OBJECT then
						local keyEnd = if string.byte(s, pos) == 34 then scanString(s, pos) else nil
						if keyEnd == nil then
							return "expected a string key at byte " .. pos
						end
						pos = skipSpace(s, keyEnd)
						if string.byte(s, pos) ~= 58 then
							return "expected ':' at byte " .. pos
						end
						pos = skipSpace(s, pos + 1)
					end
					wantValue = true
				elseif (top == IN_ARRAY and byteHere == 93) or (top == IN_OBJECT and byteHere == 125) then
					table.remove(stack)
					pos += 1
				else
					return "expected ',' or a closing bracket at byte " .. pos
				end
			end
		end
	end
end

-- Bytes of the compact JSON the server measures (json.dumps with separators (",", ":") and
-- ensure_ascii off). Luau cannot tell 2 from 2.0, which Python prints as "2" and "2.0": integral
-- numbers are counted as integers. The server's check is the one that counts.

-- Length of Python's repr() of a double: the shortest round-trip digits (which Luau's tostring
-- also finds), laid out fixed when the decimal point falls within -4 < point <= 16, else as
-- d.ddde+XX with at least two exponent digits.
local function pythonFloatLength(value: number): number
	local text = tostring(value)
	local sign = if string.sub(text, 1, 1) == "-" then 1 else 0
	local mantissa, exponent = string.match(text, "^%-?([%d%.]+)[eE]([%+%-]?%d+)$")
	local point = 0
	if mantissa == nil then
		mantissa = string.match(text, "^%-?([%d%.]+)$")
	else
		point = tonumber(exponent) :: number
	end
	local whole, fraction = string.match(mantissa :: string, "^(%d*)%.?(%d*)$")
	local digits = (whole :: string) .. (fraction :: string)
	point += #(whole :: string)
	local leadingZeros = #(string.match(digits, "^0*") :: string)
	digits = string.sub(digits, leadingZeros + 1)
	point -= leadingZeros
	digits = string.gsub(digits, "0+$", "")
	local count = #digits
	if point > -4 and point <= 16 then
		if point <= 0 then
			return sign + 2 - point + count -- 0.000ddd
		elseif point >= count then
			return sign + point + 2 -- ddd000.0
		end
		return sign + count + 1 -- dd.ddd
	end
	local exponentDigits = math.max(#tostring(math.abs(point - 1)), 2)
	return sign + count + (if count > 1 then 1 else 0) + 2 + exponentDigits
end

local function encodedStringSize(s: string): number
	local _, short = string.gsub(s, '["\\\8\9\10\12\13]', "")
	local _, controls = string.gsub(s, "[\0-\31]", "")
	local _, shortControls = string.gsub(s, "[\8\9\10\12\13]", "")
	return #s + 2 + short + 5 * (controls - shortControls)
end

local function encodedSize(value: any): number?
	local kind = type(value)
	if kind == "string" then
		if utf8.len(value) == nil then
			return nil
		end
		return encodedStringSize(value)
	elseif kind == "number" then
		if value ~= value or math.abs(value) == math.huge then
			return nil
		end
		if value == math.floor(value) and math.abs(value) < 2 ^ 53 then
			return #string.format("%d", value)
		end
		return pythonFloatLength(value)
	elseif kind == "boolean" then
		return if value then 4 else 5
	elseif kind == "table" then
		local count, maxIndex, onlyIndices = 0, 0, true
		for key in value do
			count += 1
			if type(key) == "number" and key >= 1 and key == math.floor(key) then
				maxIndex = math.max(maxIndex, key)
			else
				onlyIndices = false
			end
		end
		local size = 2 + math.max(count - 1, 0)
		if onlyIndices and maxIndex == count then
			for _, item in ipairs(value) do
				local itemSize = encodedSize(item)
				if itemSize == nil then
					return nil
				end
				size += itemSize
			end
		else
			for key, item in value do
				local itemSize = encodedSize(item)
				if type(key) ~= "string" or itemSize == nil then
					return nil
				end
				size += encodedStringSize(key) + 1 + itemSize
			end
		end
		return size
	end
	return nil
end

local DAYS_IN_MONTH = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

-- RFC 3339 date-time with a mandatory offset (Z or +hh:mm), as the server requires.
local function isDateTime(s: string): boolean
	local y, mo, d, h, mi, sec, rest = string.match(s, "^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
	if y == nil or rest == nil then
		return false
	end
	local year, month, day = tonumber(y) :: number, tonumber(mo) :: number, tonumber(d) :: number
	if month < 1 or month > 12 or day < 1 or day > DAYS_IN_MONTH[month] then
		return false
	end
	local leap = (year % 4 == 0 and year % 100 ~= 0) or year % 400 == 0
	if month == 2 and day == 29 and not leap then
		return false
	end
	if (tonumber(h) :: number) > 23 or (tonumber(mi) :: number) > 59 or (tonumber(sec) :: number) > 59 then
		return false
	end
	local fraction = string.match(rest, "^%.%d+")
	if fraction ~= nil then
		rest = string.sub(rest, #fraction + 1)
	end
	if rest == "Z" or rest == "z" then
		return true
	end
	local offsetHours, offsetMinutes = string.match(rest, "^[+-](%d%d):(%d%d)$")
	return offsetHours ~= nil and (tonumber(offsetHours) :: number) <= 23 and (tonumber(offsetMinutes) :: number) <= 59
end

local KNOWN_FIELDS: { [string]: { [string]: boolean } } = {}
for name, model in MODELS do
	local known = {}
	for _, field in ipairs(model.fields) do
		known[field.name] = true
	end
	KNOWN_FIELDS[name] = known
end

local checkModel: (name: string, value: any, path: string) -> string?

local function check(spec: Spec, value: any, path: string): string?
	local kind = spec.kind
	if kind == "any" then
		return nil
	elseif kind == "model" then
		return checkModel(spec.name :: string, value, path)
	elseif kind == "enum" then
		local values = spec.values or ENUMS[spec.name :: string]
		if type(value) ~= "string" or table.find(values, value) == nil then
			return expected(path, "one of " .. table.concat(values, ", "), value)
		end
		return nil
	elseif kind == "string" then
		if type(value) ~= "string" then
			return expected(path, "a string", value)
		end
		local chars = utf8.len(value)
		if chars == nil then
			return path .. ": is not valid UTF-8"
		end
		local minLength, maxLength = spec.minLength, spec.maxLength
		if minLength ~= nil and chars < minLength then
			return path .. ": must be at least " .. minLength .. " characters, got " .. chars
		end
		if maxLength ~= nil and chars > maxLength then
			return path .. ": must be at most " .. maxLength .. " characters, got " .. chars
		end
		local minBytes, maxBytes = spec.minBytes, spec.maxBytes
		if minBytes ~= nil and #value < minBytes then
			return path .. ": must be at least " .. minBytes .. " byte(s) of UTF-8, got " .. #value
		end
		if maxBytes ~= nil and #value > maxBytes then
			return path .. ": must be at most " .. maxBytes .. " bytes of UTF-8, got " .. #value
		end
		local pattern = spec.pattern
		if pattern ~= nil and string.find(value, pattern) == nil then
			return path .. ": contains characters that are not allowed"
		end
		if spec.dateTime and not isDateTime(value) then
			return expected(path, "an RFC 3339 date-time with an offset, e.g. 2024-01-31T12:00:00Z", value)
		end
		if spec.json then
			local problem = jsonTextProblem(value)
			if problem ~= nil then
				return path .. ": is not valid JSON text (" .. problem .. ")"
			end
		end
		if spec.equals ~= nil and value ~= spec.equals then
			return expected(path, '"' .. tostring(spec.equals) .. '"', value)
		end
		return nil
	elseif kind == "integer" or kind == "number" then
		if type(value) ~= "number" or value ~= value or math.abs(value) == math.huge then
			return expected(path, "a finite number", value)
		end
		if kind == "integer" and math.floor(value) ~= value then
			return expected(path, "an integer", value)
		end
		local minimum, maximum = spec.minimum, spec.maximum
		if minimum ~= nil and value < minimum then
			return path .. ": must be at least " .. minimum .. ", got " .. value
		end
		if maximum ~= nil and value > maximum then
			return path .. ": must be at most " .. maximum .. ", got " .. value
		end
		local above, below = spec.exclusiveMinimum, spec.exclusiveMaximum
		if above ~= nil and value <= above then
			return path .. ": must be greater than " .. above .. ", got " .. value
		end
		if below ~= nil and value >= below then
			return path .. ": must be less than " .. below .. ", got " .. value
		end
		return nil
	elseif kind == "boolean" then
		if type(value) ~= "boolean" then
			return expected(path, "true or false", value)
		end
		if spec.equals ~= nil and value ~= spec.equals then
			return expected(path, tostring(spec.equals), value)
		end
		return nil
	elseif kind == "array" then
		if type(value) ~= "table" then
			return expected(path, "an array", value)
		end
		local count, maxIndex = 0, 0
		for key in value do
			if type(key) ~= "number" or key < 1 or key ~= math.floor(key) then
				return expected(path, "an array", value)
			end
			count += 1
			maxIndex = math.max(maxIndex, key)
		end
		if maxIndex ~= count then
			return path .. ": expected an array without holes (nil items)"
		end
		local minItems, maxItems = spec.minItems, spec.maxItems
		if minItems ~= nil and count < minItems then
			return path .. ": must have at least " .. minItems .. " items, got " .. count
		end
		if maxItems ~= nil and count > maxItems then
			return path .. ": must have at most " .. maxItems .. " items, got " .. count
		end
		local items = spec.items
		if items ~= nil then
			for index = 1, count do
				local problem = check(items, value[index], path .. "[" .. index .. "]")
				if problem ~= nil then
					return problem
				end
			end
		end
		return nil
	elseif kind == "map" then
		if type(value) ~= "table" then
			return expected(path, "an object", value)
		end
		local entries = spec.entries
		for key, item in value do
			if type(key) ~= "string" then
				return expected(path, "an object with string keys", value)
			end
			if entries ~= nil then
				local problem = check(entries, item, path .. "." .. key)
				if problem ~= nil then
					return problem
				end
			end
		end
		local maxEncodedBytes = spec.maxEncodedBytes
		if maxEncodedBytes ~= nil then
			local size = encodedSize(value)
			if size == nil then
				return path .. ": cannot be encoded as JSON"
			elseif size > maxEncodedBytes then
				return path .. ": must encode to at most " .. maxEncodedBytes .. " bytes of JSON, got " .. size
			end
		end
		return nil
	elseif kind == "union" then
		local problems = {}
		for _, option in ipairs(spec.options :: { Spec }) do
			local problem = check(option, value, path)
			if problem == nil then
				return nil
			end
			table.insert(problems, problem)
		end
		return path .. ": matches none of the allowed types (" .. table.concat(problems, "; ") .. ")"
	end
	return path .. ": the validator does not know the spec kind " .. kind
end

checkModel = function(name: string, value: any, path: string): string?
	local model = MODELS[name]
	if type(value) ~= "table" then
		return expected(path, "an object", value)
	end
	for key in value do
		if type(key) ~= "string" then
			return expected(path, "an object", value)
		end
	end
	for _, field in ipairs(model.fields) do
		local item = value[field.name]
		if item == nil then
			if field.required then
				return path .. "." .. field.name .. ": is required"
			end
		else
			local problem = check(field.spec, item, path .. "." .. field.name)
			if problem ~= nil then
				return problem
			end
		end
	end
	if model.closed then
		local known = KNOWN_FIELDS[name]
		for key in value do
			if not known[key] then
				return path .. ': unknown field "' .. key .. '"'
			end
		end
	end
	return nil
end

local function run(name: string, value: any): (boolean, string?)
	local problem = checkModel(name, value, name)
	return problem == nil, problem
end

--- Validate `value` against the model called `name` (e.g. from EVENT_PAYLOADS).
function Protocol.validateModel(name: string, value: any): (boolean, string?)
	if MODELS[name] == nil then
		return false, "unknown protocol model " .. name
	end
	return run(name, value)
end

--- Validate a path parameter (e.g. an entry key) before putting it into a URL.
function Protocol.checkPathParam(name: string, value: any): (boolean, string?)
	local spec = PATH_PARAMS[name]
	if spec == nil then
		return false, "unknown path parameter " .. name
	end
	local problem = check(spec, value, name)
	return problem == nil, problem
end
""".strip()


if __name__ == "__main__":
    raise SystemExit(main())
