"""From per-frame fake probabilities to one video score.

``mean``: the plain average. ``confident``: the strategy the DFDC (Deepfake Detection
Challenge) winners used — when a clear share of frames is confidently fake, average
only those (a short manipulated segment should not be diluted by clean frames); when
nearly all frames are confidently real, average those; otherwise the plain mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

FAKE_CONFIDENT = 0.8
REAL_CONFIDENT = 0.2
# "A clear share": more than 40 % of the frames and more than 11 of them.
FAKE_SHARE = 0.4
FAKE_MIN_FRAMES = 11
REAL_SHARE = 0.9

STRATEGIES = ("mean", "confident")


def mean(scores: Sequence[float]) -> float:
    return fmean(scores) if scores else 0.0


def confident(scores: Sequence[float]) -> float:
    if not scores:
        return 0.0
    fakes = [s for s in scores if s > FAKE_CONFIDENT]
    if len(fakes) > FAKE_SHARE * len(scores) and len(fakes) > FAKE_MIN_FRAMES:
        return fmean(fakes)
    reals = [s for s in scores if s < REAL_CONFIDENT]
    if len(reals) > REAL_SHARE * len(scores):
        return fmean(reals)
    return fmean(scores)


def aggregate(scores: Sequence[float], *, strategy: str) -> float:
    if strategy == "confident":
        return confident(scores)
    return mean(scores)
