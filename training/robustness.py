"""Does a verdict survive re-encoding? ``python -m training.robustness`` (``make robustness``).

Why: a video reaches users after platforms have remuxed, re-encoded, scaled and brightened it; a verdict
that flips when the same footage is re-encoded is not evidence. For each video (by default a seeded pick
of real dev videos, one per source) the command cuts its first seconds, writes 20 variants (container,
codec, bitrate, pixel format, scale, brightness +-30 %), runs each through the serving pipeline with the
shipped model (the code of ``deepfake detect``), and prints per video the score and verdict of every
variant and the share of variants that keep the original's verdict; the summary line is the figure the
model card quotes. Variants are written under ``--work`` (git-ignored ``cache/robustness`` by default).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from training.config import default_data_dir


@dataclass(frozen=True)
class Variant:
    """One way to re-encode a clip."""

    name: str
    suffix: str = ".mp4"
    codec: str = "libx264"
    options: dict[str, str] = field(default_factory=dict)
    pix_fmt: str = "yuv420p"
    scale: float = 1.0
    brightness: float = 1.0
    bit_rate: int = 0
    rates: tuple[Fraction, ...] = ()  # frame rates the codec accepts (empty: any); the nearest is used


# MPEG-2 video only knows the broadcast frame rates; a clip at another rate plays slightly faster or slower.
MPEG2_RATES = tuple(
    Fraction(r) for r in ("24000/1001", "24", "25", "30000/1001", "30", "50", "60000/1001", "60")
)


VARIANTS: tuple[Variant, ...] = (
    Variant("h264 crf 18", options={"crf": "18"}),
    Variant("h264 crf 23", options={"crf": "23"}),
    Variant("h264 crf 28", options={"crf": "28"}),
    Variant("h264 crf 35", options={"crf": "35"}),
    Variant("h264 300 kbit/s", bit_rate=300_000),
    Variant("h264 yuv444p", options={"crf": "23"}, pix_fmt="yuv444p"),
    Variant("h264 in mkv", ".mkv", options={"crf": "23"}),
    Variant("h264 in mov", ".mov", options={"crf": "23"}),
    Variant("hevc in mkv", ".mkv", "libx265", {"crf": "28", "x265-params": "log-level=error"}),
    Variant("vp9 in webm", ".webm", "libvpx-vp9", {"crf": "33", "b": "0", "deadline": "realtime"}),
    Variant("vp8 in webm", ".webm", "libvpx", {"deadline": "realtime"}, bit_rate=1_000_000),
    Variant("mpeg4 in avi", ".avi", "mpeg4", {"qscale": "4"}),
    Variant("mjpeg in avi", ".avi", "mjpeg", {"qscale": "5"}, pix_fmt="yuvj420p"),
    Variant("mpeg2 in ts", ".ts", "mpeg2video", bit_rate=4_000_000, rates=MPEG2_RATES),
    Variant("ffv1 lossless in mkv", ".mkv", "ffv1", pix_fmt="yuv420p"),
    Variant("scale 0.5", options={"crf": "23"}, scale=0.5),
    Variant("scale 0.75", options={"crf": "23"}, scale=0.75),
    Variant("scale 1.5", options={"crf": "23"}, scale=1.5),
    Variant("brightness -30%", options={"crf": "23"}, brightness=0.7),
    Variant("brightness +30%", options={"crf": "23"}, brightness=1.3),
)


def read_frames(path: Path, seconds: float) -> tuple[list[np.ndarray], Fraction]:
    """RGB frames of the first ``seconds`` and the stream's frame rate."""
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or Fraction(25)
        for frame in container.decode(stream):
            if frame.time is not None and frame.time > seconds:
                break
            frames.append(frame.to_ndarray(format="rgb24"))
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return frames, Fraction(rate).limit_denominator(1001)


def write_variant(frames: list[np.ndarray], rate: Fraction, variant: Variant, out: Path) -> Path:
    """Encode ``frames`` as ``variant`` into ``out`` (even sides, as the codecs want)."""
    import cv2

    h, w = frames[0].shape[:2]
    width = max(2, int(round(w * variant.scale / 2)) * 2)
    height = max(2, int(round(h * variant.scale / 2)) * 2)
    if variant.rates:
        rate = min(variant.rates, key=lambda r: abs(r - rate))
    with av.open(str(out), "w") as container:
        stream = container.add_stream(variant.codec, rate=rate, options=dict(variant.options))
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, variant.pix_fmt
        if variant.bit_rate:
            stream.bit_rate = variant.bit_rate
        for rgb in frames:
            img = rgb
            if (width, height) != (w, h):
                img = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
            if variant.brightness != 1.0:
                img = np.clip(img.astype(np.float32) * variant.brightness, 0, 255).astype(np.uint8)
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


def default_videos(data_dir: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` real dev videos, each from a different source, picked with a fixed seed."""
    from training.data import read_manifest

    rows = [
        r for r in read_manifest(data_dir / "MANIFEST.tsv") if r["kind"] == "video" and r["label"] == "real"
    ]
    by_source: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_source.setdefault(r["dataset"], []).append(r)
    rng = np.random.default_rng(seed)
    sources = sorted(by_source)
    picked = rng.choice(len(sources), min(n, len(sources)), replace=False)
    return [
        data_dir / by_source[sources[i]][rng.integers(len(by_source[sources[i]]))]["path"] for i in picked
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="*", type=Path, help="videos (default: --n real dev videos)")
    ap.add_argument("--n", type=int, default=6, help="real dev videos to use when none are given")
    ap.add_argument("--seconds", type=float, default=5.0, help="length cut from the start of each video")
    ap.add_argument("--model", type=Path, help="ONNX model (default: the shipped model)")
    ap.add_argument("--data-dir", type=Path, default=None, help="data root (default ../shared/data)")
    ap.add_argument("--work", type=Path, default=Path("cache/robustness"), help="where variants are written")
    ap.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = ap.parse_args(argv)

    from inference.onnx_backend import OnnxBackend
    from preprocessor.pipeline import Pipeline
    from preprocessor.settings import PipelineSettings

    videos = args.videos or default_videos(args.data_dir or default_data_dir(), args.n)
    settings = PipelineSettings(**({"model_path": args.model} if args.model else {}))
    pipeline = Pipeline(settings, OnnxBackend(settings.model_path, threads=settings.threads))
    threshold = pipeline.meta.threshold
    table, kept_all, total = [], 0, 0
    for video in videos:
        if not video.is_file():
            print(f"error: {video}: not found", file=sys.stderr)
            return 2
        frames, rate = read_frames(video, args.seconds)
        work = args.work / video.stem
        work.mkdir(parents=True, exist_ok=True)
        base = write_variant(
            frames, rate, Variant("reference h264 crf 18", options={"crf": "18"}), work / "ref.mp4"
        )
        ref = pipeline.analyze(base)
        rows = []
        for i, variant in enumerate(VARIANTS):
            path = write_variant(frames, rate, variant, work / f"v{i:02d}{variant.suffix}")
            res = pipeline.analyze(path)
            rows.append({"variant": variant.name, "score": res.score, "verdict": res.verdict})
        kept = sum(r["verdict"] == ref.verdict for r in rows)
        kept_all += kept
        total += len(rows)
        scores = [r["score"] for r in rows if r["score"] is not None]
        print(f"\n{video} (first {args.seconds:g} s): reference {ref.verdict} {ref.score}")
        for r in rows:
            print(f"  {r['variant']:<22} {r['verdict']:<12} {r['score']}")
        spread = f"{min(scores):.3f}-{max(scores):.3f}" if scores else "n/a"
        print(f"  kept the reference verdict in {kept}/{len(rows)} variants; scores {spread}")
        table.append(
            {
                "video": str(video),
                "reference": ref.verdict,
                "reference_score": ref.score,
                "kept": kept,
                "variants": rows,
            }
        )
    share = kept_all / max(1, total)
    print(f"\nverdict kept in {kept_all}/{total} variants ({share:.0%}) at threshold {threshold:.3f}")
    if args.json:
        args.json.write_text(
            json.dumps({"threshold": threshold, "kept_share": share, "videos": table}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
