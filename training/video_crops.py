"""Training crops from videos, cut by the serving pipeline and cached on disk, one file per video.

Why the serving pipeline: the model must see at training time the crops serving will give it. So a video
goes through ``Pipeline.extract_faces`` (the code path of ``deepfake faces`` and ``deepfake detect``:
sampler, BlazeFace, tracking, ``crop_face``) at the serving crop policy of the config (``serve_crop_scale``,
``serve_shift_y``), resized to ``store_size``: the whole crop at that policy is what a DFDC training crop
is, so both kinds of item go through the same random cut afterwards. Windows are ``clip_len`` frames long,
as when serving the exported model.

Why a file per video: cutting takes about a second of CPU per video; the cache key holds everything that
changes the crops (the file, its size and mtime, crop policy, frames, clip length, detector settings), so
a rerun loads in milliseconds and a changed policy re-cuts. A video with no face is cached as empty and
skipped with a warning, as is a file the pipeline refuses.

Only the main face track of a video is kept (the largest track that decides serving's verdict). Frames of
one sampling window of that track form one ``track`` id in the CropSet: consecutive sampled frames, the
material of phase-2 clips.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.cache_files import save_npz
from training.config import TrainConfig
from training.data import CropSet, read_manifest, scan_celebdf, scan_dfdc, scan_faceforensics
from training.metrics import group_sizes

SCANNERS = {"ff++": scan_faceforensics, "celebdf": scan_celebdf, "dfdc": scan_dfdc}
TRAIN_SPLITS = ("", "train")  # what a spec without a split trains on; test rows never do
PROGRESS_EVERY = 50


@dataclass
class VideoSource:
    """One parsed ``videos`` spec: where the rows come from and which split trains."""

    kind: str  # ff++, celebdf, dfdc or manifest
    path: Path  # dataset root, or the manifest file
    split: str | None  # None: rows marked train or unmarked

    def rows(self) -> list[dict[str, str]]:
        """Video rows of this source with absolute paths, restricted to its training split."""
        if self.kind == "manifest":
            base = self.path.parent
            rows = [r for r in read_manifest(self.path) if r["kind"] == "video"]
        else:
            base = self.path
            rows = SCANNERS[self.kind](self.path)
        keep = (self.split,) if self.split is not None else TRAIN_SPLITS
        return [{**r, "path": str(base / r["path"])} for r in rows if r["split"] in keep]


def parse_video_specs(spec: str, data_dir: Path | None = None) -> list[VideoSource]:
    """``kind:path[:split]`` specs, comma-separated (see TrainConfig.videos); fails loudly on typos.
    A relative path is read under ``data_dir`` (the config's data root), so presets need no absolute
    paths: ``manifest:MANIFEST.tsv:dev`` is the project's dev videos wherever the data lives."""
    sources = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        kind, sep, rest = part.partition(":")
        kind = kind.lower()
        if not sep or kind not in (*SCANNERS, "manifest") or not rest:
            raise ValueError(
                f"bad videos spec {part!r}: expected kind:path[:split] with kind one of "
                f"{', '.join([*SCANNERS, 'manifest'])}"
            )
        path, split = rest, None
        head, sep, tail = rest.rpartition(":")
        if sep and head and "/" not in tail and "\\" not in tail:
            path, split = head, tail
        if kind == "manifest" and split is None:
            raise ValueError(f"videos spec {part!r}: a manifest needs its split, e.g. manifest:{rest}:train")
        if split == "test":
            raise ValueError(f"videos spec {part!r}: test rows never train")
        if data_dir is not None and not Path(path).is_absolute():
            path = str(data_dir / path)
        if not Path(path).exists():
            raise FileNotFoundError(f"videos spec {part!r}: {path} does not exist")
        sources.append(VideoSource(kind, Path(path), split))
    return sources


def _pipeline(cfg: TrainConfig):
    """The serving pipeline without a model, at the config's serving crop policy and clip length."""
    from deepfake.contracts.metadata import CropPolicy
    from preprocessor.pipeline import Pipeline
    from preprocessor.settings import PipelineSettings

    settings = PipelineSettings(frames=cfg.video_frames, threads=cfg.threads)
    crop = CropPolicy(scale=cfg.serve_crop_scale, size=cfg.store_size, shift_y=cfg.serve_shift_y)
    # Windows as long as the exported model's clips, as when serving it.
    return Pipeline(settings, None, crop=crop, clip_len=cfg.clip_len)


def cache_path(cfg: TrainConfig, pipeline, video: Path) -> Path:
    """The cache file of one video: named after it, keyed by everything that changes its crops."""
    stat = video.stat()
    settings = pipeline.settings.model_dump(
        mode="json", exclude={"data_dir", "model_path", "threads", "batch_size"}
    )
    key = {
        "video": str(video.resolve()),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "crop": pipeline.crop.model_dump(),
        "clip_len": pipeline.meta.clip_len,
        "settings": settings,
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cfg.resolved_cache_dir() / "video_crops" / f"{video.stem}_{digest}.npz"


def main_track(pipeline, video: Path) -> tuple[list, list[str]]:
    """The detections (in time order) of the video's main face track: the largest track that decides
    serving's verdict; none when no face was found or the pipeline refused the file (the reason is in
    the warnings returned with them)."""
    from preprocessor.errors import VideoError

    try:
        faces = pipeline.extract_faces(video)
    except VideoError as exc:
        return [], [f"{exc.code}: {exc.message}"]
    if not faces.tracks:
        return [], ["no face found", *faces.warnings]
    main = max(faces.tracks, key=lambda t: (t.used_for_verdict, len(t.detections) * t.mean_face_px))
    return sorted(main.detections, key=lambda d: d.sample), faces.warnings


def cut_video(pipeline, video: Path) -> dict[str, np.ndarray]:
    """Crops of the main face track: ``crops`` [n, S, S, 3], ``windows`` (sampling window per crop),
    ``crop_px`` (crop side in the frame) and ``warnings``; n = 0 when no face was found or the pipeline
    refused the file (the reason is in the warnings)."""
    from preprocessor.cropping import square_box

    size = pipeline.crop.size
    dets, warnings = main_track(pipeline, video)
    sides = [square_box(d.box, pipeline.crop) for d in dets]
    return {
        "crops": np.stack([d.crop for d in dets]) if dets else np.zeros((0, size, size, 3), np.uint8),
        "windows": np.array([d.window for d in dets], np.int64),
        "crop_px": np.array([round(float(b[2] - b[0])) for b in sides], np.int32),
        "warnings": np.array(warnings, dtype=str),
    }


def video_track(cfg: TrainConfig, pipeline, video: Path) -> tuple[dict[str, np.ndarray], bool]:
    """The main track of one video (:func:`cut_video`), from the cache or cut now and cached;
    returns it and whether it came from the cache."""
    if not video.is_file():
        return {"crops": np.zeros((0,)), "warnings": np.array(["file not found"])}, False
    cache = cache_path(cfg, pipeline, video)
    if cache.is_file():
        with np.load(cache) as z:
            return dict(z), True
    got = cut_video(pipeline, video)
    save_npz(cache, got)
    return got, False


def video_rows(cfg: TrainConfig) -> list[dict[str, str]]:
    """The rows ``cfg.videos`` names, less the held-out fold when ``cfg.video_fold`` >= 0
    (leave-source-out, training/folds.py)."""
    rows = [r for source in parse_video_specs(cfg.videos, cfg.resolved_data_dir()) for r in source.rows()]
    if cfg.video_fold >= 0:
        from training.folds import assign_folds

        fold = assign_folds(rows, cfg.n_folds)
        rows = [r for r in rows if fold[r["path"]] != cfg.video_fold]
    return rows


def sampling_weights(rows: list[dict[str, str]], frames: list[int], source_power: float) -> np.ndarray:
    """Per-item draw weight: each video weighs 1 / (videos of its source and label) ** source_power,
    shared by its frames. A video counts the same however many frames it gave. At the recipe's 0.5 a
    41-clip corpus does not drown a source of two clips, while a single clip is not repeated as often as
    a whole corpus either; 1.0 gives every source and label the same share (as a sealed evaluation of new
    sources weighs them), 0.0 every video the same."""
    used = [(r, n) for r, n in zip(rows, frames, strict=True) if n]
    videos_of_key = group_sizes([(r.get("dataset", ""), r["label"]) for r, _ in used])
    parts = [np.full(n, 1.0 / (c**source_power * n)) for (_, n), c in zip(used, videos_of_key, strict=True)]
    return np.concatenate(parts) if parts else np.zeros(0)


def load_video_crops(cfg: TrainConfig, rows: list[dict[str, str]] | None = None) -> CropSet:
    """A CropSet of the main face track of every video in ``rows`` (default: :func:`video_rows`), cut
    once and cached; each (video, window) stretch gets its own track id, in time order."""
    if rows is None:
        rows = video_rows(cfg)
    pipeline = _pipeline(cfg)
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    crop_px: list[np.ndarray] = []
    tracks: list[np.ndarray] = []
    paths: list[str] = []
    frames: list[int] = []
    cut = cached = skipped = 0
    next_track = 0
    t0 = time.time()
    for n, row in enumerate(rows, start=1):
        video = Path(row["path"])
        got, was_cached = video_track(cfg, pipeline, video)
        cached += was_cached
        cut += video.is_file() and not was_cached
        crops = got["crops"]
        frames.append(len(crops))
        if len(crops) == 0:
            skipped += 1
            why = "; ".join(got["warnings"].tolist())
            print(f"warning: {video}: skipped ({why})", file=sys.stderr, flush=True)
        else:
            windows, px = got["windows"], got["crop_px"]
            _, track_of = np.unique(windows, return_inverse=True)
            images.append(crops)
            labels.append(np.full(len(crops), row["label"] == "fake", np.int64))
            crop_px.append(px)
            paths.extend(f"{video}#{i}" for i in range(len(crops)))
            tracks.append(next_track + track_of.reshape(-1))
            next_track += int(track_of.max()) + 1
        if n % PROGRESS_EVERY == 0 or n == len(rows):
            print(
                f"video crops: {n}/{len(rows)} videos ({cut} cut, {cached} cached, {skipped} skipped) "
                f"in {time.time() - t0:.0f}s",
                flush=True,
            )
    if not images:
        raise ValueError(f"no face crops from {len(rows)} video(s) of videos={cfg.videos!r}")
    return CropSet(
        np.concatenate(images),
        np.concatenate(labels),
        np.concatenate(crop_px),
        paths,
        np.concatenate(tracks),
        sampling_weights(rows, frames, cfg.source_power),
    )
