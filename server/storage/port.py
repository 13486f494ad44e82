"""The ObjectStore port: the few multipart calls the upload pipeline needs.

Shaped after tusd's S3 store: an upload is a multipart upload whose parts are
written in order and then completed or aborted. Both adapters (S3, filesystem)
give the same semantics, so the pipeline never knows which one it talks to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class UploadedPart:
    number: int
    etag: str
    size: int


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
    ) -> None: ...

    async def abort_multipart(self, key: str, *, upload_id: str) -> None:
        """Discards the upload and its parts; succeeds if it is already gone."""
        ...

    async def list_multipart(self, *, prefix: str) -> list[PendingMultipart]: ...

    async def put_object(self, key: str, data: bytes) -> None:
        """Stores a small object in one request (the tail of an interrupted upload)."""
        ...

    async def delete_object(self, key: str) -> None:
        """Deletes an object; succeeds if it is already gone."""
        ...

    async def object_size(self, key: str) -> int | None:
        """The stored object's size, or None if there is no such object."""
        ...

    async def read_range(self, key: str, *, start: int, length: int) -> bytes: ...

    async def list_keys(self, *, prefix: str) -> list[str]: ...

    async def close(self) -> None: ...
