"""Real photos (from the installed scikit-image wheel's data files, read with PyAV;
skimage itself is never imported) made into videos for the face tests."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

Box = tuple[float, float, float, float]  # x1, y1, x2, y2

# The face in skimage/data/astronaut.png (512 x 512), measured once by eye on a 20-px
# grid drawn over the photo (enlarged 3x): cheeks at eye level (x 182, 267), the
# hairline on the forehead (y 75) and the chin (y 177). Not the detector's answer.
ASTRONAUT_FACE: Box = (182.0, 75.0, 267.0, 177.0)


def photo(name: str) -> np.ndarray:
    """skimage/data/<name>.png as RGB uint8 [H, W, 3]."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-image is not installed (make venv installs it, --no-deps)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.png"
    with av.open(str(path)) as container:
        image: np.ndarray = next(container.decode(video=0)).to_ndarray(format="rgb24")
    return image


def resized(image: np.ndarray, scale: float) -> np.ndarray:
    height, width = image.shape[:2]
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    out: np.ndarray = frame.reformat(
        width=round(width * scale), height=round(height * scale), format="rgb24"
    ).to_ndarray()
    return out


@dataclass(frozen=True)
class Placement:
    """Where a photo lands in one frame: scaled by ``scale``, top-left at (x, y)."""

    scale: float
    x: int
    y: int

    def box(self, box: Box) -> Box:
        x1, y1, x2, y2 = box
        s = self.scale
        return (x1 * s + self.x, y1 * s + self.y, x2 * s + self.x, y2 * s + self.y)


def compose(
    size: tuple[int, int],
    layers: Sequence[tuple[np.ndarray, Placement]],
    *,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """The photos pasted onto a grey canvas (or a copy of ``background``)."""
    width, height = size
    canvas = (
        np.full((height, width, 3), 96, dtype=np.uint8)
        if background is None
        else background[:height, :width].copy()
    )
    for image, where in layers:
        part = resized(image, where.scale)
        h = min(part.shape[0], height - where.y)
        w = min(part.shape[1], width - where.x)
        canvas[where.y : where.y + h, where.x : where.x + w] = part[:h, :w]
    return canvas


def write_video(
    path: Path,
    *,
    size: tuple[int, int],
    frames: int,
    draw: Callable[[int], np.ndarray],
    fps: int = 5,
) -> Path:
    """An H.264 MP4 of ``frames`` frames, frame i drawn by ``draw(i)``."""
    width, height = size
    with av.open(str(path), mode="w", format="mp4") as out:
        stream = out.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        stream.time_base = Fraction(1, fps)
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(draw(index), format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def iou(a: Box, b: Box) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area > 0 else 0.0
