"""Fit the temperature and the decision threshold on validation data (never on test data).

Why both: raw logits of a network trained with balanced batches and heavy augmentation are over- or
under-confident, and the product shows a probability; one temperature (p = sigmoid(logit / T), fitted by
minimising the log loss) fixes the scale without changing the ranking. The threshold is then chosen on
the calibrated probabilities to maximise balanced accuracy (Youden's J), since the classes are balanced in
validation but not in the wild.

Inputs scored the way they are served: every DFDC val crop as a single-frame clip (the whole crop, as
``deepfake evaluate`` scores crops) plus a seeded subset of val crops as ``clip_len``-frame clips with
per-frame jitter (as the video pipeline feeds tracks). ``python -m training.calibrate runs/cpu/final.pt``
writes ``calibration.json`` next to the checkpoint; ``training.export`` reads it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from training.config import TrainConfig
from training.data import load_crops
from training.metrics import accuracy, balanced_accuracy, check_weights, equal_error_rate, log_loss, roc_auc
from training.samples import eval_view
from training.train import predict
from training.weights import load_trained


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean binary cross-entropy of sigmoid(logits / temperature), computed stably."""
    z = logits / temperature
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] that minimises the log loss (1-D, bounded, in log space)."""
    res = minimize_scalar(
        lambda lt: nll(logits, labels, float(np.exp(lt))),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(res.x))


def best_threshold(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Probability threshold maximising balanced accuracy (TPR + TNR) / 2 on these scores.

    Candidates are the distinct scores (score >= threshold is fake); among equally good ones the
    highest wins. ``weights`` (one per item) weight both rates, e.g. every (source, label) alike
    (training/cv.py reports that rule beside the per-video one).
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(probs, dtype=np.float64)
    w = check_weights(weights, s)
    if not (0 < int(y.sum()) < y.size):
        raise ValueError("a threshold needs both real and fake items")
    if not (w[y == 1].sum() > 0 and w[y == 0].sum() > 0):
        raise ValueError("a threshold needs real and fake items of non-zero weight")
    values, group = np.unique(s, return_inverse=True)  # increasing
    fake_w = np.bincount(group, np.where(y == 1, w, 0.0), values.size)
    real_w = np.bincount(group, np.where(y == 0, w, 0.0), values.size)
    # at threshold values[i]: fakes caught = weight at or above it, reals cleared = weight below it
    tpr = np.cumsum(fake_w[::-1])[::-1] / fake_w.sum()
    tnr = (np.cumsum(real_w) - real_w) / real_w.sum()
    j = tpr + tnr
    i = int(np.flatnonzero(j >= j.max() - 1e-12)[-1])
    return float(values[i])


def summary(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float | None]:
    """The figures of training/metrics.py (the one implementation `deepfake evaluate` uses too)."""
    return {
        "n": int(len(labels)),
        "auc": roc_auc(labels, probs),
        "eer": equal_error_rate(labels, probs),
        "accuracy": accuracy(labels, probs, threshold),
        "balanced_accuracy": balanced_accuracy(labels, probs, threshold),
        "log_loss": log_loss(labels, probs),
    }


def calibrate(checkpoint: Path, n_clips: int = 400, data_dir: str = "", batch_size: int = 32) -> dict:
    """Score val, fit temperature + threshold, write calibration.json beside the checkpoint; return it."""
    t0 = time.time()
    model, cfg = load_trained(checkpoint)
    if data_dir:
        cfg.data_dir = data_dir
    torch.set_num_threads(cfg.threads)
    val = load_crops(cfg.resolved_data_dir(), "val", cfg.store_size, cfg.resolved_cache_dir())
    labels = val.labels.astype(np.float64)
    s = cfg.image_size
    frames = eval_view(val, np.arange(len(val)), s, cfg.crop_scale_range)
    frame_logits = predict(model, frames, batch_size).astype(np.float64)
    rng = np.random.default_rng(cfg.seed + 5)
    clip_idx = np.sort(rng.choice(len(val), min(n_clips, len(val)), replace=False))
    clips = eval_view(val, clip_idx, s, cfg.crop_scale_range, t=cfg.clip_len, jitter_seed=cfg.seed + 6)
    clip_logits = predict(model, clips, max(1, batch_size // cfg.clip_len)).astype(np.float64)
    clip_labels = labels[clip_idx]

    all_logits = np.r_[frame_logits, clip_logits]
    all_labels = np.r_[labels, clip_labels]
    temperature = fit_temperature(all_logits, all_labels)

    def prob(z: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-z / temperature))

    threshold = best_threshold(prob(all_logits), all_labels)
    result = {
        "temperature": temperature,
        "threshold": threshold,
        "fitted_on": f"DFDC val: {len(labels)} crops as 1-frame clips + {len(clip_idx)} crops as "
        f"{cfg.clip_len}-frame jittered clips (seed {cfg.seed + 5})",
        "val_crops": summary(prob(frame_logits), labels, threshold),
        "val_clips": summary(prob(clip_logits), clip_labels, threshold),
        "uncalibrated_log_loss_crops": nll(frame_logits, labels, 1.0),
        "checkpoint": str(checkpoint),
        "seconds": round(time.time() - t0, 1),
    }
    out = Path(checkpoint).with_name("calibration.json")
    out.write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fit temperature and threshold on DFDC val")
    ap.add_argument("checkpoint", type=Path, nargs="?", default=Path("runs/cpu/final.pt"))
    ap.add_argument("--clips", type=int, default=400, help="val crops also scored as clip_len-frame clips")
    ap.add_argument("--data-dir", default="", help="data root (default: DEEPFAKE_DATA_DIR or ../shared/data)")
    args = ap.parse_args(argv)
    if not args.checkpoint.is_file():
        raise SystemExit(f"checkpoint not found: {args.checkpoint} (train first: make train)")
    print(json.dumps(calibrate(args.checkpoint, args.clips, args.data_dir), indent=2))


__all__ = ["TrainConfig", "best_threshold", "calibrate", "fit_temperature", "nll"]

if __name__ == "__main__":
    main()
