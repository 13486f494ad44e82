"""Cuts the byte stream into S3 parts, hashes it, and records durable progress.

The data this writer holds per upload is bounded by ``part_size * (window + 1)``
whatever the file size: one part filling, at most ``window`` parts being sent. (The
process also holds gRPC's receive buffers and the HTTP client's; measured, a 1 GiB
upload grows the server by ~45 MiB and each concurrent upload costs ~15 MiB.)
Bytes are hashed when they are cut into a part, so the SHA-256 state at every part
boundary is known and is saved with the part once S3 has it: any replica can
continue the upload from there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from server.storage.port import ObjectStore, UploadedPart
from server.upload.progress import UploadProgress, tail_key
from server.upload.resumable_hash import ResumableSha256


@dataclass(frozen=True)
class _Sending:
    task: asyncio.Task[UploadedPart]
    hash_state: bytes  # SHA-256 state after this part's bytes


class PartWriter:
    def __init__(
        self,
        *,
        store: ObjectStore,
        part_size: int,
        window: int,
        video_id: str,
        start: Callable[[], Awaitable[tuple[str, str, str]]],
        on_progress: Callable[[UploadProgress], Awaitable[None]],
        resume: UploadProgress | None = None,
        tail: bytes = b"",
    ) -> None:
        """``start`` creates the multipart upload when the first part is ready and
        returns ``(key, upload_id, container)``: the key needs the sniffed container
        (it raises LookupError while the container is unknown)."""
        self._store = store
        self._part_size = part_size
        self._window = window
        self._start = start
        self._on_progress = on_progress
        self.video_id = video_id
        self._sending: list[_Sending] = []
        self._starting: asyncio.Future[tuple[str, str, str]] | None = None
        self._buffer = bytearray(tail)
        if resume is None:
            self._hasher = ResumableSha256()
            self._parts: list[UploadedPart] = []
            self.key = self.upload_id = self.container = ""
        else:
            self._hasher = ResumableSha256(resume.hash_state)
            self._parts = list(resume.parts)
            self.key, self.upload_id, self.container = (
                resume.key,
                resume.upload_id,
                resume.container,
            )
        self._next_number = len(self._parts) + 1

    @property
    def started(self) -> bool:
        return bool(self.upload_id)

    @property
    def parts(self) -> list[UploadedPart]:
        return list(self._parts)

    # Cancellation (a client that goes away) can strike at any await below. The
    # state must stay whole for suspend(): a part leaves the buffer only in the same
    # step that starts its upload, and S3 calls are shielded so they finish anyway.

    async def add(self, data: bytes) -> None:
        while self._sending and self._sending[0].task.done():
            await self._settle_oldest()  # record progress as soon as S3 has a part
        self._buffer += data
        while len(self._buffer) >= self._part_size:
            await self._send_part(self._part_size)

    async def _ensure_started(self) -> None:
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        self.key, self.upload_id, self.container = await asyncio.shield(self._starting)

    async def _send_part(self, size: int) -> None:
        if not self.started:
            await self._ensure_started()
        while len(self._sending) >= self._window:
            await self._settle_oldest()
        data = bytes(memoryview(self._buffer)[:size])  # one copy, not two
        del self._buffer[:size]
        self._hasher.update(data)
        number = self._next_number
        self._next_number += 1
        task = asyncio.create_task(
            self._store.upload_part(self.key, upload_id=self.upload_id, number=number, data=data)
        )
        self._sending.append(_Sending(task=task, hash_state=self._hasher.state()))

    async def _settle_oldest(self) -> None:
        sending = self._sending[0]
        part = await asyncio.shield(sending.task)
        if not self._sending or self._sending[0] is not sending:
            return  # settled meanwhile by the cleanup that interrupted us
        self._sending.pop(0)
        self._parts.append(part)
        await self._on_progress(self._progress(sending.hash_state))

    def _progress(self, hash_state: bytes, *, tail_size: int = 0) -> UploadProgress:
        return UploadProgress(
            video_id=self.video_id,
            key=self.key,
            upload_id=self.upload_id,
            container=self.container,
            parts=tuple(self._parts),
            hash_state=hash_state,
            tail_key=tail_key(self.key) if tail_size else "",
            tail_size=tail_size,
        )

    def digest(self) -> str:
        """SHA-256 of every byte added so far (the remainder not yet cut included)."""
        final = self._hasher.copy()
        final.update(bytes(self._buffer))
        return final.hexdigest()

    async def flush(self) -> list[UploadedPart]:
        """Sends the remainder as the last part and waits for every part."""
        if self._buffer or (not self._parts and not self._sending):
            await self._send_part(len(self._buffer))
        while self._sending:
            await self._settle_oldest()
        return list(self._parts)

    def committed_progress(self) -> UploadProgress:
        """What is stored after ``flush()``: every part, no tail."""
        if self._buffer or self._sending:
            raise RuntimeError("flush() first: bytes are still buffered or in flight")
        return self._progress(self._hasher.state())

    async def suspend(self) -> UploadProgress | None:
        """An interrupted stream: waits for the parts in flight and keeps the tail as a
        temporary object, so the next stream resumes after the last byte received."""
        while self._sending:
            await self._settle_oldest()
        if not self.started:
            if not self._buffer and self._starting is None:
                return None
            try:  # less than a part so far: start the upload just to keep the tail
                await self._ensure_started()
            except LookupError:
                return None  # the container is not known yet: nothing worth keeping
        state = self._hasher.state()
        if not self._buffer:
            return self._progress(state)
        await self._store.put_object(tail_key(self.key), bytes(self._buffer))
        progress = self._progress(state, tail_size=len(self._buffer))
        await self._on_progress(progress)
        return progress

    async def discard(self) -> None:
        """Stops parts in flight; the caller aborts the multipart upload."""
        if self._starting is not None and not self.started:
            with contextlib.suppress(Exception):  # learn the upload id, to abort it
                await self._ensure_started()
        for sending in self._sending:
            sending.task.cancel()
        for sending in self._sending:
            with contextlib.suppress(BaseException):
                await sending.task
        self._sending.clear()
        self._buffer.clear()
