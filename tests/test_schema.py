"""The protocol models, the generated JSON Schema / Luau, and the golden fixtures agree.

Every fixture in shared_schema/fixtures/{valid,invalid}/<Model>.<case>.json is checked by the
pydantic model *and* by the generated Luau validator (run in pluau), so the server and the
plugin accept exactly the same messages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pluau  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from shared_schema import PROTOCOL_MAJOR, PROTOCOL_MINOR
from shared_schema.constraints import compact_json
from shared_schema.entries import EntryCreateRequest, EntryUpdateRequest
from shared_schema.events import EVENT_PAYLOADS
from shared_schema.registry import (
    API_PREFIX,
    MODELS,
    MODELS_BY_NAME,
    PATH_PARAMS,
    ROUTES,
    canonical_json,
    openapi_document,
    schema_document,
    schema_hash,
)
from tools import codegen

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "shared_schema" / "fixtures"
LUAU_PATH = ROOT / "plugin" / "src" / "Protocol.luau"
SCHEMA_PATH = ROOT / "shared_schema" / "generated" / "protocol.schema.json"


def _fixtures(kind: str) -> list[Path]:
    return sorted((FIXTURES / kind).glob("*.json"))


def _model_of(path: Path) -> type[BaseModel]:
    name = path.name.split(".", 1)[0]
    assert name in MODELS_BY_NAME, f"{path.name} names no protocol model"
    return MODELS_BY_NAME[name]


# -- Luau harness ------------------------------------------------------------------------------


class LuauProtocol:
    """Protocol.luau loaded in a pluau VM, fed values the way HttpService:JSONDecode gives them."""

    def __init__(self, source: str) -> None:
        self.lua = pluau.Lua()
        self.module: pluau.Table = self.lua.load_chunk(source, name="=Protocol")()[0]
        self._validate_model = self.module.get("validateModel")

    def to_lua(self, value: Any) -> Any:
        # JSONDecode: null becomes nil (the key disappears) and every number is a double.
        if isinstance(value, dict):
            table = self.lua.create_table()
            for key, item in value.items():
                if item is not None:
                    table.set(key, self.to_lua(item))
            return table
        if isinstance(value, list):
            table = self.lua.create_table()
            for index, item in enumerate(value, start=1):
                if item is not None:
                    table.set(index, self.to_lua(item))
            return table
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    def validate(self, model: str, value: Any) -> tuple[bool, str | None]:
        ok, *problem = self._validate_model(model, self.to_lua(value))
        return bool(ok), (str(problem[0]) if problem and problem[0] is not None else None)


@pytest.fixture(scope="module")
def luau() -> Iterator[LuauProtocol]:
    yield LuauProtocol(LUAU_PATH.read_text(encoding="utf-8"))


# -- Fixtures in both languages ------------------------------------------------------------------


@pytest.mark.parametrize("path", _fixtures("valid"), ids=lambda p: p.stem)
def test_valid_fixture_accepted_by_pydantic_and_luau(path: Path, luau: LuauProtocol) -> None:
    model = _model_of(path)
    text = path.read_text(encoding="utf-8")
    model.model_validate_json(text)
    ok, problem = luau.validate(model.__name__, json.loads(text))
    assert ok, f"Luau rejected a valid {model.__name__}: {problem}"


@pytest.mark.parametrize("path", _fixtures("invalid"), ids=lambda p: p.stem)
def test_invalid_fixture_rejected_by_pydantic_and_luau(path: Path, luau: LuauProtocol) -> None:
    model = _model_of(path)
    text = path.read_text(encoding="utf-8")
    with pytest.raises(ValidationError):
        model.model_validate_json(text)
    ok, problem = luau.validate(model.__name__, json.loads(text))
    assert not ok, f"Luau accepted an invalid {model.__name__}"
    assert problem and problem.startswith(model.__name__), problem


def test_every_model_has_a_valid_fixture() -> None:
    covered = {_model_of(path).__name__ for path in _fixtures("valid")}
    missing = sorted(set(MODELS_BY_NAME) - covered)
    assert not missing, f"models without a valid fixture: {missing}"


def test_luau_error_names_the_field(luau: LuauProtocol) -> None:
    text = (FIXTURES / "invalid" / "EntryCreateRequest.five_user_ids.json").read_text()
    ok, problem = luau.validate("EntryCreateRequest", json.loads(text))
    assert not ok
    assert problem == "EntryCreateRequest.user_ids: must have at most 4 items, got 5"
    ok, problem = luau.validate("EntryView", {"state": "ACTIVE"})
    assert (ok, problem) == (False, "EntryView.universe_id: is required")


def test_luau_checks_path_params(luau: LuauProtocol) -> None:
    check = luau.module.get("checkPathParam")
    assert check("key", "ключ" * 6 + "к")[0] is True  # 50 bytes
    ok, problem = check("key", "ключ" * 6 + "кл")  # 52 bytes, 26 characters
    assert ok is False and "at most 50 bytes" in str(problem)
    assert check("universe_id", 0.0)[0] is False


# -- Python-side semantics -----------------------------------------------------------------------


def test_update_request_tells_omitted_from_empty() -> None:
    base = '"value_json": "1", "expected_revision": "r1", "idempotency_key": "k-12345678"'
    omitted = EntryUpdateRequest.model_validate_json("{" + base + "}")
    assert omitted.attributes_for({"a": 1}) == {"a": 1}
    assert omitted.user_ids_for([7]) == [7]
    cleared = EntryUpdateRequest.model_validate_json(
        "{" + base + ', "attributes": [], "user_ids": []}'
    )
    assert cleared.attributes_for({"a": 1}) is None
    assert cleared.user_ids_for([7]) == []
    nulled = EntryUpdateRequest.model_validate_json("{" + base + ', "attributes": null}')
    assert nulled.attributes_for({"a": 1}) is None
    replaced = EntryUpdateRequest.model_validate_json(
        "{" + base + ', "attributes": {"b": 2}, "user_ids": [1]}'
    )
    assert replaced.attributes_for({"a": 1}) == {"b": 2}
    assert replaced.user_ids_for([7]) == [1]
    # Re-serializing must not turn "omitted" into "clear".
    assert "attributes" not in omitted.model_dump(exclude_unset=True)


def test_datetimes_are_normalized_to_utc() -> None:
    path = FIXTURES / "valid" / "RevisionListQuery.basic.json"
    query = _model_of(path).model_validate_json(path.read_text())
    assert query.model_dump(mode="json")["end"] == "2025-03-01T12:00:00Z"


# -- Python and Luau agree beyond the fixtures ---------------------------------------------------

_JSON_PIECES = st.sampled_from(
    ["{", "}", "[", "]", ",", ":", '"', "\\", "a", "é", "0", "1", "-", ".", "e", "+", " ",
     "\n", "\t", "true", "false", "null", "NaN", "\\u00e9", "\\n", "\\x", "01", "1e999"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.lists(_JSON_PIECES, max_size=12).map("".join),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=3), inner, max_size=3)
            ),
            max_leaves=8,
        ).map(lambda v: json.dumps(v, allow_nan=True)),
    )
)
def test_json_text_check_agrees(text: str) -> None:
    lua = _shared_luau()
    message = {"value_json": text, "idempotency_key": "k-12345678"}
    try:
        EntryCreateRequest.model_validate(message)
        python_ok = True
    except ValidationError:
        python_ok = False
    luau_ok, problem = lua.validate("EntryCreateRequest", message)
    assert luau_ok == python_ok, f"{text!r}: python {python_ok}, luau {luau_ok} ({problem})"


# Integral floats are left out: Python prints 2.0 as "2.0", and Luau cannot tell it from 2.
_ATTRIBUTE_VALUES = st.recursive(
    st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
    | st.text(max_size=80),
    lambda inner: (
        st.lists(inner, min_size=1, max_size=4)
        | st.dictionaries(st.text(max_size=10), inner, min_size=1, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=10), _ATTRIBUTE_VALUES)
def test_attribute_size_agrees_at_the_300_byte_boundary(name: str, value: Any) -> None:
    # Pad the attributes to exactly 299 bytes (accepted) and 300 (refused) as Python counts
    # them; the Luau count must land on the same side both times.
    lua = _shared_luau()
    unpadded = len(compact_json({name: value, "pad_": ""}).encode("utf-8"))
    if unpadded > 299:
        return
    for size, accepted in ((299, True), (300, False)):
        attributes = {name: value, "pad_": "x" * (size - unpadded)}
        assert len(compact_json(attributes).encode("utf-8")) == size
        message = {"value_json": "1", "attributes": attributes, "idempotency_key": "k-12345678"}
        try:
            EntryCreateRequest.model_validate(message)
            python_ok = True
        except ValidationError:
            python_ok = False
        luau_ok, problem = lua.validate("EntryCreateRequest", message)
        assert python_ok == accepted
        assert luau_ok == accepted, f"{attributes!r} ({size} bytes): {problem}"


_LUAU_SINGLETON: list[LuauProtocol] = []


def _shared_luau() -> LuauProtocol:
    # Hypothesis tests cannot take function-scoped fixtures; one VM serves all their examples.
    if not _LUAU_SINGLETON:
        _LUAU_SINGLETON.append(LuauProtocol(LUAU_PATH.read_text(encoding="utf-8")))
    return _LUAU_SINGLETON[0]


# -- Generated files ---------------------------------------------------------------------------


def test_generated_files_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tools.codegen", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_check_names_stale_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setattr(codegen, "GENERATED_DIR", tmp_path)
    monkeypatch.setattr(codegen, "PLUGIN_SRC_DIR", tmp_path / "src")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / codegen.LUAU_FILE).write_text(codegen.render_luau(), encoding="utf-8")
    (tmp_path / codegen.SCHEMA_FILE).write_text("{}\n", encoding="utf-8")
    assert codegen.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert codegen.SCHEMA_FILE in err and codegen.LUAU_FILE not in err
    assert codegen.main([]) == 0
    assert codegen.main(["--check"]) == 0


def test_luau_compiles_and_exports_versions(luau: LuauProtocol) -> None:
    source = LUAU_PATH.read_text(encoding="utf-8")
    assert source.startswith("--!strict\n")
    assert "generated by tools/codegen.py — do not edit" in source.splitlines()[1]
    pluau.Compiler(1, 1, 0, 0).compile(source)
    assert luau.module.get("PROTOCOL_MAJOR") == PROTOCOL_MAJOR
    assert luau.module.get("PROTOCOL_MINOR") == PROTOCOL_MINOR
    assert str(luau.module.get("SCHEMA_HASH")) == schema_hash()
    validate = luau.module.get("validate")
    for model in MODELS:
        assert validate.get(model.__name__) is not None, model.__name__
    routes = luau.module.get("ROUTES")
    for route in ROUTES:
        if route.websocket:  # not a request/response route: the Luau table leaves it out
            assert routes.get(route.operation_id) is None
            continue
        assert str(routes.get(route.operation_id).get("path")) == route.full_path


def test_luau_types_cover_every_model() -> None:
    source = LUAU_PATH.read_text(encoding="utf-8")
    for model in MODELS:
        assert f"export type {model.__name__} = {{" in source, model.__name__
    assert 'export type Role = "viewer" | "assistant" | "editor" | "admin"' in source
    assert "\tuser_ids: { number }?," in source  # optional list field
    assert "\tsort_key: (string | number)?," in source


# -- Schema hash ---------------------------------------------------------------------------------


def test_schema_hash_is_stable_across_processes() -> None:
    code = "from shared_schema.registry import schema_hash; print(schema_hash())"
    hashes = set()
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        hashes.add(result.stdout.strip())
    assert hashes == {schema_hash()}


def test_schema_hash_matches_generated_schema_file() -> None:
    import hashlib

    document = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    recorded = document.pop("x-schema-hash")
    digest = hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()
    assert recorded == digest == schema_hash()


# -- Registry and OpenAPI ------------------------------------------------------------------------


def test_registry_is_consistent() -> None:
    assert len(MODELS_BY_NAME) == len(MODELS), "two models share a name"
    defs = schema_document()["$defs"]
    object_defs = {name for name, d in defs.items() if d.get("type") == "object"}
    assert object_defs == set(MODELS_BY_NAME), "nested models missing from MODELS"
    ids = [route.operation_id for route in ROUTES]
    assert len(ids) == len(set(ids))
    seen = set()
    for route in ROUTES:
        assert (route.method, route.path) not in seen, route
        seen.add((route.method, route.path))
        assert route.path.startswith("/") and route.full_path.startswith(API_PREFIX)
        for param in route.path_params:
            assert param in PATH_PARAMS, f"{route.operation_id}: undeclared {{{param}}}"
        for model in (route.body, route.query, *route.responses):
            if model is not None:
                assert MODELS_BY_NAME.get(model.__name__) is model
        if route.status == 204:
            assert not route.responses
        if route.method == "GET":
            assert route.body is None
    for model in EVENT_PAYLOADS.values():
        assert MODELS_BY_NAME.get(model.__name__) is model
    auth_free = {r.full_path for r in ROUTES if r.role is None}
    assert auth_free == {"/api/v1/hello", "/api/v1/pair/start", "/api/v1/pair/complete"}


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield item
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def test_openapi_document() -> None:
    doc = openapi_document("9.9.9")
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["version"] == "9.9.9"
    for route in ROUTES:
        operation = doc["paths"][route.full_path][route.method.lower()]
        assert operation["operationId"] == route.operation_id
        assert operation["x-required-role"] == route.auth
        assert operation["security"] == ([] if route.role is None else [{"bearer": []}])
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(route.path_params)
        assert ("requestBody" in operation) == (route.body is not None)
        assert str(route.status) in operation["responses"]
    schemas = doc["components"]["schemas"]
    refs = list(_refs(doc))
    assert refs, "the document references no schema"
    for ref in refs:
        prefix = "#/components/schemas/"
        assert ref.startswith(prefix), ref
        assert ref[len(prefix) :] in schemas, f"dangling {ref}"
    # Queries become named query parameters, aliases included.
    diff = doc["paths"][API_PREFIX + "/universes/{universe_id}/datastores/{datastore}"
                        "/entries/{key}/diff"]["get"]  # fmt: skip
    assert {p["name"] for p in diff["parameters"] if p["in"] == "query"} == {"scope", "from", "to"}
    json.dumps(doc)  # serializable as served
