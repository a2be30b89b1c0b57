"""Benchmark the service stack against the in-process CLI on the same videos (`make bench-services`).

What it measures, in this order:
1. In-process: `Pipeline(..., OnnxBackend)` on each video, sequentially (what `deepfake detect` does),
   after one warm-up run: seconds per video.
2. The real stack (tritonserver + preprocessor + gateway as processes, free loopback ports), for each
   preprocessor worker count W and each client concurrency C: all videos uploaded to POST /v1/detections
   by C concurrent clients. Reported: videos/min, p50/p95 latency, and the single-request ratio
   (sum over videos of the median stack latency at C=1 / of the median in-process time, --repeat rounds).
Results go to stdout and, as JSON, to --out. Both sides use the same thread settings (--threads).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, before its imports
import httpx

from cli.local_stack import LocalStack, Ports
from deepfake.settings import REPO_ROOT, data_dir

MODEL_NAME = "deepfake_detector"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def synthetic_videos(root: Path, count: int) -> list[Path]:
    from tests import synth

    return [
        synth.write_face_video(
            root / f"synth_{i}.mp4", n_frames=75, motion=("pan", "zoom", "rotate")[i % 3]
        ).path
        for i in range(count)
    ]


def real_videos(data_dir: Path, count: int) -> list[Path]:
    videos = sorted((data_dir / "videos").rglob("*.mp4"))
    if not videos:
        raise SystemExit(f"no videos under {data_dir / 'videos'}")
    step = max(1, len(videos) // count)
    return videos[::step][:count]


def random_model_repository(root: Path) -> Path:
    from tests.integration.conftest import write_test_repository
    from tests.random_model import default_test_meta

    write_test_repository(root, default_test_meta(crop_size=160))
    return root


def in_process_seconds(videos: list[Path], model_path: Path, threads: int, repeat: int) -> list[float]:
    """Median seconds per video over `repeat` rounds (the machine is shared: medians resist noise)."""
    from inference.onnx_backend import OnnxBackend
    from preprocessor.pipeline import Pipeline
    from preprocessor.settings import PipelineSettings

    pipeline = Pipeline(PipelineSettings(threads=threads), OnnxBackend(model_path, threads=threads))
    pipeline.analyze(videos[0])  # warm-up: sessions, caches
    rounds = []
    for _ in range(repeat):
        seconds = []
        for video in videos:
            start = time.perf_counter()
            pipeline.analyze(video)
            seconds.append(time.perf_counter() - start)
        rounds.append(seconds)
    return [statistics.median(values) for values in zip(*rounds, strict=True)]


def upload_all(url: str, api_key: str, videos: list[Path], concurrency: int) -> tuple[float, list[float]]:
    """Wall time for all uploads and the latency of each (all must succeed)."""

    def one(video: Path) -> float:
        start = time.perf_counter()
        with video.open("rb") as handle, httpx.Client(timeout=900) as client:
            response = client.post(
                f"{url}/v1/detections", files={"file": (video.name, handle)}, headers={"X-API-Key": api_key}
            )
        if response.status_code != 200:
            raise RuntimeError(f"{video.name}: HTTP {response.status_code}: {response.text[:300]}")
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = list(pool.map(one, videos))
    return time.perf_counter() - start, latencies


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument(
        "--random-model", action="store_true", help="use the random-weight test model instead"
    )
    parser.add_argument("--videos", type=int, default=8, help="how many videos")
    parser.add_argument(
        "--real", action="store_true", help="videos from DEEPFAKE_DATA_DIR instead of synthetic"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="preprocessor workers to try")
    parser.add_argument("--threads", type=int, default=1, help="decoder/ONNX threads, both sides")
    parser.add_argument("--repeat", type=int, default=3, help="rounds for the single-request ratio (medians)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".run" / "bench" / "services.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-services-"))
    repository = random_model_repository(work / "repo") if args.random_model else args.repository
    model_path = repository / MODEL_NAME / "1" / "model.onnx"
    if not model_path.exists():
        print(f"no model at {model_path}; export one or pass --random-model", file=sys.stderr)
        return 1
    videos = real_videos(data_dir(), args.videos) if args.real else synthetic_videos(work, args.videos)

    print(
        f"{len(videos)} videos, model {model_path}, threads {args.threads}, load {os.getloadavg()}",
        flush=True,
    )
    local = in_process_seconds(videos, model_path, args.threads, args.repeat)
    print(f"in-process: total {sum(local):.2f} s, mean {statistics.mean(local):.2f} s/video", flush=True)
    report: dict = {
        "videos": [str(v) for v in videos],
        "threads": args.threads,
        "in_process_s": local,
        "in_process_videos_per_min": 60 * len(local) / sum(local),
        "stack": [],
    }

    api_key = secrets.token_urlsafe(16)
    for workers in args.workers:
        stack = LocalStack(
            run_dir=work / f"stack_w{workers}",
            repository=repository,
            ports=Ports.free(),
            api_key=api_key,
            env={
                "DEEPFAKE_WORKERS": str(workers),
                "DEEPFAKE_QUEUE_SIZE": "64",
                "DEEPFAKE_THREADS": str(args.threads),
                "DEEPFAKE_RATE_LIMIT_PER_MINUTE": "0",
            },
        )
        try:
            stack.up()
            upload_all(stack.urls["gateway"], api_key, videos[:1], 1)  # warm-up
            single = [upload_all(stack.urls["gateway"], api_key, videos, 1)[1] for _ in range(args.repeat)]
            single_medians = [statistics.median(values) for values in zip(*single, strict=True)]
            for concurrency in args.concurrency:
                wall, latencies = upload_all(stack.urls["gateway"], api_key, videos, concurrency)
                row = {
                    "workers": workers,
                    "concurrency": concurrency,
                    "wall_s": wall,
                    "videos_per_min": 60 * len(videos) / wall,
                    "p50_s": statistics.median(latencies),
                    "p95_s": percentile(latencies, 95),
                    "latencies_s": latencies,
                }
                if concurrency == 1:
                    row["single_request_median_s"] = single_medians
                    row["ratio_to_in_process"] = sum(single_medians) / sum(local)
                report["stack"].append(row)
                ratio = f"  ratio to in-process {row['ratio_to_in_process']:.3f}" if concurrency == 1 else ""
                print(
                    f"workers {workers} concurrency {concurrency}: {row['videos_per_min']:.1f} videos/min, "
                    f"p50 {row['p50_s']:.2f} s, p95 {row['p95_s']:.2f} s{ratio}",
                    flush=True,
                )
        finally:
            stack.down()
    shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
