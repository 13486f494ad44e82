"""The UploadTrailer, the gRPC side of "form fields in any order": header fields sent
on the finish_write message are what the video is recorded with (the trailer wins
over the header), checked as the header's are, and refused only on that message.
Against the real in-process server on PostgreSQL, Redis and MinIO; the REST side is
in test_gateway.py (form order)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import Database, Running, StartServer
from google.protobuf import struct_pb2
from support.leftovers import leftovers, nothing_left
from support.rpc import details, header
from vidscan.v1 import upload_pb2, upload_pb2_grpc

from server.errors import Reason, reason_name
from server.storage.s3 import S3ObjectStore

CHUNK = 256 * 1024


def trailer(**fields: Any) -> upload_pb2.UploadTrailer:
    metadata = fields.pop("metadata", None)
    message = upload_pb2.UploadTrailer(**fields)
    if metadata is not None:
        struct = struct_pb2.Struct()
        struct.update(metadata)
        message.metadata.CopyFrom(struct)
    return message


def messages(
    session_id: str,
    data: bytes,
    *,
    last: upload_pb2.UploadTrailer | None,
    **header_fields: Any,
) -> list[upload_pb2.UploadVideoRequest]:
    out = [header(session_id, **header_fields)]
    out += [
        upload_pb2.UploadVideoRequest(chunk=data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)
    ]
    out.append(upload_pb2.UploadVideoRequest(finish_write=True, trailer=last))
    return out


async def send(
    running: Running, user: str, requests: Iterable[upload_pb2.UploadVideoRequest]
) -> upload_pb2.UploadResult:
    """One UploadVideo call with the sync API (it reports the server's status even
    when the server ends the call mid-stream, see support/rpc.py)."""
    metadata = running.client(user).metadata

    def call() -> upload_pb2.UploadResult:
        with grpc.insecure_channel(running.target) as channel:
            stub = upload_pb2_grpc.UploadServiceStub(channel)  # type: ignore[no-untyped-call]
            return stub.UploadVideo(iter(requests), metadata=metadata).result  # type: ignore[no-any-return]

    return await asyncio.to_thread(call)


async def refused(
    running: Running, user: str, requests: Iterable[upload_pb2.UploadVideoRequest]
) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        await send(running, user, requests)
    return caught.value


def new_user(tag: str) -> str:
    return f"trailer-{tag}-{uuid.uuid4().hex[:10]}"


async def test_the_trailer_is_what_the_video_is_recorded_with(
    server: Running, videos: dict[str, bytes], db: Database
) -> None:
    user = new_user("wins")
    client = server.client(user)
    session = await client.new_session()
    late = trailer(filename="late.mp4", content_type="video/x-late", metadata={"late": True})
    result = await send(
        server,
        user,
        messages(
            session.session_id,
            videos["mp4"],
            last=late,
            filename="early.mp4",
            content_type="video/mp4",
            metadata={"early": 1},
        ),
    )
    assert (result.filename, dict(result.metadata)) == ("late.mp4", {"late": True})
    video = await client.video(result.video_id)
    assert (video.filename, dict(video.metadata)) == ("late.mp4", {"late": True})
    content_type = await db.scalar(
        "select content_type from videos where id = :v", v=result.video_id
    )
    assert content_type == "video/x-late"


async def test_fields_the_trailer_leaves_out_keep_the_headers(
    server: Running, videos: dict[str, bytes], db: Database
) -> None:
    user = new_user("partial")
    client = server.client(user)
    session = await client.new_session()
    result = await send(
        server,
        user,
        messages(
            session.session_id,
            videos["webm"],
            last=trailer(metadata={"late": "only"}),
            filename="early.webm",
            content_type="video/webm",
            metadata={"early": 1},
        ),
    )
    assert (result.filename, dict(result.metadata)) == ("early.webm", {"late": "only"})
    content_type = await db.scalar(
        "select content_type from videos where id = :v", v=result.video_id
    )
    assert content_type == "video/webm"


async def test_an_oversized_trailer_is_refused_like_the_header_and_leaves_nothing(
    server: Running, videos: dict[str, bytes], s3: S3ObjectStore, db: Database
) -> None:
    limit = server.settings.max_metadata_bytes
    big = {"k": "x" * (limit + 1)}
    answers = {}
    for where in ("header", "trailer"):
        user = new_user(f"big-{where}")
        session = await server.client(user).new_session()
        requests = (
            messages(session.session_id, videos["mp4"], last=None, metadata=big)
            if where == "header"
            else messages(session.session_id, videos["mp4"], last=trailer(metadata=big))
        )
        info = details(await refused(server, user, requests))
        answers[where] = (info.code, info.reason, info.metadata)
        assert await leftovers(user, s3, db) == nothing_left(server)
    assert (
        answers["header"]
        == answers["trailer"]
        == (
            grpc.StatusCode.INVALID_ARGUMENT,
            reason_name(Reason.METADATA_TOO_LARGE),
            {"max_metadata_bytes": str(limit)},
        )
    )


async def test_trailer_refusals(server: Running, videos: dict[str, bytes]) -> None:
    user = new_user("refusals")
    client = server.client(user)

    session = await client.new_session()
    long_name = trailer(filename="x" * 1025)
    info = details(
        await refused(server, user, messages(session.session_id, videos["mp4"], last=long_name))
    )
    assert (info.reason, info.field_violations) == (
        reason_name(Reason.INVALID_FIELD),
        ["trailer.filename"],
    )

    # Only the finish_write message may carry one: refused when it arrives.
    session = await client.new_session()
    early = [
        header(session.session_id, filename="clip.mp4"),
        upload_pb2.UploadVideoRequest(chunk=videos["mp4"], trailer=trailer(filename="a.mp4")),
        upload_pb2.UploadVideoRequest(finish_write=True),
    ]
    info = details(await refused(server, user, early))
    assert (info.reason, info.field_violations) == (reason_name(Reason.INVALID_FIELD), ["trailer"])


async def test_a_sealed_session_is_finished_by_finish_write_alone_with_a_trailer(
    start_server: StartServer, videos: dict[str, bytes], tmp_path: Path
) -> None:
    """The first stream is cut off once every byte is stored and sealed; the stream
    that finishes the session sends no bytes, only finish_write and a trailer."""
    gate = tmp_path / "gate"
    running = await start_server(fault_points=f"sealed=wait:{gate}")
    user = new_user("sealed")
    client = running.client(user)
    session = await client.new_session()
    data = videos["mp4"]
    stub = upload_pb2_grpc.UploadServiceStub(running.channel)  # type: ignore[no-untyped-call]
    call = stub.UploadVideo(
        iter(messages(session.session_id, data, last=None, filename="early.mp4")),
        metadata=client.metadata,
    )
    reached = gate.with_name(gate.name + ".reached")
    deadline = time.monotonic() + 30
    while not reached.exists():
        assert time.monotonic() < deadline, "the upload never reached the seal"
        await asyncio.sleep(0.05)
    call.cancel()
    gate.touch()
    status = await client.status(session.session_id)
    assert status.session.committed_bytes == len(data)

    finish = [
        header(session.session_id, filename="early.mp4", write_offset=len(data)),
        upload_pb2.UploadVideoRequest(
            finish_write=True, trailer=trailer(filename="late.mp4", metadata={"late": 1})
        ),
    ]
    deadline = time.monotonic() + 30
    while True:  # the cut-off stream may still hold the session for a moment
        try:
            result = await send(running, user, finish)
            break
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.ABORTED, error
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    assert result.file_size == len(data)
    assert (result.filename, dict(result.metadata)) == ("late.mp4", {"late": 1})
    video = await client.video(result.video_id)
    assert (video.filename, dict(video.metadata)) == ("late.mp4", {"late": 1})
