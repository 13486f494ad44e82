"""Entry point of the isolated media worker: ``python -m server.media.worker``.

Reads one JSON request on stdin, answers one JSON object on stdout, exits.
Resource limits are applied before PyAV is imported, so a hostile file can at worst
kill this process; the server turns that into a clean error for one upload.
Exit codes: 0 answered (even a refusal), 3 the worker itself failed.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any


def _limit_resources(memory_bytes: int, cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _inject_fault(fault: str, op: str) -> None:
    """Fault injection for the isolation tests (VIDSCAN_MEDIA_FAULT_INJECTION):
    "crash" or "hang", optionally limited to one operation ("crash:sample_frames")."""
    fault, _, only = fault.partition(":")
    if only and only != op:
        return
    if fault == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if fault == "hang":
        signal.pause()


def handle(request: dict[str, Any]) -> dict[str, Any]:
    from server.media import probe

    path = Path(request["path"])
    try:
        if request["op"] == "probe_header":
            return {"ok": True, "info": probe.probe_header(path)}
        if request["op"] == "validate":
            limits = probe.Limits(**request["limits"])
            return {"ok": True, "info": probe.validate(path, limits).as_dict()}
        if request["op"] == "sample_frames":
            from server.media import frames

            return {"ok": True, "info": frames.sample_to_file(request)}
    except probe.ProbeFailure as failure:
        return {"ok": False, "reason": failure.reason, "message": failure.message}
    raise ValueError(f"unknown op {request['op']!r}")


def main() -> int:
    request = json.loads(sys.stdin.read())
    _limit_resources(int(request["memory_bytes"]), int(request["cpu_seconds"]))
    _inject_fault(str(request.get("fault", "")), str(request["op"]))
    try:
        answer = handle(request)
    except MemoryError:
        answer = {"ok": False, "reason": "VIDEO_LIMITS_EXCEEDED", "message": "out of memory"}
    except Exception as exc:
        print(f"media worker failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
