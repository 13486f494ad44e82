"""A local spool file per upload: PyAV needs a seekable file, and memory must stay
bounded, so the bytes go to disk while they also go to object storage."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


class SpoolFile:
    def __init__(self, *, directory: Path, suffix: str = ".upload") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, suffix=suffix)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=0)

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def reopen(self) -> None:
        """Starts the file over (a resumed upload fetches the whole object)."""
        self.close()
        self._file = self.path.open("wb", buffering=0)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
