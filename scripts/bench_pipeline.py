"""Benchmark the analysis pipeline on this machine: time per stage, end to end, and memory.

Prints, for the FF++/DFDC videos in the data directory and a synthetic 10 s 1080p clip:
- per-stage and end-to-end time of ``Pipeline.analyze`` (best of ``--repeat`` runs, after one warm-up);
- decode-only time: the same sampled frames decoded and converted to RGB, nothing else, so the ratio
  end-to-end / decode-only shows what face detection, cropping and inference add on top of decoding;
- peak resident memory of a ``deepfake detect`` process on the 1080p clip, and on a 10 s and a
  10-minute clip of equal resolution (memory must stay flat in video length);
- the audio-visual signal's cost: the same 10 s 1080p clip, with speech-like audio muxed in (PyAV,
  tests/synth_speech.py; nothing downloaded), end to end with the sync model and without it (target:
  with <= 1.3x without, the audio and audio_visual stages <= 0.3x of the whole).

Why in-process timing plus a separate process for memory: timings must exclude interpreter start-up
and model loading (a server pays those once), while peak RSS must include everything a user's
``deepfake detect`` run holds. Targets (issue #2): 1080p 10 s clip under 2 s end to end, at most 2x
decode-only, peak RSS under 1.5 GB and flat in length.

Usage: .venv/bin/python scripts/bench_pipeline.py [--data-dir DIR] [--model PATH] [--sync-model PATH]
       [--repeat N] [--skip-memory] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, before its imports
from deepfake.settings import REPO_ROOT
from preprocessor.pipeline import Pipeline
from preprocessor.probe import probe
from preprocessor.sampling import FrameSampler, plan_windows
from preprocessor.settings import PipelineSettings

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
    cli = [sys.executable, "-m", "cli.main", "detect", str(video), "--json", "--model", str(model)]
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


def resolve_sync_model(model: Path | None) -> tuple[Path, str]:
    settings = PipelineSettings()
    if model is not None:
        return model, "given"
    if settings.sync_model_path.is_file():
        return settings.sync_model_path, "trained"
    from tests.random_sync_model import write_random_sync_model

    path = CACHE / "random_sync_model_small.onnx"
    if not path.exists():
        write_random_sync_model(path, config="small")
    return path, "RANDOM-WEIGHT stand-in with the shipped architecture (cost representative, scores not)"


def audio_visual_cost(clip: Path, pipeline: Pipeline, sync_path: Path, repeat: int) -> dict:
    """The clip with speech-like audio, end to end without and with the sync model (best of ``repeat``
    alternated runs each, after a warm-up); the audio-visual stages' share of the time with it (the direct
    cost, less noisy than the difference of two totals on a loaded machine)."""
    from inference.sync_backend import OnnxSyncModel
    from tests.synth_speech import mux_audio, speech_like

    speech = CACHE / f"{clip.stem}_speech.mp4"
    settings = pipeline.settings
    seconds = probe(clip, settings.max_bytes, settings.max_duration_s).info.duration_s
    if not speech.exists():
        mux_audio(clip, speech.with_suffix(".tmp.mp4"), speech_like(seconds)).rename(speech)
    sync_model = OnnxSyncModel(sync_path, threads=pipeline.settings.threads)
    with_audio = Pipeline(pipeline.settings, pipeline.backend, pipeline.detector, sync_model=sync_model)
    runners = {"without": pipeline, "with": with_audio}
    runs: dict[str, list] = {label: [] for label in runners}
    for runner in runners.values():
        runner.analyze(speech)  # warm-up
    for _ in range(repeat):  # alternated, so a load spike on this shared machine hits both alike
        for label, runner in runners.items():
            runs[label].append(runner.analyze(speech))
    best = {label: min(results, key=lambda r: r.timings_ms["total"]) for label, results in runs.items()}
    timings = best["with"].timings_ms
    av_ms = timings.get("audio", 0.0) + timings.get("audio_visual", 0.0)
    reasons = sorted({t.audio_visual.reason for t in best["with"].tracks if t.audio_visual})
    return {
        "video": speech.name,
        "without_ms": best["without"].timings_ms["total"],
        "with_ms": timings["total"],
        "ratio": round(timings["total"] / best["without"].timings_ms["total"], 3),
        "audio_ms": timings.get("audio", 0.0),
        "audio_visual_ms": timings.get("audio_visual", 0.0),
        "audio_visual_share": round(av_ms / timings["total"], 3),
        "reasons": reasons,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=PipelineSettings().data_dir)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--sync-model", type=Path, help="audio-visual sync model (default: the shipped one)")
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

    stages = ["probe", "decode", "detect", "crop", "track", "infer", "audio", "audio_visual", "aggregate"]
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

    sync_path, sync_kind = resolve_sync_model(args.sync_model)
    print(
        f"\naudio-visual signal (sync model: {sync_path}, {sync_kind}), "
        "10 s 1080p clip with speech-like audio"
    )
    av = audio_visual_cost(clip_1080, pipeline, sync_path, args.repeat)
    print(
        f"  without {av['without_ms']:.0f} ms, with {av['with_ms']:.0f} ms: {av['ratio']:.2f}x "
        "(target <= 1.3x); "
        f"audio {av['audio_ms']:.0f} ms + audio_visual {av['audio_visual_ms']:.0f} ms = "
        f"{av['audio_visual_share']:.2f} of the total (target <= 0.3); tracks: {', '.join(av['reasons'])}",
        flush=True,
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
            json.dumps(
                {
                    "model": model_kind,
                    "videos": records,
                    "audio_visual": {"sync_model": sync_kind, **av},
                    "memory": memory,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
