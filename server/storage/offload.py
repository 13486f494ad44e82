"""An ObjectStore decorator that runs another store on an I/O thread of its own.

Profiled on one 1 GiB upload (bench/README.md), a fifth of the event loop's time
went to the S3 client: botocore building and SigV4-signing each request (a SHA-256
of every part's payload over plain HTTP), aiohttp writing the body. On the one
event loop thread that carries every gRPC stream, that work is serial with
receiving chunks, while the machine's other core idles. Here the wrapped store --
its aiobotocore client, connection pool and all -- lives on a second event loop in
a daemon thread; each call is handed over with ``run_coroutine_threadsafe`` and
awaited on the caller's loop. hashlib and socket writes release the GIL, so the
two loops overlap for the heavy part of each request.

One concern only (buildbarn-style): error translation stays in the wrapped
adapter's map; exceptions cross the thread unchanged.

Cancellation keeps the single-loop meaning: when the caller is cancelled, the call
on the I/O loop is cancelled too, and the caller does not resume before that call
has unwound (so a cleanup that follows never races a part still being sent).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from server.storage.port import InventoriedStore, PendingMultipart, StoredObject, UploadedPart

T = TypeVar("T")

# How long a cancelled caller waits for its call to unwind on the I/O loop. The
# wrapped client's own timeouts bound it; this only guards against a wedged loop.
UNWIND_SECONDS = 30.0


class IoLoop:
    """An asyncio event loop running forever on a daemon thread."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs ``coro`` on the I/O loop and awaits its result here."""
        caller = asyncio.get_running_loop()
        finished = asyncio.Event()

        async def tracked() -> T:
            try:
                return await coro
            finally:
                with contextlib.suppress(RuntimeError):  # the caller's loop is closed
                    caller.call_soon_threadsafe(finished.set)

        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            tracked(), self._loop
        )
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(finished.wait()), UNWIND_SECONDS)
            raise

    def close(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


class IoThreadStore:
    """``InventoriedStore`` whose every call runs on an :class:`IoLoop`."""

    def __init__(self, inner: InventoriedStore, io: IoLoop) -> None:
        self._inner = inner
        self._io = io

    @classmethod
    async def open(
        cls, opener: Callable[[], Awaitable[InventoriedStore]], *, name: str = "vidscan-s3-io"
    ) -> IoThreadStore:
        """Starts the I/O loop and opens the wrapped store *on it* (an aiobotocore
        client belongs to the loop it was created on)."""
        io = IoLoop(name)

        async def build() -> InventoriedStore:
            return await opener()

        try:
            inner = await io.call(build())
        except BaseException:
            io.close()
            raise
        return cls(inner, io)

    @property
    def bucket(self) -> str:
        return self._inner.bucket

    def object_uri(self, key: str) -> str:
        return self._inner.object_uri(key)

    async def create_multipart(self, key: str, *, content_type: str) -> str:
        return await self._io.call(self._inner.create_multipart(key, content_type=content_type))

    async def upload_part(
        self, key: str, *, upload_id: str, number: int, data: bytes
    ) -> UploadedPart:
        return await self._io.call(
            self._inner.upload_part(key, upload_id=upload_id, number=number, data=data)
        )

    async def complete_multipart(
        self, key: str, *, upload_id: str, parts: list[UploadedPart]
    ) -> None:
        await self._io.call(self._inner.complete_multipart(key, upload_id=upload_id, parts=parts))

    async def abort_multipart(self, key: str, *, upload_id: str) -> None:
        await self._io.call(self._inner.abort_multipart(key, upload_id=upload_id))

    async def put_object(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> None:
        await self._io.call(self._inner.put_object(key, data, content_type=content_type))

    async def delete_object(self, key: str) -> None:
        await self._io.call(self._inner.delete_object(key))

    async def object_size(self, key: str) -> int | None:
        return await self._io.call(self._inner.object_size(key))

    async def read_range(self, key: str, *, start: int, length: int) -> bytes:
        return await self._io.call(self._inner.read_range(key, start=start, length=length))

    async def list_multipart(self, *, prefix: str) -> list[PendingMultipart]:
        return await self._io.call(self._inner.list_multipart(prefix=prefix))

    async def list_keys(self, *, prefix: str) -> list[str]:
        return await self._io.call(self._inner.list_keys(prefix=prefix))

    async def list_objects(self, *, prefix: str) -> list[StoredObject]:
        return await self._io.call(self._inner.list_objects(prefix=prefix))

    async def ping(self) -> None:
        await self._io.call(self._inner.ping())

    async def close(self) -> None:
        try:
            await self._io.call(self._inner.close())
        finally:
            self._io.close()
