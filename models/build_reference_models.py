#!/usr/bin/env python3
"""Build the REFERENCE frame classifiers of the vidscan Triton model repository as ONNX.

These are real convolutional networks with DETERMINISTIC, seeded random weights. They are
NOT trained deepfake detectors: their scores carry no meaning. They exist so that the whole
serving path (client -> vidscan -> Triton -> python backend -> onnxruntime) runs for real
with the same I/O contract a trained model would have.

Contract (every model, ``vidscan.frames.v2``): input ``frames`` UINT8 NHWC [N, 224, 224, 3],
RGB pixels as decoded; output ``fake_probability`` FP32 [N, 1], sigmoid, in [0, 1]. The
graph itself casts, transposes to NCHW and normalises with the ImageNet mean/std
(``x = (rgb / 255 - mean[c]) / std[c]``, folded into one Mul and one Add), so clients send
4x fewer bytes than FP32 and do no arithmetic on the pixels.

Models built (only those whose ``config.pbtxt`` exists in the target repository):

* ``frame_resnet/1/model.onnx`` -- small ResNet: 7x7/2 stem + BN + ReLU + maxpool, three
  basic residual blocks (16, 32, 64 channels; 1x1 projection shortcuts when downsampling),
  global average pool, linear head, sigmoid. ~80 k parameters.
* ``frame_cnn/1/model.onnx`` -- plain conv net: three strided 3x3/5x5 conv + ReLU layers,
  max pool, flatten, two fully-connected layers, sigmoid. ~89 k parameters.

Weights come from ``numpy.random.RandomState`` (legacy generator, whose stream numpy keeps
stable across releases) with a fixed seed per model, and the graphs are built with
``onnx.helper`` only (no torch), so the output is byte-for-byte reproducible. Files are
only rewritten when their bytes change, which makes the script idempotent and cheap
(~0.3 s). Usage::

    python models/build_reference_models.py [--model-repository DIR] [--check]

``--check`` builds in memory and exits 1 if a file is missing or differs (CI guard).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # onnxruntime >= 1.13 (CPU and GPU builds) loads IR 8 / opset 17
INPUT_NAME = "frames"
OUTPUT_NAME = "fake_probability"
FRAME_SHAPE = (224, 224, 3)  # NHWC, as decoded
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

HERE = Path(__file__).resolve().parent


class GraphBuilder:
    """Tiny helper that accumulates ONNX nodes and seeded initializers."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.RandomState(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counter = 0

    def _name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self._counter}"

    def const(self, prefix: str, array: np.ndarray) -> str:
        name = self._name(prefix)
        self.initializers.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, bias: bool = True) -> str:
        fan_in = cin * k * k
        w = self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / fan_in)  # He init
        inputs = [x, self.const("conv_w", w)]
        if bias:
            inputs.append(self.const("conv_b", self.rng.uniform(-0.05, 0.05, cout)))
        pad = k // 2
        return self.node(
            "Conv", inputs, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4
        )

    def batchnorm(self, x: str, c: int) -> str:
        scale = self.const("bn_gamma", self.rng.uniform(0.8, 1.2, c))
        shift = self.const("bn_beta", self.rng.uniform(-0.1, 0.1, c))
        mean = self.const("bn_mean", self.rng.uniform(-0.1, 0.1, c))
        var = self.const("bn_var", self.rng.uniform(0.8, 1.2, c))
        return self.node("BatchNormalization", [x, scale, shift, mean, var], epsilon=1e-5)

    def normalised_input(self) -> str:
        """UINT8 NHWC ``frames`` -> FP32 NCHW, ImageNet-normalised: the preprocessing a
        client would otherwise do, inside the graph."""
        x = self.node("Cast", [INPUT_NAME], to=TensorProto.FLOAT)
        x = self.node("Transpose", [x], perm=[0, 3, 1, 2])
        mean = np.asarray(IMAGENET_MEAN, np.float64).reshape(1, 3, 1, 1)
        std = np.asarray(IMAGENET_STD, np.float64).reshape(1, 3, 1, 1)
        x = self.node("Mul", [x, self.const("pixel_scale", 1.0 / (255.0 * std))])
        return self.node("Add", [x, self.const("pixel_shift", -mean / std)])

    def relu(self, x: str) -> str:
        return self.node("Relu", [x])

    def linear(self, x: str, fin: int, fout: int, gain: float, centered: bool = False) -> str:
        w = self.rng.standard_normal((fout, fin)) * (gain / np.sqrt(fin))
        if centered:  # zero-sum rows: a common positive offset of ReLU features cancels out
            w -= w.mean(axis=1, keepdims=True)
        b = self.rng.uniform(-0.05, 0.05, fout)
        return self.node("Gemm", [x, self.const("fc_w", w), self.const("fc_b", b)], transB=1)

    def model(self, last: str, name: str, doc: str, seed: int) -> onnx.ModelProto:
        # Name the final tensor OUTPUT_NAME by appending a cheap Identity.
        self.nodes.append(helper.make_node("Identity", [last], [OUTPUT_NAME], name="output"))
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", *FRAME_SHAPE])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 1])],
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="vidscan/models/build_reference_models.py",
            producer_version="1",
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        helper.set_model_props(
            model,
            {
                "reference_model": "true",
                "seed": str(seed),
                "input_layout": "NHWC",
                "input_datatype": "UINT8",
                "normalization": "inside the model",
                "color_order": "RGB",
                "normalization_mean": ",".join(map(str, IMAGENET_MEAN)),
                "normalization_std": ",".join(map(str, IMAGENET_STD)),
            },
        )
        onnx.checker.check_model(model, full_check=True)
        return model


def build_frame_resnet(seed: int = 1001) -> onnx.ModelProto:
    g = GraphBuilder(seed)
    x = g.relu(g.batchnorm(g.conv(g.normalised_input(), 3, 16, 7, 2, bias=False), 16))  # 112
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 56

    def basic_block(x: str, cin: int, cout: int, stride: int) -> str:
        y = g.relu(g.batchnorm(g.conv(x, cin, cout, 3, stride, bias=False), cout))
        y = g.batchnorm(g.conv(y, cout, cout, 3, 1, bias=False), cout)
        shortcut = x
        if stride != 1 or cin != cout:
            shortcut = g.batchnorm(g.conv(x, cin, cout, 1, stride, bias=False), cout)
        return g.relu(g.node("Add", [y, shortcut]))

    x = basic_block(x, 16, 16, 1)  # 56x56
    x = basic_block(x, 16, 32, 2)  # 28x28
    x = basic_block(x, 32, 64, 2)  # 14x14
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)  # [N, 64]
    x = g.node("Sigmoid", [g.linear(x, 64, 1, gain=0.25, centered=True)])
    return g.model(
        x, "frame_resnet", "REFERENCE small residual CNN (untrained, seeded weights)", seed
    )


def build_frame_cnn(seed: int = 2002) -> onnx.ModelProto:
    g = GraphBuilder(seed)
    x = g.relu(g.conv(g.normalised_input(), 3, 12, 5, 4))  # 56x56
    x = g.relu(g.conv(x, 12, 24, 3, 2))  # 28x28
    x = g.relu(g.conv(x, 24, 48, 3, 2))  # 14x14
    x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])  # 7x7
    x = g.node("Flatten", [x], axis=1)  # [N, 48*7*7]
    x = g.relu(g.linear(x, 48 * 7 * 7, 32, gain=np.sqrt(2.0)))
    x = g.node("Sigmoid", [g.linear(x, 32, 1, gain=1.0, centered=True)])
    return g.model(x, "frame_cnn", "REFERENCE plain CNN (untrained, seeded weights)", seed)


BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = {
    "frame_resnet": build_frame_resnet,
    "frame_cnn": build_frame_cnn,
}


def build(repository: Path, *, check: bool = False, quiet: bool = False) -> int:
    """Write (or with ``check``, verify) every reference model; return a process exit code."""
    status = 0
    for name, builder in BUILDERS.items():
        model_dir = repository / name
        if not (model_dir / "config.pbtxt").is_file():
            continue
        target = model_dir / "1" / "model.onnx"
        data = builder().SerializeToString(deterministic=True)
        digest = hashlib.sha256(data).hexdigest()[:16]
        current = target.read_bytes() if target.is_file() else None
        if current == data:
            state = "up to date"
        elif check:
            state = "MISSING" if current is None else "DIFFERS"
            status = 1
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(target)  # atomic: a running Triton never sees a half-written file
            state = "written"
        if not quiet:
            print(f"{target}: {state} ({len(data)} bytes, sha256 {digest})")
    # The face detector is not built but copied from an installed wheel: the same step,
    # so that every path that builds the repository (make, run.sh, tests) has it.
    face_dir = repository / "face_yunet"
    if (face_dir / "config.pbtxt").is_file():
        if check:
            if not (face_dir / "1" / "model.onnx").is_file():
                print(f"{face_dir}/1/model.onnx: MISSING (install_face_detector.py)")
                status = 1
        else:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            import install_face_detector  # beside this file (also when loaded by path)

            status = max(status, install_face_detector.install(face_dir / "1", quiet=quiet))
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=HERE)
    parser.add_argument("--check", action="store_true", help="verify only, write nothing")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    return build(args.model_repository, check=args.check, quiet=args.quiet)


if __name__ == "__main__":
    sys.exit(main())
