"""Per-crop inference cost of an exported model in ONNX Runtime on this CPU (``make bench-model``).

Reported for a batch of 32 single-frame clips and for 4 clips of 8 frames (the same 32 crops as the video
pipeline sends them), median of repeated runs after a warm-up. Threads default to 2: the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from deepfake.contracts.metadata import INPUT_NAME, METADATA_KEY, ModelMeta


def bench(model: Path, threads: int = 2, repeats: int = 10) -> dict:
    if not model.is_file():
        raise FileNotFoundError(f"model not found: {model} (make export first)")
    proto = onnx.load(str(model), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{model} has no '{METADATA_KEY}' metadata: not an exported deepfake detector")
    meta = ModelMeta.from_json(props[METADATA_KEY])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    s = meta.crop.size
    rng = np.random.default_rng(0)
    res: dict = {"model": str(model), "crop_size": s, "threads": threads, "repeats": repeats}
    for name, shape in (("batch32_T1", (32, 1, s, s, 3)), ("batch4_T8", (4, meta.clip_len, s, s, 3))):
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        sess.run(None, {INPUT_NAME: x})  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run(None, {INPUT_NAME: x})
            times.append(time.perf_counter() - t0)
        crops = shape[0] * shape[1]
        res[name] = {
            "crops": crops,
            "median_ms_per_batch": round(1000 * float(np.median(times)), 1),
            "median_ms_per_crop": round(1000 * float(np.median(times)) / crops, 2),
            "min_ms_per_crop": round(1000 * float(np.min(times)) / crops, 2),
        }
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "model", type=Path, nargs="?", default=Path("model_repository/deepfake_detector/1/model.onnx")
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)
    print(json.dumps(bench(args.model, args.threads, args.repeats), indent=2))


if __name__ == "__main__":
    main()
