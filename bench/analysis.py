"""Scenario 5: last byte to verdict for long 1080p clips, next to decoding them whole.

Both regimes of the frame planner (``server/media/frame_plan.py``): the first clip has
x264's default 8.3 s GOPs (8 keyframes for 32 frames: keyframes plus the frames right
after them), the second 2 s GOPs with B-frames (30 keyframes: keyframes, plus two
frames decoded right after a keyframe). These two run the whole-frame model
(``frame_ensemble``, as the issue 11 baseline did). A third clip, a real portrait
(scikit-image's astronaut.png, panned) with the same GOPs as the first, runs the
default faces-first model (``face_ensemble``: YuNet, then the classifier on each face
crop), with its inference split into face detection and classification. The server
samples ``analysis_frames`` (32) frames on a real Triton; the UploadResult carries
decode_ms, inference_ms (and the face split), the frame times and the plan taken. In
the same run the bench decodes every frame of the same file with PyAV, for scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import tritonclient.grpc as triton_grpc
from support.photos import Placement, compose, photo
from support.triton import start_triton
from vidscan.v1 import upload_pb2

from bench.common import CACHE, REPO, Env, Section, file_chunks, grpc_upload, vidscan

RUNS = 3
FPS = 30
FRAME_BYTES_UINT8 = 224 * 224 * 3  # vidscan.frames.v2: UINT8 NHWC
FRAME_BYTES_FP32 = 4 * FRAME_BYTES_UINT8  # vidscan.frames.v1: FP32 NCHW


@dataclass(frozen=True)
class Clip:
    label: str
    name: str
    options: dict[str, str]
    about: str
    model: str = "frame_ensemble"
    portrait: bool = False  # the astronaut panned over the texture (faces), else texture


CLIPS = (
    Clip("long GOPs", "clip-1080p-{seconds}s.mp4", {}, "x264 default GOPs (keyint 250, 8.3 s)"),
    Clip(
        "2 s GOPs + B-frames",
        "clip-1080p-{seconds}s-gop2s-bframes.mp4",
        {"x264-params": "keyint=60:min-keyint=60:scenecut=0:bframes=2:b-adapt=0"},
        "keyframe every 2 s (keyint 60), 2 B-frames between references",
    ),
    Clip(
        "portrait, faces first",
        "clip-1080p-{seconds}s-portrait.mp4",
        {},
        "x264 default GOPs; astronaut.png at 1.2x panning across a scrolling texture",
        model="face_ensemble",
        portrait=True,
    ),
)


def clip(seconds: int, spec: Clip = CLIPS[0]) -> Path:
    """A 1080p H.264 clip (ultrafast, crf 30) of a scrolling texture, cached.

    The test suite's gradient compresses to ~1 MB a minute and decodes unrealistically
    fast; a moving texture gives ~12 Mbit/s, closer to real footage.
    """
    path = CACHE / spec.name.format(seconds=seconds)
    if path.is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    width, height = 1920, 1080
    rng = np.random.default_rng(7)
    texture = rng.integers(48, 208, (height // 16 + 32, width // 16 + 32, 3), dtype=np.uint8)
    texture = texture.repeat(16, 0).repeat(16, 1)
    tmp = path.with_suffix(".tmp")
    with av.open(str(tmp), mode="w", format="mp4") as out:
        stream = out.add_stream("h264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "30", **spec.options}
        stream.time_base = Fraction(1, FPS)
        face = photo("astronaut") if spec.portrait else None
        for index in range(seconds * FPS):
            dx, dy = (index * 3) % 256, index % 256
            image = np.ascontiguousarray(texture[dy : dy + height, dx : dx + width])
            if face is not None:
                where = Placement(1.2, 100 + (index * 2) % 1100, 200)
                image = compose((width, height), [(face, where)], background=image)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.rename(path)
    return path


def index_facts(path: Path) -> tuple[int, int, bool]:
    """(packets, keyframes, B-frames present) from the packet index alone."""
    with av.open(str(path)) as container:
        packets = [
            (p.pts, p.is_keyframe) for p in container.demux(container.streams.video[0]) if p.size
        ]
    pts = [p for p, _ in packets]
    return len(packets), sum(1 for _, key in packets if key), pts != sorted(pts)


def decode_all(path: Path) -> tuple[float, int]:
    """Every frame decoded with PyAV (threads on, as the server's sampler): ms, frames."""
    started = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = sum(1 for _ in container.decode(stream))
    return (time.perf_counter() - started) * 1000, frames


def run(env: Env) -> Section:
    seconds = 10 if env.quick else 60
    began = time.perf_counter()
    paths = [clip(seconds, spec) for spec in CLIPS]
    made = time.perf_counter() - began
    section = Section(f"Analysis latency: two {seconds} s 1080p H.264 clips")
    triton = start_triton(model_repository=REPO / "models", workdir=env.workdir / "triton")
    try:
        with triton_grpc.InferenceServerClient(triton.grpc_url) as client:
            section.extra["triton_version"] = str(client.get_server_metadata().version)
        with vidscan(
            env,
            "analysis",
            triton_url=triton.grpc_url,
            analysis_workers=0,  # the inline attempt does it; no queue worker races it
            analysis_wait_seconds=600,
            media_timeout_seconds=600,
            analysis_lease_seconds=900,
        ) as server:
            server.wait_serving("vidscan.detector")
            frames = server.settings.analysis_frames
            model = server.settings.default_model
            policy = server.settings.frame_policy
            shared = server.settings.triton_shm
            for spec, path in zip(CLIPS, paths, strict=True):
                rows: dict[str, list[float]] = {}
                for _ in range(RUNS):
                    last: list[float] = []
                    result = grpc_upload(
                        server,
                        file_chunks(path, 256 * 1024),
                        on_last=lambda last=last: last.append(time.perf_counter()),  # type: ignore[misc]
                        model=spec.model,
                    )
                    verdict = time.perf_counter() - last[0]
                    assert result.upload_status == upload_pb2.UPLOAD_STATUS_ANALYZED, result
                    detection = result.detection_result
                    for name, value in {
                        "last byte to verdict, at the client": verdict * 1000,
                        "processing_time (server: stored to verdict)": result.processing_time
                        * 1000,
                        "decode_ms (sampling frames, media worker)": detection.decode_ms,
                        "inference_ms (Triton)": detection.inference_ms,
                    }.items():
                        rows.setdefault(name, []).append(value)
                    if detection.face_detector:
                        for name, value in {
                            "face_detection_ms (YuNet, in inference_ms)": (
                                detection.face_detection_ms
                            ),
                            "face_classification_ms (classifier on crops)": (
                                detection.face_classification_ms
                            ),
                        }.items():
                            rows.setdefault(name, []).append(value)
                        section.extra[f"{spec.label}: faces found / frames with faces"] = (
                            f"{detection.faces_analyzed} / {detection.frames_with_faces} "
                            f"of {detection.frames_analyzed}"
                        )
                    section.extra[f"{spec.label}: frames analysed / distinct"] = (
                        f"{detection.frames_analyzed} / {len(set(detection.frame_times))}"
                    )
                    section.extra[f"{spec.label}: frame plan"] = detection.frame_policy
                    section.extra[f"{spec.label}: frame times (s)"] = ", ".join(
                        f"{t:g}" for t in detection.frame_times
                    )
                    env.empty_bucket()
                for name, values in rows.items():
                    section.add(f"{spec.label}: {name}", "ms", values)
                section.extra[f"{spec.label}: model"] = detection.model_name
                if not detection.face_detector:
                    tensor = detection.frames_analyzed * FRAME_BYTES_UINT8
                    section.extra[
                        f"{spec.label}: tensor bytes per request (UINT8 / FP32 before)"
                    ] = f"{tensor} / {detection.frames_analyzed * FRAME_BYTES_FP32}"
        for spec, path in zip(CLIPS, paths, strict=True):
            full = [decode_all(path) for _ in range(RUNS)]
            name = f"{spec.label}: PyAV: decode every frame of the same file"
            section.add(name, "ms", [ms for ms, _ in full])
            section.ratios[f"{spec.label}: full decode / server decode_ms"] = section.median(
                name
            ) / section.median(f"{spec.label}: decode_ms (sampling frames, media worker)")
            packets, keyframes, b_frames = index_facts(path)
            section.notes.append(
                f"{spec.label}: {seconds} s, 1920x1080, {FPS} fps ({full[0][1]} frames, "
                f"{packets} packets, {keyframes} keyframes, B-frames: {b_frames}), H.264 "
                f"ultrafast crf 30, {spec.about}, {path.stat().st_size} bytes."
            )
    finally:
        triton.stop()
    section.notes += [
        f"Clips generated in {made:.0f} s (or reused) and cached in bench/results/tmp/.",
        f"Default model {model!r}; models per clip as labelled; Triton (CPU), {frames} "
        "frames requested, frame policy "
        f"{policy!r}, Triton shared memory {shared!r}. Client-side time runs from handing "
        "gRPC the finish_write message to the UploadResult: it adds the end of the upload "
        "(PyAV validation, completing the S3 upload, the DB row) to the analysis.",
        "decode_ms covers the media worker's whole sampling: packet index, planned "
        "decoding, resizing (224x224 RGB; letterboxed 640x640 for face models) and "
        "writing the tensor.",
    ]
    return section
