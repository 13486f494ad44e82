"""Scenario 3: how much of a bad upload vidscan reads before refusing it.

The client counts the bytes its request generator has handed to gRPC (or httpx)
when the error arrives: an upper bound on what the server read, since the
transport pulls from the generator only as flow control lets it.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator

import grpc
import httpx
from support.hostile import garbage_after_ftyp

from bench.common import KIB, MIB, Env, Section, gateway, grpc_upload, rest_upload, vidscan

RUNS = 3
CHUNK = 256 * KIB
_NOISE = os.urandom(8 * MIB)  # cycled: the server cannot tell it from fresh randomness


class Counted:
    """``size`` bytes, ``head`` first then noise, counting what has been taken."""

    def __init__(self, head: bytes, size: int) -> None:
        self.head, self.size, self.sent = head, size, 0

    def __iter__(self) -> Iterator[bytes]:
        self.sent = len(self.head)  # counted when handed over, before the transport sends it
        yield self.head
        offset = 0
        while self.sent < self.size:
            piece = _NOISE[offset : offset + min(CHUNK, self.size - self.sent)]
            offset = (offset + len(piece)) % len(_NOISE)
            self.sent += len(piece)
            yield piece


def _mdat_head(size: int) -> bytes:
    """`ftyp`, then one `mdat` box that spans the rest: valid MP4 structure whose
    `moov` never comes (a camera file with the index at the end looks the same)."""
    ftyp = struct.pack(">I4s4sI4s4s", 24, b"ftyp", b"isom", 512, b"isom", b"mp41")
    return ftyp + struct.pack(">I4s", size - len(ftyp), b"mdat")


def run(env: Env) -> Section:
    size = 64 * MIB if env.quick else 500 * MIB
    section = Section(
        f"Early rejection: bytes sent before the refusal of a {size // MIB} MiB bad upload (KiB)"
    )
    variants = {
        "random bytes": b"",
        "valid `ftyp` box, then garbage": garbage_after_ftyp(64),
        "valid `ftyp` + one `mdat` box of garbage (no `moov`)": _mdat_head(size),
    }
    reasons: dict[str, str] = {}
    with vidscan(env, "rejection") as server:
        for name, head in variants.items():
            sent, seconds = [], []
            for _ in range(RUNS):
                data = Counted(head or _NOISE[:CHUNK], size)
                started = time.perf_counter()
                try:
                    grpc_upload(server, iter(data), timeout=600)
                    raise AssertionError(f"{name} was accepted")
                except grpc.RpcError as exc:
                    reasons[f"gRPC, {name}"] = f"{exc.code().name}: {exc.details()}"
                seconds.append(time.perf_counter() - started)
                sent.append(data.sent / KIB)
            section.add(f"gRPC, {name}", "KiB", sent)
            section.add(f"gRPC, {name}: time to the error", "s", seconds)
        with gateway(env, server) as gw, httpx.Client(base_url=gw.base_url, timeout=600) as http:
            for name, head in list(variants.items())[:2]:
                sent = []
                for _ in range(RUNS):
                    data = Counted(head or _NOISE[:CHUNK], size)
                    try:
                        response = rest_upload(http, server, iter(data), size)
                        reasons[f"REST, {name}"] = (
                            f"HTTP {response.status_code}: {response.text[:200]}"
                        )
                    except httpx.HTTPError as exc:  # the gateway closed while we still sent
                        reasons[f"REST, {name}"] = f"{type(exc).__name__}: {exc}"
                    sent.append(data.sent / KIB)
                section.add(f"REST gateway, {name}", "KiB", sent)
    section.extra["errors"] = reasons
    section.notes += [f"{k} -> {v}" for k, v in reasons.items()]
    section.notes += [
        f"Client chunks of {CHUNK // KIB} KiB. gRPC flow control lets a few MiB be in flight "
        "(client and server HTTP/2 windows plus socket buffers) before the server's refusal "
        "stops the stream; the REST gateway drains up to -error-drain-bytes (64 MiB) after "
        "an error so that a client still sending reads the response.",
        "The `mdat` variant is well-formed MP4 up to the end; with the index (`moov`) last, "
        "nothing can refuse it before the whole file has arrived and PyAV finds no `moov`.",
    ]
    return section
