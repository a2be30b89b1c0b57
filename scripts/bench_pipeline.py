"""Benchmark the analysis pipeline on this machine: time per stage, end to end, and memory.

Prints, for the FF++/DFDC videos in the data directory and a synthetic 10 s 1080p clip:
- per-stage and end-to-end time of ``Pipeline.analyze`` (best of ``--repeat`` runs, after one warm-up);
- decode-only time: the same sampled frames decoded and converted to RGB, nothing else, so the ratio
  end-to-end / decode-only shows what face detection, cropping and inference add on top of decoding;
- peak resident memory of a ``deepfake detect`` process on the 1080p clip, and on a 10 s and a
  10-minute clip of equal resolution (memory must stay flat in video length).

Why in-process timing plus a separate process for memory: timings must exclude interpreter start-up
and model loading (a server pays those once), while peak RSS must include everything a user's
``deepfake detect`` run holds. Targets (issue #2): 1080p 10 s clip under 2 s end to end, at most 2x
decode-only, peak RSS under 1.5 GB and flat in length.

Usage: .venv/bin/python scripts/bench_pipeline.py [--data-dir DIR] [--model PATH] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, before its imports
from deepfake.settings import REPO_ROOT  # noqa: E402
from preprocessor.pipeline import Pipeline  # noqa: E402
from preprocessor.probe import probe  # noqa: E402
from preprocessor.sampling import FrameSampler, plan_windows  # noqa: E402
from preprocessor.settings import PipelineSettings  # noqa: E402

CACHE = REPO_ROOT / "cache" / "bench"


def synthetic_clip(path: Path, seconds: float, width: int, height: int, fps: float = 30.0) -> Path:
    """A clip with one moving face, encoded like a camera/phone export (x264 'veryfast', B-frames,
    keyframe every 2 s). Frames are generated from a 2-second loop so a long clip costs no memory."""
    if path.exists():
        return path
    from tests import synth

    loop, _ = synth.face_frames(int(2 * fps), width, height, motion="rotate", face_px=height * 0.25)
    loop += loop[::-1]  # tilt back and forth: a talking head that stays in place, no jumps at the seam
    n = int(seconds * fps)
    frames = (loop[i % len(loop)] for i in range(n))
    tmp = path.with_suffix(".tmp.mp4")
    synth.write_video(tmp, frames, fps=fps, preset="veryfast", gop=int(2 * fps))
    tmp.rename(path)
    return path


def decode_only_ms(path: Path, settings: PipelineSettings, clip_len: int) -> float:
    """Probe, then decode and convert exactly the frames the pipeline samples."""
    start = time.perf_counter()
    probed = probe(path, settings.max_bytes, settings.max_duration_s)
    info = probed.info
    plan = plan_windows(info.duration_s, info.fps, settings.frames, clip_len, settings.frame_stride)
    for _ in FrameSampler(probed, plan, threads=settings.threads).windows():
        pass
    return (time.perf_counter() - start) * 1000


def peak_rss_mb(video: Path, model: Path) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of a fresh ``deepfake detect --json`` process on ``video``."""
    code = (
        "import resource, subprocess, sys, time;"
        "t = time.perf_counter();"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL);"
        "w = time.perf_counter() - t;"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, w, r.returncode)"
    )
    cli = [sys.executable, "-m", "deepfake.cli", "detect", str(video), "--json", "--model", str(model)]
    out = subprocess.run([sys.executable, "-c", code, *cli], capture_output=True, text=True, cwd=REPO_ROOT)
    rss, wall, rc = out.stdout.split()
    if rc != "0":
        raise RuntimeError(f"deepfake detect failed on {video}: {out.stderr}")
    return float(rss), float(wall)


def resolve_model(model: Path | None) -> tuple[Path, str]:
    settings = PipelineSettings()
    if model is not None:
        return model, "given"
    if settings.model_path.is_file():
        return settings.model_path, "trained"
    from tests.random_model import ModelMeta, write_random_model

    path = write_random_model(CACHE / "random_model.onnx", ModelMeta(name="random_bench"))
    return path, "RANDOM-WEIGHT stand-in (no trained model yet; inference cost not representative)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=PipelineSettings().data_dir)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()

    from inference.onnx_backend import OnnxBackend

    model_path, model_kind = resolve_model(args.model)
    settings = PipelineSettings(model_path=model_path)
    backend = OnnxBackend(model_path, threads=settings.threads)
    pipeline = Pipeline(settings, backend)
    print(
        f"model: {model_path} ({model_kind}); detector: {settings.detector}; frames: {settings.frames}; "
        f"threads: {settings.threads}"
    )

    CACHE.mkdir(parents=True, exist_ok=True)
    clip_1080 = synthetic_clip(CACHE / "synthetic_1080p_10s.mp4", 10, 1920, 1080)
    videos = [clip_1080]
    real = sorted((args.data_dir / "videos").glob("FF++c23/*/*.mp4")) + sorted(
        (args.data_dir / "videos").glob("DFDC/*/*.mp4")
    )
    if not real:
        print(f"note: no FF++/DFDC videos under {args.data_dir}/videos; synthetic clip only")
    videos += real

    stages = ["probe", "decode", "detect", "crop", "track", "infer", "aggregate"]
    header = f"{'video':34} {'res':>9} {'dur_s':>6} " + " ".join(f"{s:>8}" for s in stages)
    header += f" {'total':>8} {'decode_only':>11} {'ratio':>6} faces"
    print(f"\ntimes in ms (best of {args.repeat} after a warm-up run)")
    print(header)
    records = []
    pipeline.analyze(clip_1080)  # warm-up: first-call allocations, page cache
    for video in videos:
        best = None
        for _ in range(args.repeat):
            result = pipeline.analyze(video)
            if best is None or result.timings_ms["total"] < best.timings_ms["total"]:
                best = result
        decode = min(decode_only_ms(video, settings, backend.meta.clip_len) for _ in range(args.repeat))
        assert best is not None  # --repeat is at least 1
        total = best.timings_ms["total"]
        info = best.video
        name = str(video.relative_to(args.data_dir / "videos")) if video in real else video.name
        row = f"{name[:34]:34} {info.width:>4}x{info.height:<4} {info.duration_s:>6.1f} "
        row += " ".join(f"{best.timings_ms.get(s, 0.0):>8.0f}" for s in stages)
        row += f" {total:>8.0f} {decode:>11.0f} {total / decode:>6.2f} {len(best.tracks)}"
        print(row, flush=True)
        records.append(
            {
                "video": name,
                "timings_ms": best.timings_ms,
                "decode_only_ms": round(decode, 1),
                "ratio": round(total / decode, 3),
                "tracks": len(best.tracks),
                "width": info.width,
                "height": info.height,
                "duration_s": info.duration_s,
            }
        )

    memory = {}
    if not args.skip_memory:
        print(
            "\npeak resident memory of a `deepfake detect --json` process (includes start-up and model load)"
        )
        short = synthetic_clip(CACHE / "synthetic_360p_10s.mp4", 10, 640, 360)
        long = synthetic_clip(CACHE / "synthetic_360p_600s.mp4", 600, 640, 360)
        for label, video in [("1080p 10 s", clip_1080), ("360p 10 s", short), ("360p 10 min", long)]:
            rss, wall = peak_rss_mb(video, model_path)
            memory[label] = {"peak_rss_mb": round(rss, 1), "wall_s": round(wall, 2)}
            print(f"  {label:12} peak RSS {rss:7.1f} MB   process wall time {wall:5.2f} s", flush=True)
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"model": model_kind, "videos": records, "memory": memory}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
