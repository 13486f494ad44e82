"""ObjectStore on a local directory, with the same multipart semantics as S3.

Used by the embedded default (``make run`` with no external services). Parts are
files under ``.multipart/<upload_id>/``; completing concatenates them into the
object atomically (write to a temp name, then rename).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from server.errors import Internal, Reason
from server.storage.oserrors import map_os_errors
from server.storage.port import PendingMultipart, StoredObject, UploadedPart

T = TypeVar("T")

_COPY_BUFFER = 1024 * 1024


class FilesystemObjectStore:
    def __init__(self, *, root: Path, bucket: str = "local") -> None:
        self._root = root.resolve()
        self._bucket = bucket
        self._objects = self._root / bucket
        self._staging = self._root / ".multipart"
        with map_os_errors("create the store's directories"):
            self._objects.mkdir(parents=True, exist_ok=True)
            self._staging.mkdir(parents=True, exist_ok=True)

    @property
    def bucket(self) -> str:
        return self._bucket

    def object_uri(self, key: str) -> str:
        """``local://<bucket>/<key>``: names the object without telling clients where
        the server keeps its files."""
        return f"local://{self._bucket}/{key}"

    def _path(self, key: str) -> Path:
        path = (self._objects / key).resolve()
        if not path.is_relative_to(self._objects):
            raise Internal(Reason.STORAGE_ERROR, "object key escapes the store")
        return path

    def _upload_dir(self, upload_id: str) -> Path:
        if not upload_id.isalnum():
            raise Internal(Reason.STORAGE_ERROR, "malformed multipart upload id")
        return self._staging / upload_id

    async def create_multipart(self, key: str, *, content_type: str) -> str:
        upload_id = uuid.uuid4().hex
        directory = self._upload_dir(upload_id)
        meta = {"key": key, "content_type": content_type, "initiated": _now().isoformat()}

        def create() -> None:
            directory.mkdir(parents=True)
            (directory / "upload.json").write_text(json.dumps(meta))

        await _io("create multipart upload", create)
        return upload_id

    async def upload_part(
        self, key: str, *, upload_id: str, number: int, data: bytes
    ) -> UploadedPart:
        directory = self._upload_dir(upload_id)

        def write() -> str:
            if not directory.exists():
                raise Internal(Reason.STORAGE_ERROR, f"no multipart upload {upload_id}")
            tmp = directory / f"part-{number:05d}.tmp"
            tmp.write_bytes(data)
            tmp.replace(directory / f"part-{number:05d}")
            return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'

        etag = await _io("upload part", write)
        return UploadedPart(number=number, etag=etag, size=len(data))

    async def complete_multipart(
        self, key: str, *, upload_id: str, parts: list[UploadedPart]
    ) -> None:
        directory = self._upload_dir(upload_id)
        target = self._path(key)

        def complete() -> None:
            if not directory.exists():
                # Completed by an earlier call whose answer was lost (a crash)?
                expected = sum(p.size for p in parts)
                if target.exists() and target.stat().st_size == expected:
                    return
                raise Internal(
                    Reason.STORAGE_ERROR,
                    "the multipart upload is gone and no object assembled from its parts exists",
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + f".{upload_id}.tmp")
            with tmp.open("wb") as out:
                for part in sorted(parts, key=lambda p: p.number):
                    with (directory / f"part-{part.number:05d}").open("rb") as src:
                        shutil.copyfileobj(src, out, _COPY_BUFFER)
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(target)
            shutil.rmtree(directory, ignore_errors=True)

        await _io("complete multipart upload", complete)

    async def abort_multipart(self, key: str, *, upload_id: str) -> None:
        directory = self._upload_dir(upload_id)
        await _io("abort multipart upload", lambda: shutil.rmtree(directory, True))

    async def list_multipart(self, *, prefix: str) -> list[PendingMultipart]:
        def scan() -> list[PendingMultipart]:
            found = []
            for meta_file in self._staging.glob("*/upload.json"):
                try:
                    meta = json.loads(meta_file.read_text())
                except (OSError, ValueError):
                    continue
                if str(meta["key"]).startswith(prefix):
                    found.append(
                        PendingMultipart(
                            key=str(meta["key"]),
                            upload_id=meta_file.parent.name,
                            initiated=datetime.fromisoformat(meta["initiated"]),
                        )
                    )
            return found

        return await _io("list multipart uploads", scan)

    async def put_object(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> None:
        del content_type  # a file has none
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)

        await _io("put object", write)

    async def delete_object(self, key: str) -> None:
        path = self._path(key)
        await _io("delete object", lambda: path.unlink(True))

    async def object_size(self, key: str) -> int | None:
        path = self._path(key)

        def size() -> int | None:
            try:
                return path.stat().st_size
            except FileNotFoundError:
                return None

        return await _io("stat object", size)

    async def read_range(self, key: str, *, start: int, length: int) -> bytes:
        def read() -> bytes:
            with self._path(key).open("rb") as handle:
                handle.seek(start)
                return handle.read(length)

        return await _io("read object", read)

    def _scan_keys(self, prefix: str) -> list[str]:
        keys = []
        for path in self._objects.rglob("*"):
            if path.is_file() and not path.name.endswith(".tmp"):
                key = path.relative_to(self._objects).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    async def list_keys(self, *, prefix: str) -> list[str]:
        return await _io("list objects", lambda: self._scan_keys(prefix))

    async def list_objects(self, *, prefix: str) -> list[StoredObject]:
        def scan() -> list[StoredObject]:
            found = []
            for key in self._scan_keys(prefix):
                with contextlib.suppress(FileNotFoundError):
                    stat = (self._objects / key).stat()
                    found.append(
                        StoredObject(
                            key=key,
                            size=stat.st_size,
                            last_modified=datetime.fromtimestamp(stat.st_mtime, UTC),
                        )
                    )
            return found

        return await _io("list objects", scan)

    async def ping(self) -> None:
        def writable() -> None:
            if not os.access(self._objects, os.W_OK | os.X_OK):
                raise PermissionError(13, "the object directory is not writable", self._objects)

        await _io("check the store's directory", writable)

    async def close(self) -> None:
        return None


async def _io(operation: str, work: Callable[[], T]) -> T:
    """Runs blocking file work in a thread, its ``OSError`` translated (one map)."""

    def mapped() -> T:
        with map_os_errors(operation):
            return work()

    return await asyncio.to_thread(mapped)


def _now() -> datetime:
    return datetime.now(UTC)
