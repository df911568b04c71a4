"""Import files sent by the plugin in chunks: `<data dir>/uploads/<id>.bin`, bounded and checked.

The plugin reads a local file with `File:GetBinaryContents` and cannot send one huge request, so
an upload is announced with its size (and optionally its SHA-256), then sent as base64 chunks of
`chunk_bytes` each (the last one shorter), in any order and as often as needed: a chunk sent
again must carry the same bytes. `complete` checks that every chunk arrived and the whole
file's hash, and only then can an import job use it. Unfinished or unused uploads are deleted
when they expire.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from shared_schema.errors import ErrorCode
from shared_schema.jobs import UploadInfo, UploadState

from ..errors import ServiceError
from .store import JobStore, UploadRecord, new_upload_id, now_ms

log = logging.getLogger("dsm.jobs.uploads")

UPLOADS_DIRNAME = "uploads"
UPLOAD_TTL_MS = 24 * 3600 * 1000
KEEP_IN_USE_MS = 7 * 24 * 3600 * 1000
MAX_OPEN_UPLOADS = 20
_MISSING_SHOWN = 100


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class UploadStore:
    def __init__(self, store: JobStore, data_dir: Path) -> None:
        self.store = store
        self.dir = data_dir / UPLOADS_DIRNAME
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, upload_id: str) -> Path:
        return self.dir / f"{upload_id}.bin"

    def info(self, record: UploadRecord) -> UploadInfo:
        missing = [i for i in range(record.chunks) if i not in record.received]
        return UploadInfo(
            upload_id=record.id,
            file_name=record.file_name,
            state=UploadState(record.state),
            size_bytes=record.size_bytes,
            chunk_bytes=record.chunk_bytes,
            chunks=record.chunks,
            received_chunks=len(record.received),
            missing=missing[:_MISSING_SHOWN],
            sha256=record.sha256,
            created_at=_time(record.created_ms),
            expires_at=_time(record.expires_ms),
        )

    def get(self, upload_id: str) -> UploadRecord:
        record = self.store.upload(upload_id)
        if record is None:
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                f"Upload {upload_id} does not exist (it may have expired); send the file again.",
            )
        return record

    def create(
        self,
        actor_id: str,
        file_name: str,
        size_bytes: int,
        chunk_bytes: int,
        sha256: str | None,
    ) -> UploadRecord:
        self.sweep()
        open_count = self.store.upload_count()
        if open_count >= MAX_OPEN_UPLOADS:
            raise ServiceError(
                ErrorCode.RATE_LIMITED,
                f"The server already keeps {open_count} uploads; delete some (DELETE "
                "/uploads/{id}) or wait for them to expire.",
            )
        created = now_ms()
        record = UploadRecord(
            id=new_upload_id(),
            file_name=file_name,
            size_bytes=size_bytes,
            chunk_bytes=chunk_bytes,
            expected_sha256=sha256,
            sha256=None,
            state=UploadState.OPEN.value,
            actor_id=actor_id,
            created_ms=created,
            expires_ms=created + UPLOAD_TTL_MS,
        )
        path = self.path(record.id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.truncate(fd, size_bytes)
        finally:
            os.close(fd)
        return self.store.create_upload(record)

    def put_chunk(
        self, upload_id: str, index: int, data_base64: str, sha256: str | None
    ) -> UploadRecord:
        record = self.get(upload_id)
        if record.state != UploadState.OPEN.value:
            raise ServiceError(
                ErrorCode.CONFLICT, f"Upload {upload_id} is complete; it takes no more chunks."
            )
        if index >= record.chunks:
            raise ServiceError(
                ErrorCode.BAD_REQUEST,
                f"Chunk {index} is past the end: this upload has {record.chunks} chunks "
                f"(0-{record.chunks - 1}).",
            )
        try:
            data = base64.b64decode(data_base64, validate=True)
        except (binascii.Error, ValueError):
            raise ServiceError(
                ErrorCode.BAD_REQUEST, f"Chunk {index} is not valid base64 (RFC 4648, padded)."
            ) from None
        expected = (
            record.chunk_bytes
            if index < record.chunks - 1
            else record.size_bytes - record.chunk_bytes * (record.chunks - 1)
        )
        if len(data) != expected:
            raise ServiceError(
                ErrorCode.BAD_REQUEST,
                f"Chunk {index} has {len(data):,} bytes; it must have {expected:,}.",
            )
        digest = hashlib.sha256(data).hexdigest()
        if sha256 is not None and sha256 != digest:
            raise ServiceError(
                ErrorCode.BAD_REQUEST,
                f"Chunk {index} does not match its SHA-256: it was damaged on the way; send it "
                "again.",
            )
        earlier = self.store.chunk_sha256(upload_id, index)
        if earlier is not None:
            if earlier != digest:
                raise ServiceError(
                    ErrorCode.CONFLICT,
                    f"Chunk {index} was already received with other bytes; a file must not "
                    "change while it is sent. Start a new upload.",
                )
            return record
        with open(self.path(upload_id), "r+b") as out:
            out.seek(index * record.chunk_bytes)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        self.store.add_chunk(upload_id, index, digest)
        return self.get(upload_id)

    def complete(self, upload_id: str) -> UploadRecord:
        record = self.get(upload_id)
        if record.state == UploadState.COMPLETE.value:
            return record
        missing = [i for i in range(record.chunks) if i not in record.received]
        if missing:
            shown = ", ".join(str(i) for i in missing[:10])
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"{len(missing)} chunk(s) have not arrived yet ({shown}"
                f"{', ...' if len(missing) > 10 else ''}); send them, then complete again.",
                details={"missing": missing[:_MISSING_SHOWN]},
            )
        digest = hashlib.sha256()
        with open(self.path(upload_id), "rb") as source:
            while block := source.read(1024 * 1024):
                digest.update(block)
        sha256 = digest.hexdigest()
        if record.expected_sha256 is not None and record.expected_sha256 != sha256:
            raise ServiceError(
                ErrorCode.BAD_REQUEST,
                "The file that arrived does not match the SHA-256 given when the upload was "
                "started; start a new upload.",
            )
        self.store.finish_upload(upload_id, sha256)
        return self.get(upload_id)

    def complete_file(self, upload_id: str) -> tuple[UploadRecord, Path]:
        """A completed upload and its file, for an import (NOT_FOUND/CONFLICT otherwise).

        Using it keeps it for another week, so it outlives the import job that reads it.
        """
        record = self.get(upload_id)
        if record.state != UploadState.COMPLETE.value:
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"Upload {upload_id} is not complete yet; send every chunk and complete it.",
            )
        self.store.keep_upload(upload_id, now_ms() + KEEP_IN_USE_MS)
        return record, self.path(upload_id)

    def delete(self, upload_id: str) -> None:
        self.get(upload_id)
        self._remove(upload_id)

    def sweep(self) -> None:
        """Delete expired uploads."""
        for upload_id in self.store.expired_uploads(now_ms()):
            log.info("upload %s expired; deleting it", upload_id)
            self._remove(upload_id)

    def _remove(self, upload_id: str) -> None:
        self.store.delete_upload(upload_id)
        with contextlib.suppress(FileNotFoundError):
            self.path(upload_id).unlink()
