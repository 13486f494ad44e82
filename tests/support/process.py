"""Runs vidscan as a real process (for signals, crashes and multi-replica tests)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from server.config import Settings

_LISTENING = re.compile(r"vidscan listening on [\d.]+:(\d+)")
_METRICS = re.compile(r"vidscan metrics on http://[\d.]+:(\d+)/metrics")


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes ``load_settings()`` return ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDSCAN_")}
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        alias = field.validation_alias
        key = (
            alias.choices[0]  # type: ignore[union-attr]
            if alias is not None
            else f"VIDSCAN_{name.upper()}"
        )
        env[str(key)] = str(value)
    env.update(extra)
    return env


class ServerProcess:
    def __init__(
        self, settings: Settings, *, log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        """``env`` adds variables that are not settings (``OTEL_*``)."""
        self.log_path = log_path
        self._log = log_path.open("w")
        self.metrics_port: int | None = None  # when VIDSCAN_METRICS_LISTEN is set
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve"],
            env=settings_env(settings, VIDSCAN_GRPC_LISTEN="127.0.0.1:0", **(env or {})),
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.port = self._wait_for_port()
        self._drain = threading.Thread(target=self._pump, daemon=True)
        self._drain.start()

    def _wait_for_port(self, timeout: float = 60.0) -> int:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                break
            metrics = _METRICS.search(line)
            if metrics:
                self.metrics_port = int(metrics.group(1))
            match = _LISTENING.search(line)
            if match:
                return int(match.group(1))
        raise RuntimeError(f"vidscan did not start:\n{self.log_path.read_text()[-3000:]}")

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.process.kill()

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()
