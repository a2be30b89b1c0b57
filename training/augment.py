"""Augmentation for the wild, applied to real and fake alike so that quality says nothing about the label.

Measured on these DFDC crops: a plain fine-tune learns shortcuts (resolution, blur: low-resolution real
faces read as fake). Random down-then-up scaling, blur, JPEG re-compression (a stand-in for H.264
blocking), noise and colour changes, all label-independent, take those shortcuts away.

Crop jitter does the crop-policy match: the stored crop is a tight face box; each sample is a square
cut of ``crop_scale_range`` of its side with a shifted centre, so the model sees tighter and looser
faces than any single policy and serving at the metadata's crop scale sits inside that range.

``AugParams`` is sampled once per sample and applied to every frame of a clip (one video has one codec
and one resolution); per-frame geometric jitter is separate (``frame_jitter``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class AugParams:
    side: float  # cut side as a fraction of the stored crop
    cx: float  # cut centre, fraction of the stored crop
    cy: float
    flip: bool
    down: float  # 0 = off, else scale factor of a down-then-up resize
    blur: float  # 0 = off, else Gaussian sigma in output pixels
    jpeg: int  # 0 = off, else JPEG quality
    noise: float  # 0 = off, else Gaussian noise std
    contrast: float
    brightness: float
    saturation: float
    gamma: float


def sample_aug(
    rng: np.random.Generator,
    scale_range: tuple[float, float],
    shift: float,
    strong: bool = True,
    eval_side: float = 1.0,
) -> AugParams:
    """``strong=False`` gives the deterministic evaluation view: the whole stored crop (as serving cuts
    ``crop.scale`` x the detector box), no augmentation."""
    if not strong:
        return AugParams(
            side=eval_side,
            cx=0.5,
            cy=0.5,
            flip=False,
            down=0.0,
            blur=0.0,
            jpeg=0,
            noise=0.0,
            contrast=1.0,
            brightness=0.0,
            saturation=1.0,
            gamma=1.0,
        )
    side = rng.uniform(*scale_range)
    room = max(0.0, (1.0 - side) / 2)
    s = max(min(shift, room), 0.01)
    return AugParams(
        side=side,
        cx=0.5 + rng.uniform(-s, s),
        cy=0.5 + rng.uniform(-s, s),
        flip=bool(rng.random() < 0.5),
        down=rng.uniform(0.25, 0.9) if rng.random() < 0.5 else 0.0,
        blur=rng.uniform(0.3, 1.6) if rng.random() < 0.25 else 0.0,
        jpeg=int(rng.integers(30, 96)) if rng.random() < 0.6 else 0,
        noise=rng.uniform(1.0, 8.0) if rng.random() < 0.2 else 0.0,
        contrast=rng.uniform(0.75, 1.25) if rng.random() < 0.5 else 1.0,
        brightness=rng.uniform(-25, 25) if rng.random() < 0.5 else 0.0,
        saturation=rng.uniform(0.6, 1.3) if rng.random() < 0.3 else 1.0,
        gamma=rng.uniform(0.8, 1.25) if rng.random() < 0.3 else 1.0,
    )


def _cut_matrix(stored: int, out: int, p: AugParams, jitter: tuple[float, float, float, float]) -> np.ndarray:
    """Affine map from stored-crop pixels to output pixels: cut square (+ per-frame jitter), resize, flip."""
    dx, dy, ds, rot = jitter
    side = p.side * stored * (1.0 + ds)
    cx, cy = (p.cx + dx) * stored, (p.cy + dy) * stored
    k = out / side
    m = cv2.getRotationMatrix2D((cx, cy), rot, k)
    m[:, 2] += (out / 2 - cx, out / 2 - cy)
    if p.flip:
        m[0] = -m[0]
        m[0, 2] += out - 1
    return m


def apply_aug(
    img: np.ndarray,
    p: AugParams,
    out: int,
    rng: np.random.Generator,
    mask: np.ndarray | None = None,
    mask_out: int = 0,
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 RGB stored crop -> augmented uint8 [out, out, 3] (+ the blend mask cut the same way)."""
    stored = img.shape[0]
    m = _cut_matrix(stored, out, p, jitter)
    x = cv2.warpAffine(img, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mask_cut = None
    if mask is not None:
        mm = m * (mask_out / out)
        mask_cut = cv2.warpAffine(
            mask,
            mm,
            (mask_out, mask_out),
            flags=cv2.INTER_AREA,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    if p.contrast != 1.0 or p.brightness != 0.0 or p.gamma != 1.0:
        f = x.astype(np.float32)
        f = (f - 128.0) * p.contrast + 128.0 + p.brightness
        f = np.clip(f, 0, 255)
        if p.gamma != 1.0:
            f = 255.0 * (f / 255.0) ** p.gamma
        x = f.astype(np.uint8)
    if p.saturation != 1.0:
        grey = cv2.cvtColor(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        x = cv2.addWeighted(x, p.saturation, grey, 1.0 - p.saturation, 0)
    if p.down:
        small = max(16, int(out * p.down))
        interp = cv2.INTER_AREA if rng.random() < 0.5 else cv2.INTER_LINEAR
        x = cv2.resize(
            cv2.resize(x, (small, small), interpolation=interp),
            (out, out),
            interpolation=cv2.INTER_LINEAR if rng.random() < 0.5 else cv2.INTER_CUBIC,
        )
    if p.blur:
        x = cv2.GaussianBlur(x, (0, 0), p.blur)
    if p.noise:
        x = np.clip(x.astype(np.float32) + rng.normal(0, p.noise, x.shape), 0, 255).astype(np.uint8)
    if p.jpeg:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(x, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, p.jpeg])
        if ok:
            x = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return x, mask_cut


def frame_jitter(rng: np.random.Generator, amount: float = 1.0) -> tuple[float, float, float, float]:
    """Small per-frame motion (shift, zoom, roll) so a clip cut from one crop looks like a tracked face."""
    return (
        rng.normal(0, 0.01 * amount),
        rng.normal(0, 0.01 * amount),
        rng.normal(0, 0.015 * amount),
        rng.normal(0, 1.0 * amount),
    )
