"""Typed messages at the process boundaries: the media worker and the detection
result. Pure logic: every message round-trips, and an unknown, missing or
mistyped field is an error instead of a silently empty value."""

from __future__ import annotations

import json

import pytest
from vidscan.v1 import detection_pb2

from server.detection.result import FIELDS, from_document, to_document
from server.errors import Internal
from server.media.messages import (
    HeaderInfo,
    MediaLimits,
    MessageError,
    ProbeRequest,
    Refusal,
    SampledFrames,
    SampleRequest,
    Sandbox,
    ValidateRequest,
    VideoInfo,
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
    from_dict,
)
from server.storage.port import UploadedPart
from server.upload.progress import UploadProgress

SANDBOX = Sandbox(memory_bytes=1 << 30, cpu_seconds=61, fault="")
INFO = VideoInfo(
    container="mp4", codec="h264", width=160, height=120, fps=10.0, duration_seconds=1.0
)
SAMPLE = SampleRequest(
    path="/x.mp4",
    count=32,
    duration=1.5,
    size=224,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    layout="NHWC",
    datatype="UINT8",
    policy="cheapest",
    max_packets=10_000,
    min_frames=8,
    out="",
    shm_key="vidscan_frames_0",
    shm_bytes=32 * 224 * 224 * 3,
)


@pytest.mark.parametrize(
    "request_",
    [
        ProbeRequest(path="/x.mp4"),
        ValidateRequest(path="/x", limits=MediaLimits(1, 2.0, 3.0)),
        SAMPLE,
    ],
    ids=["probe", "validate", "sample"],
)
def test_requests_round_trip(request_: ProbeRequest | ValidateRequest | SampleRequest) -> None:
    decoded, sandbox = decode_request(encode_request(request_, SANDBOX))
    assert (decoded, sandbox) == (request_, SANDBOX)


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (HeaderInfo(codec="h264"), HeaderInfo),
        (INFO, VideoInfo),
        (
            SampledFrames(
                frames=2, times=(0.0, 0.5), decode_ms=3.5, plan="keyframes", decoded=2, nbytes=9
            ),
            SampledFrames,
        ),
    ],
)
def test_answers_round_trip(answer: object, kind: type[object]) -> None:
    assert decode_answer(encode_answer(answer), kind) == answer  # type: ignore[arg-type]
    refusal = Refusal(reason="VIDEO_UNDECODABLE", message="no")
    assert decode_answer(encode_answer(refusal), kind) == refusal


def test_unknown_missing_and_mistyped_fields_are_errors() -> None:
    good = {
        "container": "mp4",
        "codec": "h264",
        "width": 1,
        "height": 1,
        "fps": 1.0,
        "duration_seconds": 1,
    }
    assert from_dict(VideoInfo, good).duration_seconds == 1.0  # an int is a fine float
    with pytest.raises(MessageError, match="unknown"):
        from_dict(VideoInfo, {**good, "durration_seconds": 1.0})
    with pytest.raises(MessageError, match="missing"):
        from_dict(VideoInfo, {k: v for k, v in good.items() if k != "codec"})
    with pytest.raises(MessageError, match="expected int"):
        from_dict(VideoInfo, {**good, "width": "1"})
    with pytest.raises(MessageError, match="expected int"):
        from_dict(VideoInfo, {**good, "width": True})
    with pytest.raises(MessageError):
        decode_request(json.dumps({"op": "transcode", "sandbox": {}, "request": {}}))
    with pytest.raises(MessageError):
        decode_answer(json.dumps({"ok": True, "info": {}}), HeaderInfo)


def test_a_sealed_progress_keeps_its_video_info_typed() -> None:
    progress = UploadProgress(
        video_id="v",
        key="k",
        upload_id="u",
        container="mp4",
        parts=(UploadedPart(number=1, etag='"e"', size=10),),
        hash_state=b"\x01",
    ).seal(file_hash="ab" * 32, info=INFO)
    restored = UploadProgress.from_json(progress.to_json())
    assert restored == progress
    assert restored is not None and restored.info == INFO


def test_detection_results_are_read_back_strictly() -> None:
    message = detection_pb2.Detection(
        is_fake=False,
        confidence=0.25,
        threshold=0.5,
        model_name="m",
        model_version="1",
        reference_model=True,
        disclaimer="reference model",
        frames_analyzed=2,
        frame_scores=[0.25, 0.25],
        aggregation="mean",
        decode_ms=1.0,
        inference_ms=2.0,
    )
    document = to_document(message)
    assert set(document) == FIELDS  # every field written out, defaults too
    assert from_document(document) == message
    with pytest.raises(Internal, match="malformed"):
        from_document({**document, "is_fkae": True})
    with pytest.raises(Internal, match="lacks"):
        from_document({k: v for k, v in document.items() if k != "disclaimer"})


def test_detection_results_stored_before_frame_times_still_read() -> None:
    message = detection_pb2.Detection(model_name="m", frame_times=[0.0, 8.3], frame_policy="x")
    document = to_document(message)
    assert from_document(document).frame_times == [0.0, 8.3]
    older = {k: v for k, v in document.items() if k not in ("frame_times", "frame_policy")}
    assert from_document(older).frame_policy == ""
