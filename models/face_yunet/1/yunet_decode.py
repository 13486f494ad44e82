"""YuNet's post-processing in numpy: priors, score, box and landmark decoding, NMS.

The same arithmetic as OpenCV's ``FaceDetectorYN`` for the 2023mar model
(modules/objdetect/src/face_detect.cpp): for each stride s in 8, 16, 32 and each cell
(row r, column c) of the 640/s grid,

    score = sqrt(clip(cls, 0, 1) * clip(obj, 0, 1))
    cx, cy = (c + bbox[0]) * s, (r + bbox[1]) * s
    w, h   = exp(bbox[2]) * s, exp(bbox[3]) * s
    landmark k = ((kps[2k] + c) * s, (kps[2k+1] + r) * s)

then non-maximum suppression over boxes scoring at least the threshold. Kept free of
Triton so that tests can check it on its own.
"""

from __future__ import annotations

import numpy as np

STRIDES = (8, 16, 32)


def decode(
    outputs: dict[str, np.ndarray],
    *,
    input_size: int,
    score_threshold: float,
    nms_threshold: float,
    top_k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces in one ``input_size`` square: boxes [K, 4] (x1, y1, x2, y2), scores [K],
    landmarks [K, 10], best first, at most ``top_k``."""
    boxes, scores, marks = [], [], []
    for stride in STRIDES:
        cols = rows = input_size // stride
        cls = outputs[f"cls_{stride}"].reshape(-1)
        obj = outputs[f"obj_{stride}"].reshape(-1)
        bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)
        kps = outputs[f"kps_{stride}"].reshape(-1, 10)
        score = np.sqrt(np.clip(cls, 0.0, 1.0) * np.clip(obj, 0.0, 1.0))
        keep = np.nonzero(score >= score_threshold)[0]
        if keep.size == 0:
            continue
        r, c = np.divmod(keep, cols)
        assert rows * cols == cls.size, "output size does not match the input size"
        cx = (c + bbox[keep, 0]) * stride
        cy = (r + bbox[keep, 1]) * stride
        w = np.exp(bbox[keep, 2]) * stride
        h = np.exp(bbox[keep, 3]) * stride
        boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
        scores.append(score[keep])
        k = kps[keep]
        grid = np.stack([c, r] * 5, axis=1)
        marks.append((k + grid) * stride)
    if not boxes:
        empty = np.zeros((0,), np.float32)
        return empty.reshape(0, 4), empty, empty.reshape(0, 10)
    all_boxes = np.concatenate(boxes)
    all_scores = np.concatenate(scores)
    all_marks = np.concatenate(marks)
    kept = nms(all_boxes, all_scores, threshold=nms_threshold)[:top_k]
    return (
        all_boxes[kept].astype(np.float32),
        all_scores[kept].astype(np.float32),
        all_marks[kept].astype(np.float32),
    )


def nms(boxes: np.ndarray, scores: np.ndarray, *, threshold: float) -> list[int]:
    """Indices of the boxes kept, best score first: a box is dropped when its IoU with
    a better one already kept exceeds ``threshold``."""
    order = list(np.argsort(-scores, kind="stable"))
    kept: list[int] = []
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    while order:
        best = order.pop(0)
        kept.append(int(best))
        if not order:
            break
        rest = np.asarray(order)
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = [int(i) for i, o in zip(rest, iou, strict=True) if o <= threshold]
    return kept
