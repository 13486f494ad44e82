"""Cuts the byte stream into S3 parts and uploads them with a small window in flight.

Memory per upload is bounded by ``part_size * (window + 1)`` whatever the file size:
one part filling, at most ``window`` parts being sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from server.storage.port import ObjectStore, UploadedPart


class PartUploader:
    def __init__(
        self,
        *,
        store: ObjectStore,
        part_size: int,
        window: int,
        start: Callable[[], Awaitable[tuple[str, str]]],
    ) -> None:
        """``start`` creates the multipart upload when the first part is ready and
        returns ``(key, upload_id)``; the key is only known once the container is."""
        self._store = store
        self._part_size = part_size
        self._window = window
        self._start = start
        self._buffer = bytearray()
        self._in_flight: list[asyncio.Task[UploadedPart]] = []
        self._parts: list[UploadedPart] = []
        self._next_number = 1
        self.key = ""
        self.upload_id = ""

    @property
    def started(self) -> bool:
        return bool(self.upload_id)

    async def add(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= self._part_size:
            part = bytes(self._buffer[: self._part_size])
            del self._buffer[: self._part_size]
            await self._send(part)

    async def _send(self, data: bytes) -> None:
        if not self.started:
            self.key, self.upload_id = await self._start()
        while len(self._in_flight) >= self._window:
            self._parts.append(await self._in_flight.pop(0))
        number = self._next_number
        self._next_number += 1
        self._in_flight.append(
            asyncio.create_task(
                self._store.upload_part(
                    self.key, upload_id=self.upload_id, number=number, data=data
                )
            )
        )

    async def flush(self) -> list[UploadedPart]:
        """Sends the remainder as the last part and waits for every part."""
        if self._buffer or not self.started:
            await self._send(bytes(self._buffer))
            self._buffer.clear()
        while self._in_flight:
            self._parts.append(await self._in_flight.pop(0))
        return list(self._parts)

    async def discard(self) -> None:
        """Stops parts in flight; the caller aborts the multipart upload."""
        for task in self._in_flight:
            task.cancel()
        for task in self._in_flight:
            with contextlib.suppress(BaseException):
                await task
        self._in_flight.clear()
        self._buffer.clear()
