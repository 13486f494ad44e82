"""Triton python-backend model (BLS): faces first, then the classifier on each face.

    frames (letterboxed, UINT8 NHWC [N, 640, 640, 3])
      -> face_yunet (a trained face detector: boxes, scores, five landmarks per face)
      -> a square crop around each face, with a margin on every side (DFDC's winning
         pipeline added about a third of the box; ``face_margin`` 0.3 here), resized
         to the classifier's 224 x 224 (bilinear)
      -> the classifier (``classifier_model``, default frame_ensemble: REFERENCE
         models, untrained) on all crops of the request, in batches
      -> per frame: the faces, each crop's fake probability, and the frame's mean

Coordinates stay in the letterboxed frame's pixels; vidscan maps them back to the
source frame (server/detection/faces.py). A crop that reaches past the frame is padded
with black. Aggregation over faces and frames is the server's (the same strategies as
for whole frames).

Outputs per frame (F = the detector's max faces per frame, padded with zeros):
  fake_probability FP32 [1]       mean over the frame's faces (0 without a face)
  face_count       INT32 [1]
  face_boxes       FP32 [F, 4]    x1, y1, x2, y2
  face_scores      FP32 [F]       detector confidence
  face_landmarks   FP32 [F, 10]   x, y of right eye, left eye, nose, mouth corners
  face_probability FP32 [F]       the classifier's fake probability of each crop
  stage_ms         FP32 [2]       this request's detector and classifier time (ms)
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

FACE_OUTPUTS = ("face_count", "face_boxes", "face_scores", "face_landmarks")


def square_crop(frame: np.ndarray, box: np.ndarray, *, margin: float, size: int) -> np.ndarray:
    """A ``size`` x ``size`` crop centred on ``box``, its side the box's larger side
    plus ``margin`` of it on each side; outside the frame is black."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin)
    side = max(side, 2.0)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    left, top = round(cx - side / 2.0), round(cy - side / 2.0)
    extent = round(side)
    height, width = frame.shape[:2]
    canvas = np.zeros((extent, extent, 3), dtype=np.uint8)
    src_x0, src_y0 = max(left, 0), max(top, 0)
    src_x1, src_y1 = min(left + extent, width), min(top + extent, height)
    if src_x1 > src_x0 and src_y1 > src_y0:
        canvas[src_y0 - top : src_y1 - top, src_x0 - left : src_x1 - left] = frame[
            src_y0:src_y1, src_x0:src_x1
        ]
    return resize_bilinear(canvas, size)


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape[:2]
    ys = (np.arange(size) + 0.5) * height / size - 0.5
    xs = (np.arange(size) + 0.5) * width / size - 0.5
    y0 = np.clip(np.floor(ys).astype(np.int64), 0, height - 1)
    x0 = np.clip(np.floor(xs).astype(np.int64), 0, width - 1)
    y1 = np.clip(y0 + 1, 0, height - 1)
    x1 = np.clip(x0 + 1, 0, width - 1)
    wy = np.clip(ys - y0, 0.0, 1.0)[:, None, None]
    wx = np.clip(xs - x0, 0.0, 1.0)[None, :, None]
    img = image.astype(np.float32)
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    out = top * (1 - wy) + bottom * wy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _infer(model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    request = pb_utils.InferenceRequest(
        model_name=model,
        requested_output_names=outputs,
        inputs=[pb_utils.Tensor(name, value) for name, value in inputs.items()],
    )
    response = request.exec()
    if response.has_error():
        raise pb_utils.TritonModelException(f"{model}: {response.error().message()}")
    return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs}


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config: dict[str, Any] = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.detector = params.get("face_detector", "face_yunet")
        self.classifier = params.get("classifier_model", "frame_ensemble")
        self.margin = float(params.get("face_margin", "0.3"))
        self.crop_size = int(params.get("classifier_input_size", "224"))
        self.classifier_batch = int(params.get("classifier_max_batch_size", "32"))
        self.max_faces = next(
            int(o["dims"][0]) for o in config["output"] if o["name"] == "face_scores"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._run(request))
            except pb_utils.TritonModelException as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses

    def _run(self, request: Any) -> Any:
        frames = pb_utils.get_input_tensor_by_name(request, "frames").as_numpy()
        started = time.perf_counter()
        found = _infer(self.detector, {"frames": frames}, list(FACE_OUTPUTS))
        detected = time.perf_counter()
        count = found["face_count"].reshape(-1).astype(np.int64)
        slots = found["face_scores"].shape[1]
        if slots > self.max_faces:
            raise pb_utils.TritonModelException(
                f"{self.detector} answers {slots} faces per frame, more than {self.max_faces}"
            )
        crops: list[np.ndarray] = []
        owners: list[tuple[int, int]] = []
        for index, frame in enumerate(frames):
            for slot in range(int(count[index])):
                box = found["face_boxes"][index, slot]
                crops.append(square_crop(frame, box, margin=self.margin, size=self.crop_size))
                owners.append((index, slot))
        n = len(frames)
        probability = np.zeros((n, self.max_faces), dtype=np.float32)
        for start in range(0, len(crops), self.classifier_batch):
            batch = np.stack(crops[start : start + self.classifier_batch])
            scores = _infer(self.classifier, {"frames": batch}, ["fake_probability"])
            for (index, slot), value in zip(
                owners[start : start + len(batch)],
                scores["fake_probability"].reshape(-1),
                strict=True,
            ):
                probability[index, slot] = float(value)
        classified = time.perf_counter()

        def padded(array: np.ndarray, tail: tuple[int, ...]) -> np.ndarray:
            out = np.zeros((n, self.max_faces, *tail), dtype=np.float32)
            out[:, :slots] = array.reshape(n, slots, *tail)
            return out

        per_frame = np.array(
            [[float(probability[i, : count[i]].mean()) if count[i] else 0.0] for i in range(n)],
            dtype=np.float32,
        )
        stage_ms = np.tile(
            np.array(
                [(detected - started) * 1000.0, (classified - detected) * 1000.0],
                dtype=np.float32,
            ),
            (n, 1),
        )
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("fake_probability", per_frame),
                pb_utils.Tensor("face_count", count.astype(np.int32).reshape(n, 1)),
                pb_utils.Tensor("face_boxes", padded(found["face_boxes"], (4,))),
                pb_utils.Tensor("face_scores", padded(found["face_scores"], ())),
                pb_utils.Tensor("face_landmarks", padded(found["face_landmarks"], (10,))),
                pb_utils.Tensor("face_probability", probability),
                pb_utils.Tensor("stage_ms", stage_ms),
            ]
        )
