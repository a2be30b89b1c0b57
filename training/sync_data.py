"""Material for the sync model: per video, the mouth crops (preprocessor/mouth.py) of the main face track
of every frame, with the frame times and sampling windows, cut by the serving pipeline
(``Pipeline.extract_faces`` at the shipped visual model's crop policy) and cached on disk, one file per
video (``cache/sync_crops/``).

Why every frame (sampling stride 1, windows back to back, up to MAX_FRAMES): training and evaluation then
take windows of ``clip_len`` frames at serving's stride 2 starting at any frame, so a hundred short clips
give thousands of distinct training windows, and evaluation can pick the very windows serving's sampling
plan would (``serving_windows``). Only the mouth crop is kept (4.6 KB a frame): it is all the model reads.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from deepfake.contracts.metadata import METADATA_KEY, CropPolicy, ModelMeta
from preprocessor.mouth import MOUTH_H, MOUTH_W, MOUTH_X0, MOUTH_X1, MOUTH_Y0, MOUTH_Y1, mouth_from_gray
from training.cache_files import save_npz

MAX_FRAMES = 1024  # PipelineSettings.frames' limit: 41 s at 25 fps
CACHE_VERSION = 2
VISUAL_MODEL = Path("model_repository/deepfake_detector/1/model.onnx")


def visual_meta(path: Path = VISUAL_MODEL) -> ModelMeta:
    """The shipped visual model's metadata: its crop policy and clip length are what serving cuts."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return ModelMeta.from_json(props[METADATA_KEY])


def frame_count(path: Path) -> tuple[float, float]:
    """(duration in s, frames per second) from the container header."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        duration = float(container.duration or 0) / 1e6
        if duration <= 0 and stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
    return duration, fps


def cache_file(cache_dir: Path, video: Path, crop: CropPolicy, clip_len: int) -> Path:
    stat = video.stat()
    key = {
        "v": CACHE_VERSION,
        "video": str(video.resolve()),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "crop": crop.model_dump(),
        "clip_len": clip_len,
        "max_frames": MAX_FRAMES,
        "mouth": [MOUTH_X0, MOUTH_Y0, MOUTH_X1, MOUTH_Y1, MOUTH_H, MOUTH_W],
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / "sync_crops" / f"{video.stem}_{digest}.npz"


def cut_track(video: Path, meta: ModelMeta) -> dict[str, np.ndarray]:
    """The main face track of every frame: ``mouth`` [n, MOUTH_H, MOUTH_W] uint8, ``t`` [n] frame times
    (s, the video's timeline), ``window`` [n] sampling window; n = 0 when no face was found or the
    pipeline refused the file (``warnings`` says why)."""
    from preprocessor.pipeline import Pipeline
    from preprocessor.settings import PipelineSettings
    from training.video_crops import main_track

    duration, fps = frame_count(video)
    windows = max(1, min(MAX_FRAMES, int(duration * fps)) // meta.clip_len)
    settings = PipelineSettings(frames=windows * meta.clip_len, frame_stride=1, threads=1)
    pipeline = Pipeline(settings, None, crop=meta.crop, clip_len=meta.clip_len)
    dets, warnings = main_track(pipeline, video)
    mouths = [mouth_from_gray(cv2.cvtColor(d.crop, cv2.COLOR_RGB2GRAY)) for d in dets if d.crop is not None]
    return {
        "mouth": np.stack(mouths) if mouths else np.zeros((0, MOUTH_H, MOUTH_W), np.uint8),
        "t": np.array([d.t for d in dets], np.float64),
        "window": np.array([d.window for d in dets], np.int64),
        "warnings": np.array(warnings, dtype=str),
    }


def load_track(cache_dir: Path, video: Path, meta: ModelMeta) -> dict[str, np.ndarray]:
    """:func:`cut_track` from the cache, or cut now and cached (written atomically)."""
    path = cache_file(cache_dir, video, meta.crop, meta.clip_len)
    if path.is_file():
        with np.load(path) as z:
            return dict(z)
    got = cut_track(video, meta)
    save_npz(path, got, compressed=True)
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


def mouth_sheet(out: Path, rows: list[dict[str, str]], n: int = 32, seed: int = 0) -> int:
    """A contact sheet to check the mouth cut: per video (one random of ``n``), one face crop as serving
    cuts it with the mouth box drawn, and the mouth crop below it; returns the tiles drawn."""
    from preprocessor.mouth import mouth_box
    from preprocessor.pipeline import Pipeline
    from preprocessor.settings import PipelineSettings
    from training.video_crops import main_track

    meta = visual_meta()
    pipeline = Pipeline(PipelineSettings(frames=8, threads=1), None, crop=meta.crop, clip_len=meta.clip_len)
    rng = np.random.default_rng(seed)
    tiles = []
    for i in rng.permutation(len(rows))[:n]:
        dets, _ = main_track(pipeline, Path(rows[i]["path"]))
        if not dets or dets[0].crop is None:
            continue
        face = cv2.cvtColor(dets[len(dets) // 2].crop, cv2.COLOR_RGB2BGR)
        side = face.shape[0]
        mouth = mouth_from_gray(cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
        x0, y0, x1, y1 = mouth_box(side)
        cv2.rectangle(face, (x0, y0), (x1 - 1, y1 - 1), (0, 0, 255), 1)
        below = cv2.cvtColor(cv2.resize(mouth, (side, side // 2)), cv2.COLOR_GRAY2BGR)
        tiles.append(np.concatenate([face, below]))
    per_row = 8
    while len(tiles) % per_row:
        tiles.append(np.zeros_like(tiles[0]))
    sheet = np.concatenate([np.concatenate(tiles[i : i + per_row], 1) for i in range(0, len(tiles), per_row)])
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), sheet)
    return len(tiles)


def main() -> None:
    """Cut (and cache) every dev video with an audio stream: ``python -m training.sync_data``;
    ``--sheet PNG``: the mouth-cut contact sheet instead."""
    import argparse

    from training.config import REPO_ROOT, default_data_dir

    ap = argparse.ArgumentParser(description="cut the sync model's mouth crops of the dev videos with audio")
    ap.add_argument("--sheet", type=Path, help="write a contact sheet of the mouth cut here instead")
    args = ap.parse_args()
    data_dir = default_data_dir()
    rows = [r for r in dev_video_rows(data_dir) if has_audio(Path(r["path"]))]
    if args.sheet:
        print(f"{mouth_sheet(args.sheet, rows)} tiles: {args.sheet}")
        return
    meta = visual_meta()
    rows.sort(key=lambda r: r["label"] != "real")  # the training reals first
    t0 = time.time()
    for n, row in enumerate(rows, 1):
        got = load_track(REPO_ROOT / "cache", Path(row["path"]), meta)
        if not len(got["mouth"]):
            why = "; ".join(got["warnings"].tolist())
            print(f"warning: {row['path']}: no track ({why})", file=sys.stderr)
        print(f"{n}/{len(rows)} {len(got['mouth'])} crops {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
