"""Training material for the sync model: per video, the main face track's crops (grayscale, the serving
crop policy of the shipped visual model) with their frame times and sampling windows, cut by the serving
pipeline (``Pipeline.extract_faces``) and cached on disk, one file per video.

Why grayscale full face crops and not mouth crops: the mouth region (preprocessor/mouth.py) is a fixed cut
of the face crop, so the cache stays valid when its constants are re-measured; grayscale is all the sync
model reads. Why denser sampling than serving's 32 frames: one video gives up to ``MAX_WINDOWS`` windows
of ``clip_len`` frames at serving's stride, so a hundred clips yield a few thousand training windows. The
window count is capped so the pipeline keeps the stride (``plan_windows`` shrinks it for a short clip,
and the model would then see another time scale than serving gives it).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from inference.metadata import METADATA_KEY, CropPolicy, ModelMeta

MAX_WINDOWS = 32  # 256 frames: 32 windows of 8
CACHE_VERSION = 1
VISUAL_MODEL = Path("model_repository/deepfake_detector/1/model.onnx")


def visual_meta(path: Path = VISUAL_MODEL) -> ModelMeta:
    """The shipped visual model's metadata: its crop policy and clip length are what serving cuts."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return ModelMeta.from_json(props[METADATA_KEY])


def windows_for(path: Path, clip_len: int, stride: int) -> int:
    """Windows that fit the video at ``stride`` without overlapping, at most MAX_WINDOWS."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        duration = float(container.duration or 0) / 1e6
        if duration <= 0 and stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
    return max(1, min(MAX_WINDOWS, int(duration * fps) // (clip_len * stride)))


def cache_file(cache_dir: Path, video: Path, crop: CropPolicy, clip_len: int, stride: int) -> Path:
    stat = video.stat()
    key = {
        "v": CACHE_VERSION,
        "video": str(video.resolve()),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "crop": crop.model_dump(),
        "clip_len": clip_len,
        "stride": stride,
        "max_windows": MAX_WINDOWS,
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / "sync_crops" / f"{video.stem}_{digest}.npz"


def cut_track(video: Path, meta: ModelMeta, stride: int = 2) -> dict[str, np.ndarray]:
    """The main face track: ``gray`` [n, S, S] uint8, ``t`` [n] frame times (s, video timeline),
    ``window`` [n]; n = 0 when no face was found or the pipeline refused the file."""
    from preprocessor.pipeline import Pipeline
    from preprocessor.settings import PipelineSettings
    from training.video_crops import main_track

    size = meta.crop.size
    windows = windows_for(video, meta.clip_len, stride)
    settings = PipelineSettings(frames=windows * meta.clip_len, frame_stride=stride, threads=1)
    pipeline = Pipeline(settings, None, crop=meta.crop, clip_len=meta.clip_len)
    dets, warnings = main_track(pipeline, video)
    gray = [cv2.cvtColor(d.crop, cv2.COLOR_RGB2GRAY) for d in dets if d.crop is not None]
    return {
        "gray": np.stack(gray) if gray else np.zeros((0, size, size), np.uint8),
        "t": np.array([d.t for d in dets], np.float64),
        "window": np.array([d.window for d in dets], np.int64),
        "warnings": np.array(warnings, dtype=str),
    }


def load_track(cache_dir: Path, video: Path, meta: ModelMeta, stride: int = 2) -> dict[str, np.ndarray]:
    """:func:`cut_track` from the cache, or cut now and cached (written atomically)."""
    path = cache_file(cache_dir, video, meta.crop, meta.clip_len, stride)
    if path.is_file():
        with np.load(path) as z:
            return dict(z)
    got = cut_track(video, meta, stride)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **got)
    os.replace(tmp, path)
    return got


def dev_video_rows(data_dir: Path) -> list[dict[str, str]]:
    """Every dev video row (absolute paths), the rows training/cv.py folds."""
    from training.data import read_manifest

    return [
        {**r, "path": str(data_dir / r["path"])}
        for r in read_manifest(data_dir / "MANIFEST.tsv")
        if r["kind"] == "video" and r["split"] == "dev"
    ]


def has_audio(path: Path) -> bool:
    import av

    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except (av.error.FFmpegError, OSError):
        return False


def main() -> None:
    """Cut (and cache) every dev video with an audio stream: ``python -m training.sync_data``."""
    data_dir = Path(os.environ.get("DEEPFAKE_DATA_DIR", "../shared/data")).resolve()
    cache_dir = Path(os.environ.get("DEEPFAKE_CACHE_DIR", "cache"))
    meta = visual_meta()
    rows = [r for r in dev_video_rows(data_dir) if has_audio(Path(r["path"]))]
    rows.sort(key=lambda r: r["label"] != "real")  # the training reals first
    t0 = time.time()
    for n, row in enumerate(rows, 1):
        got = load_track(cache_dir, Path(row["path"]), meta)
        if not len(got["gray"]):
            print(
                f"warning: {row['path']}: no track ({'; '.join(got['warnings'].tolist())})", file=sys.stderr
            )
        print(f"{n}/{len(rows)} {len(got['gray'])} crops {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
