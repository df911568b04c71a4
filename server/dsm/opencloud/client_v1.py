"""Legacy v1 standard data store calls, for what Cloud v2 lacks (opencloud-api.md §2):
the exact stored bytes with a content-md5 check, matchVersion / exclusiveCreate, version lists
with a sort order, and reading one version by id.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from . import ops
from .client_standard import entry_subject
from .errors import AlreadyExists, ChecksumMismatch, Conflict, InvalidArgument, NotFound
from .models import CARRY_OVER, CarryOver, Page, V1Entry, V1EntryVersion
from .transport import ClientCore, Resolution, Response, paginate, universe_str
from .wire import (
    WireFormatError,
    attributes_equal,
    check_json_text,
    format_time,
    parse_attributes_header,
    parse_time,
    parse_user_ids_header,
)

_DEFAULT_SCOPE = "global"


def _md5(raw: bytes) -> str:
    return base64.b64encode(hashlib.md5(raw).digest()).decode("ascii")


class V1Methods(ClientCore):
    @staticmethod
    def _v1_path(universe: str, suffix: str = "") -> str:
        return (
            f"/datastores/v1/universes/{universe}/standard-datastores/datastore/entries/entry"
            + suffix
        )

    @staticmethod
    def _v1_params(datastore: str, key: str, scope: str | None) -> dict[str, str | None]:
        return {"datastoreName": datastore, "entryKey": key, "scope": scope or _DEFAULT_SCOPE}

    def _v1_entry(self, response: Response, key: str, scope: str | None) -> V1Entry:
        """Build a V1Entry from a value body and its roblox-entry-* headers."""
        headers = response.headers
        raw = response.body
        deleted = response.status == 204
        md5 = headers.get("content-md5")
        if md5 is not None and md5.strip() != _md5(raw):
            raise ChecksumMismatch(
                f"The value of entry {key!r} arrived damaged: its content-md5 header "
                f"({md5.strip()}) does not match the bytes received ({_md5(raw)}).",
                status=response.status,
            )
        version = headers.get("roblox-entry-version")
        if not version:
            raise WireFormatError("the answer has no roblox-entry-version header")
        return V1Entry(
            key=key,
            scope=scope or _DEFAULT_SCOPE,
            raw=raw,
            value_json=None if deleted else raw.decode("utf-8"),
            deleted=deleted,
            version=version,
            created_time=parse_time(headers.get("roblox-entry-created-time")),
            version_created_time=parse_time(headers.get("roblox-entry-version-created-time")),
            attributes=parse_attributes_header(headers.get("roblox-entry-attributes")),
            user_ids=parse_user_ids_header(headers.get("roblox-entry-userids")),
            content_md5=md5.strip() if md5 else None,
            size_bytes=len(raw),
        )

    async def _v1_read(
        self,
        op: ops.Op,
        universe: str,
        path: str,
        params: Mapping[str, str | None],
        key: str,
        scope: str | None,
        subject: str,
    ) -> V1Entry:
        # A checksum mismatch means the bytes were damaged in transit; reading again is safe.
        for attempt in range(self.retry_policy.max_attempts):
            response = await self._request(
                op, "GET", path, universe=universe, subject=subject, params=params
            )
            try:
                return self._v1_entry(response, key, scope)
            except ChecksumMismatch:
                if attempt + 1 >= self.retry_policy.max_attempts:
                    raise
            except (ValueError, UnicodeDecodeError) as exc:
                raise self._bad_body(op, universe, exc) from None
        raise AssertionError("unreachable")

    async def v1_get_entry(
        self, universe_id: int | str, datastore: str, key: str, *, scope: str | None = None
    ) -> V1Entry:
        """The exact stored bytes plus metadata; NotFound if the key is missing or deleted."""
        universe = universe_str(universe_id)
        return await self._v1_read(
            ops.V1_GET_ENTRY,
            universe,
            self._v1_path(universe),
            self._v1_params(datastore, key, scope),
            key,
            scope,
            entry_subject(datastore, key, scope),
        )

    async def v1_get_version(
        self,
        universe_id: int | str,
        datastore: str,
        key: str,
        version_id: str,
        *,
        scope: str | None = None,
    ) -> V1Entry:
        """One version's bytes and metadata; a tombstone version comes back ``deleted=True``."""
        universe = universe_str(universe_id)
        params = {**self._v1_params(datastore, key, scope), "versionId": version_id}
        return await self._v1_read(
            ops.V1_GET_VERSION,
            universe,
            self._v1_path(universe, "/versions/version"),
            params,
            key,
            scope,
            f"version {version_id!r} of {entry_subject(datastore, key, scope)}",
        )

    async def v1_list_versions_page(
        self,
        universe_id: int | str,
        datastore: str,
        key: str,
        *,
        scope: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        descending: bool = False,
        page_size: int | None = None,
        cursor: str | None = None,
    ) -> Page[V1EntryVersion]:
        universe = universe_str(universe_id)
        op = ops.V1_LIST_VERSIONS
        response = await self._request(
            op,
            "GET",
            self._v1_path(universe, "/versions"),
            universe=universe,
            subject=f"the versions of {entry_subject(datastore, key, scope)}",
            params={
                **self._v1_params(datastore, key, scope),
                "startTime": format_time(start_time) if start_time else None,
                "endTime": format_time(end_time) if end_time else None,
                "sortOrder": "Descending" if descending else "Ascending",
                "limit": page_size,
                "cursor": cursor or None,
            },
        )
        try:
            data = json.loads(response.body)
            if not isinstance(data, dict):
                raise WireFormatError("expected a JSON object")
            versions = [_entry_version(item) for item in data.get("versions") or []]
        except ValueError as exc:
            raise self._bad_body(op, universe, exc) from None
        return Page[V1EntryVersion](
            items=versions, next_page_token=data.get("nextPageCursor") or None
        )

    def v1_iter_versions(
        self,
        universe_id: int | str,
        datastore: str,
        key: str,
        *,
        scope: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        descending: bool = False,
        page_size: int | None = None,
    ) -> AsyncIterator[V1EntryVersion]:
        return paginate(
            lambda cursor: self.v1_list_versions_page(
                universe_id,
                datastore,
                key,
                scope=scope,
                start_time=start_time,
                end_time=end_time,
                descending=descending,
                page_size=page_size,
                cursor=cursor,
            )
        )

    async def _v1_get_or_none(
        self, universe: str, datastore: str, key: str, scope: str | None
    ) -> V1Entry | None:
        try:
            return await self.v1_get_entry(universe, datastore, key, scope=scope)
        except NotFound:
            return None

    async def v1_set_entry(
        self,
        universe_id: int | str,
        datastore: str,
        key: str,
        value: bytes | str,
        *,
        attributes: Mapping[str, Any] | CarryOver | None,
        user_ids: Sequence[int] | CarryOver,
        scope: str | None = None,
        match_version: str | None = None,
        exclusive_create: bool = False,
    ) -> V1EntryVersion:
        """Store ``value`` byte for byte (with its content-md5).

        ``match_version`` writes only over that version; ``exclusive_create`` only if the key is
        absent; a failed condition raises Conflict carrying the current entry (v1's 412), or
        AlreadyExists. Metadata is required (v1 clears what is omitted); CARRY_OVER reads the
        entry, keeps its metadata and conditions the write on the version read.
        """
        universe = universe_str(universe_id)
        if match_version is not None and exclusive_create:
            raise InvalidArgument("Pass match_version or exclusive_create, not both.")
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        try:
            check_json_text(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"The value must be UTF-8 JSON: {exc}") from None
        subject = entry_subject(datastore, key, scope)
        if attributes is CARRY_OVER or user_ids is CARRY_OVER:
            current = (
                None
                if exclusive_create
                else await self._v1_get_or_none(universe, datastore, key, scope)
            )
            if current is None:
                if match_version is not None:
                    raise Conflict(
                        f"Could not set {subject}: it no longer exists, so it is not at version "
                        f"{match_version!r}.",
                        operation=ops.V1_SET_ENTRY.name,
                        universe_id=universe,
                    )
                exclusive_create = True
            else:
                if match_version is not None and current.version != match_version:
                    raise Conflict(
                        f"Could not set {subject}: it changed since it was read (version "
                        f"{match_version!r}, now {current.version!r}).",
                        current=current,
                        operation=ops.V1_SET_ENTRY.name,
                        universe_id=universe,
                    )
                match_version = current.version
            if attributes is CARRY_OVER:
                attributes = current.attributes if current else None
            if user_ids is CARRY_OVER:
                user_ids = current.user_ids if current else []
        assert not isinstance(attributes, CarryOver) and not isinstance(user_ids, CarryOver)
        return await self._v1_set(
            universe,
            datastore,
            key,
            raw,
            attributes,
            list(user_ids),
            scope,
            match_version,
            exclusive_create,
        )

    async def _v1_set(
        self,
        universe: str,
        datastore: str,
        key: str,
        raw: bytes,
        attributes: Mapping[str, Any] | None,
        user_ids: list[int],
        scope: str | None,
        match_version: str | None,
        exclusive_create: bool,
    ) -> V1EntryVersion:
        op = ops.V1_SET_ENTRY
        subject = entry_subject(datastore, key, scope)
        headers = {
            "content-md5": _md5(raw),
            # Header values must be ASCII, hence ensure_ascii.
            "roblox-entry-userids": json.dumps([int(u) for u in user_ids]),
        }
        if attributes:
            headers["roblox-entry-attributes"] = json.dumps(dict(attributes), ensure_ascii=True)
        params: dict[str, str | bool | None] = {
            **self._v1_params(datastore, key, scope),
            "matchVersion": match_version,
            "exclusiveCreate": True if exclusive_create else None,
        }

        def current_from(response: Response) -> V1Entry | None:
            if response.status != 412 or "roblox-entry-version" not in response.headers:
                return None
            try:
                return self._v1_entry(response, key, scope)
            except (ValueError, UnicodeDecodeError):
                return None

        async def send() -> V1EntryVersion:
            try:
                response = await self._request(
                    op,
                    "POST",
                    self._v1_path(universe),
                    universe=universe,
                    subject=subject,
                    params=params,
                    body=raw,
                    headers=headers,
                    write=True,
                    current_from=current_from,
                )
            except Conflict as conflict:
                if exclusive_create:
                    raise AlreadyExists(
                        f"Could not create {subject}: it already exists.",
                        current=conflict.current,
                        status=conflict.status,
                        code=conflict.code,
                        operation=op.name,
                        universe_id=universe,
                    ) from None
                raise
            try:
                data = json.loads(response.body)
                return _entry_version(data)
            except ValueError as exc:
                raise self._bad_body(op, universe, exc) from None

        async def reconcile() -> Resolution[V1EntryVersion]:
            current = await self._v1_get_or_none(universe, datastore, key, scope)
            if current is None:
                if exclusive_create:
                    return Resolution("not_applied")
                return Resolution("unknown", reason="the entry does not exist")
            if match_version is not None and current.version == match_version:
                return Resolution("not_applied", current=current)
            if (
                current.raw == raw
                and attributes_equal(current.attributes, attributes)
                and current.user_ids == user_ids
            ):
                return Resolution("applied", result=_version_of(current), current=current)
            reason = (
                "the write was unconditional, so re-sending it could overwrite a change made "
                "since; pass match_version= or CARRY_OVER to let the client resolve this itself"
                if match_version is None and not exclusive_create
                else "the entry now holds a different value"
            )
            return Resolution("unknown", current=current, reason=reason)

        return await self._write(
            op, universe=universe, subject=subject, send=send, reconcile=reconcile
        )


def _entry_version(data: Any) -> V1EntryVersion:
    if not isinstance(data, dict) or not isinstance(data.get("version"), str):
        raise WireFormatError("an EntryVersion needs a version")
    return V1EntryVersion(
        version=data["version"],
        deleted=bool(data.get("deleted", False)),
        content_length=int(data.get("contentLength", 0)),
        created_time=parse_time(data.get("createdTime")),
        object_created_time=parse_time(data.get("objectCreatedTime")),
    )


def _version_of(entry: V1Entry) -> V1EntryVersion:
    return V1EntryVersion(
        version=entry.version,
        deleted=entry.deleted,
        content_length=len(entry.raw),
        created_time=entry.version_created_time,
        object_created_time=entry.created_time,
    )
