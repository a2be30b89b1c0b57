"""Peak memory of the real preprocessor service under one and two concurrent large-frame uploads.

`make measure-memory`: starts `uvicorn --factory tests.onnx_preprocessor:create_app` (the production app on
the in-process ONNX Runtime backend; the model is model_repository's, or --model) with the Kubernetes
worker settings (2 workers, 1 thread each, the memory budget of the ConfigMap), sends each clip once alone
and twice at once, and prints the process's peak RSS (VmHWM, read from /proc: the kernel's own high-water
mark, no sampling) for each run, one fresh process per run. The clips are synthesised into --cache:
- declared_16000: a 2 KB Matroska/MJPEG declaring 16000x16000 frames (refused by the pixel limit);
- 8k_420: 75 frames of 7680x4320 H.264 4:2:0, one reference frame (the pixel limit exactly);
- 8k_444_ref16: the same in 4:4:4 with 16 reference frames (the most memory per pixel x264 makes).
Linux only (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import cv2
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, before its imports
from cli.local_stack import free_port
from deepfake.processes import ManagedProcess, http_ready
from deepfake.settings import REPO_ROOT
from tests import synth

DEFAULT_MODEL = REPO_ROOT / "model_repository" / "deepfake_detector" / "1" / "model.onnx"


def write_8k(path: Path, pix_fmt: str, x264_params: str) -> Path:
    if path.exists():
        return path
    face = synth.write_face_video(path.with_suffix(".face.mp4"), n_frames=2).path
    with av.open(str(face)) as source:
        first = next(source.decode(video=0)).to_ndarray(format="rgb24")
    big = cv2.resize(first, (7680, 4320))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 7680, 4320, pix_fmt
        stream.options = {"preset": "ultrafast", "crf": "30", "x264-params": x264_params}
        for i in range(75):
            frame = av.VideoFrame.from_ndarray(np.roll(big, i * 16, axis=1), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def clips(cache: Path) -> dict[str, Path]:
    cache.mkdir(parents=True, exist_ok=True)
    return {
        "declared_16000": synth.write_huge_declared_mjpeg(cache / "declared_16000.mkv"),
        "8k_420": write_8k(cache / "8k_420.mp4", "yuv420p", "ref=1"),
        "8k_444_ref16": write_8k(cache / "8k_444_ref16.mp4", "yuv444p", "ref=16"),
    }


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def run(video: Path, concurrent: int, env: dict[str, str], spool: Path) -> dict:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPFAKE_")}
    full_env.update(env, PYTHONPATH=str(REPO_ROOT), DEEPFAKE_UPLOAD_DIR=str(spool))
    command = [sys.executable, "-m", "uvicorn", "--factory", "tests.onnx_preprocessor:create_app",
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    log = spool.with_name(spool.name + ".log")
    process = ManagedProcess(
        "preprocessor", command, log, http_ready(f"{url}/readyz"), full_env, REPO_ROOT, 0.3
    )
    with process:
        process.start_and_wait(120)
        idle = status_mb(process.pid, "VmRSS")

        def post(_: int) -> list:
            start = time.monotonic()
            with video.open("rb") as handle:
                response = httpx.post(f"{url}/v1/analyze", files={"file": (video.name, handle)}, timeout=900)
            body = response.json()
            outcome = body["error"]["code"] if "error" in body else body["verdict"]
            return [response.status_code, outcome, round(time.monotonic() - start, 1)]

        with ThreadPoolExecutor(concurrent) as pool:
            results = list(pool.map(post, range(concurrent)))
        return {
            "idle_rss_mib": round(idle),
            "peak_rss_mib": round(status_mb(process.pid, "VmHWM")),
            "results": results,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "cache" / "memory")
    parser.add_argument("--workers", default="2")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--memory-budget-mb", default="3072", help="DEEPFAKE_MEMORY_BUDGET_MB")
    parser.add_argument("clips", nargs="*", help="names to run (default: all)")
    args = parser.parse_args(argv)
    env = {
        "DEEPFAKE_MODEL_PATH": str(args.model),
        "DEEPFAKE_WORKERS": args.workers,
        "DEEPFAKE_THREADS": args.threads,
        "DEEPFAKE_MEMORY_BUDGET_MB": args.memory_budget_mb,
    }
    available = clips(args.cache)
    for name in args.clips or available:
        video = available[name]
        for concurrent in (1, 2):
            row = run(video, concurrent, env, args.cache / "spool")
            header = {"clip": name, "kb": video.stat().st_size // 1024, "at_once": concurrent}
            settings = {"workers": args.workers, "memory_budget_mb": args.memory_budget_mb}
            print(json.dumps({**header, **row, **settings}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
