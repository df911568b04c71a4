"""The value query language (docs/search.md): parsed with lark, compiled to parameterised SQL.

    coins > 1e9 and inventory has "sword" and not exists(banned)
    level between 10 and 20
    name ~ "^xX"
    settings.music = true or stats["kills per hour"] >= 3.5
    attributes.tag = "x"        userIds has 123        key ~ "^Player_"

Every literal and every field path becomes a bound parameter (paths as RFC 6901 pointers), never
SQL text. Each predicate is two-valued: a field that is missing or of another type makes it
false, so `not` means what people expect (`not coins > 5` includes entries without coins).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from shared_schema.search import QueryError

from .fieldpath import FieldPath

GRAMMAR = r"""
?start: expr
?expr: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: _NOT not_expr -> negate
         | atom
?atom: "(" expr ")"
     | predicate
predicate: subject CMP value                       -> compare
         | subject _BETWEEN value _AND value       -> between
         | subject _HAS value                      -> has
         | subject "~" STRING                      -> regex
         | subject _IN "[" value ("," value)* "]"  -> one_of
         | subject _IS TYPE                        -> is_type
         | _EXISTS "(" path ")"                    -> exists
?subject: path
        | _LEN "(" path ")"                        -> length
path: head segment*
head: NAME | "[" STRING "]"
segment: "." NAME | "[" STRING "]" | "[" INT "]"
value: SIGNED_NUMBER | STRING | TRUE | FALSE | NULL

CMP: "<=" | ">=" | "!=" | "==" | "=" | "<" | ">"
_OR.2: /or\b/i
_AND.2: /and\b/i
_NOT.2: /not\b/i
_BETWEEN.2: /between\b/i
_HAS.2: /has\b/i
_IN.2: /in\b/i
_IS.2: /is\b/i
_EXISTS.2: /exists\b/i
_LEN.2: /len\b/i
TRUE.2: /true\b/i
FALSE.2: /false\b/i
NULL.2: /null\b/i
TYPE.2: /(string|number|integer|boolean|object|array|null)\b/i
NAME: /[A-Za-z_][A-Za-z0-9_]*/
STRING: /"(?:[^"\\]|\\.)*"/
INT: /[0-9]+/
SIGNED_NUMBER: /[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?/
%ignore /\s+/
"""

# Subjects that are an entry's metadata rather than a field of its value.
STRING_COLUMNS = {"key": "key", "scope": "scope", "datastore": "datastore"}
NUMBER_COLUMNS = {"size": "size_bytes", "updated": "updated_at", "created": "created_at"}
JSON_COLUMNS = {"attributes": "attributes", "value": "value"}
USER_IDS = "userIds"

_NUMERIC = "('BIGINT', 'UBIGINT', 'DOUBLE')"
_JSON_TYPES = {
    "string": "('VARCHAR')",
    "number": _NUMERIC,
    "integer": "('BIGINT', 'UBIGINT')",
    "boolean": "('BOOLEAN')",
    "object": "('OBJECT')",
    "array": "('ARRAY')",
    "null": "('NULL')",
}
_TOKEN_NAMES = {
    "CMP": "a comparison (= != < <= > >=)",
    "_OR": "or",
    "_AND": "and",
    "_NOT": "not",
    "_BETWEEN": "between",
    "_HAS": "has",
    "_IN": "in",
    "_IS": "is",
    "_EXISTS": "exists(...)",
    "_LEN": "len(...)",
    "TRUE": "true",
    "FALSE": "false",
    "NULL": "null",
    "TYPE": "a type name",
    "NAME": "a field name",
    "STRING": 'a "string"',
    "INT": "an index",
    "SIGNED_NUMBER": "a number",
    "LPAR": "(",
    "RPAR": ")",
    "LSQB": "[",
    "RSQB": "]",
    "COMMA": ",",
    "DOT": ".",
    "TILDE": "~",
    "$END": "end of query",
}


class QuerySyntaxError(ValueError):
    def __init__(self, error: QueryError) -> None:
        super().__init__(error.message)
        self.error = error


def query_error(
    query: str, message: str, position: int, length: int = 1, expected: list[str] | None = None
) -> QuerySyntaxError:
    position = max(0, min(position, len(query)))
    line = query.count("\n", 0, position) + 1
    column = position - (query.rfind("\n", 0, position) + 1) + 1
    return QuerySyntaxError(
        QueryError(
            message=message,
            position=position,
            line=line,
            column=column,
            length=max(0, length),
            expected=expected or [],
        )
    )


# -- AST ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """What a predicate reads: a value field, an attribute, or entry metadata."""

    root: str  # "value", "attributes", a STRING_COLUMNS/NUMBER_COLUMNS name, or userIds
    path: FieldPath | None  # inside value/attributes; None for metadata and whole value
    length: bool = False  # len(path)
    position: int = 0
    text: str = ""


@dataclass(frozen=True)
class Literal:
    value: Any  # float, str, bool or None
    position: int


@dataclass(frozen=True)
class Predicate:
    op: str  # compare, between, has, regex, one_of, is_type, exists
    subject: Subject
    args: tuple[Any, ...]  # Literals, a CMP string, a type name


@dataclass(frozen=True)
class BoolOp:
    op: str  # and, or, not
    parts: tuple[Node, ...]


Node = Predicate | BoolOp


# -- parsing -----------------------------------------------------------------------------------


@cache
def _parser() -> Lark:
    return Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _describe(names: set[str]) -> list[str]:
    return sorted({_TOKEN_NAMES.get(n, n.strip("_").lower()) for n in names})


def parse(query: str) -> Node:
    """The query's syntax tree; QuerySyntaxError says where and what was expected."""
    if not query.strip():
        raise query_error(query, "The query is empty.", 0, 0)
    try:
        tree = _parser().parse(query)
    except UnexpectedCharacters as exc:
        pos = exc.pos_in_stream or 0
        char = query[pos]
        raise query_error(
            query,
            'A string is never closed (a closing " is missing).'
            if char == '"'
            else f"Unexpected character {char!r}",
            pos,
            1,
            _describe(set(exc.allowed or ())),
        ) from None
    except UnexpectedEOF as exc:
        raise query_error(
            query, "The query ends too early.", len(query), 0, _describe(set(exc.expected))
        ) from None
    except UnexpectedToken as exc:
        token = exc.token
        if token.type == "$END":
            raise query_error(
                query,
                "The query ends too early.",
                len(query),
                0,
                _describe(set(exc.accepts or exc.expected)),
            ) from None
        start = token.start_pos if token.start_pos is not None else 0
        raise query_error(
            query,
            f"Unexpected {token.value!r}",
            start,
            len(str(token.value)),
            _describe(set(exc.accepts or exc.expected)),
        ) from None
    except UnexpectedInput as exc:  # pragma: no cover - the three above are all lark raises
        raise query_error(query, str(exc), getattr(exc, "pos_in_stream", 0) or 0) from None
    return _Build(query).transform(tree)


def _string(token: Token, query: str) -> str:
    try:
        value = json.loads(str(token))
    except json.JSONDecodeError as exc:
        raise query_error(
            query, f"Bad string: {exc.msg}", (token.start_pos or 0) + exc.pos
        ) from None
    assert isinstance(value, str)
    return value


def _kids(tree: Tree[Any]) -> list[Any]:
    return list(tree.children)


@v_args(tree=True)
class _Build(Transformer[Token, Node]):
    def __init__(self, query: str) -> None:
        super().__init__()
        self.query = query

    # paths and subjects
    def head(self, tree: Tree[Token]) -> str:
        token = _kids(tree)[0]
        assert isinstance(token, Token)
        return _string(token, self.query) if token.type == "STRING" else str(token)

    def segment(self, tree: Tree[Token]) -> str | int:
        token = _kids(tree)[0]
        assert isinstance(token, Token)
        if token.type == "INT":
            return int(token)
        return _string(token, self.query) if token.type == "STRING" else str(token)

    def path(self, tree: Tree[Any]) -> Subject:
        parts: list[str | int] = list(_kids(tree))
        start = tree.meta.start_pos
        text = self.query[start : tree.meta.end_pos]
        root = parts[0]
        if isinstance(root, str) and root in JSON_COLUMNS and len(parts) > 1:
            return Subject(root, FieldPath(tuple(parts[1:])), position=start, text=text)
        if len(parts) == 1 and isinstance(root, str):
            bare = self.query[start : start + 1] != "["  # ["key"] is a value field named key
            if bare and (root in STRING_COLUMNS or root in NUMBER_COLUMNS or root == USER_IDS):
                return Subject(root, None, position=start, text=text)
            if bare and root in JSON_COLUMNS:
                return Subject(root, None, position=start, text=text)
        return Subject("value", FieldPath(tuple(parts)), position=start, text=text)

    def length(self, tree: Tree[Any]) -> Subject:
        inner: Subject = _kids(tree)[0]
        if inner.path is None and inner.root not in JSON_COLUMNS:
            raise query_error(
                self.query, f"len() takes a field of the value, not {inner.text}", inner.position
            )
        return Subject(
            inner.root, inner.path, length=True, position=tree.meta.start_pos, text=inner.text
        )

    def value(self, tree: Tree[Token]) -> Literal:
        token = _kids(tree)[0]
        assert isinstance(token, Token)
        pos = token.start_pos or 0
        if token.type == "SIGNED_NUMBER":
            number = float(token)
            if number != number or number in (float("inf"), float("-inf")):
                raise query_error(self.query, "The number is too large.", pos, len(token))
            return Literal(number, pos)
        if token.type == "STRING":
            return Literal(_string(token, self.query), pos)
        if token.type == "TRUE":
            return Literal(True, pos)
        if token.type == "FALSE":
            return Literal(False, pos)
        return Literal(None, pos)

    # predicates
    def compare(self, tree: Tree[Any]) -> Predicate:
        subject, op, literal = _kids(tree)
        return Predicate("compare", subject, ("=" if op == "==" else str(op), literal))

    def between(self, tree: Tree[Any]) -> Predicate:
        subject, low, high = _kids(tree)
        return Predicate("between", subject, (low, high))

    def has(self, tree: Tree[Any]) -> Predicate:
        subject, literal = _kids(tree)
        return Predicate("has", subject, (literal,))

    def regex(self, tree: Tree[Any]) -> Predicate:
        subject, token = _kids(tree)
        return Predicate(
            "regex", subject, (Literal(_string(token, self.query), token.start_pos or 0),)
        )

    def one_of(self, tree: Tree[Any]) -> Predicate:
        subject, *literals = _kids(tree)
        return Predicate("one_of", subject, tuple(literals))

    def is_type(self, tree: Tree[Any]) -> Predicate:
        subject, token = _kids(tree)
        return Predicate("is_type", subject, (str(token).lower(),))

    def exists(self, tree: Tree[Any]) -> Predicate:
        return Predicate("exists", _kids(tree)[0], ())

    # boolean structure
    def or_expr(self, tree: Tree[Any]) -> BoolOp:
        return BoolOp("or", tuple(_kids(tree)))

    def and_expr(self, tree: Tree[Any]) -> BoolOp:
        return BoolOp("and", tuple(_kids(tree)))

    def negate(self, tree: Tree[Any]) -> BoolOp:
        return BoolOp("not", (_kids(tree)[0],))


# -- compiling ---------------------------------------------------------------------------------


@dataclass
class Compiled:
    """A WHERE clause with its parameters, and what the query reads (for hits' `fields`)."""

    sql: str
    params: list[Any]
    fields: list[Subject] = field(default_factory=list)
    regexes: list[Literal] = field(default_factory=list)


def normalized(node: Node) -> str:
    """The query fully bracketed, as the server understood it."""
    if isinstance(node, BoolOp):
        if node.op == "not":
            return f"(not {normalized(node.parts[0])})"
        return "(" + f" {node.op} ".join(normalized(p) for p in node.parts) + ")"
    s = node.subject
    subject = _subject_text(s)
    args = node.args
    if node.op == "compare":
        return f"({subject} {args[0]} {_lit(args[1])})"
    if node.op == "between":
        return f"({subject} between {_lit(args[0])} and {_lit(args[1])})"
    if node.op == "has":
        return f"({subject} has {_lit(args[0])})"
    if node.op == "regex":
        return f"({subject} ~ {_lit(args[0])})"
    if node.op == "one_of":
        return f"({subject} in [{', '.join(_lit(a) for a in args)}])"
    if node.op == "is_type":
        return f"({subject} is {args[0]})"
    return f"exists({subject})"


def _subject_text(s: Subject) -> str:
    if s.path is None:
        text = s.root
    elif s.root == "value":
        text = s.path.text if s.path.segments[0] not in _RESERVED else f"value.{s.path.text}"
    else:
        text = f"{s.root}.{s.path.text}"
    return f"len({text})" if s.length else text


_RESERVED = {*STRING_COLUMNS, *NUMBER_COLUMNS, *JSON_COLUMNS, USER_IDS}


def _lit(literal: Literal) -> str:
    value = literal.value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return json.dumps(value, ensure_ascii=False)


def field_names(node: Node) -> list[str]:
    seen: dict[str, None] = {}
    for subject in _subjects(node):
        seen[_subject_text(subject)] = None
    return list(seen)


def _subjects(node: Node) -> list[Subject]:
    if isinstance(node, BoolOp):
        return [s for part in node.parts for s in _subjects(part)]
    return [node.subject]


class Compiler:
    """Turns a syntax tree into SQL over `entries`, using typed columns where they exist."""

    def __init__(self, query: str, typed: dict[str, tuple[str, str]]) -> None:
        self.query = query
        self.typed = typed  # pointer -> (column, DOUBLE|VARCHAR)
        self.params: list[Any] = []
        self.regexes: list[Literal] = []

    def compile(self, node: Node) -> Compiled:
        sql = self._node(node)
        return Compiled(sql, self.params, _subjects(node), self.regexes)

    def _p(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    def _node(self, node: Node) -> str:
        # A predicate is null where the field is missing or of another type. Under and/or alone
        # WHERE treats that null as false, which is what the language means; only `not` must see
        # a false, so only a `not` closes its operand with coalesce. Bare comparisons on typed
        # columns then reach DuckDB as filters it pushes into the scan.
        if isinstance(node, BoolOp):
            if node.op == "not":
                return f"(NOT coalesce({self._node(node.parts[0])}, false))"
            joiner = " AND " if node.op == "and" else " OR "
            return "(" + joiner.join(self._node(p) for p in node.parts) + ")"
        return self._predicate(node)

    # expressions for a subject ------------------------------------------------------------

    def _json(self, s: Subject) -> tuple[str, str]:
        """(column, pointer placeholder) of a JSON subject."""
        column = JSON_COLUMNS.get(s.root, "value")
        pointer = s.path.pointer if s.path is not None else ""
        return column, pointer

    def number(self, s: Subject) -> str:
        if s.root in NUMBER_COLUMNS:
            return NUMBER_COLUMNS[s.root]
        if s.root in STRING_COLUMNS or s.root == USER_IDS:
            raise self._error(s, f"{s.text} is text, not a number")
        column, pointer = self._json(s)
        if s.length:
            p = pointer
            return (
                f"(CASE json_type({column}, {self._p(p)}) "
                f"WHEN 'ARRAY' THEN json_array_length({column}, {self._p(p)}) "
                f"WHEN 'VARCHAR' THEN length(json_extract_string({column}, {self._p(p)})) "
                f"WHEN 'OBJECT' THEN len(json_keys({column}, {self._p(p)})) END)"
            )
        typed = self.typed.get(pointer) if column == "value" else None
        if typed is not None and typed[1] == "DOUBLE":
            return typed[0]
        return (
            f"(CASE WHEN json_type({column}, {self._p(pointer)}) IN {_NUMERIC} "
            f"THEN json_extract({column}, {self._p(pointer)})::DOUBLE END)"
        )

    def string(self, s: Subject) -> str:
        if s.root in STRING_COLUMNS:
            return STRING_COLUMNS[s.root]
        if s.root in NUMBER_COLUMNS or s.root == USER_IDS or s.length:
            raise self._error(s, f"{s.text} is not text")
        column, pointer = self._json(s)
        typed = self.typed.get(pointer) if column == "value" else None
        if typed is not None and typed[1] == "VARCHAR":
            return typed[0]
        return (
            f"(CASE WHEN json_type({column}, {self._p(pointer)}) = 'VARCHAR' "
            f"THEN json_extract_string({column}, {self._p(pointer)}) END)"
        )

    def _json_only(self, s: Subject, what: str) -> tuple[str, str]:
        if s.path is None and s.root not in JSON_COLUMNS:
            raise self._error(s, f"{what} works on fields of the value or attributes")
        return self._json(s)

    def _error(self, s: Subject, message: str) -> QuerySyntaxError:
        return query_error(self.query, message, s.position, max(1, len(s.text)))

    # predicates ---------------------------------------------------------------------------

    def _predicate(self, node: Predicate) -> str:
        s = node.subject
        op = node.op
        if op == "compare":
            cmp, literal = node.args
            return self._compare(s, cmp, literal)
        if op == "between":
            low, high = node.args
            if isinstance(low.value, float) and isinstance(high.value, float):
                expr = self._number_or_time(s, low)
                return f"({expr} BETWEEN {self._p(low.value)} AND {self._p(high.value)})"
            if isinstance(low.value, str) and isinstance(high.value, str):
                if s.root in NUMBER_COLUMNS:
                    a, b = _time(self.query, low), _time(self.query, high)
                    return f"({NUMBER_COLUMNS[s.root]} BETWEEN {self._p(a)} AND {self._p(b)})"
                return f"({self.string(s)} BETWEEN {self._p(low.value)} AND {self._p(high.value)})"
            raise query_error(self.query, "between needs two numbers or two strings", low.position)
        if op == "has":
            return self._has(s, node.args[0])
        if op == "regex":
            (pattern,) = node.args
            self.regexes.append(pattern)
            return f"regexp_matches({self.string(s)}, {self._p(pattern.value)})"
        if op == "one_of":
            return "(" + " OR ".join(self._compare(s, "=", lit) for lit in node.args) + ")"
        if op == "is_type":
            (kind,) = node.args
            column, pointer = self._json_only(s, "is")
            return f"(json_type({column}, {self._p(pointer)}) IN {_JSON_TYPES[kind]})"
        # exists
        if s.root == USER_IDS:
            return "(len(user_ids) > 0)"
        if s.path is None and s.root in JSON_COLUMNS:
            return f"({JSON_COLUMNS[s.root]} IS NOT NULL)"
        if s.path is None:
            return "true"
        column, pointer = self._json(s)
        return f"(json_type({column}, {self._p(pointer)}) IS NOT NULL)"

    def _number_or_time(self, s: Subject, literal: Literal) -> str:
        return self.number(s)

    def _compare(self, s: Subject, cmp: str, literal: Literal) -> str:
        value = literal.value
        if s.root == USER_IDS:
            raise query_error(self.query, "use `userIds has 123` to match a user id", s.position)
        if s.root in NUMBER_COLUMNS and isinstance(value, str):
            return f"({NUMBER_COLUMNS[s.root]} {cmp} {self._p(_time(self.query, literal))})"
        if isinstance(value, bool):
            if cmp not in ("=", "!="):
                raise query_error(
                    self.query, "true and false only compare with = or !=", literal.position
                )
            column, pointer = self._json_only(s, "A true/false comparison")
            typed = self.typed.get(pointer) if column == "value" else None
            if typed is not None and typed[1] == "BOOLEAN":
                return f"({typed[0]} {cmp} {self._p(value)})"
            return (
                f"(json_type({column}, {self._p(pointer)}) = 'BOOLEAN' AND "
                f"json_extract({column}, {self._p(pointer)})::BOOLEAN {cmp} {self._p(value)})"
            )
        if value is None:
            if cmp not in ("=", "!="):
                raise query_error(self.query, "null only compares with = or !=", literal.position)
            column, pointer = self._json_only(s, "A null comparison")
            test = "=" if cmp == "=" else "<>"
            return f"(json_type({column}, {self._p(pointer)}) {test} 'NULL')"
        if isinstance(value, float):
            return f"({self.number(s)} {cmp} {self._p(value)})"
        return f"({self.string(s)} {cmp} {self._p(value)})"

    def _has(self, s: Subject, literal: Literal) -> str:
        value = literal.value
        if s.root == USER_IDS:
            if not isinstance(value, float) or not value.is_integer():
                raise query_error(self.query, "userIds has takes a whole number", literal.position)
            return f"list_contains(user_ids, {self._p(int(value))})"
        column, pointer = self._json_only(s, "has")
        items = f"json_extract(json_extract({column}, {self._p(pointer)}), '$[*]')"
        is_array = f"json_type({column}, {self._p(pointer)}) = 'ARRAY'"
        if isinstance(value, float):
            element = f"CASE WHEN json_type(x) IN {_NUMERIC} THEN x::DOUBLE END"
            return f"({is_array} AND list_contains(list_transform({items}, x -> {element}), {self._p(value)}))"
        if isinstance(value, str):
            element = "CASE WHEN json_type(x) = 'VARCHAR' THEN json_extract_string(x, '$') END"
            in_array = f"({is_array} AND list_contains(list_transform({items}, x -> {element}), {self._p(value)}))"
            in_object = (
                f"(json_type({column}, {self._p(pointer)}) = 'OBJECT' AND "
                f"list_contains(json_keys({column}, {self._p(pointer)}), {self._p(value)}))"
            )
            return f"({in_array} OR {in_object})"
        if isinstance(value, bool):
            element = "CASE WHEN json_type(x) = 'BOOLEAN' THEN x::BOOLEAN END"
            return f"({is_array} AND list_contains(list_transform({items}, x -> {element}), {self._p(value)}))"
        element = "json_type(x) = 'NULL'"
        return f"({is_array} AND list_bool_or(list_transform({items}, x -> {element})))"


def _time(query: str, literal: Literal) -> float:
    """A date or time in quotes ("2025-03-01", "2025-03-01T12:00:00Z") as epoch seconds."""
    try:
        moment = datetime.fromisoformat(str(literal.value).replace("Z", "+00:00"))
    except ValueError:
        raise query_error(
            query, 'expected a date like "2025-03-01" or "2025-03-01T12:00:00Z"', literal.position
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def compile_query(query: str, typed: dict[str, tuple[str, str]]) -> tuple[Node, Compiled]:
    node = parse(query)
    return node, Compiler(query, typed).compile(node)
