"""Turn cached crops into training batches: real, DFDC fake and self-blended fake, frames or clips.

Every batch is made from its own seeded generator ``default_rng([seed, phase, step])``, so a resumed run
sees exactly the batches it would have seen, and a DataLoader worker needs no shared state.

Targets per sample: ``label`` (1 = fake), ``mask`` (blend weight map at model-output resolution: the SBI
mask for self-blended fakes, zeros for reals) and ``has_mask`` (False for DFDC fakes: where their face was
swapped is unknown, so they do not train the localisation head).
"""

from __future__ import annotations

import numpy as np
import torch

from training.augment import apply_aug, frame_jitter, sample_aug
from training.data import CropSet
from training.sbi import sample_params, self_blend

KIND_REAL, KIND_FAKE, KIND_SBI, KIND_VIDEO_REAL, KIND_VIDEO_FAKE = 0, 1, 2, 3, 4
REAL_KINDS = (KIND_REAL, KIND_VIDEO_REAL)
UNMASKED_KINDS = (KIND_FAKE, KIND_VIDEO_FAKE)  # fakes whose manipulated region is unknown

# (item indices, cumulative draw weights) of the video reals and of the video fakes
VideoPools = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def batch_kinds(
    rng: np.random.Generator,
    n: int,
    frac_real: float,
    frac_fake: float,
    frac_video_real: float = 0.0,
    frac_video_fake: float = 0.0,
) -> np.ndarray:
    """Exact proportions per batch (rounded), shuffled: steadier gradients than sampling each item.
    Self-blended fakes fill what the other shares leave."""
    counts = [int(round(n * f)) for f in (frac_real, frac_fake, frac_video_real, frac_video_fake)]
    n_sbi = n - sum(counts)
    if n_sbi < 0:
        raise ValueError(f"batch shares add up to more than the batch of {n}")
    kinds = (
        [KIND_REAL] * counts[0]
        + [KIND_FAKE] * counts[1]
        + [KIND_SBI] * n_sbi
        + [KIND_VIDEO_REAL] * counts[2]
        + [KIND_VIDEO_FAKE] * counts[3]
    )
    return rng.permutation(np.array(kinds))


def video_pools(crops: CropSet) -> VideoPools:
    """Video reals and fakes with their cumulative draw weights (``CropSet.weight``)."""
    if crops.weight is None or not (crops.weight > 0).any():
        raise ValueError("video shares in the batch mix need video crops (config: videos=...)")
    pools = []
    for label in (0, 1):
        idx = np.flatnonzero((crops.labels == label) & (crops.weight > 0))
        if not len(idx):
            raise ValueError(f"no video {'fakes' if label else 'reals'} to draw for the batch mix")
        pools.append((idx, np.cumsum(crops.weight[idx])))
    return pools[0], pools[1]


def draw_weighted(rng: np.random.Generator, pool: tuple[np.ndarray, np.ndarray]) -> int:
    idx, cdf = pool
    return int(idx[min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(idx) - 1)])


def make_sample(
    rng: np.random.Generator,
    crops: CropSet,
    real_idx: np.ndarray,
    fake_idx: np.ndarray,
    kind: int,
    t: int,
    out: int,
    mask_out: int,
    scale_range: tuple[float, float],
    shift: float,
    flicker_prob: float = 0.0,
    strong: bool = True,
    aug_policy: str = "v1",
    videos: VideoPools | None = None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """One clip of ``t`` frames (t = 1 for frames): uint8 [t, out, out, 3], mask [t, m, m], has_mask.

    A clip of a still crop is that crop with per-frame jitter; a clip of a video item (``crops.track``) is
    ``t`` consecutive real frames of its track, with no added jitter (the motion is real). Either way one
    augmentation and, unless it flickers, one set of blend parameters hold over the whole clip. Stills
    draw exactly the random numbers they drew before tracks existed, so DFDC-only runs are unchanged.
    Video kinds draw their item from ``videos`` by weight and are otherwise a real or an unmasked fake.
    """
    if kind in (KIND_VIDEO_REAL, KIND_VIDEO_FAKE):
        assert videos is not None, "video kinds need video pools"
        item = draw_weighted(rng, videos[kind == KIND_VIDEO_FAKE])
    else:
        pool = fake_idx if kind == KIND_FAKE else real_idx
        item = pool[rng.integers(len(pool))]
    seq = track_clip(crops, item, t, rng)
    base = crops.images[item]
    aug = sample_aug(rng, scale_range, shift, strong=strong, policy=aug_policy)
    frames = np.empty((t, out, out, 3), np.uint8)
    masks = np.zeros((t, mask_out, mask_out), np.float32)
    blended, blend_mask = None, None
    flicker = kind == KIND_SBI and t > 1 and rng.random() < flicker_prob
    params = sample_params(rng) if kind == KIND_SBI and not flicker else None
    for i in range(t):
        if seq is None:
            jit = frame_jitter(rng) if t > 1 else (0.0, 0.0, 0.0, 0.0)
        else:
            base, jit = crops.images[seq[i]], (0.0, 0.0, 0.0, 0.0)
        # A still is blended once; a track's frames (new pixels each) and flicker clips every frame.
        if kind == KIND_SBI and (i == 0 or flicker or seq is not None):
            points = None if crops.landmarks is None else crops.landmarks[item if seq is None else seq[i]]
            p = sample_params(rng) if flicker or params is None else params
            blended, blend_mask = self_blend(base, p, points)
        img = blended if blended is not None else base
        frames[i], m = apply_aug(img, aug, out, rng, mask=blend_mask, mask_out=mask_out, jitter=jit)
        if m is not None:
            masks[i] = m
    return frames, masks, kind not in UNMASKED_KINDS


def track_clip(crops: CropSet, item: int, t: int, rng: np.random.Generator) -> np.ndarray | None:
    """Indices of ``t`` consecutive frames of ``item``'s track, in time order, or None for a still crop.

    The start is drawn uniformly among the windows that fit; a track shorter than ``t`` repeats its last
    frame, as serving pads a short track's clip. Draws nothing from ``rng`` for stills or ``t`` = 1.
    """
    if t <= 1 or crops.track is None or crops.track[item] < 0:
        return None
    frames = np.flatnonzero(crops.track == crops.track[item])
    start = int(rng.integers(max(1, len(frames) - t + 1)))
    return frames[np.minimum(np.arange(start, start + t), len(frames) - 1)]


def make_batch(
    crops: CropSet,
    seed: int,
    phase: int,
    step: int,
    n: int,
    t: int,
    out: int,
    mask_out: int,
    frac_real: float,
    frac_fake: float,
    scale_range: tuple[float, float],
    shift: float,
    flicker_prob: float = 0.0,
    aug_policy: str = "v1",
    frac_video_real: float = 0.0,
    frac_video_fake: float = 0.0,
) -> dict[str, torch.Tensor]:
    """A training batch: clips uint8 [n, t, out, out, 3], label float [n], mask [n, t, m, m], has_mask [n]."""
    rng = np.random.default_rng([seed, phase, step])
    real_idx = np.flatnonzero(crops.labels == 0)
    fake_idx = np.flatnonzero(crops.labels == 1)
    kinds = batch_kinds(rng, n, frac_real, frac_fake, frac_video_real, frac_video_fake)
    videos = video_pools(crops) if frac_video_real or frac_video_fake else None
    clips = np.empty((n, t, out, out, 3), np.uint8)
    masks = np.empty((n, t, mask_out, mask_out), np.float32)
    has_mask = np.empty(n, bool)
    for j, kind in enumerate(kinds):
        clips[j], masks[j], has_mask[j] = make_sample(
            rng,
            crops,
            real_idx,
            fake_idx,
            int(kind),
            t,
            out,
            mask_out,
            scale_range,
            shift,
            flicker_prob,
            aug_policy=aug_policy,
            videos=videos,
        )
    return {
        "clips": torch.from_numpy(clips),
        "label": torch.from_numpy((~np.isin(kinds, REAL_KINDS)).astype(np.float32)),
        "mask": torch.from_numpy(masks),
        "has_mask": torch.from_numpy(has_mask),
        "kind": torch.from_numpy(kinds.astype(np.int64)),
    }


class BatchStream(torch.utils.data.IterableDataset):
    """Endless, seeded batches from ``start_step`` on (resume continues the same sequence)."""

    def __init__(self, crops: CropSet, seed: int, phase: int, start_step: int, **kw):
        super().__init__()
        self.crops, self.seed, self.phase, self.start_step, self.kw = crops, seed, phase, start_step, kw

    def __iter__(self):
        import cv2

        cv2.setNumThreads(1)
        step = self.start_step
        while True:
            t = self.kw["t"]
            if callable(t):  # variable clip length, drawn from the step so it is reproducible
                t = t(step)
            yield make_batch(self.crops, self.seed, self.phase, step, **{**self.kw, "t": t})
            step += 1


def eval_view(
    crops: CropSet,
    idx: np.ndarray,
    out: int,
    scale_range: tuple[float, float],
    sbi_seed: int | None = None,
    t: int = 1,
    jitter_seed: int | None = None,
) -> np.ndarray:
    """Deterministic evaluation inputs uint8 [len(idx), t, out, out, 3]: centred cut, no augmentation.

    ``sbi_seed`` turns the (real) crops into self-blended fakes with seeded parameters, a held-out check
    that the model learned blending traces and not DFDC's own artefacts.
    """
    res = np.empty((len(idx), t, out, out, 3), np.uint8)
    for j, i in enumerate(idx):
        img = crops.images[i]
        if sbi_seed is not None:
            img, _ = self_blend(img, sample_params(np.random.default_rng([sbi_seed, int(i)])))
        aug = sample_aug(np.random.default_rng(0), scale_range, 0.0, strong=False)
        rng = np.random.default_rng([jitter_seed or 0, int(i)])
        for k in range(t):
            jit = frame_jitter(rng) if (t > 1 and jitter_seed is not None) else (0.0, 0.0, 0.0, 0.0)
            res[j, k], _ = apply_aug(img, aug, out, rng, jitter=jit)
    return res
