"""The I/O contract of a frame classifier, read from Triton (never hard-coded).

Each model's config.pbtxt carries its contract in ``parameters`` (see
models/README.md); ``ModelContract.from_triton`` reads it together with the
config's max_batch_size and the served version, and checks that the declared input
(name, datatype, dims) is the one the config's ``input`` really has. The bundled
reference models take UINT8 NHWC pixels and normalise inside the graph; a model with
the older FP32 contract still works (the media worker then normalises).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.errors import Internal, Reason

DATATYPES = ("UINT8", "FP32")
_ITEM_BYTES = {"UINT8": 1, "FP32": 4}

REFERENCE_DISCLAIMER = (
    "Reference model: an untrained network with generated weights. Its scores carry "
    "no meaning and must not be used to judge whether a video is fake."
)


@dataclass(frozen=True)
class ModelContract:
    name: str
    version: str
    input_name: str
    output_name: str
    layout: str  # "NCHW" or "NHWC"
    datatype: str  # "UINT8" (pixels as decoded) or "FP32" (normalised by the client)
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    max_batch_size: int
    reference_model: bool  # the classifier's weights are untrained (see the disclaimer)
    note: str
    # "stretch" (whole-frame classifiers) or "letterbox" (aspect kept, top-left; face
    # models, whose boxes map back to source pixels by one scale factor).
    resize: str = "stretch"
    # Face models (parameter face_detector): the outputs in server/detection/faces.py
    # come with the per-frame score, and the classifier ran on face crops.
    face_detector: str = ""
    face_margin: float = 0.0

    @classmethod
    def from_triton(cls, *, name: str, config: dict[str, Any], version: str) -> ModelContract:
        params = {
            key: str(value.get("string_value", ""))
            for key, value in config.get("parameters", {}).items()
        }
        try:
            mean = tuple(float(v) for v in params["input_normalization_mean"].split(","))
            std = tuple(float(v) for v in params["input_normalization_std"].split(","))
            size = int(params["input_size"].lower().split("x")[0])
            contract = cls(
                name=name,
                version=version,
                input_name=params["input_name"],
                output_name=params["output_name"],
                layout=params["input_layout"].upper(),
                datatype=params.get("input_datatype", "FP32").upper(),
                size=size,
                mean=(mean[0], mean[1], mean[2]),
                std=(std[0], std[1], std[2]),
                max_batch_size=int(config.get("max_batch_size", 1)) or 1,
                reference_model=params.get("reference_model", "false").lower() == "true",
                note=params.get("reference_model_note", ""),
                resize=params.get("input_resize", "stretch").lower(),
                face_detector=params.get("face_detector", ""),
                face_margin=float(params.get("face_margin", "0")),
            )
        except (KeyError, ValueError, IndexError) as exc:
            raise Internal(
                Reason.DETECTOR_ERROR, f"model {name} does not declare the frames contract"
            ) from exc
        if contract.layout not in ("NCHW", "NHWC"):
            raise Internal(Reason.DETECTOR_ERROR, f"model {name}: unknown layout {contract.layout}")
        if contract.resize not in ("stretch", "letterbox"):
            raise Internal(Reason.DETECTOR_ERROR, f"model {name}: unknown resize {contract.resize}")
        if contract.datatype not in DATATYPES:
            raise Internal(
                Reason.DETECTOR_ERROR,
                f"model {name}: unsupported input datatype {contract.datatype}",
            )
        _check_input(contract, config)
        return contract

    @property
    def shape(self) -> tuple[int, int, int]:
        """One frame's dims, as the model's config declares them."""
        if self.layout == "NHWC":
            return (self.size, self.size, 3)
        return (3, self.size, self.size)

    @property
    def frame_bytes(self) -> int:
        return self.size * self.size * 3 * _ITEM_BYTES[self.datatype]

    @property
    def faces(self) -> bool:
        return bool(self.face_detector)

    @property
    def disclaimer(self) -> str:
        if not self.reference_model:
            return ""
        if self.faces:
            return (
                f"The faces were found by a trained face detector ({self.face_detector}); "
                "the classifier that scored each face is a reference model: an untrained "
                "network with generated weights. Its scores carry no meaning and must not "
                "be used to judge whether a video is fake."
            )
        return REFERENCE_DISCLAIMER


def _check_input(contract: ModelContract, config: dict[str, Any]) -> None:
    """The parameters must describe the config's real input, or frames of the wrong
    form would reach the model (and fail there, for every video)."""
    inputs = {str(i.get("name")): i for i in config.get("input", [])}
    declared = inputs.get(contract.input_name)
    if declared is None:
        if not inputs:  # an ensemble's or a config without inputs listed: nothing to check
            return
        raise Internal(
            Reason.DETECTOR_ERROR, f"model {contract.name} has no input {contract.input_name!r}"
        )
    datatype = str(declared.get("data_type", "")).removeprefix("TYPE_")
    dims = tuple(int(d) for d in declared.get("dims", []))
    if datatype != contract.datatype or dims != contract.shape:
        raise Internal(
            Reason.DETECTOR_ERROR,
            f"model {contract.name}: input {contract.input_name} is {datatype} {list(dims)}, "
            f"its parameters say {contract.datatype} {list(contract.shape)} "
            f"({contract.layout})",
        )
