"""Cloud v2 ordered data stores (opencloud-api.md §5.1): integer values, no versions or metadata.

Without revisions a lost write answer can only be judged by value: a write is "applied" when
the re-read shows its value, and provably "not applied" only when the caller said which value
it expected to replace (``expected_value``) and the entry still holds it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from . import ops
from .errors import InvalidArgument, NotFound
from .models import OrderedDataStoreEntry, Page
from .transport import ClientCore, Resolution, Response, paginate, universe_str
from .wire import WireFormatError, compact, seg

_DEFAULT_SCOPE = "global"


def _subject(datastore: str, entry_id: str, scope: str) -> str:
    text = f"entry {entry_id!r} in ordered data store {datastore!r}"
    return text if scope == _DEFAULT_SCOPE else text + f" (scope {scope!r})"


def _whole(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"The {what} must be a whole number, got {value!r}.")
    return value


def _parse_value(raw: Any) -> int:
    # v2 returns a double "always rounded to the nearest integer"; proto3 JSON may quote it.
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise WireFormatError(f"bad ordered value {raw!r}")
    try:
        number = Decimal(str(raw))
    except InvalidOperation:
        raise WireFormatError(f"bad ordered value {raw!r}") from None
    if not number.is_finite():
        raise WireFormatError(f"bad ordered value {raw!r}")
    return int(number.to_integral_value(rounding=ROUND_HALF_EVEN))


class OrderedMethods(ClientCore):
    @staticmethod
    def _ordered_path(universe: str, datastore: str, scope: str) -> str:
        return (
            f"/cloud/v2/universes/{universe}/ordered-data-stores/{seg(datastore)}"
            f"/scopes/{seg(scope)}/entries"
        )

    def _ordered_entry(self, data: Any) -> OrderedDataStoreEntry:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise WireFormatError("an ordered entry needs an id")
        return OrderedDataStoreEntry(
            path=str(data.get("path", "")), id=data["id"], value=_parse_value(data.get("value", 0))
        )

    def _ordered_parse(
        self, response: Response, op: ops.Op, universe: str
    ) -> OrderedDataStoreEntry:
        try:
            return self._ordered_entry(json.loads(response.body))
        except ValueError as exc:
            raise self._bad_body(op, universe, exc) from None

    async def ordered_list_page(
        self,
        universe_id: int | str,
        datastore: str,
        *,
        scope: str = _DEFAULT_SCOPE,
        descending: bool = False,
        min_value: int | None = None,
        max_value: int | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> Page[OrderedDataStoreEntry]:
        """Entries sorted by value; ``min_value``/``max_value`` are inclusive bounds."""
        universe = universe_str(universe_id)
        op = ops.ORDERED_LIST
        clauses = []
        if min_value is not None:
            clauses.append(f"entry >= {_whole(min_value, 'minimum value')}")
        if max_value is not None:
            clauses.append(f"entry <= {_whole(max_value, 'maximum value')}")
        response = await self._request(
            op,
            "GET",
            self._ordered_path(universe, datastore, scope),
            universe=universe,
            subject=f"the entries of ordered data store {datastore!r}",
            params={
                "maxPageSize": page_size,
                "pageToken": page_token or None,
                "orderBy": "value desc" if descending else None,
                # Documented syntax: tokens separated by exactly one space.
                "filter": " && ".join(clauses) or None,
            },
        )
        try:
            data = json.loads(response.body)
            if not isinstance(data, dict):
                raise WireFormatError("expected a JSON object")
            items = [self._ordered_entry(e) for e in data.get("orderedDataStoreEntries") or []]
        except ValueError as exc:
            raise self._bad_body(op, universe, exc) from None
        return Page[OrderedDataStoreEntry](
            items=items, next_page_token=data.get("nextPageToken") or None
        )

    def ordered_iter(
        self,
        universe_id: int | str,
        datastore: str,
        *,
        scope: str = _DEFAULT_SCOPE,
        descending: bool = False,
        min_value: int | None = None,
        max_value: int | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[OrderedDataStoreEntry]:
        return paginate(
            lambda token: self.ordered_list_page(
                universe_id,
                datastore,
                scope=scope,
                descending=descending,
                min_value=min_value,
                max_value=max_value,
                page_size=page_size,
                page_token=token,
            )
        )

    async def ordered_get(
        self, universe_id: int | str, datastore: str, entry_id: str, *, scope: str = _DEFAULT_SCOPE
    ) -> OrderedDataStoreEntry:
        universe = universe_str(universe_id)
        response = await self._request(
            ops.ORDERED_GET,
            "GET",
            f"{self._ordered_path(universe, datastore, scope)}/{seg(entry_id)}",
            universe=universe,
            subject=_subject(datastore, entry_id, scope),
        )
        return self._ordered_parse(response, ops.ORDERED_GET, universe)

    async def _ordered_get_or_none(
        self, universe: str, datastore: str, entry_id: str, scope: str
    ) -> OrderedDataStoreEntry | None:
        try:
            return await self.ordered_get(universe, datastore, entry_id, scope=scope)
        except NotFound:
            return None

    async def ordered_create(
        self,
        universe_id: int | str,
        datastore: str,
        entry_id: str,
        value: int,
        *,
        scope: str = _DEFAULT_SCOPE,
    ) -> OrderedDataStoreEntry:
        universe = universe_str(universe_id)
        body = compact({"value": _whole(value, "value")}).encode()
        op = ops.ORDERED_CREATE
        subject = _subject(datastore, entry_id, scope)

        async def send() -> OrderedDataStoreEntry:
            response = await self._request(
                op,
                "POST",
                self._ordered_path(universe, datastore, scope),
                universe=universe,
                subject=subject,
                params={"id": entry_id},
                body=body,
                write=True,
            )
            return self._ordered_parse(response, op, universe)

        async def reconcile() -> Resolution[OrderedDataStoreEntry]:
            current = await self._ordered_get_or_none(universe, datastore, entry_id, scope)
            if current is None:
                return Resolution("not_applied")
            if current.value == value:
                return Resolution("applied", result=current, current=current)
            return Resolution(
                "unknown", current=current, reason="the entry now exists with another value"
            )

        return await self._write(
            op, universe=universe, subject=subject, send=send, reconcile=reconcile
        )

    async def ordered_update(
        self,
        universe_id: int | str,
        datastore: str,
        entry_id: str,
        value: int,
        *,
        allow_missing: bool = False,
        expected_value: int | None = None,
        scope: str = _DEFAULT_SCOPE,
    ) -> OrderedDataStoreEntry:
        """Set the value. ``expected_value`` (the value you read) lets the client re-send the
        update when its answer was lost and a re-read shows that value unchanged; Open Cloud
        itself has no conditional ordered writes."""
        universe = universe_str(universe_id)
        body = compact({"value": _whole(value, "value")}).encode()
        op = ops.ORDERED_UPDATE
        subject = _subject(datastore, entry_id, scope)

        async def send() -> OrderedDataStoreEntry:
            response = await self._request(
                op,
                "PATCH",
                f"{self._ordered_path(universe, datastore, scope)}/{seg(entry_id)}",
                universe=universe,
                subject=subject,
                params={"allowMissing": True if allow_missing else None},
                body=body,
                write=True,
            )
            return self._ordered_parse(response, op, universe)

        async def reconcile() -> Resolution[OrderedDataStoreEntry]:
            current = await self._ordered_get_or_none(universe, datastore, entry_id, scope)
            if current is not None and current.value == value:
                return Resolution("applied", result=current, current=current)
            if (
                expected_value is not None
                and current is not None
                and current.value == expected_value
            ):
                return Resolution("not_applied", current=current)
            return Resolution(
                "unknown",
                current=current,
                reason="ordered entries have no versions, so a different value cannot be told "
                "apart from a later write; pass expected_value= to allow a re-send",
            )

        return await self._write(
            op, universe=universe, subject=subject, send=send, reconcile=reconcile
        )

    async def ordered_increment(
        self,
        universe_id: int | str,
        datastore: str,
        entry_id: str,
        amount: int,
        *,
        scope: str = _DEFAULT_SCOPE,
    ) -> OrderedDataStoreEntry:
        """Add ``amount``; never repeated when the answer is lost (WriteOutcomeUnknown)."""
        universe = universe_str(universe_id)
        body = compact({"amount": _whole(amount, "increment amount")}).encode()
        op = ops.ORDERED_INCREMENT
        subject = _subject(datastore, entry_id, scope)

        async def send() -> OrderedDataStoreEntry:
            response = await self._request(
                op,
                "POST",
                f"{self._ordered_path(universe, datastore, scope)}/{seg(entry_id)}:increment",
                universe=universe,
                subject=subject,
                body=body,
                write=True,
            )
            return self._ordered_parse(response, op, universe)

        async def reconcile() -> Resolution[OrderedDataStoreEntry]:
            current = await self._ordered_get_or_none(universe, datastore, entry_id, scope)
            now = str(current.value) if current is not None else "absent"
            return Resolution(
                "unknown",
                current=current,
                reason=f"an increment is never repeated automatically (the entry is now {now})",
            )

        return await self._write(
            op, universe=universe, subject=subject, send=send, reconcile=reconcile
        )

    async def ordered_delete(
        self,
        universe_id: int | str,
        datastore: str,
        entry_id: str,
        *,
        expected_value: int | None = None,
        scope: str = _DEFAULT_SCOPE,
    ) -> None:
        """Delete at once (no tombstone); NotFound if the entry does not exist."""
        universe = universe_str(universe_id)
        op = ops.ORDERED_DELETE
        subject = _subject(datastore, entry_id, scope)

        async def send() -> bool:
            await self._request(
                op,
                "DELETE",
                f"{self._ordered_path(universe, datastore, scope)}/{seg(entry_id)}",
                universe=universe,
                subject=subject,
                write=True,
            )
            return True

        async def reconcile() -> Resolution[bool]:
            current = await self._ordered_get_or_none(universe, datastore, entry_id, scope)
            if current is None:
                return Resolution("applied", result=True)
            if expected_value is not None and current.value == expected_value:
                return Resolution("not_applied", current=current)
            return Resolution(
                "unknown",
                current=current,
                reason="the entry still exists; pass expected_value= to allow a re-send",
            )

        await self._write(op, universe=universe, subject=subject, send=send, reconcile=reconcile)
