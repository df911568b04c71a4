"""Key and value search over the index (synchronous; runs on the index thread).

A search is a WHERE clause built from three parts, each with bound parameters only: the scope
(backend, universe, stores, scopes), the key pattern, and the compiled value query.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from shared_schema.search import (
    EntryLink,
    KeyMatch,
    QueryCheck,
    SearchFilter,
    SearchHit,
)

from .fieldpath import FieldPath, FieldPathError, parse_path
from .query import (
    Compiler,
    QuerySyntaxError,
    Subject,
    compile_query,
    field_names,
    normalized,
    parse,
    query_error,
)
from .store import IndexStore, Scope, to_datetime

PREVIEW_CHARS = 300
# Up to this many hits into the default order, a page comes from one scan (_page_by_key).
FAST_PAGE = 5000
_SELECTION_BATCH = 1000


def check(query: str) -> QueryCheck:
    try:
        node = parse(query)
        Compiler(query, {}).compile(node)  # type errors (e.g. `key > 5`) too
    except QuerySyntaxError as exc:
        return QueryCheck(valid=False, error=exc.error)
    return QueryCheck(valid=True, fields=field_names(node), normalized=normalized(node))


@dataclass
class Where:
    sql: str
    params: list[Any]
    subjects: list[Subject]


def _key_clause(f: SearchFilter) -> tuple[str, list[Any]]:
    if f.key_pattern is None:
        return "true", []
    pattern = f.key_pattern
    sensitive = f.case_sensitive
    key = "key" if sensitive else "lower(key)"
    text = pattern if sensitive else pattern.lower()
    if f.key_match is KeyMatch.PREFIX:
        return f"starts_with({key}, ?)", [text]
    if f.key_match is KeyMatch.SUBSTRING:
        return f"contains({key}, ?)", [text]
    if f.key_match is KeyMatch.GLOB:
        return f"({key} GLOB ?)", [text]
    return ("regexp_matches(key, ?)" if sensitive else "regexp_matches(key, ?, 'i')"), [pattern]


class SearchEngine:
    def __init__(self, store: IndexStore) -> None:
        self.store = store

    def where(self, scope: Scope, f: SearchFilter) -> Where:
        scope_sql, params = scope.where()
        key_sql, key_params = _key_clause(f)
        subjects: list[Subject] = []
        query_sql = "true"
        query_params: list[Any] = []
        if f.query is not None:
            typed = {p: (t.column, t.sql_type) for p, t in self.store.typed.items()}
            _, compiled = compile_query(f.query, typed)
            self._check_regexes(f.query, compiled.regexes)
            query_sql, query_params, subjects = compiled.sql, compiled.params, compiled.fields
        if f.key_pattern is not None and f.key_match is KeyMatch.REGEX:
            self._check_key_regex(f.key_pattern)
        return Where(
            f"{scope_sql} AND {key_sql} AND {query_sql}",
            params + key_params + query_params,
            subjects,
        )

    def _check_regexes(self, query: str, regexes: list[Any]) -> None:
        for literal in regexes:
            try:
                self.store.con.execute("SELECT regexp_matches('', ?)", [literal.value]).fetchall()
            except duckdb.Error as exc:
                raise query_error(
                    query, f"Bad regular expression: {_first_line(exc)}", literal.position
                ) from None

    def _check_key_regex(self, pattern: str) -> None:
        try:
            self.store.con.execute("SELECT regexp_matches('', ?)", [pattern]).fetchall()
        except duckdb.Error as exc:
            raise ValueError(
                f"key_pattern is not a valid regular expression: {_first_line(exc)}"
            ) from None

    def search(
        self,
        scope: Scope,
        f: SearchFilter,
        *,
        sort: str | None,
        descending: bool,
        offset: int,
        limit: int,
    ) -> tuple[list[SearchHit], int]:
        where = self.where(scope, f)
        # Each field the query or the sort names is shown on the hit as JSON text.
        shown: dict[str, tuple[str, str]] = {}
        for subject in where.subjects:
            if subject.path is not None and subject.root in ("value", "attributes"):
                shown.setdefault(subject.text, (subject.root, subject.path.pointer))
        if sort is not None:
            shown.setdefault(sort, ("value", self._sort_path(sort).pointer))
        select_params = [pointer for _, pointer in shown.values()]
        columns = f"""datastore, scope, key, revision, updated_at, crawled_at, size_bytes,
                      user_ids, left(value::VARCHAR, {PREVIEW_CHARS + 1}), universe_id""" + "".join(
            f", json_extract({column}, ?)::VARCHAR" for column, _ in shown.values()
        )
        found = None
        if sort is None and offset + limit <= FAST_PAGE:
            found = self._page_by_key(
                scope, where, columns, select_params, descending, offset, limit
            )
        if found is not None:
            rows, total = found
        else:
            order, order_params = self._order(sort, descending)
            # The page and the count are separate queries: ORDER BY .. LIMIT stays a top-N scan.
            rows = self.store.rows(
                f"""SELECT {columns} FROM entries WHERE {where.sql}
                    ORDER BY {order} LIMIT ? OFFSET ?""",
                select_params + where.params + order_params + [limit, offset],
            )
            if offset == 0 and len(rows) < limit:
                total = len(rows)
            else:
                total = int(
                    self.store.one(f"SELECT count(*) FROM entries WHERE {where.sql}", where.params)[
                        0
                    ]
                )
        names = list(shown)
        hits = []
        for row in rows:
            (
                datastore,
                scope_name,
                key,
                revision,
                updated,
                crawled,
                size,
                user_ids,
                preview,
                universe,
            ) = row[:10]
            values = row[10 : 10 + len(names)]
            hits.append(
                SearchHit(
                    entry=EntryLink(
                        universe_id=universe, datastore=datastore, scope=scope_name, key=key
                    ),
                    revision=revision,
                    updated_at=to_datetime(updated),
                    crawled_at=to_datetime(crawled) or datetime.now(UTC),
                    size_bytes=size,
                    user_ids=list(user_ids or []),
                    preview=preview[:PREVIEW_CHARS],
                    preview_truncated=len(preview) > PREVIEW_CHARS,
                    fields={n: v for n, v in zip(names, values, strict=True) if v is not None},
                )
            )
        return hits, total

    def _page_by_key(
        self,
        scope: Scope,
        where: Where,
        columns: str,
        select_params: list[Any],
        descending: bool,
        offset: int,
        limit: int,
    ) -> tuple[list[tuple[Any, ...]], int] | None:
        """The default order's page and the count from one scan, when all matches share a store
        and scope (the usual search): their (datastore, scope, key) order is then the key order,
        which arg_min/arg_max keep per scan thread with no sort of the matches and no second scan
        to count them. None when the matches span stores or scopes.
        """
        pick = "arg_max" if descending else "arg_min"
        # Whether the matches share a place: known without looking when everything in scope does.
        one_place = (
            "true"
            if self.store.places(scope) == 1
            else "min(datastore) = max(datastore) AND min(scope) = max(scope)"
        )
        total, top, same = self.store.one(
            f"""SELECT count(*), {pick}(rowid, key, ?), {one_place}
                FROM entries WHERE {where.sql}""",
            [offset + limit, *where.params],
        )
        if not total:
            return [], 0
        if not same:
            return None
        wanted = list(top or [])[offset : offset + limit]
        if not wanted:
            return [], int(total)
        fetched = self.store.rows(
            f"""SELECT rowid, {columns} FROM entries
                WHERE rowid IN (SELECT unnest(?::BIGINT[]))""",
            [*select_params, wanted],
        )
        by_row = {row[0]: row[1:] for row in fetched}
        return [by_row[r] for r in wanted], int(total)

    def _order(self, sort: str | None, descending: bool) -> tuple[str, list[Any]]:
        direction = "DESC" if descending else "ASC"
        if sort is None:
            return f"datastore {direction}, scope {direction}, key {direction}", []
        path = self._sort_path(sort)
        typed = self.store.typed.get(path.pointer)
        tail = "datastore, scope, key"
        if typed is not None:
            return f"{typed.column} {direction} NULLS LAST, {tail}", []
        pointer = path.pointer
        number = (
            "(CASE WHEN json_type(value, ?) IN ('BIGINT', 'UBIGINT', 'DOUBLE') "
            "THEN json_extract(value, ?)::DOUBLE END)"
        )
        string = (
            "(CASE WHEN json_type(value, ?) = 'VARCHAR' THEN json_extract_string(value, ?) END)"
        )
        return (
            f"{number} {direction} NULLS LAST, {string} {direction} NULLS LAST, {tail}",
            [pointer, pointer, pointer, pointer],
        )

    @staticmethod
    def _sort_path(sort: str) -> FieldPath:
        try:
            return parse_path(sort)
        except FieldPathError as exc:
            raise ValueError(
                f"sort is not a field path: {exc} (at character {exc.position + 1})"
            ) from None

    def matches(
        self, scope: Scope, f: SearchFilter, datastore: str, scope_name: str, key: str
    ) -> bool:
        where = self.where(scope, f)
        row = self.store.one(
            f"""SELECT count(*) FROM entries WHERE {where.sql}
                AND datastore = ? AND scope = ? AND key = ?""",
            [*where.params, datastore, scope_name, key],
        )
        return int(row[0]) > 0

    def selection(self, scope: Scope, f: SearchFilter) -> Iterator[tuple[str, str, str, str]]:
        """(datastore, scope, key, revision) of every entry the filter matches: a job's work.

        Jobs write each one conditionally on this revision, so an entry that changed since it
        was indexed is not touched blindly.
        """
        where = self.where(scope, f)
        offset = 0
        while True:
            rows = self.store.rows(
                f"""SELECT datastore, scope, key, revision FROM entries WHERE {where.sql}
                    ORDER BY datastore, scope, key LIMIT ? OFFSET ?""",
                [*where.params, _SELECTION_BATCH, offset],
            )
            for datastore, scope_name, key, revision in rows:
                yield str(datastore), str(scope_name), str(key), str(revision)
            if len(rows) < _SELECTION_BATCH:
                return
            offset += len(rows)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
