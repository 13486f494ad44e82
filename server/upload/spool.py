"""A local spool file per upload: PyAV needs a seekable file, and memory must stay
bounded, so the bytes go to disk while they also go to object storage."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from server.storage.oserrors import map_os_errors


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

    def write(self, data: bytes) -> None:
        with map_os_errors("write the spool file"):
            self._file.write(data)

    def reopen(self) -> None:
        """Starts the file over (a resumed upload fetches the whole object)."""
        self.close()
        with map_os_errors("reopen the spool file"):
            self._file = self.path.open("wb", buffering=0)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
