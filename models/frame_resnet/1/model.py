"""Triton python-backend model: run this version dir's ``model.onnx`` with onnxruntime.

REFERENCE model: the network has seeded random weights (see
models/build_reference_models.py); its scores mean nothing.

This file is identical in frame_resnet/1 and frame_cnn/1 (a python-backend model must
ship its own model.py); tests/test_triton_models.py checks that the copies agree.

Contract: input ``frames`` UINT8 NHWC [N, 224, 224, 3] RGB pixels (N <= max_batch_size;
the ONNX graph normalises them), output ``fake_probability`` FP32 [N, 1] in [0, 1].
Requests that Triton's dynamic batcher groups into one ``execute`` call are concatenated
and run as one onnxruntime batch.

Config parameters read here (all optional):
  onnx_file                  file name inside the version dir (default model.onnx)
  ort_intra_op_num_threads   onnxruntime intra-op threads (default 1)
  ort_inter_op_num_threads   onnxruntime inter-op threads (default 1)
An instance of kind KIND_GPU uses onnxruntime's CUDAExecutionProvider on its device when
the stub's environment has onnxruntime-gpu; otherwise it falls back to CPU (and logs so).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

INPUT_NAME = "frames"
OUTPUT_NAME = "fake_probability"


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config: dict[str, Any] = json.loads(args["model_config"])
        params = {
            key: value.get("string_value", "")
            for key, value in config.get("parameters", {}).items()
        }
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        onnx_path = os.path.join(version_dir, params.get("onnx_file", "model.onnx"))
        if not os.path.isfile(onnx_path):
            raise pb_utils.TritonModelException(
                f"{onnx_path} not found: run `python models/build_reference_models.py`"
            )

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("ort_intra_op_num_threads", "1"))
        options.inter_op_num_threads = int(params.get("ort_inter_op_num_threads", "1"))
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

        providers: list[Any] = ["CPUExecutionProvider"]
        logger = pb_utils.Logger
        if args.get("model_instance_kind") == "GPU":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                device_id = int(args.get("model_instance_device_id", "0"))
                providers = [("CUDAExecutionProvider", {"device_id": device_id}), *providers]
            else:
                logger.log_warn(
                    f"{args['model_name']}: KIND_GPU instance but onnxruntime has no "
                    "CUDAExecutionProvider (install onnxruntime-gpu); running on CPU"
                )

        self.session = ort.InferenceSession(onnx_path, sess_options=options, providers=providers)
        self.model_name = args["model_name"]
        logger.log_info(
            f"{self.model_name}: loaded {onnx_path} (onnxruntime {ort.__version__}, "
            f"providers {self.session.get_providers()}, "
            f"intra_op_threads {options.intra_op_num_threads})"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        batches: list[np.ndarray] = []
        owners: list[int] = []
        for index, request in enumerate(requests):
            batches.append(pb_utils.get_input_tensor_by_name(request, INPUT_NAME).as_numpy())
            owners.append(index)

        if batches:
            batch = batches[0] if len(batches) == 1 else np.concatenate(batches, axis=0)
            try:
                (probabilities,) = self.session.run(
                    [OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.uint8)}
                )
            except Exception as exc:  # surface onnxruntime failures as request errors
                error = pb_utils.TritonError(f"{self.model_name}: onnxruntime failed: {exc}")
                for index in owners:
                    responses[index] = pb_utils.InferenceResponse(error=error)
                return responses
            start = 0
            for index, frames in zip(owners, batches, strict=True):
                stop = start + frames.shape[0]
                out = pb_utils.Tensor(
                    OUTPUT_NAME, np.ascontiguousarray(probabilities[start:stop], np.float32)
                )
                responses[index] = pb_utils.InferenceResponse(output_tensors=[out])
                start = stop
        return responses

    def finalize(self) -> None:
        self.session = None
