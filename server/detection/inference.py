"""What a detector answers for one analysis's frames (the ``Detector`` port's result)."""

from __future__ import annotations

from dataclasses import dataclass

from server.detection.faces import FaceTensors


@dataclass(frozen=True)
class Inference:
    scores: list[float]  # the model's per-frame output, one value per frame sent
    faces: FaceTensors | None = None  # a face model's faces (contract.faces), else None
