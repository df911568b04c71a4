"""The backup archive: one file, compressed (zstd) and encrypted (AES-256-GCM) in chunks.

Layout (docs/backups.md has the long form):

    header   b"DSMBACK1" | u32 n | header JSON (n bytes, clear: ids, chunk size, key slots)
             | SHA-256 of everything before it
    frames   D0 X0 D1 X1 ... M
    footer   u64 offset of M | u32 number of frames | b"DSMBEND1"

Each frame is `kind (1 byte) | u32 sequence | u32 body length | nonce | AES-GCM ciphertext`,
authenticated with the header's SHA-256 and the frame's own kind, sequence and length as
associated data, so frames cannot be reordered, dropped, resized or moved between archives.

- The *record stream* is every entry, in the order it was added, as `u32 length | msgpack
  record`. It is cut into chunks of `chunk_bytes` (1 MiB); chunk N, zstd-compressed alone, is
  data frame **D**N. A 4 MiB value simply spans several chunks.
- Directory frame **X**N names every record that starts in chunk N: its ordinal, offset and
  length in the stream, its name (kind, data store, scope, key), the SHA-256 of the record and a
  short digest of its state (value, attributes, user ids) for diffs. A damaged D frame is thus
  reported with the entries it held, and names, hashes and diffs need no value decrypted.
- Manifest frame **M** (JSON) says what was backed up, when, from which backend, the counts,
  the SHA-256 of the whole record stream, and the offset of every frame. The fixed-size footer
  finds it, so the manifest is read without touching the entries.

Nothing about the data is in clear: key names, store names and values live only inside frames.
Writing and reading are streaming: the writer holds one chunk and the entry being added; the
reader holds one or two chunks and the entry being returned.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal, Self

import msgpack  # type: ignore[import-untyped]
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from shared_schema.common import Backend
from shared_schema.entries import StoreKind

from ...opencloud.models import DataStoreEntry, OrderedDataStoreEntry
from ...storage.atomic import _fsync_dir
from .keyslots import ArchiveKeys, SlotModel, make_slots, new_archive_key, unwrap

SUFFIX = ".dsmbak"
FORMAT = 1
DEFAULT_CHUNK_BYTES = 1024 * 1024
ZSTD_LEVEL = 3
_MAGIC = b"DSMBACK1"
_END = b"DSMBEND1"
_LEN = struct.Struct(">I")
_FRAME = struct.Struct(">cII")  # kind, sequence, body length
_FOOTER = struct.Struct(">QI8s")
_NONCE = 12
_TAG = 16
_MAX_HEADER = 64 * 1024
_MAX_MANIFEST = 256 * 1024 * 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KINDS = (StoreKind.STANDARD, StoreKind.ORDERED)
_DATA, _DIRECTORY, _MANIFEST = b"D", b"X", b"M"


# ------------------------------------------------------------------------------------- entries


@dataclass(frozen=True, order=True)
class EntryName:
    """Where an entry lives in a universe."""

    kind: StoreKind
    datastore: str
    scope: str
    key: str

    def __str__(self) -> str:
        where = f"{self.datastore}/{self.scope}/{self.key}"
        return where if self.kind is StoreKind.STANDARD else f"ordered {where}"


@dataclass(frozen=True)
class ArchiveEntry:
    """One entry as read: its value text exactly as Open Cloud sent it, its metadata, and when.

    `read_at` is when the backup read it; with `revision_id` it says exactly which state the
    archive holds. Ordered entries have only a value (an integer's text): Open Cloud keeps no
    revision, times, attributes or user ids for them.
    """

    name: EntryName
    value_json: str
    read_at: datetime
    attributes: dict[str, Any] | None = field(default=None, hash=False)
    user_ids: tuple[int, ...] = ()
    revision_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_standard(
        cls, entry: DataStoreEntry, datastore: str, read_at: datetime
    ) -> ArchiveEntry:
        if entry.value_json is None:
            raise ValueError(f"{datastore}/{entry.scope}/{entry.key} is deleted; nothing to keep")
        return cls(
            name=EntryName(StoreKind.STANDARD, datastore, entry.scope, entry.key),
            value_json=entry.value_json,
            read_at=read_at,
            attributes=entry.attributes,
            user_ids=tuple(entry.user_ids),
            revision_id=entry.revision_id,
            created_at=entry.create_time,
            updated_at=entry.revision_create_time,
        )

    @classmethod
    def from_ordered(
        cls, entry: OrderedDataStoreEntry, datastore: str, scope: str, read_at: datetime
    ) -> ArchiveEntry:
        return cls(
            name=EntryName(StoreKind.ORDERED, datastore, scope, entry.id),
            value_json=str(int(entry.value)),
            read_at=read_at,
        )


def canonical_attributes(attributes: dict[str, Any] | None) -> str | None:
    if not attributes:
        return None
    return json.dumps(attributes, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def state_digest(entry: ArchiveEntry) -> bytes:
    """16 bytes naming an entry's state (value text, attributes, user ids), for diffs.

    The value text is hashed as written: Open Cloud stores compact JSON, so two reads of one
    state spell it alike; a diff that finds two digests differ still compares parsed JSON.
    """
    packed = msgpack.packb(
        [
            entry.name.kind.value,
            entry.value_json,
            canonical_attributes(entry.attributes),
            list(entry.user_ids),
        ],
        use_bin_type=True,
    )
    return hashlib.sha256(packed).digest()[:16]


def _micros(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError("archive times must be timezone-aware")
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _moment(micros: int | None) -> datetime | None:
    return None if micros is None else _EPOCH + timedelta(microseconds=micros)


def encode_record(entry: ArchiveEntry) -> bytes:
    name = entry.name
    record = [
        FORMAT,
        _KINDS.index(name.kind),
        name.datastore,
        name.scope,
        name.key,
        entry.value_json,
        entry.attributes,
        list(entry.user_ids),
        entry.revision_id,
        _micros(entry.created_at),
        _micros(entry.updated_at),
        _micros(entry.read_at),
    ]
    packed: bytes = msgpack.packb(record, use_bin_type=True)
    return packed


def decode_record(packed: bytes) -> ArchiveEntry:
    try:
        (fmt, kind, ds, scope, key, value, attributes, users, revision, created, updated, read) = (
            msgpack.unpackb(packed, raw=False, strict_map_key=True)
        )
        if fmt != FORMAT or not isinstance(value, str) or not isinstance(read, int):
            raise ValueError("unexpected record shape")
        return ArchiveEntry(
            name=EntryName(_KINDS[kind], ds, scope, key),
            value_json=value,
            read_at=_EPOCH + timedelta(microseconds=read),
            attributes=attributes,
            user_ids=tuple(int(u) for u in users),
            revision_id=revision,
            created_at=_moment(created),
            updated_at=_moment(updated),
        )
    except Exception as exc:  # msgpack raises many unrelated types for malformed input
        raise _Malformed(f"a record is malformed ({type(exc).__name__})") from None


class _Malformed(Exception):
    pass


# ------------------------------------------------------------------------------------ manifest


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ArchiveSelection(_Model):
    """What the backup was asked to read (None: everything of that kind)."""

    datastores: list[str] | None = None
    ordered_datastores: list[str] = []
    scopes: list[str] | None = None
    prefix: str | None = None
    keys: list[str] | None = None


class StoreCount(_Model):
    kind: StoreKind
    datastore: str
    entries: int
    value_bytes: int


class ErasureNote(_Model):
    """A rewrite that removed a player's data; the player is not named here."""

    at: AwareDatetime
    request_id: str
    removed: int
    changed: int


class Manifest(_Model):
    format: Literal[1] = 1
    archive_id: str
    universe_id: int
    backend: Backend
    selection: ArchiveSelection
    schedule: str | None = None  # retention keeps N newest archives per schedule
    note: str | None = None
    started_at: AwareDatetime
    completed_at: AwareDatetime
    first_read_at: AwareDatetime | None
    last_read_at: AwareDatetime | None
    entries: int
    stores: list[StoreCount]
    value_bytes: int  # UTF-8 bytes of every value, as raw JSON
    stream_bytes: int  # the record stream before compression
    chunk_bytes: int
    content_sha256: str  # SHA-256 of the whole record stream
    frames: list[int]  # offsets of D0, X0, D1, X1, ...
    derived_from: str | None = None  # the archive this one was rewritten from
    erasures: list[ErasureNote] = []


class ArchiveHeader(_Model):
    """The clear header: no data, no secret; enough to find and unwrap the key."""

    format: Literal[1] = 1
    archive_id: str
    key_id: str
    created_at: AwareDatetime
    chunk_bytes: int
    compression: Literal["zstd"] = "zstd"
    cipher: Literal["AES-256-GCM"] = "AES-256-GCM"
    slots: list[SlotModel]


@dataclass(frozen=True)
class DirectoryItem:
    """Where one entry sits in the record stream, with its hashes (no value)."""

    ordinal: int
    offset: int
    length: int
    name: EntryName
    sha256: bytes
    state: bytes

    def encode(self) -> list[Any]:
        name = self.name
        kind = _KINDS.index(name.kind)
        return [
            self.ordinal,
            self.offset,
            self.length,
            kind,
            name.datastore,
            name.scope,
            name.key,
            self.sha256,
            self.state,
        ]

    @classmethod
    def decode(cls, raw: Any) -> DirectoryItem:
        ordinal, offset, length, kind, ds, scope, key, sha, state = raw
        return cls(ordinal, offset, length, EntryName(_KINDS[kind], ds, scope, key), sha, state)


# -------------------------------------------------------------------------------------- errors


class ArchiveError(Exception):
    """An archive cannot be used; the message is meant for the user as is."""


Where = Literal["file", "header", "footer", "manifest", "block", "directory", "entry", "content"]


@dataclass(frozen=True)
class Damage:
    where: Where
    message: str
    entry: EntryName | None = None  # the first entry that cannot be trusted
    also_affected: int = 0  # further entries lost with it (same block)
    block: int | None = None


class ArchiveDamagedError(ArchiveError):
    def __init__(self, damage: Damage) -> None:
        super().__init__(damage.message)
        self.damage = damage


def _damaged(where: Where, message: str, **extra: Any) -> ArchiveDamagedError:
    return ArchiveDamagedError(Damage(where, message, **extra))


# -------------------------------------------------------------------------------------- writer


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_archive_id() -> str:
    return secrets.token_hex(8)


@dataclass
class _Tally:
    entries: int = 0
    value_bytes: int = 0


class ArchiveWriter:
    """Append entries as they are read; `finish()` seals the archive into place atomically.

    Until `finish()`, the data lives in a hidden `.partial` file beside the target (encrypted
    like the rest); `abort()` or leaving the `with` block without finishing removes it.
    """

    def __init__(
        self,
        path: Path,
        *,
        universe_id: int,
        backend: Backend,
        keys: ArchiveKeys,
        selection: ArchiveSelection | None = None,
        schedule: str | None = None,
        note: str | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        clock: Callable[[], datetime] = utc_now,
        _reuse: _Reuse | None = None,
    ) -> None:
        if chunk_bytes < 1024:
            raise ValueError("chunk_bytes must be at least 1 KiB")
        self.path = Path(path)
        self._clock = clock
        self._started = clock()
        if _reuse is None:
            archive_key = new_archive_key()
            key_id = secrets.token_hex(8)
            slots = make_slots(archive_key, key_id, keys)
        else:
            archive_key, key_id, slots = _reuse.archive_key, _reuse.key_id, _reuse.slots
        self._reuse = _reuse
        self.archive_id = new_archive_id()
        self._meta = (universe_id, backend, selection or ArchiveSelection(), schedule, note)
        self._aead = AESGCM(archive_key)
        self._chunk = chunk_bytes
        self._compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        header = ArchiveHeader(
            archive_id=self.archive_id,
            key_id=key_id,
            created_at=self._started,
            chunk_bytes=chunk_bytes,
            slots=slots,
        )
        header_json = header.model_dump_json().encode("utf-8")
        head = _MAGIC + _LEN.pack(len(header_json)) + header_json
        self._header_digest = hashlib.sha256(head).digest()
        self._partial = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.partial")
        self._file: BinaryIO | None = open(  # noqa: SIM115 - closed by finish/abort
            _create_private(self._partial), "wb"
        )
        self._file.write(head + self._header_digest)
        self._offset = len(head) + len(self._header_digest)
        self._seq = 0
        self._frames: list[int] = []
        self._buffer = bytearray()
        # This chunk's directory, packed as items arrive (a chunk can hold ~20k small entries).
        self._items = bytearray()
        self._item_count = 0
        self._packer = msgpack.Packer(use_bin_type=True)
        self._stream = hashlib.sha256()
        self._stream_bytes = 0
        self._tally: dict[tuple[StoreKind, str], _Tally] = {}
        self._first_read: datetime | None = None
        self._last_read: datetime | None = None
        self.entries = 0
        # A rewrite adds its own note before finishing.
        self.erasures: list[ErasureNote] = list(_reuse.erasures) if _reuse else []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self.abort()

    def add(self, entry: ArchiveEntry) -> None:
        if self._file is None:
            raise ArchiveError("this archive was already finished or aborted")
        record = encode_record(entry)
        framed = _LEN.pack(len(record)) + record
        item = DirectoryItem(
            ordinal=self.entries,
            offset=self._stream_bytes,
            length=len(framed),
            name=entry.name,
            sha256=hashlib.sha256(framed).digest(),
            state=state_digest(entry),
        )
        self._items += self._packer.pack(item.encode())
        self._item_count += 1
        self.entries += 1
        self._stream.update(framed)
        self._stream_bytes += len(framed)
        tally = self._tally.setdefault((entry.name.kind, entry.name.datastore), _Tally())
        tally.entries += 1
        tally.value_bytes += len(entry.value_json.encode("utf-8"))
        self._first_read = min(self._first_read or entry.read_at, entry.read_at)
        self._last_read = max(self._last_read or entry.read_at, entry.read_at)
        view = memoryview(framed)
        while view:
            room = self._chunk - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) == self._chunk:
                self._flush()

    def finish(self) -> Manifest:
        """Write the last chunk, the manifest and the footer; fsync; move into place."""
        if self._file is None:
            raise ArchiveError("this archive was already finished or aborted")
        if self._buffer or self._item_count:
            self._flush()
        universe_id, backend, selection, schedule, note = self._meta
        reuse = self._reuse
        manifest = Manifest(
            archive_id=self.archive_id,
            universe_id=universe_id,
            backend=backend,
            selection=selection,
            schedule=schedule,
            note=note,
            started_at=reuse.started_at if reuse else self._started,
            completed_at=reuse.completed_at if reuse else self._clock(),
            first_read_at=self._first_read,
            last_read_at=self._last_read,
            entries=self.entries,
            stores=[
                StoreCount(kind=k, datastore=ds, entries=t.entries, value_bytes=t.value_bytes)
                for (k, ds), t in sorted(self._tally.items())
            ],
            value_bytes=sum(t.value_bytes for t in self._tally.values()),
            stream_bytes=self._stream_bytes,
            chunk_bytes=self._chunk,
            content_sha256=self._stream.hexdigest(),
            frames=self._frames,
            derived_from=reuse.derived_from if reuse else None,
            erasures=self.erasures,
        )
        manifest_offset = self._offset
        self._frame(_MANIFEST, self._compressor.compress(manifest.model_dump_json().encode()))
        file = self._file
        file.write(_FOOTER.pack(manifest_offset, self._seq, _END))
        file.flush()
        os.fsync(file.fileno())
        file.close()
        self._file = None
        os.replace(self._partial, self.path)
        _fsync_dir(self.path.parent)
        return manifest

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._partial.unlink(missing_ok=True)

    def _flush(self) -> None:
        self._frames.append(self._offset)
        self._frame(_DATA, self._compressor.compress(bytes(self._buffer)))
        self._frames.append(self._offset)
        items = self._packer.pack_array_header(self._item_count) + self._items
        self._frame(_DIRECTORY, self._compressor.compress(bytes(items)))
        self._buffer.clear()
        self._items.clear()
        self._item_count = 0

    def _frame(self, kind: bytes, plaintext: bytes) -> None:
        assert self._file is not None
        nonce = os.urandom(_NONCE)
        length = _NONCE + len(plaintext) + _TAG
        head = _FRAME.pack(kind, self._seq, length)
        body = nonce + self._aead.encrypt(nonce, plaintext, self._header_digest + head)
        self._file.write(head + body)
        self._offset += len(head) + len(body)
        self._seq += 1


@dataclass(frozen=True)
class _Reuse:
    """A rewrite keeps the archive key (so every slot, passphrase included, still opens it)."""

    archive_key: bytes
    key_id: str
    slots: list[SlotModel]
    started_at: datetime
    completed_at: datetime
    derived_from: str
    erasures: list[ErasureNote]


def _create_private(path: Path) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    os.close(fd)
    return path


# -------------------------------------------------------------------------------------- reader


def read_header(path: Path) -> ArchiveHeader:
    """The clear header, checked against its SHA-256; needs no key."""
    with open(path, "rb") as file:
        return _read_header(file, Path(path))[0]


def _read_header(file: BinaryIO, path: Path) -> tuple[ArchiveHeader, bytes, int]:
    start = file.read(len(_MAGIC) + _LEN.size)
    if len(start) < len(_MAGIC) + _LEN.size or start[: len(_MAGIC)] != _MAGIC:
        raise ArchiveError(f"{path.name} is not a DataStore Manager Pro backup archive")
    (size,) = _LEN.unpack(start[len(_MAGIC) :])
    if size > _MAX_HEADER:
        raise _damaged("header", "the archive header is damaged (impossible length)")
    raw = file.read(size)
    digest = file.read(32)
    if hashlib.sha256(start + raw).digest() != digest:
        raise _damaged("header", "the archive header is damaged (its checksum does not match)")
    try:
        header = ArchiveHeader.model_validate_json(raw)
    except ValidationError:
        raise _damaged("header", "the archive header is malformed") from None
    return header, digest, len(start) + size + 32


class ArchiveReader:
    """Open an archive with the keys at hand; read its manifest, directory and entries."""

    def __init__(self, path: Path, keys: ArchiveKeys) -> None:
        self.path = Path(path)
        self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        try:
            self.header, self._header_digest, self._body_start = _read_header(self._file, self.path)
            self._archive_key = unwrap(self.header.slots, self.header.key_id, keys)
            self._size = os.fstat(self._file.fileno()).st_size
        except BaseException:
            self._file.close()
            raise
        self._decompressor = zstandard.ZstdDecompressor()
        self._manifest: Manifest | None = None
        self._aead = AESGCM(self._archive_key)
        self._chunks: OrderedDict[int, bytes] = OrderedDict()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    # -- manifest ---------------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = self._read_manifest()
        return self._manifest

    def _read_manifest(self) -> Manifest:
        if self._size < self._body_start + _FOOTER.size:
            raise _damaged("footer", "the archive is cut short: it has no footer")
        self._file.seek(self._size - _FOOTER.size)
        offset, frames, end = _FOOTER.unpack(self._file.read(_FOOTER.size))
        if end != _END:
            raise _damaged(
                "footer", "the archive's footer is damaged or missing (cut short while writing?)"
            )
        length = self._size - _FOOTER.size - offset - _FRAME.size
        if not self._body_start <= offset or length < _NONCE + _TAG or length > _MAX_MANIFEST:
            raise _damaged("footer", "the archive's footer is damaged (manifest out of range)")
        try:
            plain = self._frame(offset, _MANIFEST, frames - 1, length)
            manifest = Manifest.model_validate_json(self._decompressor.decompress(plain))
        except _BadFrame as exc:
            raise _damaged("manifest", f"the archive's manifest is damaged ({exc})") from None
        except (ValidationError, zstandard.ZstdError):
            raise _damaged("manifest", "the archive's manifest is malformed") from None
        if manifest.archive_id != self.header.archive_id or len(manifest.frames) != frames - 1:
            raise _damaged("manifest", "the manifest does not belong to this archive's header")
        return manifest

    # -- frames -----------------------------------------------------------------------------

    def _frame(self, offset: int, kind: bytes, seq: int, length: int) -> bytes:
        """Decrypt one frame, expected with this kind, sequence and body length."""
        self._file.seek(offset)
        head = self._file.read(_FRAME.size)
        expected = _FRAME.pack(kind, seq, length)
        if head != expected:
            raise _BadFrame("frame header does not match the manifest")
        body = self._file.read(length)
        if len(body) != length:
            raise _BadFrame("cut short")
        try:
            return self._aead.decrypt(body[:_NONCE], body[_NONCE:], self._header_digest + head)
        except InvalidTag:
            raise _BadFrame("failed authentication: altered or damaged bytes") from None

    def _frame_span(self, index: int) -> tuple[int, int]:
        frames = self.manifest.frames
        offset = frames[index]
        following = frames[index + 1] if index + 1 < len(frames) else self._manifest_offset()
        return offset, following - offset - _FRAME.size

    def _manifest_offset(self) -> int:
        self._file.seek(self._size - _FOOTER.size)
        return int(_FOOTER.unpack(self._file.read(_FOOTER.size))[0])

    @property
    def blocks(self) -> int:
        return len(self.manifest.frames) // 2

    def _directory(self, block: int) -> list[DirectoryItem]:
        offset, length = self._frame_span(2 * block + 1)
        plain = self._frame(offset, _DIRECTORY, 2 * block + 1, length)
        try:
            raw = msgpack.unpackb(
                self._decompressor.decompress(plain), raw=False, strict_map_key=True
            )
            return [DirectoryItem.decode(item) for item in raw]
        except Exception as exc:  # malformed inside an authentic frame: a writer bug
            raise _BadFrame(f"malformed content ({type(exc).__name__})") from None

    def _data(self, block: int) -> bytes:
        cached = self._chunks.get(block)
        if cached is not None:
            self._chunks.move_to_end(block)
            return cached
        offset, length = self._frame_span(2 * block)
        plain = self._frame(offset, _DATA, 2 * block, length)
        try:
            data = self._decompressor.decompress(plain, max_output_size=self.manifest.chunk_bytes)
        except zstandard.ZstdError as exc:
            raise _BadFrame(f"does not decompress ({exc})") from None
        self._chunks[block] = data
        while len(self._chunks) > 4:
            self._chunks.popitem(last=False)
        return data

    # -- reading ----------------------------------------------------------------------------

    def directory(self) -> Iterator[DirectoryItem]:
        """Every entry's name, place and hashes, in order; no value is decrypted."""
        for block in range(self.blocks):
            try:
                yield from self._directory(block)
            except _BadFrame as exc:
                raise _damaged(
                    "directory",
                    f"the directory of block {block} is unreadable ({exc})",
                    block=block,
                ) from None

    def read(self, item: DirectoryItem) -> ArchiveEntry:
        """One entry by its directory item (random access; checks its SHA-256)."""
        chunk = self.manifest.chunk_bytes
        first, last = item.offset // chunk, (item.offset + item.length - 1) // chunk
        parts: list[bytes] = []
        for block in range(first, last + 1):
            try:
                parts.append(self._data(block))
            except _BadFrame as exc:
                raise _damaged(
                    "block",
                    f"entry {item.name} cannot be read: block {block} is unreadable ({exc})",
                    entry=item.name,
                    block=block,
                ) from None
        joined = b"".join(parts)
        start = item.offset - first * chunk
        return _checked_entry(joined[start : start + item.length], item)

    def entries(self) -> Iterator[ArchiveEntry]:
        """Every entry in order, each checked against its SHA-256; the whole stream too."""
        manifest = self.manifest
        pending = bytearray()
        position = 0  # stream offset of pending[0]
        waiting: deque[DirectoryItem] = deque()  # started, not yet returned
        stream = hashlib.sha256()
        count = 0
        for block in range(self.blocks):
            try:
                items = self._directory(block)
            except _BadFrame as exc:
                raise self._lost_directory(block, exc, waiting, pending, position) from None
            try:
                data = self._data(block)
            except _BadFrame as exc:
                raise _lost_block(block, exc, [*waiting, *items]) from None
            stream.update(data)
            pending += data
            waiting.extend(items)
            end = position + len(pending)
            while waiting and waiting[0].offset + waiting[0].length <= end:
                item = waiting.popleft()
                start = item.offset - position
                if start < 0:
                    raise _damaged("content", "the directory and the data disagree", block=block)
                entry = _checked_entry(bytes(pending[start : start + item.length]), item)
                count += 1
                yield entry
            keep_from = (waiting[0].offset - position) if waiting else len(pending)
            del pending[:keep_from]
            position += keep_from
        if waiting or count != manifest.entries or position + len(pending) != manifest.stream_bytes:
            raise _damaged(
                "content",
                f"the archive holds {count} readable entries but its manifest lists "
                f"{manifest.entries}",
            )
        if stream.hexdigest() != manifest.content_sha256:
            raise _damaged("content", "the SHA-256 of the whole archive does not match")

    def _lost_directory(
        self,
        block: int,
        exc: _BadFrame,
        waiting: deque[DirectoryItem],
        pending: bytearray,
        position: int,
    ) -> ArchiveDamagedError:
        """Name what we can when a block's directory is unreadable: decode its data directly."""
        first: EntryName | None = None
        try:
            data = bytes(pending) + self._data(block)
            start = (waiting[-1].offset + waiting[-1].length - position) if waiting else 0
            first = _name_at(data, start)
        except (_BadFrame, _Malformed):
            pass
        message = f"the directory of block {block} is unreadable ({exc})"
        if first is not None:
            message += f"; its checksums are lost, starting with entry {first}"
        return _damaged("directory", message, entry=first, block=block)

    def verify(self) -> VerifyReport:
        """Decrypt everything and check every checksum; the first problem is reported."""
        checked = 0
        try:
            manifest = self.manifest
            for _ in self.entries():
                checked += 1
        except ArchiveDamagedError as exc:
            return VerifyReport(self.path, self.header.archive_id, checked, None, exc.damage)
        return VerifyReport(self.path, self.header.archive_id, checked, manifest, None)

    @property
    def archive_key(self) -> bytes:
        """For rewriting this archive under the same key (erasure keeps every slot working)."""
        return self._archive_key


class _BadFrame(Exception):
    pass


def _lost_block(block: int, exc: _BadFrame, touched: list[DirectoryItem]) -> ArchiveDamagedError:
    message = f"block {block} of the archive is unreadable ({exc})"
    if not touched:
        return _damaged("block", message, block=block)
    first = touched[0].name
    message += f"; first entry lost: {first}"
    if len(touched) > 1:
        message += f" (and {len(touched) - 1} more in the same block)"
    return _damaged("block", message, entry=first, also_affected=len(touched) - 1, block=block)


def _checked_entry(framed: bytes, item: DirectoryItem) -> ArchiveEntry:
    if hashlib.sha256(framed).digest() != item.sha256:
        raise _damaged("entry", f"entry {item.name} does not match its SHA-256", entry=item.name)
    try:
        entry = decode_record(framed[_LEN.size :])
    except _Malformed as exc:
        raise _damaged("entry", f"entry {item.name}: {exc}", entry=item.name) from None
    if entry.name != item.name:
        raise _damaged("entry", f"entry {item.name} is stored under another name", entry=item.name)
    return entry


def _name_at(data: bytes, start: int) -> EntryName | None:
    """The name of the record starting at `start`, read from its first fields only."""
    if start + _LEN.size > len(data):
        return None
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data[start + _LEN.size : start + _LEN.size + 1024])
    try:
        unpacker.read_array_header()
        fields = [unpacker.unpack() for _ in range(5)]
        return EntryName(_KINDS[fields[1]], fields[2], fields[3], fields[4])
    except Exception:  # partial or malformed: no name to give
        return None


@dataclass(frozen=True)
class VerifyReport:
    path: Path
    archive_id: str
    entries_checked: int
    manifest: Manifest | None  # None when the manifest itself could not be read
    damage: Damage | None

    @property
    def ok(self) -> bool:
        return self.damage is None
