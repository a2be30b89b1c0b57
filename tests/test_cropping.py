"""Cropping follows the model's crop policy exactly, including at the frame border."""

from __future__ import annotations

import numpy as np
import pytest

from deepfake.contracts.metadata import CropPolicy
from preprocessor.cropping import crop_face, square_box


def test_square_box_scales_the_longer_side_and_shifts():
    box = np.array([100, 100, 140, 180], dtype=np.float32)  # 40 wide, 80 tall, centre (120, 140)
    sq = square_box(box, CropPolicy(scale=1.5, size=64, shift_y=0.1))
    assert sq[2] - sq[0] == pytest.approx(120) and sq[3] - sq[1] == pytest.approx(120)
    assert (sq[0] + sq[2]) / 2 == pytest.approx(120)
    assert (sq[1] + sq[3]) / 2 == pytest.approx(140 + 0.1 * 80)


def test_square_box_rejects_empty_boxes():
    with pytest.raises(ValueError):
        square_box(np.array([10, 10, 10, 30], dtype=np.float32), CropPolicy())


def test_crop_takes_the_right_pixels():
    frame = np.zeros((200, 300, 3), dtype=np.uint8)
    frame[50:150, 100:200] = (255, 0, 0)  # a red 100 px square "face"
    crop = crop_face(frame, np.array([100, 50, 200, 150], dtype=np.float32), CropPolicy(scale=2.0, size=40))
    assert crop.shape == (40, 40, 3) and crop.dtype == np.uint8
    assert (crop[12:28, 12:28, 0] > 250).all()  # centre half is the face
    assert (crop[:8, :, 0] < 5).all() and (crop[:, :8, 0] < 5).all()  # the margin is not


def test_crop_pads_with_black_at_the_border_instead_of_stretching():
    frame = np.full((100, 100, 3), 200, dtype=np.uint8)
    crop = crop_face(frame, np.array([0, 0, 40, 40], dtype=np.float32), CropPolicy(scale=2.0, size=80))
    # Square of side 80 centred at (20, 20): its top-left quarter lies outside the frame.
    assert (crop[:15, :15] == 0).all()
    assert (crop[45:, 45:] == 200).all()
