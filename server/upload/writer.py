"""Cuts the byte stream into S3 parts, hashes it, and records durable progress.

The data this writer holds per upload is bounded by ``part_size * (window + 1)``
whatever the file size: one part filling, at most ``window`` parts being sent; and
the process-wide ``PartBudget`` bounds the sum over all uploads. Bytes are hashed
when they are cut into a part, so the SHA-256 state at every part boundary is known
and is saved with the part once S3 has it: any replica can continue the upload from
there.

Off the event loop: hashing runs on a thread (libcrypto releases the GIL), one part
at a time per upload so the hash sees the bytes in order, while the loop goes on
receiving (a part of at most ``inline.INLINE_BYTES`` is hashed on the loop). Each
part is copied once, when its chunks are joined (the chunks are kept as received,
the split chunk as a memoryview).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from server.storage.port import ObjectStore, UploadedPart
from server.upload.budget import PartBudget
from server.upload.inline import INLINE_BYTES
from server.upload.progress import UploadProgress, tail_key
from server.upload.resumable_hash import ResumableSha256

# What a part may hold before it takes its budget: per stream, so at most
# max_streams_per_process x this is held outside the budget (512 x 256 KiB = 128 MiB).
UNRESERVED_BYTES = 256 * 1024


@dataclass(frozen=True)
class ObjectName:
    """Where a fresh upload's object goes, known once its container is sniffed."""

    key: str
    container: str
    content_type: str


@dataclass(frozen=True)
class _Sending:
    task: asyncio.Task[UploadedPart]
    hashed: asyncio.Future[bytes]  # SHA-256 state after this part's bytes


def _hash_part(hasher: ResumableSha256, data: bytes) -> bytes:
    hasher.update(data)
    return hasher.state()


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
        budget: PartBudget | None = None,
        expected_size: int | None = None,
        name: Callable[[], ObjectName] | None = None,
    ) -> None:
        """``start`` creates the multipart upload when the first part is ready and
        returns ``(key, upload_id, container)``: the key needs the sniffed container
        (it raises LookupError while the container is unknown). ``expected_size``
        (the declared file size, if any) keeps the budget reservation of a small
        upload's only part to its size. ``name`` (a fresh stream's, which has every
        byte from the first) names the object without starting anything: a file that
        ends before its first part is cut is then stored whole in one request."""
        self._store = store
        self._part_size = part_size
        self._window = window
        self._start = start
        self._on_progress = on_progress
        self.video_id = video_id
        self._sending: list[_Sending] = []
        self._starting: asyncio.Future[tuple[str, str, str]] | None = None
        self._budget = budget
        self._expected = expected_size
        self._chunks: list[bytes | memoryview] = []
        self._buffered = 0
        self._reserved = 0  # budget held for the part being filled
        self._cut = 0  # bytes already cut into parts by this writer
        self._hashing: asyncio.Future[bytes] | None = None
        self._name = name
        self.whole = False  # stored in one request (put_object), no multipart upload
        self._putting: asyncio.Future[None] | None = None
        if resume is None:
            self._hasher = ResumableSha256()
            self._parts: list[UploadedPart] = []
            self.key = self.upload_id = self.container = ""
        else:
            self._hasher = ResumableSha256(resume.hash_state)
            self._parts = list(resume.parts)
            self.whole = resume.whole
            self.key, self.upload_id, self.container = (
                resume.key,
                resume.upload_id,
                resume.container,
            )
        self._next_number = len(self._parts) + 1
        self._cut = sum(part.size for part in self._parts)
        if tail:
            self._chunks.append(tail)
            self._buffered = len(tail)

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
        if not data:
            return
        if self._needs_reservation(len(data)):
            await self._reserve()
        self._chunks.append(data)
        self._buffered += len(data)
        while self._buffered >= self._part_size:
            await self._send_part(self._part_size)
        if self._needs_reservation(0):
            await self._reserve()  # the bytes left over start the next part

    def _needs_reservation(self, incoming: int) -> bool:
        """A part takes budget once it holds more than UNRESERVED_BYTES: a stream that
        sent a few bytes and went silent holds none (it could otherwise keep a whole
        part's budget from the streams that are sending, until it is cut)."""
        return (
            self._budget is not None
            and not self._reserved
            and self._buffered + incoming > UNRESERVED_BYTES
        )

    async def _reserve(self) -> None:
        """Budget for the part about to be filled (before its first byte is kept)."""
        assert self._budget is not None
        size = self._part_size
        if self._expected is not None:
            size = max(1, min(size, self._expected - self._cut))
        self._reserved = await self._budget.acquire(size)

    def release_reservation(self) -> None:
        """Returns the budget held for the part being filled (idempotent). Parts in
        flight return theirs when their upload ends."""
        if self._budget is not None and self._reserved:
            self._budget.release(self._reserved)
        self._reserved = 0

    def _take(self, size: int) -> bytes:
        """The first ``size`` buffered bytes, joined: the one copy of a part."""
        taken: list[bytes | memoryview] = []
        need = size
        while need:
            chunk = self._chunks[0]
            if len(chunk) <= need:
                taken.append(self._chunks.pop(0))
                need -= len(chunk)
            else:
                view = memoryview(chunk)
                taken.append(view[:need])
                self._chunks[0] = view[need:]
                need = 0
        self._buffered -= size
        return b"".join(taken)

    def _remainder(self) -> bytes:
        return b"".join(self._chunks)

    async def _ensure_started(self) -> None:
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        self.key, self.upload_id, self.container = await asyncio.shield(self._starting)

    async def _send_part(self, size: int) -> None:
        if not self.started:
            await self._ensure_started()
        while len(self._sending) >= self._window:
            await self._settle_oldest()
        if self._hashing is not None:
            await asyncio.shield(self._hashing)  # the hash takes the parts in order
        # From here to the append nothing awaits: the part leaves the buffer in the
        # same step that starts its hash and its upload.
        data = self._take(size)
        self._cut += size
        if size <= INLINE_BYTES:  # a small upload's only part: not worth a thread
            self._hashing = asyncio.get_running_loop().create_future()
            self._hashing.set_result(_hash_part(self._hasher, data))
        else:
            self._hashing = asyncio.ensure_future(asyncio.to_thread(_hash_part, self._hasher, data))
        number = self._next_number
        self._next_number += 1
        task = asyncio.create_task(
            self._store.upload_part(self.key, upload_id=self.upload_id, number=number, data=data)
        )
        reserved, self._reserved = self._reserved, 0
        if self._budget is not None and reserved:
            budget = self._budget
            task.add_done_callback(lambda _: budget.release(reserved))
        self._sending.append(_Sending(task=task, hashed=self._hashing))

    async def _settle_oldest(self) -> None:
        sending = self._sending[0]
        part = await asyncio.shield(sending.task)
        hash_state = await asyncio.shield(sending.hashed)
        if not self._sending or self._sending[0] is not sending:
            return  # settled meanwhile by the cleanup that interrupted us
        self._sending.pop(0)
        self._parts.append(part)
        await self._on_progress(self._progress(hash_state))

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
            whole=self.whole,
        )

    async def _hashed(self) -> None:
        """Waits until every part cut so far is in the hash."""
        if self._hashing is not None:
            await asyncio.shield(self._hashing)

    async def digest(self) -> str:
        """SHA-256 of every byte added so far (the remainder not yet cut included)."""
        await self._hashed()
        final = self._hasher.copy()
        remainder = self._remainder()
        if len(remainder) <= INLINE_BYTES:
            final.update(remainder)
        else:
            await asyncio.to_thread(final.update, remainder)
        return final.hexdigest()

    async def flush(self) -> list[UploadedPart]:
        """Sends the remainder as the last part and waits for every part; a file
        that never filled a part is stored whole in one request instead (one S3 call
        where a multipart upload takes three)."""
        if self._name is not None and self._starting is None and not self._parts:
            await self._put_whole(self._name())
            return list(self._parts)
        if self._buffered or (not self._parts and not self._sending):
            await self._send_part(self._buffered)
        while self._sending:
            await self._settle_oldest()
        await self._hashed()
        self.release_reservation()
        return list(self._parts)

    async def _put_whole(self, name: ObjectName) -> None:
        # Cancelled while hashing: nothing is stored and ``whole`` is still False
        # (suspend() keeps nothing; the next stream starts at byte 0). From ``whole``
        # on, the request runs as a task of its own that suspend() and discard() wait
        # for, so a delete never races the put it is meant to undo.
        self.key, self.container = name.key, name.container
        size = self._buffered
        data = self._take(size)
        self._cut += size
        if size <= INLINE_BYTES:
            self._hasher.update(data)
        else:
            await asyncio.to_thread(self._hasher.update, data)
        self.whole = True
        self._putting = asyncio.ensure_future(
            self._store.put_object(name.key, data, content_type=name.content_type)
        )
        await asyncio.shield(self._putting)
        self._parts = [UploadedPart(number=0, etag="", size=size)]
        self.release_reservation()

    async def _put_settled(self, *, cancel: bool) -> None:
        """Waits for the whole-object request, if one was started (cancelled first
        when ``cancel``: an interrupted PUT stores nothing). Its error is not ours to
        raise here: the caller is already handling a failure."""
        if self._putting is None:
            return
        if cancel:
            self._putting.cancel()
        with contextlib.suppress(BaseException):
            await self._putting

    def committed_progress(self) -> UploadProgress:
        """What is stored after ``flush()``: every part, no tail."""
        if self._buffered or self._sending:
            raise RuntimeError("flush() first: bytes are still buffered or in flight")
        return self._progress(self._hasher.state())

    async def suspend(self) -> UploadProgress | None:
        """An interrupted stream: waits for the parts in flight and keeps the tail as a
        temporary object, so the next stream resumes after the last byte received."""
        while self._sending:
            await self._settle_oldest()
        await self._hashed()
        self.release_reservation()
        if self.whole:
            # Stored whole (or being stored) but not sealed: nothing saved names the
            # object, so the next stream starts over (a new object); this one is the
            # janitor's, since a seal whose acknowledgement was lost may name it.
            await self._put_settled(cancel=False)
            return None
        if not self.started:
            if not self._buffered and self._starting is None:
                return None
            try:  # less than a part so far: start the upload just to keep the tail
                await self._ensure_started()
            except LookupError:
                return None  # the container is not known yet: nothing worth keeping
        state = self._hasher.state()
        if not self._buffered:
            return self._progress(state)
        await self._store.put_object(tail_key(self.key), self._remainder())
        progress = self._progress(state, tail_size=self._buffered)
        await self._on_progress(progress)
        return progress

    async def discard(self) -> None:
        """Stops parts in flight (and a whole-object request); the caller aborts the
        multipart upload or deletes the object."""
        await self._put_settled(cancel=True)
        if self._starting is not None and not self.started:
            with contextlib.suppress(Exception):  # learn the upload id, to abort it
                await self._ensure_started()
        for sending in self._sending:
            sending.task.cancel()
        for sending in self._sending:
            with contextlib.suppress(BaseException):
                await sending.task
        with contextlib.suppress(BaseException):
            await self._hashed()
        self._sending.clear()
        self._chunks.clear()
        self._buffered = 0
        self.release_reservation()
