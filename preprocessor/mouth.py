"""The mouth region of a face crop, for the audio-visual sync model (training/sync_model.py).

Why a fixed cut of the face crop and not landmarks at serving time: the face crop is already aligned by the
crop policy (deepfake/contracts/metadata.py CropPolicy; the shipped model: square of 1.1 x the face box,
centre shifted up 0.05 of the box, 160 px), so the mouth sits at a stable place in it, and a fixed cut costs
nothing, needs no landmark model at serving time (dlib's 68-point model may not be shipped: its training
data's licence excludes commercial use) and is the same in training and serving by construction.

Where the mouth sits was measured with dlib's 68-point landmarks (training/landmarks.py) on 500 of the
serving pipeline's crops of the dev videos with audio (84 videos, 6 random frames each; HOG found a face
in 500 of 504), as fractions of the crop side, percentiles 5/25/50/75/95:

    mouth centre x   0.406 0.482 0.525 0.558 0.582
    mouth centre y   0.674 0.727 0.751 0.769 0.794
    mouth width      0.250 0.281 0.300 0.312 0.356   (corner 48 to corner 54)
    mouth top y      0.587 0.656 0.688 0.719 0.750   (highest lip point)
    mouth bottom y   0.750 0.800 0.825 0.837 0.863   (lowest lip point)

The cut below (x 0.20..0.80, y 0.60..0.90, 2:1 like the output) holds the lips from the 5th to the 95th
percentile of every row, with the spread of the centre (head turns) inside it. It holds these constants
for crop policies near the shipped one; a model with another crop policy needs them measured again.
"""

from __future__ import annotations

import cv2
import numpy as np

MOUTH_H, MOUTH_W = 48, 96
# The mouth box as fractions of the face crop's side (measured, see the module docstring).
MOUTH_X0, MOUTH_X1 = 0.20, 0.80
MOUTH_Y0, MOUTH_Y1 = 0.60, 0.90


def mouth_box(side: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixel bounds of the mouth region in a face crop of ``side`` pixels."""
    return (
        round(MOUTH_X0 * side),
        round(MOUTH_Y0 * side),
        round(MOUTH_X1 * side),
        round(MOUTH_Y1 * side),
    )


def mouth_from_gray(gray: np.ndarray) -> np.ndarray:
    """[MOUTH_H, MOUTH_W] uint8 mouth region of one grayscale face crop [S, S] uint8."""
    x0, y0, x1, y1 = mouth_box(gray.shape[0])
    return cv2.resize(gray[y0:y1, x0:x1], (MOUTH_W, MOUTH_H), interpolation=cv2.INTER_AREA)


def mouth_crop(face_crop: np.ndarray) -> np.ndarray:
    """[MOUTH_H, MOUTH_W] uint8 grayscale mouth region of one face crop [S, S, 3] uint8 RGB (the model's
    crop, cut by its crop policy)."""
    if face_crop.ndim != 3 or face_crop.shape[2] != 3 or face_crop.shape[0] != face_crop.shape[1]:
        raise ValueError(f"a face crop is [S, S, 3] uint8 RGB, got {face_crop.shape}")
    return mouth_from_gray(cv2.cvtColor(face_crop, cv2.COLOR_RGB2GRAY))


def mouth_crops(face_crops: np.ndarray) -> np.ndarray:
    """[T, MOUTH_H, MOUTH_W] uint8 for face crops [T, S, S, 3] uint8 RGB."""
    if len(face_crops) == 0:
        return np.zeros((0, MOUTH_H, MOUTH_W), np.uint8)
    return np.stack([mouth_crop(c) for c in face_crops])
