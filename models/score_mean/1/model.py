"""Triton python-backend model: element-wise mean of all its FP32 inputs.

Used as the combine step of the ``frame_ensemble`` ensemble: it averages the per-frame
``fake_probability`` tensors of the member classifiers (each FP32 [N, 1] in [0, 1]) into
one ``fake_probability`` [N, 1], which therefore stays in [0, 1]. Inputs are whatever the
config declares, so adding a third member only needs config changes.

Part of the REFERENCE model set: the averaged scores mean nothing.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

OUTPUT_NAME = "fake_probability"


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config: dict[str, Any] = json.loads(args["model_config"])
        self.input_names = [item["name"] for item in config["input"]]
        if not self.input_names:
            raise pb_utils.TritonModelException("score_mean needs at least one input")

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            arrays = [
                pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                for name in self.input_names
            ]
            if len({a.shape for a in arrays}) != 1:
                shapes = ", ".join(
                    f"{n}={a.shape}" for n, a in zip(self.input_names, arrays, strict=True)
                )
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"input shapes differ: {shapes}")
                    )
                )
                continue
            mean = np.mean(np.stack(arrays, axis=0), axis=0, dtype=np.float32)
            out = pb_utils.Tensor(OUTPUT_NAME, np.ascontiguousarray(mean, dtype=np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
