"""Train the audio-visual sync model, self-supervised on real videos with speech:
``python -m training.train_sync --fold K`` (leave-source-out fold K held out) or ``--all``.

Material: the dev videos of MANIFEST.tsv (kind=video) that are real and carry an audio stream; fakes are
never used here (they are for evaluation and the combiner, training/sync_eval.py). Each video gives its
main face track's mouth crops at every frame (training/sync_data.py, cached) and its audio as log-mel.
A training window is ``clip_len`` frames every 2nd frame starting at any frame, as serving samples them,
kept only where the audio has speech (the same voice-activity test serving applies).

Objective: InfoNCE over K candidates per window: the aligned audio (the target), the same clip's audio
shifted by 0.2-1.0 s either way, and windows of other clips' audio. Why InfoNCE and not BCE: serving
asks which of the candidate offsets fits the lips best (the argmax of the offset curve, against its
median), a ranking, and InfoNCE trains exactly that ranking; its shifted candidates from the same clip
(same voice, same face) leave the model nothing to use but the timing.

Folds: training/folds.py's assign_folds(rows, 3) over every dev video row, the folds of the visual model's
cross-validation; fold K's model never sees fold K's sources. Checkpoints (model, optimiser, step,
config) go to runs/sync/fold<K>/ or runs/sync/all/ every ``save_every`` steps; a rerun resumes.
``torch.set_num_threads(1)``: the machine's cores are shared with other training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from preprocessor.audio import (
    decode_audio,
    log_mel,
    mel_windows,
    speech_fraction_of,
    speech_frames,
)
from preprocessor.audio_visual import window_span
from training.cache_files import write_atomic
from training.config import REPO_ROOT, default_data_dir
from training.folds import assign_folds
from training.sync_data import dev_video_rows, has_audio, load_track, visual_meta
from training.sync_model import CONFIGS, SyncConfig, SyncNet

STRIDE = 2  # serving's frame stride (PipelineSettings.frame_stride)


@dataclass
class TrainSyncConfig:
    model: str = "small"
    steps: int = 1800
    batch: int = 32
    n_shifted: int = 6  # candidates: the same clip's audio shifted by min_shift_s..max_shift_s
    n_other: int = 3  # candidates: other clips' audio
    min_shift_s: float = 0.2
    max_shift_s: float = 1.0
    aligned_jitter_s: float = 0.02
    scale_jitter: float = 0.0
    lr: float = 1e-3
    weight_decay: float = 1e-2
    min_speech_fraction: float = 0.3
    seed: int = 0
    save_every: int = 100
    n_folds: int = 3
    max_videos: int = 0  # 0: all (the smoke test trains on a few)


@dataclass
class Clip:
    """One real video's training material."""

    path: str
    dataset: str
    mouth: np.ndarray  # [n, H, W] uint8, every frame of the main track
    t: np.ndarray  # [n] frame times (s)
    mel: np.ndarray  # [80, F]
    mel_t0: float
    starts: np.ndarray  # frame indices where a speech window of clip_len frames at STRIDE starts


def window_starts(
    t: np.ndarray, speech: np.ndarray, speech_t0: float, clip_len: int, min_speech: float
) -> np.ndarray:
    """Frame indices i where frames i, i+STRIDE, ... are consecutive frames of the track (no gap) and the
    audio they span has speech."""
    span = STRIDE * (clip_len - 1)
    if len(t) <= span:
        return np.zeros(0, np.int64)
    step = float(np.median(np.diff(t)))
    keep = []
    for i in range(len(t) - span):
        if t[i + span] - t[i] > span * step * 1.5:
            continue
        a, b = window_span(t[i : i + span + 1 : STRIDE])
        if speech_fraction_of(speech, speech_t0, a, b) >= min_speech:
            keep.append(i)
    return np.array(keep, np.int64)


def real_rows_with_audio(data_dir: Path) -> tuple[list[dict[str, str]], dict[str, int]]:
    """The real dev videos with an audio stream, and every dev video's fold."""
    rows = dev_video_rows(data_dir)
    folds = assign_folds(rows, 3)
    reals = [r for r in rows if r["label"] == "real" and has_audio(Path(r["path"]))]
    return reals, folds


def load_clips(rows: list[dict[str, str]], cache_dir: Path, clip_len: int, min_speech: float) -> list[Clip]:
    meta = visual_meta()
    clips = []
    for row in rows:
        path = Path(row["path"])
        track = load_track(cache_dir, path, meta)
        audio = decode_audio(path)
        if audio is None or not len(track["mouth"]):
            continue
        speech, speech_t0 = speech_frames(audio)
        starts = window_starts(track["t"], speech, speech_t0, clip_len, min_speech)
        if not len(starts):
            continue
        mel, mel_t0 = log_mel(audio)
        clips.append(Clip(str(path), row.get("dataset", ""), track["mouth"], track["t"], mel, mel_t0, starts))
    return clips


def augment(mouth: np.ndarray, rng: np.random.Generator, scale_jitter: float = 0.0) -> np.ndarray:
    """A horizontal flip, a shift of up to 3 px (the crop's placement jitters from frame to frame) and,
    with ``scale_jitter``, a zoom by up to that fraction either way (faces differ in size in the crop)."""
    if rng.random() < 0.5:
        mouth = mouth[:, :, ::-1]
    if scale_jitter:
        import cv2

        z = 1.0 + rng.uniform(-scale_jitter, scale_jitter)
        h, w = mouth.shape[1:]
        m = np.array([[z, 0, (1 - z) * w / 2], [0, z, (1 - z) * h / 2]], np.float32)
        mouth = np.stack([cv2.warpAffine(f, m, (w, h), borderMode=cv2.BORDER_REFLECT) for f in mouth])
    dy, dx = rng.integers(-3, 4, size=2)
    return np.roll(mouth, (int(dy), int(dx)), axis=(1, 2))


def augment_mel(mel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise in the log domain and a masked band of up to 12 mels (SpecAugment), the same for all of a
    window's candidates (so the aligned one is not told apart by its augmentation)."""
    mel = mel + rng.normal(0.0, 0.3, mel.shape[-2:]).astype(np.float32)[None]
    if rng.random() < 0.5:
        width = int(rng.integers(1, 13))
        lo = int(rng.integers(0, mel.shape[-2] - width))
        mel[:, lo : lo + width] = mel[:, lo : lo + width].mean()
    return mel


def make_batch(
    clips: list[Clip], weights: np.ndarray, cfg: TrainSyncConfig, clip_len: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """mouth [B, T, H, W] uint8 and mel [B, K, 80, 64] float32, the aligned audio at candidate 0."""
    mouths, mels = [], []
    for _ in range(cfg.batch):
        ci = int(rng.choice(len(clips), p=weights))
        clip = clips[ci]
        i = int(rng.choice(clip.starts))
        idx = np.arange(i, i + STRIDE * clip_len, STRIDE)
        a, b = window_span(clip.t[idx])
        mag = rng.uniform(cfg.min_shift_s, cfg.max_shift_s, cfg.n_shifted)
        jitter = rng.uniform(-cfg.aligned_jitter_s, cfg.aligned_jitter_s)  # in sync is within a frame
        offsets = np.concatenate([[jitter], mag * rng.choice([-1.0, 1.0], cfg.n_shifted)])
        cands = [mel_windows(clip.mel, clip.mel_t0, a, b, offsets)]
        for _ in range(cfg.n_other):
            oj = int(rng.choice([j for j in range(len(clips)) if j != ci])) if len(clips) > 1 else ci
            other = clips[oj]
            k = int(rng.choice(other.starts))
            oa, ob = window_span(other.t[np.arange(k, k + STRIDE * clip_len, STRIDE)])
            length = b - a
            cands.append(mel_windows(other.mel, other.mel_t0, oa, oa + length, np.array([0.0])))
        mouths.append(augment(clip.mouth[idx], rng, cfg.scale_jitter))
        mels.append(augment_mel(np.concatenate(cands), rng))
    return np.ascontiguousarray(np.stack(mouths)), np.stack(mels).astype(np.float32)


def source_weights(clips: list[Clip]) -> np.ndarray:
    """Each clip weighs 1 / sqrt(clips of its source): 41 GRID clips do not drown a source of two."""
    counts: dict[str, int] = {}
    for c in clips:
        counts[c.dataset] = counts.get(c.dataset, 0) + 1
    w = np.array([1.0 / math.sqrt(counts[c.dataset]) for c in clips])
    return w / w.sum()


@torch.no_grad()
def top1(
    model: SyncNet, clips: list[Clip], cfg: TrainSyncConfig, clip_len: int, batches: int = 4
) -> float | None:
    """Share of windows whose aligned audio wins among the K candidates (a fixed draw)."""
    if not clips:
        return None
    model.eval()
    rng = np.random.default_rng(1234)
    w = source_weights(clips)
    hits = total = 0
    for _ in range(batches):
        mouth, mel = make_batch(clips, w, cfg, clip_len, rng)
        logits = model(torch.from_numpy(mouth), torch.from_numpy(mel))
        hits += int((logits.argmax(1) == 0).sum())
        total += len(logits)
    model.train()
    return hits / total


RUNS = REPO_ROOT / "runs" / "sync"


def run_dir(fold: int | None, root: Path = RUNS) -> Path:
    return root / ("all" if fold is None else f"fold{fold}")


def fold_clips(fold: int | None, cfg: TrainSyncConfig) -> tuple[list[Clip], list[Clip]]:
    """(training clips, held-out clips): the real dev videos with speech outside / inside ``fold``."""
    reals, folds = real_rows_with_audio(default_data_dir())
    train_rows = [r for r in reals if fold is None or folds[r["path"]] != fold]
    held_rows = [r for r in reals if fold is not None and folds[r["path"]] == fold]
    if cfg.max_videos:
        train_rows, held_rows = train_rows[: cfg.max_videos], held_rows[: cfg.max_videos]
    clip_len = CONFIGS[cfg.model].clip_len
    cache_dir = REPO_ROOT / "cache"
    return (
        load_clips(train_rows, cache_dir, clip_len, cfg.min_speech_fraction),
        load_clips(held_rows, cache_dir, clip_len, cfg.min_speech_fraction),
    )


def train(
    fold: int | None,
    cfg: TrainSyncConfig,
    out: Path,
    max_minutes: float = 0.0,
    clips: tuple[list[Clip], list[Clip]] | None = None,
) -> Path:
    """Train (or resume) one model on ``clips`` (default: :func:`fold_clips`); returns its checkpoint."""
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    model_cfg: SyncConfig = CONFIGS[cfg.model]
    clip_len = model_cfg.clip_len
    t0 = time.time()
    train_clips, held_clips = clips if clips is not None else fold_clips(fold, cfg)
    if len(train_clips) < 2:
        raise SystemExit(f"need at least 2 real clips with speech and a face, got {len(train_clips)}")
    n_windows = sum(len(c.starts) for c in train_clips)
    print(
        f"sync {out.name}: {len(train_clips)} training clips ({n_windows} window starts), "
        f"{len(held_clips)} held out; loaded in {time.time() - t0:.0f}s",
        flush=True,
    )
    torch.manual_seed(cfg.seed)
    model = SyncNet(model_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        print(f"resumed at step {step}", flush=True)
    weights = source_weights(train_clips)
    log = (out / "log.jsonl").open("a")
    start = time.time()

    def save(done: bool) -> None:
        state = {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "step": step,
            "done": done,
            "model_config": model_cfg.to_dict(),
            "train_config": dataclasses.asdict(cfg),
            "fold": fold,
            "train_videos": [c.path for c in train_clips],
        }
        write_atomic(ckpt_path, lambda tmp: torch.save(state, tmp))

    model.train()
    while step < cfg.steps:
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        rng = np.random.default_rng([cfg.seed, step])
        mouth, mel = make_batch(train_clips, weights, cfg, clip_len, rng)
        logits = model(torch.from_numpy(mouth), torch.from_numpy(mel))
        loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 25 == 0:
            acc = float((logits.argmax(1) == 0).float().mean())
            rec: dict[str, float | None] = {"step": step, "loss": round(float(loss.detach()), 4)}
            rec |= {"train_top1": acc, "lr": lr}
            if step % cfg.save_every == 0 or step == cfg.steps:
                rec["held_top1"] = top1(model, held_clips, cfg, clip_len)
            rec["s"] = round(time.time() - start, 1)
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if step % cfg.save_every == 0 or step == cfg.steps:
            save(step >= cfg.steps)
        if max_minutes and time.time() - start > max_minutes * 60 and step < cfg.steps:
            save(False)
            print(f"stopped at step {step} after {max_minutes} min; rerun to resume", flush=True)
            break
    return ckpt_path


def load_sync(path: Path) -> SyncNet:
    """A trained SyncNet from its checkpoint, in eval mode."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = SyncNet(SyncConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--fold", type=int, help="hold out this leave-source-out fold (0..2)")
    which.add_argument("--all", action="store_true", help="train on every real video with speech")
    ap.add_argument("--model", default="small", choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=TrainSyncConfig.steps)
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="TrainSyncConfig overrides, e.g. n_shifted=10 weight_decay=0.05 (saved with the checkpoint)",
    )
    ap.add_argument("--max-minutes", type=float, default=0.0, help="stop (resumably) after this long")
    ap.add_argument("--max-videos", type=int, default=0, help="train on the first N videos only (smoke)")
    ap.add_argument("--root", type=Path, default=RUNS, help="runs folder: <root>/fold<K> or <root>/all")
    args = ap.parse_args(argv)
    cfg = TrainSyncConfig(model=args.model, steps=args.steps, max_videos=args.max_videos)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in TrainSyncConfig.__dataclass_fields__:
            raise SystemExit(f"unknown setting {key!r}")
        cfg = dataclasses.replace(cfg, **{key: type(getattr(cfg, key))(value)})
    fold = None if args.all else args.fold
    out = run_dir(fold, args.root)
    path = train(fold, cfg, out, args.max_minutes)
    print(f"checkpoint: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
