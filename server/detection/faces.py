"""Faces from a face model's outputs, in the video's own pixel coordinates.

A face model (``face_ensemble``, models/README.md) takes letterboxed frames (the
picture scaled by ``size / max(width, height)`` at the top-left of the square, see
``server/media/frames.py``), finds faces with a trained detector, classifies a crop of
each, and answers per frame: how many faces, their boxes, detector scores and five
landmarks in the letterboxed frame's pixels, and each crop's fake probability, padded
to a fixed number of faces per frame. Here those tensors become one record per frame
with boxes mapped back to source pixels, and the verdict is taken over the faces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from vidscan.v1 import detection_pb2

from server.errors import Internal, Reason

COUNT, BOXES, SCORES, LANDMARKS, PROBABILITY, STAGE_MS = (
    "face_count",
    "face_boxes",
    "face_scores",
    "face_landmarks",
    "face_probability",
    "stage_ms",
)
OUTPUTS = (COUNT, BOXES, SCORES, LANDMARKS, PROBABILITY, STAGE_MS)


@dataclass(frozen=True)
class FaceTensors:
    """A face model's outputs over all frames of one analysis, batches concatenated."""

    count: np.ndarray  # [N] int
    boxes: np.ndarray  # [N, F, 4] x1, y1, x2, y2 (letterboxed frame pixels)
    scores: np.ndarray  # [N, F]
    landmarks: np.ndarray  # [N, F, 10] x, y five times
    probability: np.ndarray  # [N, F]
    detection_ms: float
    classification_ms: float

    @classmethod
    def concatenate(cls, model: str, batches: Sequence[Mapping[str, np.ndarray]]) -> FaceTensors:
        try:
            joined = {name: np.concatenate([b[name] for b in batches]) for name in OUTPUTS}
            count = joined[COUNT].reshape(-1).astype(np.int64)
            frames, slots = joined[SCORES].shape
            tensors = cls(
                count=count,
                boxes=joined[BOXES].reshape(frames, slots, 4).astype(np.float64),
                scores=joined[SCORES].astype(np.float64),
                landmarks=joined[LANDMARKS].reshape(frames, slots, 10).astype(np.float64),
                probability=joined[PROBABILITY].reshape(frames, slots).astype(np.float64),
                # stage_ms is the same on every row of one request: one row per batch
                detection_ms=float(sum(float(b[STAGE_MS].reshape(-1, 2)[0, 0]) for b in batches)),
                classification_ms=float(
                    sum(float(b[STAGE_MS].reshape(-1, 2)[0, 1]) for b in batches)
                ),
            )
        except (KeyError, ValueError, IndexError) as exc:
            raise Internal(
                Reason.DETECTOR_ERROR, f"{model} answered malformed face outputs: {exc}"
            ) from exc
        if (
            len(count) != frames
            or int(count.max(initial=0)) > slots
            or int(count.min(initial=0)) < 0
        ):
            raise Internal(Reason.DETECTOR_ERROR, f"{model} answered face counts out of range")
        return tensors


@dataclass(frozen=True)
class FacesFound:
    frames: list[detection_pb2.FrameFaces]  # one per analysed frame
    probabilities: list[float]  # one per face, in frame order

    @property
    def frames_with_faces(self) -> int:
        return sum(1 for frame in self.frames if frame.faces)


def faces_in_source(
    tensors: FaceTensors,
    *,
    input_size: int,
    width: int,
    height: int,
    times: Sequence[float],
) -> FacesFound:
    """Boxes and landmarks mapped from the letterboxed ``input_size`` square back to the
    ``width`` x ``height`` source frame (one scale factor, no offset), clipped to it."""
    if width <= 0 or height <= 0:
        raise Internal(Reason.DETECTOR_ERROR, "the video has no frame size to map faces to")
    scale = input_size / max(width, height)
    frames: list[detection_pb2.FrameFaces] = []
    probabilities: list[float] = []
    for index in range(len(tensors.count)):
        found = detection_pb2.FrameFaces(
            frame_index=index, time_seconds=float(times[index]) if index < len(times) else 0.0
        )
        for slot in range(int(tensors.count[index])):
            x1, y1, x2, y2 = (float(v) / scale for v in tensors.boxes[index, slot])
            marks = tensors.landmarks[index, slot] / scale
            probability = float(tensors.probability[index, slot])
            found.faces.append(
                detection_pb2.Face(
                    box=detection_pb2.FaceBox(
                        x1=_clip(x1, width),
                        y1=_clip(y1, height),
                        x2=_clip(x2, width),
                        y2=_clip(y2, height),
                    ),
                    detector_score=round(float(tensors.scores[index, slot]), 4),
                    landmarks=[
                        detection_pb2.Point(
                            x=_clip(float(marks[2 * k]), width),
                            y=_clip(float(marks[2 * k + 1]), height),
                        )
                        for k in range(5)
                    ],
                    fake_probability=round(probability, 6),
                )
            )
            probabilities.append(probability)
        frames.append(found)
    return FacesFound(frames=frames, probabilities=probabilities)


def _clip(value: float, bound: int) -> float:
    return round(min(max(value, 0.0), float(bound)), 1)
