"""The upload progress bar the CLI draws on stderr."""

from __future__ import annotations

import time
from typing import TextIO

from vidscan_client.errors import VidscanError

__all__ = ["ProgressBar"]


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """A plain-text progress bar on ``stream``: bytes, rate and ETA, redrawn in place
    at most ``max_rate`` times a second. When ``stream`` is not a terminal only a final
    line is written."""

    WIDTH = 24

    def __init__(
        self, stream: TextIO, *, label: str, max_rate: float = 5.0, tty: bool | None = None
    ) -> None:
        self._stream = stream
        self._label = label
        self._tty = stream.isatty() if tty is None else tty
        self._interval = 1.0 / max_rate
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._sent = 0
        self._total = 0
        # The rate is measured from the start of the current attempt.
        self._attempt_start = self._started
        self._attempt_offset = 0
        self._updated = self._started
        self._width = 0
        self._retries = 0

    def update(self, sent: int, total: int) -> None:
        now = time.monotonic()
        if sent < self._sent or self._total == 0:
            self._attempt_start, self._attempt_offset = now, sent
        self._sent, self._total, self._updated = sent, total, now
        if self._tty and (now - self._last_draw >= self._interval or sent >= total):
            self._last_draw = now
            self._draw(self._line(now))

    def retrying(self, attempt: int, error: VidscanError, delay: float) -> None:
        self._retries = attempt
        self._write_line(
            f"{self._label}: {error.reason or error.code.name}: {error.message}; "
            f"resuming in {delay:.1f} s (retry {attempt})"
        )

    def _line(self, now: float) -> str:
        total = max(self._total, 1)
        fraction = min(1.0, self._sent / total)
        filled = int(fraction * self.WIDTH)
        elapsed = max(now - self._attempt_start, 1e-6)
        rate = (self._sent - self._attempt_offset) / elapsed
        eta = _duration((self._total - self._sent) / rate) if rate > 0 else "--:--"
        bar = "#" * filled + "." * (self.WIDTH - filled)
        return (
            f"{self._label} [{bar}] {fraction * 100:3.0f}% "
            f"{_human(self._sent)} / {_human(self._total)}  {_human(rate)}/s  ETA {eta}"
        )

    def _draw(self, line: str) -> None:
        padding = " " * max(0, self._width - len(line))
        self._width = len(line)
        self._stream.write(f"\r{line}{padding}")
        self._stream.flush()

    def _write_line(self, line: str) -> None:
        if self._tty and self._width:
            self._stream.write("\n")
            self._width = 0
        self._stream.write(line + "\n")
        self._stream.flush()

    def finish(self, *, ok: bool) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        if ok:
            retries = f" after {self._retries} retr{'y' if self._retries == 1 else 'ies'}"
            line = (
                f"{self._label}: sent {_human(self._total)} in {elapsed:.1f} s "
                f"({_human(self._total / elapsed)}/s)"
                f"{retries if self._retries else ''}"
            )
        elif self._total:
            line = f"{self._label}: stopped at {_human(self._sent)} / {_human(self._total)}"
        else:
            return  # nothing was sent: the error says it all
        if self._tty and self._width:
            # The bar as of the last byte sent, not diluted by the server's processing.
            self._draw(self._line(self._updated))
        self._write_line(line)
