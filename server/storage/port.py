"""The ObjectStore port: the few multipart calls the upload pipeline needs.

Shaped after tusd's S3 store: an upload is a multipart upload whose parts are
written in order and then completed or aborted. Both adapters (S3, filesystem)
give the same semantics, so the pipeline never knows which one it talks to.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class UploadedPart:
    number: int
    etag: str
    size: int


def multipart_etag(parts: list[UploadedPart]) -> str:
    """The ETag S3 gives an object completed from ``parts``: the MD5 of the parts'
    binary MD5s, a dash, and the number of parts."""
    digests = b"".join(bytes.fromhex(p.etag.strip('"')) for p in parts)
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(parts)}"


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class PendingMultipart:
    key: str
    upload_id: str
    initiated: datetime


class ObjectStore(Protocol):
    """Where video bytes live. Keys are server-generated; never client input."""

    @property
    def bucket(self) -> str: ...

    def object_uri(self, key: str) -> str:
        """A URI naming the object, e.g. ``s3://bucket/key``."""
        ...

    async def create_multipart(self, key: str, *, content_type: str) -> str:
        """Starts a multipart upload and returns its id."""
        ...

    async def upload_part(
        self, key: str, *, upload_id: str, number: int, data: bytes
    ) -> UploadedPart: ...

    async def complete_multipart(
        self, key: str, *, upload_id: str, parts: list[UploadedPart]
    ) -> None:
        """Assembles the object from ``parts``. Idempotent: when the upload is gone
        because an earlier call completed it (its answer lost in a crash), it succeeds
        if the object is there and matches the parts (size, and the multipart ETag
        where the store reports one); otherwise it raises STORAGE_ERROR."""
        ...

    async def abort_multipart(self, key: str, *, upload_id: str) -> None:
        """Discards the upload and its parts; succeeds if it is already gone."""
        ...

    async def put_object(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> None:
        """Stores a small object in one request: the tail of an interrupted upload, or
        a whole video smaller than a part (``PartWriter.flush``)."""
        ...

    async def delete_object(self, key: str) -> None:
        """Deletes an object; succeeds if it is already gone."""
        ...

    async def object_size(self, key: str) -> int | None:
        """The stored object's size, or None if there is no such object."""
        ...

    async def read_range(self, key: str, *, start: int, length: int) -> bytes: ...

    async def ping(self) -> None:
        """Raises (STORAGE_UNAVAILABLE, ...) unless the store answers: for health."""
        ...

    async def close(self) -> None: ...


class ObjectInventory(Protocol):
    """An optional ability (tusd-style): listing what the store holds. Only the
    janitor and tests need it, so the upload path's fakes need not have it."""

    async def list_multipart(self, *, prefix: str) -> list[PendingMultipart]: ...

    async def list_keys(self, *, prefix: str) -> list[str]: ...

    async def list_objects(self, *, prefix: str) -> list[StoredObject]:
        """Every object under ``prefix`` with its size and age (the janitor's view)."""
        ...


class InventoriedStore(ObjectStore, ObjectInventory, Protocol):
    """A store with both abilities (both adapters here)."""
