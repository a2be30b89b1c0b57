"""Self-blended images (after Shiohara & Yamasaki, CVPR 2022): pseudo-fakes made from real faces only.

A copy of the face is perturbed (colour, frequency, a small geometric shift) and blended back into the
original through a deformed, blurred face mask. The result carries the generic traces every face swap
leaves (a blending boundary, colour and sharpness mismatch between the inner face and its surroundings)
without any one generator's fingerprint, which is why detectors trained on it transfer to methods they
never saw. The mask is the hull of the face's 68 landmarks (jaw line and brows, the brows raised by a
random share of the face height towards the forehead) when the crop has them (training/landmarks.py), as
the paper does; without landmarks it is an ellipse placed where the inner face sits in our crops. Either
shape is then randomly deformed, grown or shrunk and blurred.

For clips, one ``BlendParams`` is held across the frames (a consistent swap), or redrawn per frame (the
flicker variant: temporal inconsistency, which only the temporal transformer can see).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


@dataclass
class BlendParams:
    # mask geometry, as fractions of the crop side
    cx: float
    cy: float
    ax: float
    ay: float
    angle: float
    warp_amp: float
    warp_seed: int
    blur_frac: float
    grow: int  # >0 dilate, <0 erode (pixels at 192 px)
    ratio: float
    # source perturbation
    rgb_shift: tuple[float, float, float]
    contrast: float
    brightness: float
    hue_shift: float
    sat_scale: float
    freq_mode: str  # "down" | "sharpen" | "blur" | "none"
    freq_amount: float
    dx: float
    dy: float
    scale: float


def sample_params(rng: np.random.Generator) -> BlendParams:
    return BlendParams(
        cx=0.5 + rng.uniform(-0.04, 0.04),
        cy=0.55 + rng.uniform(-0.04, 0.06),
        ax=rng.uniform(0.28, 0.42),
        ay=rng.uniform(0.36, 0.50),
        angle=rng.uniform(-12, 12),
        warp_amp=rng.uniform(0.0, 0.06),
        warp_seed=int(rng.integers(1 << 31)),
        blur_frac=rng.uniform(0.02, 0.10),
        grow=int(rng.integers(-6, 7)),
        ratio=float(rng.choice(BLEND_RATIOS)),
        rgb_shift=tuple(rng.uniform(-20, 20, 3).tolist()),
        contrast=rng.uniform(0.85, 1.15),
        brightness=rng.uniform(-15, 15),
        hue_shift=rng.uniform(-6, 6),
        sat_scale=rng.uniform(0.85, 1.15),
        freq_mode=str(rng.choice(["down", "sharpen", "blur", "none"], p=[0.4, 0.2, 0.2, 0.2])),
        freq_amount=rng.uniform(0.0, 1.0),
        dx=rng.uniform(-0.03, 0.03),
        dy=rng.uniform(-0.03, 0.03),
        scale=rng.uniform(0.95, 1.05),
    )


def landmark_hull(points: np.ndarray, p: BlendParams) -> np.ndarray:
    """int32 hull vertices of the jaw line (points 0-16) and the brows (17-26), the brows raised by up to
    a fifth of the brow-to-chin height (drawn from ``warp_seed``, so the parameter stream is unchanged)."""
    jaw, brows = points[:17], points[17:27].copy()
    raise_by = np.random.default_rng(p.warp_seed + 1).uniform(0.0, 0.2)
    brows[:, 1] -= raise_by * max(1.0, float(points[8, 1] - brows[:, 1].mean()))
    return cv2.convexHull(np.concatenate([jaw, brows]).round().astype(np.int32))


def face_mask(size: int, p: BlendParams, landmarks: np.ndarray | None = None) -> np.ndarray:
    """float32 [size, size] in [0, 1]: a deformed, blurred face region, the landmark hull when
    ``landmarks`` (float [68, 2] pixel coordinates, no NaN) are given, else an ellipse."""
    m = np.zeros((size, size), np.uint8)
    if landmarks is not None:
        cv2.fillConvexPoly(m, landmark_hull(landmarks, p), 255)
    else:
        cv2.ellipse(
            m,
            (int(p.cx * size), int(p.cy * size)),
            (max(2, int(p.ax * size)), max(2, int(p.ay * size))),
            p.angle,
            0,
            360,
            255,
            -1,
        )
    if p.warp_amp > 0:  # smooth random displacement field: a coarse noise grid, upsampled
        g = np.random.default_rng(p.warp_seed).uniform(-1, 1, (2, 5, 5)).astype(np.float32)
        disp = [cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC) * p.warp_amp * size for c in g]
        xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
        m = cv2.remap(m, xs + disp[0], ys + disp[1], cv2.INTER_LINEAR, borderValue=0)
    k = max(1, round(abs(p.grow) * size / 192))
    if p.grow:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        m = cv2.dilate(m, kernel) if p.grow > 0 else cv2.erode(m, kernel)
    sigma = max(0.5, p.blur_frac * size)
    mask = cv2.GaussianBlur(m.astype(np.float32) / 255.0, (0, 0), sigma)
    peak = float(mask.max())
    return mask / peak if peak > 0 else mask


def perturb_source(img: np.ndarray, p: BlendParams) -> np.ndarray:
    """The copy that gets blended in: colour, frequency and geometry differ slightly from the target."""
    size = img.shape[0]
    x = img.astype(np.float32)
    x = (x - 128.0) * p.contrast + 128.0 + p.brightness + np.asarray(p.rgb_shift, np.float32)
    x = np.clip(x, 0, 255).astype(np.uint8)
    if abs(p.hue_shift) > 0.5 or abs(p.sat_scale - 1) > 0.02:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + p.hue_shift) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * p.sat_scale, 0, 255)
        x = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    if p.freq_mode == "down":
        f = 0.35 + 0.55 * p.freq_amount
        small = cv2.resize(x, (max(8, int(size * f)),) * 2, interpolation=cv2.INTER_AREA)
        x = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    elif p.freq_mode == "blur":
        x = cv2.GaussianBlur(x, (0, 0), 0.5 + 1.5 * p.freq_amount)
    elif p.freq_mode == "sharpen":
        soft = cv2.GaussianBlur(x, (0, 0), 1.0)
        x = cv2.addWeighted(x, 1.0 + 0.8 * p.freq_amount, soft, -0.8 * p.freq_amount, 0)
    m = cv2.getRotationMatrix2D((size / 2, size / 2), 0.0, p.scale)
    m[:, 2] += (p.dx * size, p.dy * size)
    return cv2.warpAffine(x, m, (size, size), borderMode=cv2.BORDER_REFLECT)


def self_blend(
    img: np.ndarray, p: BlendParams, landmarks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB [S, S, 3] -> (blended uint8 image, blend weight map float32 [S, S] in [0, 1]).

    ``landmarks`` with any NaN (a crop without points) fall back to the ellipse."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"self_blend needs a uint8 RGB image [S, S, 3], got {img.dtype} {img.shape}")
    if landmarks is not None and np.isnan(landmarks).any():
        landmarks = None
    mask = face_mask(img.shape[0], p, landmarks) * p.ratio
    src = perturb_source(img, p).astype(np.float32)
    out = src * mask[..., None] + img.astype(np.float32) * (1.0 - mask[..., None])
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), mask
