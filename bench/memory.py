"""Scenario 2: peak resident memory of the server process and of the gateway.

One large upload, then many concurrent ones, over gRPC (server alone) and over REST
(gateway in front). Peaks come from PeakRss: VmHWM reset per run plus VmRSS sampled
every 50 ms. The media worker children (PyAV) are separate processes, not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx

from bench.common import (
    MIB,
    Env,
    PeakRss,
    Section,
    file_chunks,
    gateway,
    grpc_upload,
    padded_video,
    rest_upload,
    rss_bytes,
    small_clip,
    vidscan,
)

RUNS = 3
CONCURRENT = 50
CHUNK = 256 * 1024


def run(env: Env) -> Section:
    big = 64 * MIB if env.quick else 1024 * MIB
    each = 2 * MIB if env.quick else 50 * MIB
    big_path, each_path = padded_video(big), padded_video(each)
    section = Section("Memory: peak RSS of the server and the gateway (MiB)")
    one = f"1 x {big // MIB} MiB"
    many = f"{CONCURRENT} x {each // MIB} MiB concurrent"
    shared = f"{many}, one shared connection"

    def peaks(pids: dict[str, int], upload: Callable[[], None]) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {name: [] for name in pids}
        for _ in range(RUNS):
            meters = {name: PeakRss(pid) for name, pid in pids.items()}
            for meter in meters.values():
                meter.__enter__()
            try:
                upload()
            finally:
                for meter in meters.values():
                    meter.__exit__(None, None, None)
            for name, meter in meters.items():
                found[name].append(meter.peak / MIB)
            env.empty_bucket()
        return found

    failures: list[str] = []

    def concurrently(task: Callable[[], None]) -> None:
        with ThreadPoolExecutor(CONCURRENT) as pool:
            for future in [pool.submit(task) for _ in range(CONCURRENT)]:
                try:
                    future.result()
                except Exception as exc:  # counted and reported, the peak still stands
                    failures.append(f"{type(exc).__name__}: {str(exc)[:160]}")

    idle: dict[str, float] = {}

    def case(label: str, big_upload: bool, rest: bool, one_connection: bool = False) -> None:
        """A fresh server (and gateway) per case: CPython keeps freed memory, so an
        earlier case's high-water mark would otherwise carry into the next."""
        path, size = (big_path, big) if big_upload else (each_path, each)
        # One server process: RSS is sampled for the pid that serves (with several,
        # that pid would be the supervisor, which holds no upload).
        with vidscan(env, "memory", processes=1) as server:
            if not rest:
                channel = grpc.insecure_channel(server.target) if one_connection else None

                def upload() -> None:
                    chunks = file_chunks(path, CHUNK)
                    grpc_upload(server, chunks, channel=channel, timeout=300)

                upload_all = upload if big_upload else (lambda: concurrently(upload))
                grpc_upload(server, iter([small_clip()]))  # warm up: imports, pools, DB
                idle[label] = rss_bytes(server.pid) / MIB
                found = peaks({"server": server.pid}, upload_all)
                section.add(f"server, gRPC {label}", "MiB", found["server"])
                if channel is not None:
                    channel.close()
                return
            limits = httpx.Limits(max_connections=CONCURRENT + 4)
            with (
                gateway(env, server) as gw,
                httpx.Client(base_url=gw.base_url, timeout=300, limits=limits) as http,
            ):

                def upload() -> None:
                    response = rest_upload(http, server, file_chunks(path, CHUNK), size)
                    assert response.status_code == 201, response.text

                upload_all = upload if big_upload else (lambda: concurrently(upload))
                rest_upload(http, server, iter([small_clip()]))  # warm up
                idle[f"gateway {label}"] = rss_bytes(gw.pid) / MIB
                found = peaks({"gateway": gw.pid, "server": server.pid}, upload_all)
                section.add(f"gateway, REST {label}", "MiB", found["gateway"])
                section.add(f"server behind the gateway, REST {label}", "MiB", found["server"])

    case(one, big_upload=True, rest=False)
    case(many, big_upload=False, rest=False)
    case(shared, big_upload=False, rest=False, one_connection=True)
    case(one, big_upload=True, rest=True)
    case(many, big_upload=False, rest=True)
    section.add("server idle (after one small upload)", "MiB", [idle[one], idle[many]])
    section.add(
        "gateway idle (after one small upload)",
        "MiB",
        [idle[f"gateway {one}"], idle[f"gateway {many}"]],
    )

    med = section.median
    section.ratios = {
        "server: growth per concurrent gRPC upload, MiB": (med(f"server, gRPC {many}") - idle[many])
        / CONCURRENT,
        "server: growth per concurrent gRPC upload, one shared connection, MiB": (
            med(f"server, gRPC {shared}") - idle[shared]
        )
        / CONCURRENT,
        "server: growth for the one large gRPC upload, MiB": med(f"server, gRPC {one}") - idle[one],
        "gateway: growth per concurrent REST upload, MiB": (
            med(f"gateway, REST {many}") - idle[f"gateway {many}"]
        )
        / CONCURRENT,
        "gateway: growth for the one large REST upload, MiB": med(f"gateway, REST {one}")
        - idle[f"gateway {one}"],
    }
    if failures:
        section.notes.append(
            f"{len(failures)} of {3 * RUNS * CONCURRENT} concurrent uploads failed, first: "
            f"{failures[0]}"
        )
    section.extra["failures"] = failures
    section.notes += [
        "Each case runs on a fresh server (and gateway); its runs follow each other on it. "
        f"Growth per concurrent upload = (median peak with {CONCURRENT} uploads - idle) / "
        f"{CONCURRENT}. Clients send {CHUNK // 1024} KiB chunks/writes; each gRPC client has "
        "its own channel and TCP connection (the 'one shared connection' case: all 50 "
        "streams on one channel, as one client process uploading in parallel gets by "
        "default); the REST clients use one httpx pool (a "
        "connection each), and the gateway multiplexes its gRPC streams on one connection.",
        "The server's part window bounds buffered data per upload at "
        "part_size x (parts_in_flight + 1) = 8 MiB x 3 = 24 MiB in the worst case, plus "
        "gRPC's flow-control window.",
    ]
    return section
