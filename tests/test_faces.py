"""Faces first: the trained face detector (face_yunet, YuNet from OpenCV Zoo) in front
of the classifier, judged on real photos (scikit-image's data files) made into videos,
through the whole service on a real tritonserver.

The face region of astronaut.png was measured by eye (support/photos.py), not taken
from the detector; a face counts as found when its box overlaps that region, moved and
scaled as the video moves the photo, with IoU >= 0.5.
"""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import Running
from support.gateway import Gateway, start_gateway
from support.photos import ASTRONAUT_FACE, Placement, compose, iou, photo, write_video
from vidscan.v1 import detection_pb2, upload_pb2

from server.detection.faces import FaceTensors, faces_in_source

FPS = 5
FACE_MODEL = "face_ensemble"


def pan(index: int) -> Placement:
    """The astronaut grows from 0.7x to 1.15x while moving right and down."""
    return Placement(scale=0.7 + 0.05 * index, x=60 + 50 * index, y=20 + 4 * index)


def frame_of(time_seconds: float) -> int:
    return round(time_seconds * FPS)


async def upload(server: Running, path: Path) -> upload_pb2.UploadResult:
    client = server.client(f"faces-{uuid.uuid4().hex[:8]}")
    return await client.upload(path.read_bytes(), model=FACE_MODEL, filename=path.name)


@pytest.fixture
async def gateway(detecting_server: Running, tmp_path: Path) -> AsyncIterator[Gateway]:
    started = await asyncio.to_thread(
        start_gateway,
        upstream=detecting_server.target,
        max_upload_bytes=detecting_server.settings.max_upload_bytes,
        workdir=tmp_path,
    )
    yield started
    await asyncio.to_thread(started.stop)


async def test_one_face_is_found_in_every_frame_where_the_photo_has_it(
    detecting_server: Running, tmp_path: Path
) -> None:
    astronaut = photo("astronaut")
    video = write_video(
        tmp_path / "astronaut.mp4",
        size=(1280, 720),
        frames=10,
        fps=FPS,
        draw=lambda i: compose((1280, 720), [(astronaut, pan(i))]),
    )
    result = await upload(detecting_server, video)
    detection = result.detection_result
    assert detection.outcome == detection_pb2.DETECTION_OUTCOME_JUDGED
    assert detection.face_detector == "face_yunet"
    assert detection.frames_analyzed == len(detection.faces) == 10
    assert detection.frames_with_faces == 10
    assert detection.faces_analyzed == 10
    assert len(detection.frame_scores) == 10  # one score per face
    assert detection.face_margin == pytest.approx(0.3)
    assert detection.face_detection_ms > 0 and detection.face_classification_ms > 0
    for frame in detection.faces:
        (face,) = frame.faces
        index = frame_of(frame.time_seconds)
        assert frame.time_seconds == pytest.approx(detection.frame_times[frame.frame_index])
        want = pan(index).box(ASTRONAUT_FACE)
        got = (face.box.x1, face.box.y1, face.box.x2, face.box.y2)
        assert iou(got, want) >= 0.5, (index, got, want)
        assert 0.6 <= face.detector_score <= 1.0
        assert len(face.landmarks) == 5
        # the eyes (landmarks 0 and 1) are inside the face box, above the mouth (3, 4)
        eyes, mouth = face.landmarks[:2], face.landmarks[3:]
        for point in face.landmarks:
            assert got[0] <= point.x <= got[2] and got[1] <= point.y <= got[3]
        assert max(p.y for p in eyes) < min(p.y for p in mouth)
        assert 0.0 <= face.fake_probability <= 1.0
    # The verdict is over the faces, and says its classifier is a reference model.
    assert result.HasField("is_fake") and result.HasField("confidence_score")
    assert detection.reference_model
    assert "face detector (face_yunet)" in detection.disclaimer
    assert "reference model" in detection.disclaimer
    scores = [f.fake_probability for frame in detection.faces for f in frame.faces]
    np.testing.assert_allclose(detection.frame_scores, scores, atol=1e-6)


async def test_no_face_means_no_verdict(
    detecting_server: Running, gateway: Gateway, tmp_path: Path
) -> None:
    """A cat and a cup of coffee: analysed, stored, NO_FACE_DETECTED, nothing judged --
    in the gRPC answer, GetAnalysis and the REST JSON."""
    cat, coffee = photo("chelsea"), photo("coffee")
    video = write_video(
        tmp_path / "no-face.mp4",
        size=(640, 480),
        frames=8,
        fps=FPS,
        draw=lambda i: compose(
            (640, 480), [((cat, coffee)[i % 2], Placement(scale=1.0, x=10 * i, y=20))]
        ),
    )
    user = f"faces-none-{uuid.uuid4().hex[:8]}"
    client = detecting_server.client(user)
    result = await client.upload(video.read_bytes(), filename="no-face.mp4")  # the default
    assert result.upload_status == upload_pb2.UPLOAD_STATUS_ANALYZED
    detection = result.detection_result
    assert detection.model_name == FACE_MODEL
    assert detection.outcome == detection_pb2.DETECTION_OUTCOME_NO_FACE_DETECTED
    assert "no face was found in any of the 8 analysed frames" in detection.outcome_reason
    assert not result.HasField("is_fake") and not result.HasField("confidence_score")
    assert (detection.frames_with_faces, detection.faces_analyzed) == (0, 0)
    assert len(detection.faces) == 8 and all(not f.faces for f in detection.faces)
    assert list(detection.frame_scores) == []
    analysis = await client.analysis(result.analysis_id)
    assert analysis.detection.outcome == detection_pb2.DETECTION_OUTCOME_NO_FACE_DETECTED

    ((key, value),) = client.metadata
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http:
        rest = (await http.get(f"/v1/analyses/{result.analysis_id}", headers={key: value})).json()
        assert rest["status"] == "analyzed"
        assert rest["detection"]["outcome"] == "no_face_detected"
        assert rest["detection"]["faces_analyzed"] == 0
        status = await http.get(
            f"/v1/dashboard/upload/{result.video_id}/result", headers={key: value}
        )
        assert status.status_code in (400, 404)  # a video id is not a session id


async def test_two_faces_side_by_side_are_two_faces(
    detecting_server: Running, tmp_path: Path
) -> None:
    astronaut = photo("astronaut")
    left, right = Placement(1.0, 40, 100), Placement(1.0, 640, 100)
    video = write_video(
        tmp_path / "two.mp4",
        size=(1280, 720),
        frames=5,
        fps=FPS,
        draw=lambda i: compose((1280, 720), [(astronaut, left), (astronaut, right)]),
    )
    result = await upload(detecting_server, video)
    detection = result.detection_result
    assert detection.outcome == detection_pb2.DETECTION_OUTCOME_JUDGED
    assert detection.faces_analyzed == 10 and detection.frames_with_faces == 5
    for frame in detection.faces:
        assert len(frame.faces) == 2
        boxes = sorted((f.box.x1, f.box.y1, f.box.x2, f.box.y2) for f in frame.faces)
        assert iou(boxes[0], left.box(ASTRONAUT_FACE)) >= 0.5, boxes
        assert iou(boxes[1], right.box(ASTRONAUT_FACE)) >= 0.5, boxes


async def test_whole_frame_models_stay_selectable(
    detecting_server: Running, tmp_path: Path
) -> None:
    astronaut = photo("astronaut")
    video = write_video(
        tmp_path / "whole.mp4",
        size=(640, 480),
        frames=5,
        fps=FPS,
        draw=lambda i: compose((640, 480), [(astronaut, Placement(0.8, 20 * i, 10))]),
    )
    client = detecting_server.client(f"faces-whole-{uuid.uuid4().hex[:8]}")
    result = await client.upload(video.read_bytes(), model="frame_ensemble", filename="w.mp4")
    detection = result.detection_result
    assert detection.outcome == detection_pb2.DETECTION_OUTCOME_JUDGED
    assert detection.face_detector == "" and list(detection.faces) == []
    assert len(detection.frame_scores) == detection.frames_analyzed == 5


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    decode = _yunet_decode()
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=np.float32)
    scores = np.array([0.7, 0.9, 0.8], dtype=np.float32)
    assert decode.nms(boxes, scores, threshold=0.3) == [1, 2]
    assert decode.nms(boxes, scores, threshold=0.9) == [1, 2, 0]


def test_faces_map_back_from_the_letterbox_to_source_pixels() -> None:
    # A 1280x720 frame letterboxed into 640: scale 0.5, no offset.
    tensors = FaceTensors(
        count=np.array([1, 0]),
        boxes=np.array([[[100, 50, 150, 120]], [[0, 0, 0, 0]]], dtype=np.float64),
        scores=np.array([[0.9], [0.0]]),
        landmarks=np.array([[[110, 70] * 5], [[0, 0] * 5]], dtype=np.float64),
        probability=np.array([[0.25], [0.0]]),
        detection_ms=1.0,
        classification_ms=2.0,
    )
    found = faces_in_source(tensors, input_size=640, width=1280, height=720, times=[0.0, 0.2])
    assert found.probabilities == [0.25] and found.frames_with_faces == 1
    (face,) = found.frames[0].faces
    assert (face.box.x1, face.box.y1, face.box.x2, face.box.y2) == (200, 100, 300, 240)
    assert (face.landmarks[0].x, face.landmarks[0].y) == (220, 140)
    assert list(found.frames[1].faces) == [] and found.frames[1].time_seconds == 0.2


def _yunet_decode() -> Any:
    path = Path(__file__).resolve().parents[1] / "models" / "face_yunet" / "1" / "yunet_decode.py"
    spec = importlib.util.spec_from_file_location("yunet_decode", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
