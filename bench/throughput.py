"""Scenario 1: one large upload into MinIO on loopback, end to end.

vidscan over gRPC (three chunk sizes; 1 MiB chunks also with unsigned payloads and
with the S3 I/O thread) and over the REST gateway, against raw aiobotocore multipart
uploads of the same file (the server's part size; 2 and 10 parts in flight; with
botocore's defaults and with no checksums and unsigned payloads: the best of the four
is the ceiling the ratios use) and tusd (S3 store on the same MinIO). Every vidscan
upload includes SHA-256, sniffing, the box walk, the spool file and PyAV validation.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from support.services import free_port

from bench.common import (
    BUCKET,
    KIB,
    MB,
    MIB,
    Env,
    Section,
    Server,
    file_chunks,
    gateway,
    go_module_version,
    go_tool,
    grpc_upload,
    padded_video,
    rest_upload,
    vidscan,
)

RUNS = 3
GRPC_CHUNKS = (64 * KIB, 256 * KIB, 1 * MIB)
TUS_PATCH = 64 * MIB  # one PATCH request per 64 MiB, each streamed in 1 MiB writes


def run(env: Env) -> Section:
    size = 64 * MIB if env.quick else 1024 * MIB
    path = padded_video(size)
    section = Section(f"Upload throughput: one {size // MIB} MiB upload into MinIO (MB/s)")

    def mbps(seconds: float) -> float:
        return size / MB / seconds

    with vidscan(env, "throughput") as server:
        part_size = server.settings.part_size
        window = server.settings.s3_parts_in_flight
        for chunk in GRPC_CHUNKS:
            section.add(
                f"vidscan gRPC, {chunk // KIB} KiB chunks",
                "MB/s",
                _grpc_runs(env, server, path, size, chunk),
            )

        with gateway(env, server) as gw, httpx.Client(base_url=gw.base_url, timeout=600) as http:

            def rest(_: int) -> float:
                started = time.perf_counter()
                response = rest_upload(http, server, file_chunks(path, MIB), size)
                elapsed = time.perf_counter() - started
                assert response.status_code == 201, response.text
                env.empty_bucket()
                return mbps(elapsed)

            section.add("vidscan REST gateway (multipart, httpx)", "MB/s", _runs(rest))

    # Parts sent with UNSIGNED-PAYLOAD (VIDSCAN_S3_PAYLOAD_SIGNING=off): over plain
    # HTTP "auto" signs them, which costs a SHA-256 pass per part on the event loop.
    # And the S3 client on an I/O thread of its own (VIDSCAN_S3_IO_THREAD, off by
    # default: measured slower on 2 cores on another day): kept to compare on each run.
    for label, overrides in (
        (
            "unsigned payloads (VIDSCAN_S3_PAYLOAD_SIGNING=off)",
            {"s3_payload_signing": "off"},
        ),
        ("S3 client on an I/O thread", {"s3_io_thread": True}),
    ):
        with vidscan(env, "throughput-variant", **overrides) as variant:
            section.add(
                f"vidscan gRPC, 1024 KiB chunks, {label}",
                "MB/s",
                _grpc_runs(env, variant, path, size, MIB),
            )

    def raw(_: int, window: int = window, lean: bool = False) -> float:
        elapsed = asyncio.run(_raw_multipart(env, path, part_size, window, lean=lean))
        env.empty_bucket()
        return mbps(elapsed)

    mib = part_size // MIB
    raw_names = []
    for in_flight, lean in ((window, False), (10, False), (window, True), (10, True)):
        name = (
            f"raw aiobotocore multipart ({mib} MiB parts, {in_flight} in flight"
            + (", no checksums, unsigned payloads" if lean else ", botocore defaults")
            + ")"
        )
        section.add(name, "MB/s", _runs(lambda i, w=in_flight, x=lean: raw(i, window=w, lean=x)))
        raw_names.append(name)
    raw_name = max(raw_names, key=section.median)

    tusd_names = []
    for tusd_part, label in (
        (part_size, f"tusd (S3 store, {mib} MiB parts, 64 MiB PATCHes)"),
        (None, "tusd (S3 store, its defaults: 50 MiB parts, 10 concurrent; 64 MiB PATCHes)"),
    ):
        with tusd(env, tusd_part) as base_url, httpx.Client(timeout=600) as http:

            def tus(_: int, base_url: str = base_url, http: httpx.Client = http) -> float:
                started = time.perf_counter()
                _tus_upload(http, base_url, path, size)
                elapsed = time.perf_counter() - started
                env.empty_bucket()
                return mbps(elapsed)

            section.add(label, "MB/s", _runs(tus))
            tusd_names.append(label)
    tusd_name = max(tusd_names, key=section.median)

    for figure in [f for f in section.figures if f.name.startswith("vidscan")]:
        section.ratios[f"{figure.name} / raw"] = section.median(figure.name) / section.median(
            raw_name
        )
        section.ratios[f"{figure.name} / tusd"] = section.median(figure.name) / section.median(
            tusd_name
        )
    section.notes += [
        f"File: a real 1 s H.264 MP4 padded with one trailing `free` box to {size} bytes "
        "(a valid video PyAV accepts); client and every server on 127.0.0.1.",
        "vidscan: time from CreateUploadSession to the UploadResult (SHA-256, sniffing, box "
        "walk, spool, S3 parts, PyAV validation, complete, DB row); no Triton, so the "
        "result comes back PROCESSING without waiting for analysis.",
        f"Ratios '/ raw' are against the best raw configuration of this run: {raw_name}; "
        f"'/ tusd' against the better tusd configuration: {tusd_name}.",
        f"Raw and tusd upload the same file to the same MinIO; tusd {_tusd_version()} runs "
        f"with -s3-part-size {part_size} (the server's part size) and with its own S3 "
        "defaults, both with its default content hashes; the tus client POSTs the "
        "creation, then PATCHes 64 MiB requests with Upload-Offset.",
    ]
    return section


def _grpc_runs(env: Env, server: Server, path: Path, size: int, chunk: int) -> list[float]:
    """MB/s of RUNS gRPC uploads of ``path`` in ``chunk``-byte messages."""

    def one(_: int) -> float:
        started = time.perf_counter()
        result = grpc_upload(server, file_chunks(path, chunk))
        elapsed = time.perf_counter() - started
        assert result.file_size == size, result
        env.empty_bucket()
        return size / MB / elapsed

    return _runs(one)


def _runs(measure: object) -> list[float]:
    return [measure(i) for i in range(RUNS)]  # type: ignore[operator]


async def _raw_multipart(
    env: Env, path: Path, part_size: int, window: int, *, lean: bool = False
) -> float:
    async with env.s3_client(lean=lean) as s3:
        started = time.perf_counter()
        key = f"raw/{os.urandom(6).hex()}.mp4"
        upload = await s3.create_multipart_upload(Bucket=BUCKET, Key=key, ContentType="video/mp4")
        upload_id = upload["UploadId"]
        in_flight: list[asyncio.Task[dict[str, object]]] = []
        parts: list[dict[str, object]] = []

        async def send(number: int, data: bytes) -> dict[str, object]:
            response = await s3.upload_part(
                Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
            return {"PartNumber": number, "ETag": response["ETag"]}

        with path.open("rb") as source:
            number = 1
            while data := source.read(part_size):
                if len(in_flight) >= window:
                    parts.append(await in_flight.pop(0))
                in_flight.append(asyncio.create_task(send(number, data)))
                number += 1
        parts += [await task for task in in_flight]
        await s3.complete_multipart_upload(
            Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        return time.perf_counter() - started


class tusd:
    """tusd on a free loopback port, storing into the bench bucket on MinIO."""

    def __init__(self, env: Env, part_size: int | None) -> None:
        """``part_size`` None: tusd's own defaults for the S3 store."""
        self.env = env
        self.part_size = part_size

    def __enter__(self) -> str:
        port = free_port()
        self.log = (self.env.workdir / "tusd.log").open("ab")
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.env.minio.access_key,
            "AWS_SECRET_ACCESS_KEY": self.env.minio.secret_key,
            "AWS_REGION": self.env.minio.region,
        }
        argv = [
            str(go_tool("tusd")),
            "-host=127.0.0.1",
            f"-port={port}",
            f"-s3-bucket={BUCKET}",
            f"-s3-endpoint={self.env.minio.endpoint_url}",
            *(
                [f"-s3-part-size={self.part_size}", f"-s3-min-part-size={self.part_size}"]
                if self.part_size is not None
                else []
            ),
            "-s3-object-prefix=tus/",
            "-verbose=false",
            "-show-greeting=false",
        ]
        self.process = subprocess.Popen(argv, env=env, stdout=self.log, stderr=self.log)
        base = f"http://127.0.0.1:{port}/files/"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.options(base, headers={"Tus-Resumable": "1.0.0"}, timeout=2)
                return base
            except httpx.HTTPError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("tusd did not start") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def _tus_upload(http: httpx.Client, base_url: str, path: Path, size: int) -> None:
    """A minimal tus 1.0 client: creation, then PATCHes that carry Upload-Offset."""
    tus = {"Tus-Resumable": "1.0.0"}
    created = http.post(base_url, headers={**tus, "Upload-Length": str(size)})
    assert created.status_code == 201, created.text
    location = str(httpx.URL(base_url).join(created.headers["Location"]))
    offset = 0
    with path.open("rb", buffering=0) as source:
        while offset < size:
            length = min(TUS_PATCH, size - offset)

            def body(length: int = length) -> Iterator[bytes]:
                left = length
                while left:
                    piece = source.read(min(MIB, left))
                    left -= len(piece)
                    yield piece

            response = http.patch(
                location,
                content=body(),
                headers={
                    **tus,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                    "Content-Length": str(length),
                },
            )
            assert response.status_code == 204, response.text
            offset = int(response.headers["Upload-Offset"])
    assert offset == size


def _tusd_version() -> str:
    return go_module_version(go_tool("tusd"))
