"""Face crops made exactly one way, from the model's crop policy, for training and serving alike.

Why one function: a detector sees a face box; the model was trained on squares of side
``scale * max(w, h)`` around that box (shifted by ``shift_y``), resized to ``size``. If serving cropped
even slightly differently from training, scores would drift silently. Training-data extraction
(`deepfake faces`, training/) and the pipeline both call :func:`crop_face`.
"""

from __future__ import annotations

import cv2
import numpy as np

from deepfake.contracts.metadata import CropPolicy


def square_box(box: np.ndarray, policy: CropPolicy) -> np.ndarray:
    """The square [x1, y1, x2, y2] (float) the policy cuts around a face ``box``; may exceed the frame."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        raise ValueError(f"face box must have positive size, got {list(box)}")
    side = policy.scale * max(w, h)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + policy.shift_y * h
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dtype=np.float32)


def crop_face(rgb: np.ndarray, box: np.ndarray, policy: CropPolicy) -> np.ndarray:
    """A ``policy.size`` square uint8 RGB crop around ``box`` from the full-resolution frame ``rgb``.

    Parts of the square outside the frame are black (zero), so a face at the border keeps its scale and
    position inside the crop instead of being stretched.
    """
    height, width = rgb.shape[:2]
    sx1, sy1, sx2, sy2 = square_box(box, policy)
    side = max(1, int(round(sx2 - sx1)))
    left, top = int(round(sx1)), int(round(sy1))
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    fx1, fy1 = max(left, 0), max(top, 0)
    fx2, fy2 = min(left + side, width), min(top + side, height)
    if fx2 > fx1 and fy2 > fy1:
        canvas[fy1 - top : fy2 - top, fx1 - left : fx2 - left] = rgb[fy1:fy2, fx1:fx2]
    size = policy.size
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(canvas, (size, size), interpolation=interpolation)
