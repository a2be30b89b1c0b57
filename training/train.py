"""Train the detector: ``python -m training.train --config cpu`` (``make train``), resumable.

Two phases, because a 2-core CPU cannot afford clip training end to end:

1. frames (T = 1): the whole network learns spatial artefacts from balanced batches of DFDC real, DFDC
   fake and self-blended fakes made on the fly from the real crops, with label-independent augmentation;
   the localisation head learns the SBI blend masks at the same time.
2. clips (T = 2..clip_len): the CNN is frozen and only the temporal part (embedding, transformer, heads)
   learns, on clips cut from one crop with per-frame jitter (or, for video crops, consecutive frames of
   one face track), SBI held across the clip or flickering.

With ``videos`` set (config.py), the training set is the DFDC crops plus the videos' face crops made by
the serving pipeline (training/video_crops.py); validation stays on DFDC crops.

Writes to the run dir (git-ignored ``runs/<name>``): ``ckpt.pt`` (latest, resumable), ``final.pt``
(weights + config for export), ``log.csv``, ``curves.png`` and ``config.json``. Seeded: batches come from
``default_rng([seed, phase, step])``, so a resumed run continues the same sequence.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from training.cache_files import write_atomic
from training.config import TrainConfig, get_config
from training.data import CropSet, concat_crops, load_crops
from training.metrics import log_loss, roc_auc
from training.model import DeepfakeDetector, build_model, loc_target_size
from training.samples import BatchMix, BatchStream, SampleSpec, eval_view

LOG_FIELDS = [
    "phase",
    "step",
    "loss",
    "clip_loss",
    "loc_loss",
    "lr",
    "items_per_s",
    "elapsed_s",
    "val_auc",
    "val_log_loss",
    "val_sbi_auc",
    "val_clip_auc",
]


def lr_at(step: int, total: int, base: float, warmup: int, floor: float = 0.05) -> float:
    """Linear warmup, then cosine decay to ``floor * base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def predict(model: DeepfakeDetector, clips: np.ndarray, batch_size: int, device: str = "cpu") -> np.ndarray:
    """Clip logits for uint8 clips [N, T, H, W, 3], in eval mode (restores the previous mode)."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(clips), batch_size):
        x = torch.from_numpy(clips[i : i + batch_size]).to(device)
        out.append(model(x)["clip_logit"].float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


class Validator:
    """Fixed validation inputs, built once: DFDC val crops (T=1), SBI of val reals, and a clip subset."""

    def __init__(self, cfg: TrainConfig, val: CropSet):
        self.cfg = cfg
        self.val = val
        s = cfg.image_size
        all_idx = np.arange(len(val))
        self.labels = val.labels
        self.frames = eval_view(val, all_idx, s, cfg.crop_scale_range)
        real_idx = np.flatnonzero(val.labels == 0)
        self.sbi = eval_view(val, real_idx, s, cfg.crop_scale_range, sbi_seed=cfg.seed + 1)
        self.real_idx = real_idx
        rng = np.random.default_rng(cfg.seed + 2)
        n_clip = min(len(val), max(8, len(val) // 5))
        self.clip_idx = np.sort(rng.choice(len(val), n_clip, replace=False))
        self.clips: np.ndarray | None = None  # built lazily: only phase 2 needs it

    def run(self, model: DeepfakeDetector, clips: bool = False) -> dict[str, float | None]:
        bs, dev = self.cfg.val_batch_size, self.cfg.device
        logits = predict(model, self.frames, bs, dev)
        sbi_logits = predict(model, self.sbi, bs, dev)
        real_logits = logits[self.real_idx]
        res = {
            "val_auc": roc_auc(self.labels, logits),
            "val_log_loss": log_loss(self.labels, 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))),
            "val_sbi_auc": roc_auc(
                np.r_[np.zeros(len(real_logits)), np.ones(len(sbi_logits))], np.r_[real_logits, sbi_logits]
            ),
        }
        if clips:
            if self.clips is None:
                self.clips = eval_view(
                    self.val,
                    self.clip_idx,
                    self.cfg.image_size,
                    self.cfg.crop_scale_range,
                    t=self.cfg.clip_len,
                    jitter_seed=self.cfg.seed + 3,
                )
            res["val_clip_auc"] = roc_auc(
                self.labels[self.clip_idx], predict(model, self.clips, max(1, bs // self.cfg.clip_len), dev)
            )
        return res


class RunLog:
    def __init__(self, out: Path):
        self.path = out / "log.csv"
        self.rows: list[dict] = []
        if self.path.is_file():
            with self.path.open() as fh:
                self.rows = list(csv.DictReader(fh))

    def write(self, row: dict) -> None:
        row = {k: row.get(k, "") for k in LOG_FIELDS}
        self.rows.append(row)
        new = not self.path.is_file()
        with self.path.open("a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        def series(key: str, phase: str) -> tuple[list[float], list[float]]:
            pts = [
                (float(r["step"]), float(r[key]))
                for r in self.rows
                if r.get(key) not in ("", None) and str(r["phase"]) == phase
            ]
            return [p[0] for p in pts], [p[1] for p in pts]

        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for phase in ("1", "2"):
            axes[0].plot(*series("loss", phase), label=f"loss (phase {phase})")
            axes[0].plot(*series("loc_loss", phase), label=f"loc loss (phase {phase})", alpha=0.6)
            for key in ("val_auc", "val_sbi_auc", "val_clip_auc"):
                xs, ys = series(key, phase)
                if xs:
                    axes[1].plot(xs, ys, marker="o", label=f"{key} (phase {phase})")
            axes[2].plot(*series("lr", phase), label=f"lr (phase {phase})")
        axes[0].set_title("training loss")
        axes[1].set_title("validation ROC AUC")
        axes[2].set_title("learning rate")
        for ax in axes:
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)


def save_atomic(obj: dict, path: Path) -> None:
    """``torch.save`` through :func:`training.cache_files.write_atomic`: a killed run keeps its last whole
    checkpoint."""
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def losses(
    out: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    cfg: TrainConfig,
    valid: torch.Tensor | None = None,
    with_loc: bool = True,
) -> tuple[torch.Tensor, float, float]:
    """Clip BCE + per-frame BCE (+ blend-mask BCE on reals and SBI). Returns (total, clip, loc)."""
    y = batch["label"]
    clip = F.binary_cross_entropy_with_logits(out["clip_logit"], y)
    fy = y[:, None].expand_as(out["frame_logits"])
    w = valid.float() if valid is not None else torch.ones_like(fy)
    frame = (
        F.binary_cross_entropy_with_logits(out["frame_logits"], fy, reduction="none") * w
    ).sum() / w.sum()
    total = clip + cfg.frame_weight * frame
    loc_val = 0.0
    if with_loc and batch["has_mask"].any():
        hm = batch["has_mask"]
        loc = F.binary_cross_entropy_with_logits(out["blend_logits"][hm], batch["mask"][hm])
        total = total + cfg.loc_weight * loc
        loc_val = loc.item()
    return total, clip.item(), loc_val


@contextlib.contextmanager
def batchnorm_momentum(
    norms: list[torch.nn.modules.batchnorm._BatchNorm], value: float | None
) -> Iterator[None]:
    """BatchNorm layers with another running-statistics momentum for a while (PyTorch updates
    ``(1 - m) * running + m * batch``; 0 leaves them as they are, None averages every batch alike)."""
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = value
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


def sharpness_aware_grads(
    model: torch.nn.Module,
    params: list[torch.nn.Parameter],
    rho: float,
    batch_loss: Callable[[], tuple[torch.Tensor, float, float]],
) -> None:
    """Replace the gradients in ``params`` (those of this batch at the current weights) by SAM's: the
    gradient at the weights moved ``rho`` along the normalised gradient, the worst point nearby to first
    order. The weights are then put back exactly, so the optimiser steps from where it was.

    The second pass must not count this batch twice in the BatchNorm running statistics, so their
    momentum is zero for it (PyTorch's update is ``(1 - m) * running + m * batch``).
    """
    with_grad = [(p, p.grad) for p in params if p.grad is not None]
    if not with_grad:
        return
    norm = torch.nn.utils.get_total_norm([g.detach() for _, g in with_grad], 2.0)
    scale = rho / (norm + 1e-12)
    originals = [p.detach().clone() for p, _ in with_grad]  # restored by copy: (w + e) - e need not be w
    with torch.no_grad():
        for p, g in with_grad:
            p.add_(g * scale)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    try:
        with batchnorm_momentum(norms, 0.0):
            for p, _ in with_grad:
                p.grad = None
            batch_loss()[0].backward()
    finally:
        with torch.no_grad():
            for (p, _), original in zip(with_grad, originals, strict=True):
                p.copy_(original)


class WeightAverage:
    """The uniform running mean of a model's floating-point weights and buffers over the phase-1 steps
    ``start, start + every, ...`` (config ``average_from``). Its state travels in the checkpoint, so a
    resumed run averages exactly the steps an uninterrupted one would."""

    def __init__(self, start: int, every: int, state: dict | None = None):
        if every < 1:
            raise ValueError(f"average_every must be at least 1, got {every}")
        self.start, self.every = start, every
        self.mean: dict[str, torch.Tensor] = state["mean"] if state else {}
        self.n: int = state["n"] if state else 0

    def due(self, step: int) -> bool:
        return step >= self.start and (step - self.start) % self.every == 0

    @torch.no_grad()
    def add(self, model: torch.nn.Module) -> None:
        self.n += 1
        for k, v in model.state_dict().items():
            if not v.is_floating_point():
                continue  # BatchNorm's batch counters: not weights
            if k not in self.mean:
                self.mean[k] = v.detach().float().clone()
            else:
                self.mean[k] += (v.float() - self.mean[k]) / self.n

    def state(self) -> dict:
        return {"mean": self.mean, "n": self.n}

    @torch.no_grad()
    def apply(self, model: torch.nn.Module) -> None:
        """Write the mean into ``model`` in place (keeping each tensor's dtype and memory format)."""
        if not self.n:
            raise RuntimeError("no weights were averaged: average_from starts after the last step")
        current = model.state_dict()
        for k, v in self.mean.items():
            current[k].copy_(v)


@torch.no_grad()
def refresh_batchnorm(
    model: torch.nn.Module, batches: Iterator[dict[str, torch.Tensor]], n: int, device: str
) -> None:
    """Measure every trainable BatchNorm layer's running statistics anew, as a plain mean over ``n``
    batches in training mode. Averaged weights come with averaged statistics, which belong to none of the
    networks averaged; SWA measures them again for the mean network, as this does."""
    model.train()
    norms = [
        m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training
    ]
    for m in norms:
        m.reset_running_stats()
    with batchnorm_momentum(norms, None):  # None: PyTorch's cumulative average
        for _ in range(n):
            model(next(batches)["clips"].to(device))


def temporal_parameters(model: DeepfakeDetector) -> list[torch.nn.Parameter]:
    names = ("embed.", "cls_token", "pos", "blocks.", "ln_f.", "clip_head.", "frame_head.")
    return [p for n, p in model.named_parameters() if n.startswith(names)]


@dataclass(frozen=True)
class Phase:
    """One training phase, read off the config: what it trains, on which batches, for how long."""

    number: int
    steps: int
    batch_size: int
    clip_len: Callable[[int], int]  # clip length of the batch at a step (seeded: resume draws the same)
    flicker_prob: float
    lr: float
    warmup: int
    eval_every: int  # 0: validate only at the end of the phase
    eval_clips: bool  # validation includes the clip subset (the temporal part's own check)
    grad_clip: float | None
    with_loc: bool  # the blend-mask loss trains (the CNN's localisation head)


def phases(cfg: TrainConfig) -> list[Phase]:
    """Phase 1: the whole network on frames (T = 1). Phase 2: the temporal part alone on clips of
    ``phase2_min_t..clip_len`` frames, drawn per step."""

    def clip_len_at(s: int) -> int:
        return int(np.random.default_rng([cfg.seed, 2, s, 7]).integers(cfg.phase2_min_t, cfg.clip_len + 1))

    return [
        Phase(
            1,
            cfg.phase1_steps,
            cfg.batch_size,
            lambda s: 1,
            0.0,
            cfg.lr,
            cfg.warmup_steps,
            cfg.eval_every,
            False,
            2.0,
            True,
        ),
        Phase(
            2,
            cfg.phase2_steps,
            cfg.phase2_batch_size,
            clip_len_at,
            cfg.flicker_prob,
            cfg.phase2_lr,
            max(1, cfg.phase2_steps // 10),
            0,
            True,
            None,
            False,
        ),
    ]


def optimizer_for(model: DeepfakeDetector, phase: Phase, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Phase 1: every unfrozen weight, the backbone at ``backbone_lr_mult``. Phase 2: the CNN frozen,
    only the temporal parameters learn."""
    if phase.number == 1:
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [
            {
                "params": [p for n, p in trainable if n.startswith("backbone.")],
                "lr_mult": cfg.backbone_lr_mult,
            },
            {"params": [p for n, p in trainable if not n.startswith("backbone.")], "lr_mult": 1.0},
        ]
    else:
        for param in model.parameters():
            param.requires_grad_(False)
        params = temporal_parameters(model)
        for param in params:
            param.requires_grad_(True)
        groups = [{"params": params, "lr_mult": 1.0}]
    return torch.optim.AdamW(groups, lr=phase.lr, weight_decay=cfg.weight_decay)


def forward(
    model: DeepfakeDetector, batch: dict[str, torch.Tensor], phase: Phase, cfg: TrainConfig, step: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Model outputs for a batch and the frame validity mask (None: every frame is real).

    Phase 2 runs the frozen CNN in eval mode (BatchNorm statistics stay as phase 1 left them) and trains
    the temporal part with practice at padding: some clips pretend to be shorter tracks."""
    clips = batch["clips"]
    if phase.number == 1:
        model.train()
        with torch.autocast(cfg.device, dtype=torch.bfloat16, enabled=cfg.amp):
            outs = model(clips)
        return {k: v.float() for k, v in outs.items()}, None
    b, t = clips.shape[:2]
    rng = np.random.default_rng([cfg.seed, 2, step, 11])
    lengths = np.where(rng.random(b) < 0.3, rng.integers(1, t + 1, b), t)
    valid = torch.from_numpy(np.arange(t)[None, :] < lengths[:, None]).to(cfg.device)
    model.eval()
    with torch.no_grad():
        emb, _ = model.frame_features(model.normalise(clips))
    model.embed.train()
    model.blocks.train()
    model.frame_drop.train()
    clip_logit, frame_logits = model.temporal(emb.reshape(b, t, -1), valid)
    return {"clip_logit": clip_logit, "frame_logits": frame_logits}, valid


def step_loss(
    model: DeepfakeDetector, batch: dict[str, torch.Tensor], phase: Phase, cfg: TrainConfig, step: int
) -> tuple[torch.Tensor, float, float]:
    """The training loss of a batch at the current weights: (total, clip, loc), as :func:`losses`."""
    outs, valid = forward(model, batch, phase, cfg, step)
    return losses(outs, batch, cfg, valid=valid, with_loc=phase.with_loc)


def batch_loader(
    cfg: TrainConfig, train_set: CropSet, phase: Phase, step: int
) -> torch.utils.data.DataLoader:
    """Seeded batches for one phase from ``step`` on (the config's mix, crop jitter and image size),
    made in ``cfg.workers`` processes beside the training step."""
    spec = SampleSpec(
        out=cfg.image_size,
        mask_out=loc_target_size(cfg.image_size),
        scale_range=cfg.crop_scale_range,
        shift=cfg.crop_shift,
        aug_policy=cfg.aug_policy,
        flicker_prob=phase.flicker_prob,
    )
    mix = BatchMix(cfg.frac_real, cfg.frac_dfdc_fake, cfg.frac_video_real, cfg.frac_video_fake)
    stream = BatchStream(train_set, cfg.seed, phase.number, step, phase.batch_size, phase.clip_len, spec, mix)
    return torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=cfg.workers, prefetch_factor=4 if cfg.workers else None
    )


def load_training_data(cfg: TrainConfig) -> tuple[CropSet, CropSet]:
    """(train, val) crops: DFDC train crops plus the videos' main face tracks (cut by the serving pipeline,
    cached), with landmarks for landmark SBI masks; DFDC val crops."""
    t0 = time.time()
    data_dir, cache = cfg.resolved_data_dir(), cfg.resolved_cache_dir()
    train_set = load_crops(
        data_dir, "train", cfg.store_size, cache, max_items=cfg.max_train_items, seed=cfg.seed
    )
    if cfg.videos:
        from training.video_crops import load_video_crops

        video_set = load_video_crops(cfg)
        assert video_set.track is not None  # video crops always carry their track ids
        print(
            f"data: {len(video_set)} video crops in {len(np.unique(video_set.track))} track stretches",
            flush=True,
        )
        train_set = concat_crops(train_set, video_set)
    if cfg.sbi_mask == "landmarks":
        from training.landmarks import crop_landmarks

        train_set.landmarks = crop_landmarks(train_set.images, train_set.labels, cache)
    elif cfg.sbi_mask != "ellipse":
        raise ValueError(f"sbi_mask must be 'landmarks' or 'ellipse', got {cfg.sbi_mask!r}")
    val_set = load_crops(data_dir, "val", cfg.store_size, cache, max_items=cfg.max_val_items, seed=cfg.seed)
    print(f"data: {len(train_set)} train / {len(val_set)} val crops in {time.time() - t0:.1f}s", flush=True)
    return train_set, val_set


def average_phase1(
    model: DeepfakeDetector,
    average: WeightAverage,
    cfg: TrainConfig,
    train_set: CropSet,
    phase: Phase,
    validator: Validator,
    log: RunLog,
) -> None:
    """End of phase 1 with ``average_from``: the model becomes the mean of the averaged steps, its
    BatchNorm statistics measured on the batches after the schedule's last (never trained on), and the
    mean is validated beside the last weights' row (logged as phase ``1avg``)."""
    t0 = time.time()
    average.apply(model)
    loader = batch_loader(cfg, train_set, phase, phase.steps)
    mixing, model.style_mix = model.style_mix, 0.0  # statistics of the plain network serving runs
    try:
        refresh_batchnorm(model, iter(loader), cfg.average_bn_batches, cfg.device)
    finally:
        model.style_mix = mixing
    del loader
    row: dict = {"phase": "1avg", "step": phase.steps}
    row.update({k: f"{v:.4f}" for k, v in validator.run(model, clips=phase.eval_clips).items()})
    print(
        f"phase 1: the mean of {average.n} steps from step {average.start} on, BatchNorm measured on "
        f"{cfg.average_bn_batches} batches, in {time.time() - t0:.0f}s: "
        + " ".join(f"{k}={v}" for k, v in row.items()),
        flush=True,
    )
    log.write(row)


def train(cfg: TrainConfig, fresh: bool = False) -> Path:
    """Run (or resume) the phases of :func:`phases` in one loop; returns the path of ``final.pt``."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    # OpenCV's thread pool does not survive fork(): a DataLoader worker forked after the parent used a
    # threaded cv2 call hangs forever on its first one. One cv2 thread everywhere (augmentation is
    # per-sample work in its own process anyway).
    cv2.setNumThreads(1)
    out = cfg.resolved_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, final_path = out / "ckpt.pt", out / "final.pt"
    if fresh:
        for p in (ckpt_path, final_path, out / "log.csv"):
            p.unlink(missing_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    train_set, val_set = load_training_data(cfg)
    validator = Validator(cfg, val_set)

    model = build_model(cfg).to(cfg.device)
    if cfg.channels_last:  # the uint8 NHWC input is already channels-last once permuted in normalise()
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in torch's stubs
    model.freeze_prefix(cfg.freeze_blocks)
    start_phase, start_step, state = 1, 0, None
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=cfg.device, weights_only=False)
        model.load_state_dict(state["model"])
        start_phase, start_step = state["phase"], state["step"]
        print(f"resumed from {ckpt_path}: phase {start_phase} step {start_step}", flush=True)
    elif cfg.init_from:
        init = torch.load(cfg.init_from, map_location=cfg.device, weights_only=False)
        model.load_state_dict(init["model"])
        print(f"phase 1 starts from the weights of {cfg.init_from}", flush=True)
    log = RunLog(out)
    elapsed0 = state["elapsed_s"] if state else 0.0
    t_start = time.time()

    def elapsed() -> float:
        return elapsed0 + time.time() - t_start

    for phase in phases(cfg):
        if phase.number < start_phase:
            continue
        step = start_step if phase.number == start_phase else 0
        opt = optimizer_for(model, phase, cfg)
        if state and state["phase"] == phase.number:
            opt.load_state_dict(state["opt"])
        params = [p for g in opt.param_groups for p in g["params"]]
        average = None
        if phase.number == 1 and cfg.average_from > 0 and phase.steps > 0:
            if not 0 < cfg.average_from <= 1:
                raise ValueError(f"average_from is a fraction of phase 1 in (0, 1], got {cfg.average_from}")
            resumed = state.get("average") if state and state["phase"] == 1 else None
            average = WeightAverage(round(cfg.average_from * phase.steps), cfg.average_every, resumed)
        loader = batch_loader(cfg, train_set, phase, step)
        it = iter(loader)
        acc, tick = {"loss": 0.0, "clip": 0.0, "loc": 0.0, "n": 0, "items": 0}, time.time()
        while step < phase.steps:
            batch = {k: v.to(cfg.device) for k, v in next(it).items()}
            lr = lr_at(step, phase.steps, phase.lr, phase.warmup)
            for g in opt.param_groups:
                g["lr"] = lr * g.get("lr_mult", 1.0)  # phase-2 checkpoints of older runs have none
            loss, clip_l, loc_l = step_loss(model, batch, phase, cfg, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if phase.number == 1 and cfg.sam_rho > 0:
                again = functools.partial(step_loss, model, batch, phase, cfg, step)
                sharpness_aware_grads(model, params, cfg.sam_rho, again)
            if phase.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, phase.grad_clip)
            opt.step()
            step += 1
            if average is not None and average.due(step):
                average.add(model)
            acc["loss"] += loss.item()
            acc["clip"] += clip_l
            acc["loc"] += loc_l
            acc["n"] += 1
            acc["items"] += batch["clips"].shape[0] * batch["clips"].shape[1]
            last = step == phase.steps
            row = None
            if step % cfg.log_every == 0 or last:
                n = acc["n"]
                row = {
                    "phase": phase.number,
                    "step": step,
                    "loss": f"{acc['loss'] / n:.4f}",
                    "clip_loss": f"{acc['clip'] / n:.4f}",
                    "loc_loss": f"{acc['loc'] / n:.4f}" if phase.with_loc else "",
                    "lr": f"{lr:.2e}",
                    "items_per_s": f"{acc['items'] / max(1e-6, time.time() - tick):.1f}",
                    "elapsed_s": f"{elapsed():.0f}",
                }
                acc, tick = {"loss": 0.0, "clip": 0.0, "loc": 0.0, "n": 0, "items": 0}, time.time()
            if last or (phase.eval_every and step % phase.eval_every == 0):
                row = row or {"phase": phase.number, "step": step, "elapsed_s": f"{elapsed():.0f}"}
                row.update({k: f"{v:.4f}" for k, v in validator.run(model, clips=phase.eval_clips).items()})
                tick = time.time()
            if row:
                print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
                log.write(row)
            if step % cfg.ckpt_every == 0 or last:
                save_atomic(
                    {
                        "model": model.state_dict(),
                        "opt": opt.state_dict(),
                        "phase": phase.number,
                        "step": step,
                        "elapsed_s": elapsed(),
                        "config": dataclasses.asdict(cfg),
                        "average": average.state() if average is not None else None,
                    },
                    ckpt_path,
                )
        del it, loader
        if average is not None:
            average_phase1(model, average, cfg, train_set, phase, validator, log)
        state = None
        log.plot(out / "curves.png")
    model.eval()
    save_atomic(
        {"model": model.state_dict(), "config": dataclasses.asdict(cfg), "elapsed_s": elapsed()}, final_path
    )
    print(f"done in {elapsed() / 60:.1f} min: {final_path}", flush=True)
    return final_path


def parse_overrides(pairs: list[str]) -> dict:
    """``key=value`` pairs; values parsed as JSON when they can be (numbers, bools, lists)."""
    res = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        k, v = pair.split("=", 1)
        try:
            res[k] = json.loads(v)
        except json.JSONDecodeError:
            res[k] = v
        if isinstance(res[k], list):
            res[k] = tuple(res[k])
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="cpu", help="preset: cpu (shipped), cpu-v1 (model 1.0.0), gpu, tiny")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in the run dir")
    args = ap.parse_args(argv)
    cfg = get_config(args.config, **parse_overrides(args.set))
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"config {cfg.name!r} needs a CUDA GPU; none is available here (use --config cpu)")
    train(cfg, fresh=args.fresh)


if __name__ == "__main__":
    main()
