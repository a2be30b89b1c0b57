"""Turn cached crops into training batches: real, DFDC fake and self-blended fake, frames or clips.

Every batch is made from its own seeded generator ``default_rng([seed, phase, step])``, so a resumed run
sees exactly the batches it would have seen, and a DataLoader worker needs no shared state.

Targets per sample: ``label`` (1 = fake), ``mask`` (blend weight map at model-output resolution: the SBI
mask for self-blended fakes, zeros for reals) and ``has_mask`` (False for DFDC fakes: where their face was
swapped is unknown, so they do not train the localisation head).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class SampleSpec:
    """How every sample of a batch is cut and augmented (the config's crop-policy match and augmentation,
    the phase's output sizes and flicker): one object instead of a dozen positional arguments."""

    out: int  # side of the model input
    mask_out: int  # side of the blend-mask target (model output resolution)
    scale_range: tuple[float, float]  # side of the cut, as a fraction of the stored crop
    shift: float  # max centre shift, fraction of the side
    aug_policy: str  # named policy in training/augment.py POLICIES (the config's default is the one default)
    flicker_prob: float = 0.0  # SBI clips whose blend parameters change every frame
    strong: bool = True  # the policy's full strength (False: the mild variant of tests and eval views)


@dataclass(frozen=True)
class BatchMix:
    """Shares of a batch by kind; self-blended fakes fill what the others leave."""

    frac_real: float
    frac_fake: float
    frac_video_real: float = 0.0
    frac_video_fake: float = 0.0


@dataclass(frozen=True)
class Pools:
    """Where each kind draws its item: still reals, DFDC fakes, and the weighted video pools (if any)."""

    real: np.ndarray
    fake: np.ndarray
    videos: VideoPools | None = None

    @staticmethod
    def of(crops: CropSet, mix: BatchMix) -> Pools:
        videos = video_pools(crops) if mix.frac_video_real or mix.frac_video_fake else None
        return Pools(np.flatnonzero(crops.labels == 0), np.flatnonzero(crops.labels == 1), videos)


def batch_kinds(rng: np.random.Generator, n: int, mix: BatchMix) -> np.ndarray:
    """Exact proportions per batch (rounded), shuffled: steadier gradients than sampling each item.
    Self-blended fakes fill what the other shares leave."""
    shares = (mix.frac_real, mix.frac_fake, mix.frac_video_real, mix.frac_video_fake)
    counts = [int(round(n * f)) for f in shares]
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
    rng: np.random.Generator, crops: CropSet, pools: Pools, kind: int, t: int, spec: SampleSpec
) -> tuple[np.ndarray, np.ndarray, bool]:
    """One clip of ``t`` frames (t = 1 for frames): uint8 [t, out, out, 3], mask [t, m, m], has_mask.

    A clip of a still crop is that crop with per-frame jitter; a clip of a video item (``crops.track``) is
    ``t`` consecutive real frames of its track, with no added jitter (the motion is real). Either way one
    augmentation and, unless it flickers, one set of blend parameters hold over the whole clip. Stills
    draw exactly the random numbers they drew before tracks existed, so DFDC-only runs are unchanged.
    Video kinds draw their item from ``pools.videos`` by weight and are otherwise a real or an unmasked fake.
    """
    if kind in (KIND_VIDEO_REAL, KIND_VIDEO_FAKE):
        assert pools.videos is not None, "video kinds need video pools"
        item = draw_weighted(rng, pools.videos[kind == KIND_VIDEO_FAKE])
    else:
        pool = pools.fake if kind == KIND_FAKE else pools.real
        item = pool[rng.integers(len(pool))]
    seq = track_clip(crops, item, t, rng)
    base = crops.images[item]
    aug = sample_aug(rng, spec.scale_range, spec.shift, strong=spec.strong, policy=spec.aug_policy)
    out, mask_out = spec.out, spec.mask_out
    frames = np.empty((t, out, out, 3), np.uint8)
    masks = np.zeros((t, mask_out, mask_out), np.float32)
    blended, blend_mask = None, None
    flicker = kind == KIND_SBI and t > 1 and rng.random() < spec.flicker_prob
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
    crops: CropSet, seed: int, phase: int, step: int, n: int, t: int, spec: SampleSpec, mix: BatchMix
) -> dict[str, torch.Tensor]:
    """A training batch: clips uint8 [n, t, out, out, 3], label float [n], mask [n, t, m, m], has_mask [n]."""
    rng = np.random.default_rng([seed, phase, step])
    kinds = batch_kinds(rng, n, mix)
    pools = Pools.of(crops, mix)
    clips = np.empty((n, t, spec.out, spec.out, 3), np.uint8)
    masks = np.empty((n, t, spec.mask_out, spec.mask_out), np.float32)
    has_mask = np.empty(n, bool)
    for j, kind in enumerate(kinds):
        clips[j], masks[j], has_mask[j] = make_sample(rng, crops, pools, int(kind), t, spec)
    return {
        "clips": torch.from_numpy(clips),
        "label": torch.from_numpy((~np.isin(kinds, REAL_KINDS)).astype(np.float32)),
        "mask": torch.from_numpy(masks),
        "has_mask": torch.from_numpy(has_mask),
        "kind": torch.from_numpy(kinds.astype(np.int64)),
    }


class BatchStream(torch.utils.data.IterableDataset):
    """Endless, seeded batches from ``start_step`` on (resume continues the same sequence); the clip
    length of each batch is ``clip_len(step)``, drawn from the step so it is reproducible.

    With several DataLoader workers each makes every ``num_workers``-th step (worker k: start + k, start
    + k + n, ...), and the loader hands them out in turn, so the sequence is the same as with one;
    without the split every worker yielded the whole sequence and each batch came ``num_workers`` times.
    """

    def __init__(
        self,
        crops: CropSet,
        seed: int,
        phase: int,
        start_step: int,
        n: int,
        clip_len: Callable[[int], int],
        spec: SampleSpec,
        mix: BatchMix,
    ):
        super().__init__()
        self.crops, self.seed, self.phase, self.start_step = crops, seed, phase, start_step
        self.n, self.clip_len, self.spec, self.mix = n, clip_len, spec, mix

    def __iter__(self):
        import cv2

        cv2.setNumThreads(1)
        info = torch.utils.data.get_worker_info()
        offset, stride = (info.id, info.num_workers) if info is not None else (0, 1)
        step = self.start_step + offset
        while True:
            yield make_batch(
                self.crops, self.seed, self.phase, step, self.n, self.clip_len(step), self.spec, self.mix
            )
            step += stride


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
