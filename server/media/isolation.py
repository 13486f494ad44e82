"""Runs the media worker in a child process with a wall-clock limit.

A child that crashes (signal), hangs (killed at the deadline) or answers a refusal
becomes an ``InvalidUpload`` for that one upload; a worker that cannot run at all
becomes ``Internal``. The server process itself never touches the media.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.errors import Internal, InvalidUpload, Reason

_REASONS = {r.value: r for r in Reason}


@dataclass(frozen=True)
class MediaWorkerConfig:
    timeout_seconds: float
    memory_limit_bytes: int
    max_pixels: int
    max_seconds: float
    max_fps: float
    fault_injection: str = ""


class MediaInspector:
    def __init__(self, *, config: MediaWorkerConfig) -> None:
        self._config = config

    async def probe_header(self, path: Path) -> dict[str, Any]:
        return await self._run({"op": "probe_header", "path": str(path)})

    async def validate(self, path: Path) -> dict[str, Any]:
        limits = {
            "max_pixels": self._config.max_pixels,
            "max_seconds": self._config.max_seconds,
            "max_fps": self._config.max_fps,
        }
        return await self._run({"op": "validate", "path": str(path), "limits": limits})

    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        """Runs any worker operation (used by frame sampling)."""
        return await self._run(request)

    async def _run(self, request: dict[str, Any]) -> dict[str, Any]:
        cfg = self._config
        payload = dict(request)
        payload["memory_bytes"] = cfg.memory_limit_bytes
        payload["cpu_seconds"] = int(cfg.timeout_seconds) + 1
        payload["fault"] = cfg.fault_injection
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.media.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(
                process.communicate(json.dumps(payload).encode()), cfg.timeout_seconds
            )
        except TimeoutError:
            raise InvalidUpload(
                Reason.VIDEO_UNDECODABLE,
                f"inspecting the video took longer than {cfg.timeout_seconds:g} s",
            ) from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        code = process.returncode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            raise InvalidUpload(
                Reason.VIDEO_UNDECODABLE, f"the media decoder crashed ({name}) on this file"
            )
        if code != 0:
            detail = stderr.decode(errors="replace").strip()[-300:]
            raise Internal(Reason.MEDIA_WORKER_FAILED, f"media worker failed: {detail}")
        answer: dict[str, Any] = json.loads(stdout)
        if not answer.get("ok"):
            reason = _REASONS.get(str(answer.get("reason")), Reason.VIDEO_UNDECODABLE)
            raise InvalidUpload(reason, str(answer.get("message", "invalid video")))
        info: dict[str, Any] = answer["info"]
        return info
