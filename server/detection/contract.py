"""The I/O contract of a frame classifier, read from Triton (never hard-coded).

Each model's config.pbtxt carries its contract in ``parameters`` (see
models/README.md); ``ModelContract.from_triton`` reads it together with the
config's max_batch_size and the served version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.errors import Internal, Reason

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
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    max_batch_size: int
    reference_model: bool
    note: str

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
                size=size,
                mean=(mean[0], mean[1], mean[2]),
                std=(std[0], std[1], std[2]),
                max_batch_size=int(config.get("max_batch_size", 1)) or 1,
                reference_model=params.get("reference_model", "false").lower() == "true",
                note=params.get("reference_model_note", ""),
            )
        except (KeyError, ValueError, IndexError) as exc:
            raise Internal(
                Reason.DETECTOR_ERROR, f"model {name} does not declare the frames contract"
            ) from exc
        if contract.layout not in ("NCHW", "NHWC"):
            raise Internal(Reason.DETECTOR_ERROR, f"model {name}: unknown layout {contract.layout}")
        return contract

    @property
    def disclaimer(self) -> str:
        return REFERENCE_DISCLAIMER if self.reference_model else ""
