"""Scenario 6: a well-behaved user's upload latency while another user abuses the server.

Each run measures one user's sequential uploads of the small clip (CreateUploadSession,
then UploadVideo to its result, on one channel as a real client keeps it) twice: on an
idle server, then while a hostile user (a process of its own, so that it shares the
cores but not this process's GIL)

- floods CreateUploadSession from FLOODERS threads as fast as they go, ignoring the
  RetryInfo of the refusals (RATE_LIMITED, later TOO_MANY_SESSIONS);
- holds stalled UploadVideo streams (header + 20 bytes, then silence): as many as
  ``max_streams_per_user`` allows, plus EXTRA_STALLERS workers that keep asking for
  more (TOO_MANY_STREAMS); a stream the server cuts (UPLOAD_STALLED) is reopened on a
  fresh session.

The server runs with its default limits except ``stream_idle_seconds`` (STALL_SECONDS
instead of 30 s, so that stalled streams are cut and reopened within one run's abuse
phase). Each run has a fresh hostile user. Target: p99 under abuse <= 2x p99 idle.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from vidscan.v1 import upload_pb2, upload_pb2_grpc

from bench.common import REPO, Env, Section, small_clip, vidscan

RUNS = 3
STALL_SECONDS = 5.0  # stream_idle_seconds for this scenario (default 30 s)
FLOODERS = 4  # hostile CreateUploadSession threads
EXTRA_STALLERS = 4  # stalled-stream workers beyond max_streams_per_user
TARGET_RATIO = 2.0


def reason(error: grpc.RpcError) -> str:
    """ErrorInfo.reason of a refusal, else the status code's name."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    code = error.code() if isinstance(error, grpc.Call) else None
    return code.name if code is not None else type(error).__name__


def _stub(channel: grpc.Channel) -> Any:
    return upload_pb2_grpc.UploadServiceStub(channel)  # type: ignore[no-untyped-call]


# -- the hostile user (run as `python -m bench.abuse --hostile ...`) ----------------------


def hostile(
    target: str,
    token: str,
    *,
    streams: int,
    stall_seconds: float,
    flooders: int = FLOODERS,
    extra_stallers: int = EXTRA_STALLERS,
    stop: threading.Event,
) -> dict[str, Any]:
    metadata = (("authorization", f"Bearer {token}"),)
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    sessions: queue.SimpleQueue[str] = queue.SimpleQueue()

    def count(key: str) -> None:
        with lock:
            counts[key] += 1

    flood_channel = grpc.insecure_channel(target)
    stream_channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])

    def flood() -> None:
        stub, request = _stub(flood_channel), upload_pb2.CreateUploadSessionRequest()
        while not stop.is_set():
            try:
                reply = stub.CreateUploadSession(request, metadata=metadata, timeout=10)
                sessions.put(str(reply.session.session_id))
                count("CreateUploadSession OK")
            except grpc.RpcError as exc:
                count(f"CreateUploadSession {reason(exc)}")

    def stall() -> None:
        stub = _stub(stream_channel)
        while not stop.is_set():
            try:
                session = sessions.get_nowait()
            except queue.Empty:  # none from the flood: make one
                try:
                    reply = stub.CreateUploadSession(
                        upload_pb2.CreateUploadSessionRequest(), metadata=metadata, timeout=10
                    )
                    session = str(reply.session.session_id)
                    count("CreateUploadSession OK")
                except grpc.RpcError as exc:
                    count(f"CreateUploadSession {reason(exc)}")
                    stop.wait(0.1)
                    continue
            ended = threading.Event()

            def messages(session: str = session, ended: threading.Event = ended) -> Iterator[Any]:
                yield upload_pb2.UploadVideoRequest(
                    header=upload_pb2.UploadHeader(session_id=session, filename="stall.mp4")
                )
                yield upload_pb2.UploadVideoRequest(chunk=b"\0" * 20)
                while not ended.wait(0.2):  # silence until the call is over
                    pass

            call = stub.UploadVideo.future(messages(), metadata=metadata)
            count("UploadVideo opened")
            while not call.done():
                if stop.wait(0.1):
                    call.cancel()
                    break
            ended.set()
            if stop.is_set():
                break
            error = call.exception()
            why = "OK" if error is None else reason(error)
            count(f"UploadVideo {why}")
            if why == "TOO_MANY_STREAMS":
                sessions.put(session)  # unused: keep it, ask again soon
                stop.wait(0.1)

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(flooders)]
    threads += [
        threading.Thread(target=stall, daemon=True) for _ in range(streams + extra_stallers)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    # Ready in the steady state: the burst spent (refusals coming), every allowed stream
    # open, and a first wave of stalled streams cut by the server and reopened.
    while not stop.wait(0.1):
        with lock:
            refused = counts["CreateUploadSession RATE_LIMITED"]
            cut = counts["UploadVideo UPLOAD_STALLED"]
        if (
            (refused or not flooders) and cut >= streams
        ) or time.monotonic() - started > 4 * stall_seconds:
            break
    stop.wait(0.5)
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes it
    stop.set()
    seconds = time.monotonic() - started
    for thread in threads:
        thread.join(15)
    flood_channel.close()
    stream_channel.close()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu.ru_utime + cpu.ru_stime, 2),
        "counts": dict(counts),
    }


def _hostile_main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.abuse")
    parser.add_argument("--hostile", nargs=2, required=True, metavar=("TARGET", "TOKEN"))
    parser.add_argument("--streams", type=int, required=True, help="max_streams_per_user")
    parser.add_argument("--stall-seconds", type=float, required=True)
    parser.add_argument("--flooders", type=int, default=FLOODERS)
    parser.add_argument("--extra-stallers", type=int, default=EXTRA_STALLERS)
    args = parser.parse_args()
    target, token = args.hostile
    result = hostile(
        target,
        token,
        streams=args.streams,
        stall_seconds=args.stall_seconds,
        flooders=args.flooders,
        extra_stallers=args.extra_stallers,
        stop=threading.Event(),
    )
    print(json.dumps(result), flush=True)
    return 0


# -- the scenario --------------------------------------------------------------------------


def _unique(clip: bytes) -> bytes:
    """The clip plus a 26-byte `free` box of random bytes: one user's uploads all
    differ, so none is deduplicated (which would skip validation and storage)."""
    return clip + struct.pack(">I4s", 26, b"free") + os.urandom(9).hex().encode()


def _uploads(target: str, token: str, clip: bytes, count: int) -> tuple[list[float], int]:
    """Latencies (ms) of ``count`` sequential uploads, and how many failed."""
    metadata = (("authorization", f"Bearer {token}"),)
    latencies, failed = [], 0
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = _stub(ch)
        for _ in range(count):
            data = _unique(clip)
            started = time.perf_counter()
            try:
                reply = stub.CreateUploadSession(
                    upload_pb2.CreateUploadSessionRequest(), metadata=metadata, timeout=60
                )
                messages = [
                    upload_pb2.UploadVideoRequest(
                        header=upload_pb2.UploadHeader(
                            session_id=reply.session.session_id, filename="good.mp4"
                        )
                    ),
                    upload_pb2.UploadVideoRequest(chunk=data, finish_write=True),
                ]
                stub.UploadVideo(iter(messages), metadata=metadata, timeout=60)
            except grpc.RpcError as exc:
                failed += 1
                print(f"bench: abuse: good upload failed: {reason(exc)}", flush=True)
                continue
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies, failed


def _p(latencies: list[float], p: int) -> float:
    if len(latencies) < 2:
        return latencies[0] if latencies else float("nan")
    return statistics.quantiles(latencies, n=100, method="inclusive")[p - 1]


def run(env: Env) -> Section:
    uploads = 15 if env.quick else 30
    section = Section(
        f"Abuse: a good user's upload latency (ms, {uploads} sequential uploads) "
        "idle and while one user floods sessions and holds stalled streams"
    )
    clip = small_clip()
    figures: dict[str, list[float]] = {}
    hostile_runs: list[dict[str, Any]] = []
    failed_good = 0
    with vidscan(env, "abuse", stream_idle_seconds=STALL_SECONDS) as server:
        good = server.user_tokens(1, "bench-abuse-good")[0]
        limits = server.settings
        streams = str(limits.max_streams_per_user)
        _uploads(server.target, good, clip, 2)  # warm-up: connection, media workers
        for i in range(RUNS):
            idle, failed = _uploads(server.target, good, clip, uploads)
            failed_good += failed
            bad = server.user_tokens(1, f"bench-abuse-hostile-{i}")[0]
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.abuse",
                    "--hostile",
                    server.target,
                    bad,
                    f"--streams={streams}",
                    f"--stall-seconds={STALL_SECONDS}",
                    f"--flooders={FLOODERS}",
                    f"--extra-stallers={EXTRA_STALLERS}",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}"},
            )
            assert child.stdin is not None and child.stdout is not None
            try:
                if child.stdout.readline().strip() != "ready":
                    raise RuntimeError("the hostile client did not start")
                abused, failed = _uploads(server.target, good, clip, uploads)
                failed_good += failed
            finally:
                child.stdin.close()
                out = child.stdout.read()
                child.wait(60)
            hostile_runs.append(json.loads(out.strip().splitlines()[-1]))
            for label, lat in (("idle", idle), ("abuse", abused)):
                for p in (50, 99):
                    figures.setdefault(f"{label}: p{p}", []).append(_p(lat, p))
    for name, runs in figures.items():
        section.add(name, "ms", runs)
    ratio = section.median("abuse: p99") / section.median("idle: p99")
    section.ratios["p99 abuse / p99 idle (target <= 2)"] = ratio
    per_run = [a / b for a, b in zip(figures["abuse: p99"], figures["idle: p99"], strict=True)]
    keys = sorted({k for h in hostile_runs for k in h["counts"]})
    for key in keys:
        section.add(
            f"hostile: {key}", "calls", [float(h["counts"].get(key, 0)) for h in hostile_runs]
        )
    section.add("hostile: seconds active", "s", [float(h["seconds"]) for h in hostile_runs])
    section.add(
        "hostile client: cores used (CPU s / s)",
        "cores",
        [h["cpu_seconds"] / h["seconds"] for h in hostile_runs],
    )
    section.extra["hostile"] = hostile_runs
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    section.notes += [
        f"Target p99(abuse) <= {TARGET_RATIO:g} x p99(idle): {verdict} "
        f"({ratio:.2f}; per run {', '.join(f'{r:.2f}' for r in per_run)}).",
        f"Good user failures: {failed_good} (expected 0). Latency = CreateUploadSession + "
        f"UploadVideo of the {len(clip) + 26}-byte clip to its result, on one channel; "
        f"p99 of {uploads} samples is close to their maximum.",
        f"Default limits: {limits.max_sessions_per_user} sessions, "
        f"{limits.max_streams_per_user} streams per user, {limits.max_streams_per_process} "
        f"per process, creates {limits.create_session_rate:g}/s (burst "
        f"{limits.create_session_burst}), other unary {limits.unary_rate:g}/s (burst "
        f"{limits.unary_burst}); stream_idle_seconds shortened to {STALL_SECONDS:g} s "
        "(default 30) so that stalled streams are cut and reopened within a run.",
        f"Hostile user (a fresh one per run, its own process sharing the cores): "
        f"{FLOODERS} threads calling CreateUploadSession back to back, "
        f"{limits.max_streams_per_user} + {EXTRA_STALLERS} stalled-stream workers "
        "(header + 20 bytes, then silence). 'hostile: ...' figures count its calls by "
        "outcome (ErrorInfo reason) over its whole life: warm-up to the steady state (burst "
        "spent, all streams open, a first wave cut and reopened), then the measured uploads. "
        "Its own CPU is 'hostile client: cores used': on a 2-core machine the attacker's "
        "client takes cores the server would otherwise have.",
    ]
    return section


if __name__ == "__main__":
    raise SystemExit(_hostile_main())
