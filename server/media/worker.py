"""Entry point of the isolated media worker: ``python -m server.media.worker``.

Reads one request on stdin, answers one message on stdout, exits (both typed and
strictly decoded: ``server/media/messages.py``).
Resource limits are applied before PyAV is imported, so a hostile file can at worst
kill this process; the server turns that into a clean error for one upload.
Exit codes: 0 answered (even a refusal), 3 the worker itself failed.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from pathlib import Path

from server.media.messages import (
    OPS,
    HeaderInfo,
    MessageError,
    ProbeRequest,
    Refusal,
    Request,
    SampledFrames,
    ValidateRequest,
    VideoInfo,
    decode_request,
    encode_answer,
)

Answer = HeaderInfo | VideoInfo | SampledFrames | Refusal


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


def handle(request: Request) -> Answer:
    from server.media import probe

    try:
        if isinstance(request, ProbeRequest):
            return probe.probe_header(Path(request.path))
        if isinstance(request, ValidateRequest):
            return probe.validate(Path(request.path), request.limits)
        from server.media import frames

        return frames.sample_to_file(request)
    except probe.ProbeFailure as failure:
        return Refusal(reason=failure.reason, message=failure.message)


def main() -> int:
    try:
        request, sandbox = decode_request(sys.stdin.read())
    except (MessageError, ValueError) as exc:
        print(f"media worker failed: malformed request: {exc}", file=sys.stderr)
        return 3
    _limit_resources(sandbox.memory_bytes, sandbox.cpu_seconds)
    op = next(name for name, cls in OPS.items() if isinstance(request, cls))
    _inject_fault(sandbox.fault, op)
    try:
        answer = handle(request)
    except MemoryError:
        answer = Refusal(reason="VIDEO_LIMITS_EXCEEDED", message="out of memory")
    except Exception as exc:
        print(f"media worker failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    sys.stdout.write(encode_answer(answer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
