"""Landmark-shaped self-blending masks (training/sbi.py) and the landmark cache (training/landmarks.py)."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import CropSet, concat_crops
from training.samples import KIND_SBI, Pools, SampleSpec, make_sample
from training.sbi import face_mask, sample_params, self_blend


def face_points(cx: float, cy: float, r: float) -> np.ndarray:
    """68 points in the dlib layout, roughly: jaw (0-16) on a lower half-circle, brows (17-26) above."""
    pts = np.zeros((68, 2), np.float32)
    a = np.linspace(np.pi, 0, 17)
    pts[:17] = np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)
    pts[17:27] = np.stack([np.linspace(cx - 0.8 * r, cx + 0.8 * r, 10), np.full(10, cy - 0.3 * r)], 1)
    pts[27:] = (cx, cy)
    return pts


def test_landmark_mask_follows_the_face_not_the_crop_centre() -> None:
    p = sample_params(np.random.default_rng(3))
    p.warp_amp, p.grow, p.blur_frac = 0.0, 0, 0.02
    left = face_mask(96, p, face_points(28, 48, 18))
    right = face_mask(96, p, face_points(68, 48, 18))
    assert left[:, :48].sum() > 20 * left[:, 48:].sum()
    assert right[:, 48:].sum() > 20 * right[:, :48].sum()
    assert left[95, :].max() < 0.05  # nothing below the chin


def test_self_blend_falls_back_to_the_ellipse_without_points() -> None:
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    p = sample_params(np.random.default_rng(1))
    nan = np.full((68, 2), np.nan, np.float32)
    out_nan, mask_nan = self_blend(img, p, nan)
    out_none, mask_none = self_blend(img, p)
    assert np.array_equal(mask_nan, mask_none) and np.array_equal(out_nan, out_none)
    _, mask_pts = self_blend(img, p, face_points(20, 30, 12))
    assert not np.allclose(mask_pts, mask_none)


def test_training_sample_uses_the_landmarks_of_its_crop() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (2, 72, 72, 3), dtype=np.uint8)
    left = np.stack([face_points(20, 36, 14), face_points(20, 36, 14)])
    crops = CropSet(imgs, np.zeros(2, np.int64), np.zeros(2, np.int32), ["a", "b"], landmarks=left)
    spec = SampleSpec(out=64, mask_out=64, scale_range=(1.0, 1.0), shift=0.0, aug_policy="v1")
    pools = Pools(np.arange(2), np.zeros(0, int))
    _, masks, has_mask = make_sample(np.random.default_rng(5), crops, pools, KIND_SBI, 1, spec)
    halves = sorted([masks[0][:, :32].sum(), masks[0][:, 32:].sum()])  # augmentation may mirror it
    assert has_mask and halves[1] > 5 * halves[0]


def test_concat_keeps_landmarks_aligned() -> None:
    a = CropSet(np.zeros((2, 8, 8, 3), np.uint8), np.zeros(2, np.int64), np.zeros(2, np.int32), ["a", "b"])
    pts = np.ones((1, 68, 2), np.float32)
    b = CropSet(
        np.zeros((1, 8, 8, 3), np.uint8), np.zeros(1, np.int64), np.zeros(1, np.int32), ["c"], landmarks=pts
    )
    both = concat_crops(a, b)
    assert both.landmarks is not None and both.landmarks.shape == (3, 68, 2)
    assert np.isnan(both.landmarks[:2]).all() and (both.landmarks[2] == 1).all()


def test_crop_landmarks_reals_only_and_cached(tmp_path, monkeypatch) -> None:
    pytest.importorskip("dlib", reason="landmark masks need dlib-bin (train extra)")
    from training import landmarks

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    labels = np.array([0, 1, 0])
    first = landmarks.crop_landmarks(images, labels, tmp_path)
    assert first.shape == (3, 68, 2)
    assert np.isnan(first[1]).all() and np.isfinite(first[[0, 2]]).all()
    assert (first[[0, 2]] > -96).all() and (first[[0, 2]] < 2 * 96).all()

    def no_finder() -> None:
        raise AssertionError("cached crops must not be computed again")

    monkeypatch.setattr(landmarks, "LandmarkFinder", no_finder)
    again = landmarks.crop_landmarks(images[[2, 0]], labels[[2, 0]], tmp_path)
    assert np.array_equal(again, first[[2, 0]])
    changed = images[:1].copy()
    changed[0, 0, 0, 0] ^= 1  # new pixels, new key: computed, not reused
    with pytest.raises(AssertionError, match="computed again"):
        landmarks.crop_landmarks(changed, labels[:1], tmp_path)
