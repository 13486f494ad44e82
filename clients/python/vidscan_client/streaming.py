"""One UploadVideo stream and what can stop it: the request messages (the header at
the resume offset, the file in chunks, finish_write) read lazily from the file, and
``Abandon``, through which another thread stops an upload.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2

from vidscan_client.protos import upload_pb2

__all__ = ["Abandon", "Abandoned", "Attempt", "ProgressCallback", "Stream", "sha256", "struct"]

ProgressCallback = Callable[[int, int], None]
"""``on_progress(sent_bytes, total_bytes)``."""


class Abandon:
    """Lets another thread abandon an upload (the asyncio client, when its task is
    cancelled): the stream in flight is cancelled, no retry follows, and the session
    keeps what it committed for a later resume."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._callbacks: list[Callable[[], object]] = []

    def set(self) -> None:
        with self._lock:
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def is_set(self) -> bool:
        return self._event.is_set()

    def sleep(self, seconds: float) -> None:
        if self._event.wait(seconds):
            raise Abandoned

    def on_set(self, callback: Callable[[], object]) -> None:
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()


class Abandoned(Exception):
    """The upload was abandoned through its ``Abandon``."""


class Attempt:
    """One UploadVideo stream.

    ``error`` keeps an exception raised while producing request messages (reading the
    file, the progress callback): gRPC would turn it into a bare UNKNOWN, so the stream
    is ended without finish_write instead (the server keeps nothing) and the error is
    re-raised once the call is over. ``over`` is set when the call has ended: gRPC's
    request thread of a failed call may still pull one more message, and must then
    neither read on nor report progress over the next attempt's.
    """

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.over = False


class Stream:
    """The request messages of one attempt: the header at ``offset``, the file from
    there in chunks, then finish_write."""

    def __init__(
        self,
        header: upload_pb2.UploadHeader,
        path: Path,
        offset: int,
        total: int,
        chunk_size: int,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.header = upload_pb2.UploadHeader()
        self.header.CopyFrom(header)
        self.header.write_offset = offset
        self.path, self.offset, self.total = path, offset, total
        self.chunk_size, self.on_progress = chunk_size, on_progress

    def requests(self, attempt: Attempt) -> Iterator[upload_pb2.UploadVideoRequest]:
        """Any error ends the stream early without finish_write, so the server keeps
        nothing of it. Each attempt reads through its own file handle."""
        path, total = self.path, self.total

        def report(sent: int) -> None:
            if self.on_progress is not None and not attempt.over:
                self.on_progress(sent, total)

        try:
            yield upload_pb2.UploadVideoRequest(header=self.header)
            with path.open("rb") as source:
                source.seek(self.offset)
                sent = self.offset
                report(sent)
                while sent < total and not attempt.over:
                    data = source.read(min(self.chunk_size, total - sent))
                    if not data:
                        raise OSError(f"{path}: the file shrank while it was sent ({sent} bytes)")
                    yield upload_pb2.UploadVideoRequest(chunk=data)
                    sent += len(data)
                    report(sent)
                if attempt.over:
                    return
                if source.read(1):
                    raise OSError(f"{path}: the file grew while it was sent (beyond {total} bytes)")
        except Exception as error:
            attempt.error = error
            return
        yield upload_pb2.UploadVideoRequest(finish_write=True)


def sha256(path: Path, chunk_size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message
