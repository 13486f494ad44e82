"""Entry point of the isolated media worker: ``python -m server.media.worker``.

Two modes, one message format (typed and strictly decoded: ``server/media/messages.py``):

- one-shot (no arguments): reads one request on stdin, answers one message on
  stdout, exits. Kept for ``scripts/dockercheck.sh`` and for debugging by hand.
- ``--serve``: a warm pool worker (``server/media/pool.py``). It applies its limits,
  imports PyAV once, writes ``READY`` and then answers one request line with one
  answer line until stdin closes (the pool retires it after N jobs).

Resource limits are applied before PyAV is imported, so a hostile file can at worst
kill this process; the server turns that into a clean error for one upload.
RLIMIT_CPU counts the whole life of a process, so a pool worker gets a lifetime hard
limit (``--cpu-budget-seconds``: start-up plus N jobs at their per-job limit) and,
before each job, a soft limit of the CPU it has used so far plus that job's
``Sandbox.cpu_seconds``: every job has the same CPU allowance as a fresh process,
and SIGXCPU kills the worker mid-job exactly as it did before the pool.
Exit codes: 0 answered (even a refusal) or stdin closed, 3 the worker itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import math
import os
import resource
import signal
import sys
from pathlib import Path
from typing import BinaryIO

from server.media.messages import (
    OPS,
    HeaderInfo,
    MessageError,
    ProbeRequest,
    Refusal,
    Request,
    SampledFrames,
    Sandbox,
    ValidateRequest,
    VideoInfo,
    decode_request,
    encode_answer,
)

Answer = HeaderInfo | VideoInfo | SampledFrames | Refusal
# The line a pool worker writes once PyAV is imported and it can take jobs.
READY = b"vidscan-media-worker ready\n"
WORKER_FAILED = 3
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _limit_resources(memory_bytes: int, cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _limit_job(sandbox: Sandbox) -> None:
    """This job's CPU allowance on top of what the process has used (see above)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = math.ceil(usage.ru_utime + usage.ru_stime)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + sandbox.cpu_seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    if resource.getrlimit(resource.RLIMIT_AS)[0] != sandbox.memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (sandbox.memory_bytes, sandbox.memory_bytes))


def _inject_fault(fault: str, op: str, path: str) -> None:
    """Fault injection for the isolation tests (VIDSCAN_MEDIA_FAULT_INJECTION):
    "crash" or "hang", optionally limited to one operation ("crash:sample_frames")
    and/or to files that contain a marker ("crash@HOSTILE", "hang:validate@HOSTILE"),
    so that hostile and valid uploads can run side by side."""
    spec, _, marker = fault.partition("@")
    fault, _, only = spec.partition(":")
    if only and only != op:
        return
    if marker and marker.encode() not in Path(path).read_bytes():
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


def answer(request: Request, sandbox: Sandbox) -> str | None:
    """The encoded answer, or None after reporting the worker's own failure."""
    op = next(name for name, cls in OPS.items() if isinstance(request, cls))
    if sandbox.fault:
        _inject_fault(sandbox.fault, op, request.path)
    try:
        result = handle(request)
    except MemoryError:
        result = Refusal(reason="VIDEO_LIMITS_EXCEEDED", message="out of memory")
    except Exception as exc:
        print(f"media worker failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    return encode_answer(result)


def main() -> int:
    try:
        request, sandbox = decode_request(sys.stdin.read())
    except (MessageError, ValueError) as exc:
        print(f"media worker failed: malformed request: {exc}", file=sys.stderr)
        return WORKER_FAILED
    _limit_resources(sandbox.memory_bytes, sandbox.cpu_seconds)
    encoded = answer(request, sandbox)
    if encoded is None:
        return WORKER_FAILED
    sys.stdout.write(encoded)
    return 0


def _die_with_parent() -> None:
    """SIGKILL this worker when the server process dies, even mid-decode (Linux
    PR_SET_PDEATHSIG); a worker whose parent is already gone leaves at once."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        raise SystemExit(0)


def serve(*, memory_bytes: int, cpu_budget_seconds: int) -> int:
    _die_with_parent()
    # Answers go to a private copy of stdout; fd 1 becomes stderr, so that nothing a
    # C library prints can corrupt the line protocol.
    out: BinaryIO = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_budget_seconds, cpu_budget_seconds))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    from server.media import frames, probe  # noqa: F401  (PyAV, once per worker)

    out.write(READY)
    for line in sys.stdin.buffer:
        try:
            request, sandbox = decode_request(line)
            _limit_job(sandbox)
        except (MessageError, ValueError) as exc:
            print(f"media worker failed: malformed request: {exc}", file=sys.stderr)
            return WORKER_FAILED
        encoded = answer(request, sandbox)
        if encoded is None:
            return WORKER_FAILED
        out.write(encoded.encode() + b"\n")
    return 0


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.media.worker")
    parser.add_argument("--serve", action="store_true", help="answer requests until EOF")
    parser.add_argument("--memory-bytes", type=int, default=0)
    parser.add_argument("--cpu-budget-seconds", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.serve:
        return main()
    if args.memory_bytes <= 0 or args.cpu_budget_seconds <= 0:
        parser.error("--serve needs --memory-bytes and --cpu-budget-seconds")
    return serve(memory_bytes=args.memory_bytes, cpu_budget_seconds=args.cpu_budget_seconds)


if __name__ == "__main__":
    raise SystemExit(cli())
