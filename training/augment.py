"""Augmentation for the wild, applied to real and fake alike so that quality says nothing about the label.

Measured on these DFDC crops: a plain fine-tune learns shortcuts (resolution, blur: low-resolution real
faces read as fake). Random down-then-up scaling, blur, JPEG re-compression (a stand-in for H.264
blocking), noise and colour changes, all label-independent, take those shortcuts away.

Crop jitter does the crop-policy match: the stored crop is a tight face box; each sample is a square
cut of ``crop_scale_range`` of its side with a shifted centre, so the model sees tighter and looser
faces than any single policy and serving at the metadata's crop scale sits inside that range.

Two named policies (``POLICIES``): ``v1`` trained model 1.0.0; ``wild`` adds a global colour cast (white
balance), hue shifts, wider saturation, unsharp-mask sharpening and more frequent, deeper down-scaling and
blur. Measured with model 1.0.0 on the dev videos: whole real sources with a colour cast or a soft,
low-resolution face (GRID, VoxCeleb-style driving videos) scored as fake, so the label must not be
readable from global colour or sharpness either.

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
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel gain (white balance)
    hue: float = 0.0  # OpenCV hue units (180 = full circle)
    sharpen: float = 0.0  # 0 = off, else unsharp-mask amount


@dataclass(frozen=True)
class AugPolicy:
    """How often and how hard each label-independent change is drawn."""

    down_prob: float
    down_range: tuple[float, float]
    blur_prob: float
    blur_range: tuple[float, float]
    saturation_range: tuple[float, float]
    cast_prob: float = 0.0
    cast_amount: float = 0.0
    hue_prob: float = 0.0
    sharpen_prob: float = 0.0


POLICIES: dict[str, AugPolicy] = {
    "v1": AugPolicy(
        down_prob=0.5,
        down_range=(0.25, 0.9),
        blur_prob=0.25,
        blur_range=(0.3, 1.6),
        saturation_range=(0.6, 1.3),
    ),
    "wild": AugPolicy(
        down_prob=0.6,
        down_range=(0.18, 0.95),
        blur_prob=0.3,
        blur_range=(0.3, 2.0),
        saturation_range=(0.5, 1.6),
        cast_prob=0.4,
        cast_amount=0.15,
        hue_prob=0.25,
        sharpen_prob=0.2,
    ),
}


def sample_aug(
    rng: np.random.Generator,
    scale_range: tuple[float, float],
    shift: float,
    strong: bool = True,
    eval_side: float = 1.0,
    policy: str = "v1",
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
    pol = POLICIES[policy]
    side = rng.uniform(*scale_range)
    room = max(0.0, (1.0 - side) / 2)
    s = max(min(shift, room), 0.01)
    p = AugParams(
        side=side,
        cx=0.5 + rng.uniform(-s, s),
        cy=0.5 + rng.uniform(-s, s),
        flip=bool(rng.random() < 0.5),
        down=rng.uniform(*pol.down_range) if rng.random() < pol.down_prob else 0.0,
        blur=rng.uniform(*pol.blur_range) if rng.random() < pol.blur_prob else 0.0,
        jpeg=int(rng.integers(30, 96)) if rng.random() < 0.6 else 0,
        noise=rng.uniform(1.0, 8.0) if rng.random() < 0.2 else 0.0,
        contrast=rng.uniform(0.75, 1.25) if rng.random() < 0.5 else 1.0,
        brightness=rng.uniform(-25, 25) if rng.random() < 0.5 else 0.0,
        saturation=rng.uniform(*pol.saturation_range) if rng.random() < 0.3 else 1.0,
        gamma=rng.uniform(0.8, 1.25) if rng.random() < 0.3 else 1.0,
    )
    if pol.cast_prob and rng.random() < pol.cast_prob:
        p.cast = tuple((1.0 + rng.uniform(-pol.cast_amount, pol.cast_amount, 3)).tolist())
    if pol.hue_prob and rng.random() < pol.hue_prob:
        p.hue = float(rng.uniform(-8, 8))
    if pol.sharpen_prob and rng.random() < pol.sharpen_prob and not p.blur:
        p.sharpen = float(rng.uniform(0.3, 1.2))
    return p


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
    if p.cast != (1.0, 1.0, 1.0):
        x = np.clip(x.astype(np.float32) * np.asarray(p.cast, np.float32), 0, 255).astype(np.uint8)
    if p.hue:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + int(round(p.hue))) % 180).astype(np.uint8)
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
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
    if p.sharpen:
        soft = cv2.GaussianBlur(x, (0, 0), 1.0)
        x = cv2.addWeighted(x, 1.0 + p.sharpen, soft, -p.sharpen, 0)
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
