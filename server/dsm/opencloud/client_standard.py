"""Cloud v2 standard data stores (opencloud-api.md §4): data stores, entries, revisions.

Writes never drop metadata silently: Open Cloud clears attributes and user ids a write omits, so
update and increment make the caller pass them explicitly or pass CARRY_OVER.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from . import ops
from .errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from .models import (
    CARRY_OVER,
    CarryOver,
    DataStore,
    DataStoreEntry,
    EntryRevision,
    ListedEntry,
    Page,
    SnapshotResult,
)
from .transport import ClientCore, Resolution, Response, paginate, universe_str
from .wire import (
    WireFormatError,
    attributes_equal,
    cel_string,
    check_json_text,
    compact,
    format_time,
    json_equal,
    object_fields,
    parse_time,
    parse_user_paths,
    seg,
    user_paths,
)

DEFAULT_SCOPE = "global"
ALL_SCOPES = "-"
V2_NUMBER_LIMIT = 2**53  # v2 numbers are doubles clamped to ±2^53 (opencloud-api.md §4.3)
# Read-modify-write attempts for CARRY_OVER increments when another writer keeps winning.
_CAS_ATTEMPTS = 5


def entry_subject(datastore: str, key: str, scope: str | None) -> str:
    text = f"entry {key!r} in data store {datastore!r}"
    if scope not in (None, DEFAULT_SCOPE):
        text += f" (scope {scope!r})"
    return text


def check_value_json(value_json: str, what: str = "value") -> None:
    try:
        check_json_text(value_json, what)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


def check_metadata(attributes: Mapping[str, Any] | None, user_ids: Sequence[int]) -> None:
    if attributes is not None and not isinstance(attributes, Mapping):
        raise InvalidArgument("attributes must be a JSON object (a dict) or None.")
    for uid in user_ids:
        if isinstance(uid, bool) or not isinstance(uid, int) or uid < 0:
            raise InvalidArgument(f"User ids must be non-negative integers, got {uid!r}.")


def shows_write(
    entry: DataStoreEntry,
    value_json: str,
    attributes: Mapping[str, Any] | None,
    user_ids: Sequence[int],
) -> bool:
    """Whether an entry holds exactly the value and metadata a write sent."""
    return (
        entry.state != "DELETED"
        and json_equal(entry.value_json, value_json)
        and attributes_equal(entry.attributes, attributes)
        and list(entry.user_ids) == [int(u) for u in user_ids]
    )


class StandardMethods(ClientCore):
    """Cloud v2 standard data stores (opencloud-api.md §4)."""

    # ------------------------------------------------------------ paths, parsing

    @staticmethod
    def _stores_path(universe: str) -> str:
        return f"/cloud/v2/universes/{universe}/data-stores"

    def _entries_path(self, universe: str, datastore: str, scope: str | None) -> str:
        base = f"{self._stores_path(universe)}/{seg(datastore)}"
        if scope is not None:
            base += f"/scopes/{seg(scope)}"
        return base + "/entries"

    def _parse_store(self, data: Any) -> DataStore:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise WireFormatError("a data store needs an id")
        return DataStore(
            path=str(data.get("path", "")),
            name=data["id"],
            state=str(data.get("state", "STATE_UNSPECIFIED")),
            create_time=parse_time(data.get("createTime")),
            expire_time=parse_time(data.get("expireTime")),
        )

    def _parse_entry(
        self, response: Response, op: ops.Op, universe: str, key: str, scope: str | None
    ) -> DataStoreEntry:
        try:
            fields = object_fields(response.text())
            meta = {k: decoded for k, (decoded, _) in fields.items() if k != "value"}
            attributes = meta.get("attributes")
            if attributes is not None and not isinstance(attributes, dict):
                raise WireFormatError("attributes must be an object")
            value_json = fields["value"][1] if "value" in fields else None
            revision = meta.get("revisionId")
            if not isinstance(revision, str):
                raise WireFormatError("an entry needs a revisionId")
            return DataStoreEntry(
                path=str(meta.get("path", "")),
                id=str(meta.get("id", key)),
                key=key,
                scope=scope or DEFAULT_SCOPE,
                value_json=value_json,
                revision_id=revision,
                etag=str(meta.get("etag") or revision),
                state=str(meta.get("state", "ACTIVE")),
                create_time=parse_time(meta.get("createTime")),
                revision_create_time=parse_time(meta.get("revisionCreateTime")),
                attributes=attributes or None,
                user_ids=parse_user_paths(meta.get("users")),
                size_bytes=len(value_json.encode("utf-8")) if value_json is not None else 0,
            )
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._bad_body(op, universe, exc) from None

    def _json(self, response: Response, op: ops.Op, universe: str) -> dict[str, Any]:
        try:
            data = json.loads(response.body) if response.body.strip() else {}
        except ValueError as exc:
            raise self._bad_body(op, universe, exc) from None
        if not isinstance(data, dict):
            raise self._bad_body(op, universe, WireFormatError("expected a JSON object"))
        return data

    # --------------------------------------------------------------- data stores

    async def list_data_stores_page(
        self,
        universe_id: int | str,
        *,
        prefix: str | None = None,
        show_deleted: bool = False,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> Page[DataStore]:
        universe = universe_str(universe_id)
        op = ops.LIST_DATA_STORES
        response = await self._request(
            op,
            "GET",
            self._stores_path(universe),
            universe=universe,
            subject="the data stores",
            params={
                "maxPageSize": page_size,
                "pageToken": page_token or None,
                "filter": f"id.startsWith({cel_string(prefix)})" if prefix else None,
                "showDeleted": True if show_deleted else None,
            },
        )
        data = self._json(response, op, universe)
        try:
            stores = [self._parse_store(item) for item in data.get("dataStores") or []]
        except ValueError as exc:
            raise self._bad_body(op, universe, exc) from None
        return Page[DataStore](items=stores, next_page_token=data.get("nextPageToken") or None)

    def iter_data_stores(
        self,
        universe_id: int | str,
        *,
        prefix: str | None = None,
        show_deleted: bool = False,
        page_size: int | None = None,
    ) -> AsyncIterator[DataStore]:
        return paginate(
            lambda token: self.list_data_stores_page(
                universe_id,
                prefix=prefix,
                show_deleted=show_deleted,
                page_size=page_size,
                page_token=token,
            )
        )

    async def delete_data_store(self, universe_id: int | str, datastore: str) -> DataStore:
        """Soft-delete a data store (restorable with undelete for 30 days).

        Safe to repeat: deleting a deleted store is a documented no-op, so this is retried
        like a read.
        """
        universe = universe_str(universe_id)
        op = ops.DELETE_DATA_STORE
        response = await self._request(
            op,
            "DELETE",
            f"{self._stores_path(universe)}/{seg(datastore)}",
            universe=universe,
            subject=f"data store {datastore!r}",
        )
        try:
            return self._parse_store(self._json(response, op, universe))
        except ValueError as exc:
            raise self._bad_body(op, universe, exc) from None

    async def _find_store(self, universe: str, datastore: str) -> DataStore | None:
        async for store in self.iter_data_stores(
            universe, prefix=datastore, show_deleted=True, page_size=100
        ):
            if store.name == datastore:
                return store
        return None

    async def undelete_data_store(self, universe_id: int | str, datastore: str) -> DataStore:
        universe = universe_str(universe_id)
        op = ops.UNDELETE_DATA_STORE
        subject = f"data store {datastore!r}"

        async def send() -> DataStore:
            response = await self._request(
                op,
                "POST",
                f"{self._stores_path(universe)}/{seg(datastore)}:undelete",
                universe=universe,
                subject=subject,
                body=b"{}",
                write=True,
            )
            try:
                return self._parse_store(self._json(response, op, universe))
            except ValueError as exc:
                raise self._bad_body(op, universe, exc) from None

        async def reconcile() -> Resolution[DataStore]:
            store = await self._find_store(universe, datastore)
            if store is None:
                return Resolution("unknown", reason="the data store is no longer listed")
            if store.state == "ACTIVE":
                return Resolution("applied", result=store, current=store)
            return Resolution("not_applied", current=store)

        return await self._write(
            op, universe=universe, subject=subject, send=send, reconcile=reconcile
        )

    async def snapshot_data_stores(self, universe_id: int | str) -> SnapshotResult:
        """Take the once-per-UTC-day snapshot; later calls that day report the existing one."""
        universe = universe_str(universe_id)
        op = ops.SNAPSHOT
        # Repeating is harmless (a second snapshot the same day is a no-op), so no write mode.
        response = await self._request(
            op,
            "POST",
            f"{self._stores_path(universe)}:snapshot",
            universe=universe,
            subject=f"the data stores of universe {universe}",
            body=b"{}",
        )
        data = self._json(response, op, universe)
        try:
            return SnapshotResult(
                new_snapshot_taken=bool(data.get("newSnapshotTaken", False)),
                latest_snapshot_time=parse_time(data.get("latestSnapshotTime")),
            )
        except ValueError as exc:
            raise self._bad_body(op, universe, exc) from None

    # ------------------------------------------------------------------- entries

    async def list_entries_page(
        self,
        universe_id: int | str,
        datastore: str,
        *,
        scope: str | None = None,
        prefix: str | None = None,
        show_deleted: bool = False,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> Page[ListedEntry]:
        """One page of keys. ``scope=None`` is the default scope, ``"-"`` lists every scope."""
        universe = universe_str(universe_id)
        op = ops.LIST_ENTRIES
        response = await self._request(
            op,
            "GET",
            self._entries_path(universe, datastore, scope),
            universe=universe,
            subject=f"the entries of data store {datastore!r}",
            params={
                "maxPageSize": page_size,
                "pageToken": page_token or None,
                "filter": f"id.startsWith({cel_string(prefix)})" if prefix else None,
                "showDeleted": True if show_deleted else None,
            },
        )
        data = self._json(response, op, universe)
        prefix_path = f"universes/{universe}/data-stores/{datastore}/"
        items: list[ListedEntry] = []
        for item in data.get("dataStoreEntries") or []:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise self._bad_body(op, universe, WireFormatError("an entry needs an id"))
            path = str(item.get("path", ""))
            entry_id = item["id"]
            items.append(
                ListedEntry(
                    path=path,
                    id=entry_id,
                    key=entry_id,
                    scope=_scope_from_path(path, prefix_path, entry_id, scope),
                )
            )
        return Page[ListedEntry](items=items, next_page_token=data.get("nextPageToken") or None)

    def iter_entries(
        self,
        universe_id: int | str,
        datastore: str,
        *,
        scope: str | None = None,
        prefix: str | None = None,
        show_deleted: bool = False,
        page_size: int | None = None,
    ) -> AsyncIterator[ListedEntry]:
        return paginate(
            lambda token: self.list_entries_page(
                universe_id,
                datastore,
                scope=scope,
                prefix=prefix,
                show_deleted=show_deleted,
                page_size=page_size,
                page_token=token,
            )
        )

    async def get_entry(
        self,
        universe_id: int | str,
        datastore: str,
        key: str,
        *,
        scope: str | None = None,
        revision_id: str | None = None,
        at: datetime | None = None,
    ) -> DataStoreEntry:
        """The latest entry, a given revision, or the revision current at time ``at``."""
        if revision_id is not None and at is not None:
            raise InvalidArgument("Pass revision_id or at, not both.")
        universe = universe_str(universe_id)
        entry_id = seg(key)
        if revision_id is not None:
            entry_id += "@" + seg(revision_id)
        elif at is not None:
            entry_id += "@latest:" + format_time(at)
        elif "@" in key:
            # The text after the last '@' is read as a revision, so name the latest explicitly.
            entry_id += "@latest"
        response = await self._request(
            ops.GET_ENTRY,
            "GET",
            f"{self._entries_path(universe, datastore, scope)}/{entry_id}",
            universe=universe,
            subject=entry_subject(datastore, key, scope),
        )
        return self._parse_entry(response, ops.GET_ENTRY, universe, key, scope)

    async def list_revisions_page(
        self,
        universe_id: int | str,
        datastore: str,
        key: str,
        *,
        scope: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> Page[EntryRevision]:
        """One page of an entry's revisions, optionally within [start_time, end_time]."""
        universe = universe_str(universe_id)
        op = ops.LIST_REVISIONS
        clauses = []
        if start_time is not None:
            clauses.append(f"revision_create_time >= {format_time(start_time)}")
        if end_time is not None:
            clauses.append(f"revision_create_time <= {format_time(end_time)}")
        response = await self._request(
            op,
            "GET",
            f"{self._entries_path(universe, datastore, scope)}/{seg(key)}:listRevisions",
            universe=universe,
            subject=f"the revisions of {entry_subject(datastore, key, scope)}",
            params={
                "maxPageSize": page_size,
                "pageToken": page_token or None,
                "filter": " && ".join(clauses) or None,
            },
        )
        data = self._json(response, op, universe)
        items: list[EntryRevision] = []
        try:
            for item in data.get("dataStoreEntries") or []:
                if not isinstance(item, dict) or not isinstance(item.get("revisionId"), str):
                    raise WireFormatError("a revision needs a revisionId")
                items.append(
                    EntryRevision(
                        path=str(item.get("path", "")),
                        id=str(item.get("id", "")),
                        key=key,
                        revision_id=item["revisionId"],
                        etag=str(item.get("etag") or item["revisionId"]),
                        state=str(item.get("state", "ACTIVE")),
                        create_time=parse_time(item.get("createTime")),
                        revision_create_time=parse_time(item.get("revisionCreateTime")),
                    )
                )
        except ValueError as exc:
            raise self._bad_body(op, universe, exc) from None
        return Page[EntryRevision](items=items, next_page_token=data.get("nextPageToken") or None)

    def iter_revisions(
        self,
        universe_id: int | str,
        datastore: str,
        key: str,
        *,
        scope: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[EntryRevision]:
        return paginate(
            lambda token: self.list_revisions_page(
                universe_id,
                datastore,
                key,
                scope=scope,
                start_time=start_time,
                end_time=end_time,
                page_size=page_size,
                page_token=token,
            )
        )

    async def _get_or_none(
        self, universe: str, datastore: str, key: str, scope: str | None
    ) -> DataStoreEntry | None:
        try:
            return await self.get_entry(universe, datastore, key, scope=scope)
        except NotFound:
            return None

    async def create_entry(
        self,
        universe_id: int | str,
        datastore: str,
        key: str,
        value_json: str,
        *,
        scope: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        user_ids: Sequence[int] = (),
    ) -> DataStoreEntry:
        """Create a new entry; raises AlreadyExists if the key already holds a value."""
        universe = universe_str(universe_id)
        check_value_json(value_json)
        check_metadata(attributes, user_ids)
        op = ops.CREATE_ENTRY
        subject = entry_subject(datastore, key, scope)
        body = _entry_body(value_json, attributes, user_ids, etag=None)

        async def send() -> DataStoreEntry:
            response = await self._request(
                op,
                "POST",
                self._entries_path(universe, datastore, scope),
                universe=universe,
                subject=subject,
                params={"id": key},
                body=body,
                write=True,
            )
            return self._parse_entry(response, op, universe, key, scope)

        async def reconcile() -> Resolution[DataStoreEntry]:
            current = await self._get_or_none(universe, datastore, key, scope)
            if current is None:
                return Resolution("not_applied")
            if shows_write(current, value_json, attributes, user_ids):
                return Resolution("applied", result=current, current=current)
            return Resolution(
                "unknown", current=current, reason="the entry now exists with a different value"
            )

        return await self._write(
            op, universe=universe, subject=subject, send=send, reconcile=reconcile
        )

    async def update_entry(
        self,
        universe_id: int | str,
        datastore: str,
        key: str,
        value_json: str,
        *,
        attributes: Mapping[str, Any] | CarryOver | None,
        user_ids: Sequence[int] | CarryOver,
        etag: str | None = None,
        allow_missing: bool = False,
        scope: str | None = None,
    ) -> DataStoreEntry:
        """Replace an entry's value and metadata.

        ``attributes`` and ``user_ids`` are required: Open Cloud clears whatever a write omits.
        Pass CARRY_OVER to keep the current ones; the client then reads the entry and makes the
        write conditional on the etag it read (or on ``etag`` if given, which must match).
        With ``etag`` the write fails with Conflict if the entry changed since that revision.
        """
        universe = universe_str(universe_id)
        check_value_json(value_json)
        subject = entry_subject(datastore, key, scope)
        if attributes is CARRY_OVER or user_ids is CARRY_OVER:
            current = await self._get_or_none(universe, datastore, key, scope)
            if current is None:
                if etag is not None:
                    raise Conflict(
                        f"Could not update {subject}: it no longer exists, so it is not at "
                        f"etag {etag!r}.",
                        operation=ops.UPDATE_ENTRY.name,
                        universe_id=universe,
                    )
                if not allow_missing:
                    raise NotFound(
                        f"Could not carry metadata over: {subject} does not exist.",
                        status=404,
                        operation=ops.UPDATE_ENTRY.name,
                        universe_id=universe,
                    )
                # Nothing to carry. Create (not upsert) keeps the write conditional on absence.
                return await self.create_entry(
                    universe,
                    datastore,
                    key,
                    value_json,
                    scope=scope,
                    attributes=None if attributes is CARRY_OVER else attributes,
                    user_ids=[] if user_ids is CARRY_OVER else user_ids,
                )
            if etag is not None and current.etag != etag:
                raise Conflict(
                    f"Could not update {subject}: it changed since it was read (etag {etag!r}, "
                    f"now {current.etag!r}).",
                    current=current,
                    operation=ops.UPDATE_ENTRY.name,
                    universe_id=universe,
                )
            etag = current.etag
            attributes = current.attributes if attributes is CARRY_OVER else attributes
            user_ids = current.user_ids if user_ids is CARRY_OVER else user_ids
        assert not isinstance(attributes, CarryOver) and not isinstance(user_ids, CarryOver)
        check_metadata(attributes, user_ids)
        return await self._update(
            universe, datastore, key, value_json, attributes, user_ids, etag, allow_missing, scope
        )

    async def _update(
        self,
        universe: str,
        datastore: str,
        key: str,
        value_json: str,
        attributes: Mapping[str, Any] | None,
        user_ids: Sequence[int],
        etag: str | None,
        allow_missing: bool,
        scope: str | None,
    ) -> DataStoreEntry:
        op = ops.UPDATE_ENTRY
        subject = entry_subject(datastore, key, scope)
        body = _entry_body(value_json, attributes, user_ids, etag=etag)

        async def send() -> DataStoreEntry:
            response = await self._request(
                op,
                "PATCH",
                f"{self._entries_path(universe, datastore, scope)}/{seg(key)}",
                universe=universe,
                subject=subject,
                params={"allowMissing": True if allow_missing else None},
                body=body,
                write=True,
            )
            return self._parse_entry(response, op, universe, key, scope)

        async def reconcile() -> Resolution[DataStoreEntry]:
            current = await self._get_or_none(universe, datastore, key, scope)
            if etag is not None and current is not None and current.etag == etag:
                return Resolution("not_applied", current=current)
            if current is not None and shows_write(current, value_json, attributes, user_ids):
                return Resolution("applied", result=current, current=current)
            if etag is None:
                reason = (
                    "the write had no etag, so re-sending it could overwrite a change made "
                    "since; pass etag= or CARRY_OVER to let the client resolve this itself"
                )
            else:
                reason = "the entry has moved on to a revision that does not hold this write"
            return Resolution("unknown", current=current, reason=reason)

        return await self._write(
            op, universe=universe, subject=subject, send=send, reconcile=reconcile
        )

    async def delete_entry(
        self,
        universe_id: int | str,
        datastore: str,
        key: str,
        *,
        scope: str | None = None,
        expected_revision: str | None = None,
    ) -> None:
        """Delete an entry (a tombstone; older revisions stay readable for 30 days).

        Open Cloud's delete takes no etag, so ``expected_revision`` is not checked by the server;
        it lets the client re-send the delete when its answer was lost and a re-read shows the
        entry still at that revision.
        """
        universe = universe_str(universe_id)
        op = ops.DELETE_ENTRY
        subject = entry_subject(datastore, key, scope)

        async def send() -> bool:
            await self._request(
                op,
                "DELETE",
                f"{self._entries_path(universe, datastore, scope)}/{seg(key)}",
                universe=universe,
                subject=subject,
                write=True,
            )
            return True

        async def reconcile() -> Resolution[bool]:
            current = await self._get_or_none(universe, datastore, key, scope)
            if current is None:
                return Resolution("applied", result=True)
            if expected_revision is not None and current.revision_id == expected_revision:
                return Resolution("not_applied", current=current)
            return Resolution(
                "unknown",
                current=current,
                reason="the entry still exists"
                + (" at a different revision" if expected_revision else "")
                + "; pass expected_revision= to let the client re-send the delete itself",
            )

        await self._write(op, universe=universe, subject=subject, send=send, reconcile=reconcile)

    async def increment_entry(
        self,
        universe_id: int | str,
        datastore: str,
        key: str,
        amount: int,
        *,
        attributes: Mapping[str, Any] | CarryOver | None,
        user_ids: Sequence[int] | CarryOver,
        scope: str | None = None,
    ) -> DataStoreEntry:
        """Add ``amount`` to an integer entry, creating it with ``amount`` if missing.

        With explicit metadata this is Open Cloud's increment: never repeated when its answer is
        lost (WriteOutcomeUnknown carries the re-read entry). With CARRY_OVER, Open Cloud's
        increment cannot be conditional, so the client reads the entry and writes
        ``value + amount`` conditioned on the etag it read (retrying if another writer wins);
        that write needs objects:update (objects:create for a new key) instead.
        """
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise InvalidArgument(f"The increment amount must be a whole number, got {amount!r}.")
        universe = universe_str(universe_id)
        if attributes is CARRY_OVER or user_ids is CARRY_OVER:
            return await self._increment_carrying(
                universe, datastore, key, amount, attributes, user_ids, scope
            )
        assert not isinstance(attributes, CarryOver) and not isinstance(user_ids, CarryOver)
        check_metadata(attributes, user_ids)
        op = ops.INCREMENT_ENTRY
        subject = entry_subject(datastore, key, scope)
        body_data: dict[str, Any] = {"amount": amount, "users": user_paths(user_ids)}
        if attributes:
            body_data["attributes"] = dict(attributes)
        body = compact(body_data).encode("utf-8")

        async def send() -> DataStoreEntry:
            response = await self._request(
                op,
                "POST",
                f"{self._entries_path(universe, datastore, scope)}/{seg(key)}:increment",
                universe=universe,
                subject=subject,
                body=body,
                write=True,
            )
            return self._parse_entry(response, op, universe, key, scope)

        async def reconcile() -> Resolution[DataStoreEntry]:
            current = await self._get_or_none(universe, datastore, key, scope)
            now = current.value_json if current is not None else "absent"
            return Resolution(
                "unknown",
                current=current,
                reason=(
                    "an increment is never repeated automatically, because repeating one that "
                    f"was applied would add {amount} twice (the entry is now {now})"
                ),
            )

        return await self._write(
            op, universe=universe, subject=subject, send=send, reconcile=reconcile
        )

    async def _increment_carrying(
        self,
        universe: str,
        datastore: str,
        key: str,
        amount: int,
        attributes: Mapping[str, Any] | CarryOver | None,
        user_ids: Sequence[int] | CarryOver,
        scope: str | None,
    ) -> DataStoreEntry:
        subject = entry_subject(datastore, key, scope)
        for attempt in range(_CAS_ATTEMPTS):
            current = await self._get_or_none(universe, datastore, key, scope)
            attrs = (
                (current.attributes if current else None)
                if attributes is CARRY_OVER
                else attributes
            )
            users = (current.user_ids if current else []) if user_ids is CARRY_OVER else user_ids
            assert not isinstance(attrs, CarryOver) and not isinstance(users, CarryOver)
            check_metadata(attrs, users)
            try:
                if current is None:
                    return await self.create_entry(
                        universe,
                        datastore,
                        key,
                        str(amount),
                        scope=scope,
                        attributes=attrs,
                        user_ids=users,
                    )
                total = _integer_value(current, subject) + amount
                if abs(total) > V2_NUMBER_LIMIT:
                    raise InvalidArgument(
                        f"Incrementing {subject} would give {total}, outside the ±2^53 range "
                        "Open Cloud v2 numbers can hold."
                    )
                return await self._update(
                    universe, datastore, key, str(total), attrs, users, current.etag, False, scope
                )
            except (AlreadyExists, Conflict):  # another writer won; re-read and retry
                if attempt + 1 >= _CAS_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")


def _entry_body(
    value_json: str,
    attributes: Mapping[str, Any] | None,
    user_ids: Sequence[int],
    *,
    etag: str | None,
) -> bytes:
    """A DataStoreEntry body that embeds the caller's JSON text verbatim as ``value``."""
    head: dict[str, Any] = {"users": user_paths(user_ids)}
    if attributes:
        head["attributes"] = dict(attributes)
    if etag is not None:
        head["etag"] = etag
    return (compact(head)[:-1] + ',"value":' + value_json.strip() + "}").encode("utf-8")


def _integer_value(entry: DataStoreEntry, subject: str) -> int:
    try:
        value = json.loads(entry.value_json or "null")
    except ValueError:
        value = None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(
            f"Cannot increment {subject}: it holds {entry.value_json}, which is not a whole number."
        )
    return value


def _scope_from_path(path: str, prefix: str, entry_id: str, requested: str | None) -> str:
    """Scope of a listed entry: from a `.../scopes/{scope}/entries/{id}` path, else requested."""
    rest = path[len(prefix) :] if path.startswith(prefix) else ""
    tail = "/entries/" + entry_id
    if rest.startswith("scopes/") and rest.endswith(tail):
        return rest[len("scopes/") : -len(tail)]
    if requested is None or requested == ALL_SCOPES:
        return DEFAULT_SCOPE
    return requested
