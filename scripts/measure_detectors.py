"""Measure the face-detector backends on the shared videos: recall and milliseconds per frame.

For every dataset folder under DATA/videos (FF++c23, DFDC, DeepFaceLive, ...) and every backend, it
samples N frames evenly from each video and reports the fraction of sampled frames with at least one
face (recall: every video in this data shows a face in essentially every frame), the fraction with
more than one (a hint of false positives, since most clips show one person), and the detector's mean
milliseconds per frame (detection only, decode excluded; wall time and this process's CPU time,
which is the steadier figure when other jobs share the cores). This is how the embedded default was chosen.

    .venv/bin/python scripts/measure_detectors.py --frames 8 \
        --backends blazeface blazeface:tiles=never blazeface:tiles=always retinaface

Frames are first shrunk to the pipeline's detect_max_side (640 by default), as Pipeline._detect does,
and that resize counts towards the time. A backend may carry settings after a colon
(`name:attr=value,...`, attributes tiles, score_threshold, max_side) to compare configurations.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from deepfake.settings import data_dir
from preprocessor.detectors import FaceDetector, create_detector
from preprocessor.settings import PipelineSettings

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


def sample_frames(path: Path, count: int) -> list[np.ndarray]:
    """`count` RGB frames spread evenly over the video, found by seeking (not decoding everything)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / 1e6
        frames = []
        for i in range(count):
            target = duration * (i + 0.5) / count
            container.seek(int(target / (stream.time_base or 1)), stream=stream, backward=True)
            chosen = None
            for frame in container.decode(stream):
                chosen = frame
                if frame.time is not None and frame.time >= target:
                    break
            if chosen is not None:
                frames.append(chosen.to_ndarray(format="rgb24"))
    return frames


TUNABLE = {"tiles": str, "score_threshold": float, "max_side": int}


def build_detector(spec: str) -> FaceDetector:
    """`name` or `name:attr=value,...` -> a registered detector with those attributes changed."""
    name, _, options = spec.partition(":")
    try:
        detector = create_detector(name)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"measure_detectors: {exc}") from exc
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key not in TUNABLE or not hasattr(detector, key):
            raise SystemExit(f"{spec}: {name} has no tunable setting {key!r}")
        setattr(detector, key, TUNABLE[key](value))
    return detector


def shrink(frame: np.ndarray, max_side: int) -> np.ndarray:
    """What Pipeline._detect does before detection: downscale to at most max_side."""
    h, w = frame.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return frame
    return cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=data_dir(),
    )
    parser.add_argument("--frames", type=int, default=8, help="frames sampled per video")
    parser.add_argument("--backends", nargs="+", default=["blazeface", "retinaface"])
    parser.add_argument("--folders", nargs="*", default=None, help="dataset folders (default: all)")
    parser.add_argument("--max-videos", type=int, default=0, help="per folder; 0 = all")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--max-side", type=int, default=PipelineSettings().detect_max_side, help="pipeline's detect_max_side"
    )
    args = parser.parse_args()

    videos_dir = args.data_dir / "videos"
    if not videos_dir.is_dir():
        print(f"no videos at {videos_dir}; set --data-dir or DEEPFAKE_DATA_DIR", file=sys.stderr)
        return 2
    detectors = {spec: build_detector(spec) for spec in args.backends}
    folders = args.folders or sorted(p.name for p in videos_dir.iterdir() if p.is_dir())

    rows = []
    for folder in folders:
        paths = sorted(p for p in (videos_dir / folder).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        if args.max_videos:
            paths = paths[: args.max_videos]
        stats: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        missed_videos: dict[str, list[str]] = defaultdict(list)
        for path in paths:
            try:
                frames = sample_frames(path, args.frames)
            except (av.error.FFmpegError, IndexError) as exc:
                print(f"skip {path}: {exc}", file=sys.stderr)
                continue
            for name, detector in detectors.items():
                s = stats[name]
                hits = 0
                for frame in frames:
                    t0, c0 = time.perf_counter(), time.process_time()
                    faces = detector.detect(shrink(frame, args.max_side))
                    s["seconds"] += time.perf_counter() - t0
                    s["cpu_seconds"] += time.process_time() - c0
                    s["frames"] += 1
                    s["with_face"] += bool(faces)
                    s["multi"] += len(faces) > 1
                    hits += bool(faces)
                if hits < len(frames):
                    missed_videos[name].append(f"{path.relative_to(videos_dir)} {hits}/{len(frames)}")
        for name in args.backends:
            s = stats[name]
            if not s["frames"]:
                continue
            row = {
                "folder": folder,
                "backend": name,
                "videos": len(paths),
                "frames": int(s["frames"]),
                "recall": s["with_face"] / s["frames"],
                "multi_face": s["multi"] / s["frames"],
                "ms_per_frame": 1000 * s["seconds"] / s["frames"],
                "cpu_ms_per_frame": 1000 * s["cpu_seconds"] / s["frames"],
                "videos_with_misses": missed_videos[name],
            }
            rows.append(row)
            print(
                f"{folder:38s} {name:24s} videos {row['videos']:3d} frames {row['frames']:4d} "
                f"recall {row['recall']:.3f} multi {row['multi_face']:.3f} "
                f"ms/frame {row['ms_per_frame']:6.1f} (cpu {row['cpu_ms_per_frame']:6.1f})",
                flush=True,
            )
    print("\nTotals")
    for name in args.backends:
        mine = [r for r in rows if r["backend"] == name]
        frames = sum(r["frames"] for r in mine)
        if frames:
            recall = sum(r["recall"] * r["frames"] for r in mine) / frames
            ms = sum(r["ms_per_frame"] * r["frames"] for r in mine) / frames
            cpu = sum(r["cpu_ms_per_frame"] * r["frames"] for r in mine) / frames
            print(f"{name:24s} frames {frames:5d} recall {recall:.3f} ms/frame {ms:.1f} (cpu {cpu:.1f})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
