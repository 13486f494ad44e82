"""A local spool file per upload: PyAV needs a seekable file, and memory must stay
bounded, so the bytes go to disk while they also go to object storage.

``append`` writes on a thread, one write in flight per file: the event loop hands
the chunk over and goes on receiving the next one while the kernel copies this one
(file writes release the GIL). Order is kept because a write starts only once the
previous one is done. Pieces up to ``inline.INLINE_BYTES`` are written on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path

from server.storage.oserrors import map_os_errors
from server.upload.inline import INLINE_BYTES


class SpoolFile:
    """A full disk or a forbidden spool directory surfaces as STORAGE_FULL /
    STORAGE_ERROR (``map_os_errors``), so the pipeline's cleanup runs as for any
    other refusal of its storage."""

    def __init__(self, *, directory: Path, suffix: str = ".upload") -> None:
        with map_os_errors("create a spool file"):
            directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=directory, suffix=suffix)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._writing: asyncio.Future[None] | None = None

    def write(self, data: bytes) -> None:
        with map_os_errors("write the spool file"):
            self._file.write(data)

    async def append(self, data: bytes) -> None:
        """Writes ``data`` after what was appended before, on a thread. A failure of
        the previous write (a full disk) is raised here or by ``drain``. A small
        piece is written at once (``inline.py``)."""
        await self.drain()
        if len(data) <= INLINE_BYTES:
            self.write(data)
            return
        self._writing = asyncio.ensure_future(asyncio.to_thread(self.write, data))

    async def drain(self) -> None:
        """Waits for the write in flight, if any."""
        if self._writing is not None:
            # Shielded: a cancelled stream must not lose track of a write that its
            # thread is still doing (remove() waits for it).
            await asyncio.shield(self._writing)
            self._writing = None

    def _remove_after(self, done: asyncio.Future[None]) -> None:
        _ignore(done)
        self.remove()

    def reopen(self) -> None:
        """Starts the file over (a resumed upload fetches the whole object)."""
        self.close()
        with map_os_errors("reopen the spool file"):
            self._file = self.path.open("wb", buffering=0)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def remove(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None and not writing.done():
            # An interrupted stream: let the thread finish its write, then remove.
            writing.add_done_callback(self._remove_after)
            return
        if writing is not None:
            _ignore(writing)
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _ignore(done: asyncio.Future[None]) -> None:
    """The outcome of a write nobody waits for any more (the upload is gone)."""
    if not done.cancelled():
        done.exception()
