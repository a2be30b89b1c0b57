"""Measure the crop policy that makes serving crops look like the training crops.

The DFDC training crops are tight MTCNN face boxes resized to 224 px; serving cuts ``scale * max(w, h)``
around the box of *our* detector (BlazeFace by default, RetinaFace optionally), shifted by ``shift_y``.
Different detectors draw different boxes around the same face, so the right ``scale`` and ``shift_y``
are measured, not guessed: each training crop is placed in the middle of a larger grey canvas (the face
keeps its size, the detector gets context to find it), the serving detector runs on it, and we record
the crop side over the detected box side and the vertical offset of the crop centre from the box
centre. The medians are the policy under which our detector reproduces the training crops.

Only training-split crops are used (never the test videos). ``python -m training.crop_policy``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from training.config import default_data_dir
from training.data import load_crops


def measure(detector_name: str, n: int = 200, seed: int = 0, pad: float = 1.0) -> dict:
    from preprocessor.detectors.base import create_detector

    detector = create_detector(detector_name)
    crops = load_crops(default_data_dir(), "train", 224, "cache", max_items=2 * n, seed=seed)
    rng = np.random.default_rng(seed)
    idx = rng.choice(np.flatnonzero(crops.labels == 0), n, replace=False)
    side = crops.images.shape[1]
    margin = int(side * pad)
    ratios, shifts, misses = [], [], 0
    for i in idx:
        canvas = np.full((side + 2 * margin, side + 2 * margin, 3), 127, np.uint8)
        canvas[margin : margin + side, margin : margin + side] = crops.images[i]
        faces = detector.detect(canvas)
        centre = margin + side / 2
        best = None
        for f in faces:
            x1, y1, x2, y2 = (float(v) for v in f.box[:4])
            if x1 < centre < x2 and y1 < centre < y2:
                best = (x1, y1, x2, y2)
                break
        if best is None:
            misses += 1
            continue
        x1, y1, x2, y2 = best
        w, h = x2 - x1, y2 - y1
        ratios.append(side / max(w, h))
        shifts.append((centre - (y1 + y2) / 2) / h)
    if not ratios:
        raise RuntimeError(f"{detector_name} found no face in {n} padded training crops")
    r, s = np.array(ratios), np.array(shifts)
    return {
        "detector": detector_name,
        "n": n,
        "found": len(r),
        "missed": misses,
        "scale_median": round(float(np.median(r)), 3),
        "scale_p10_p90": [round(float(np.percentile(r, 10)), 3), round(float(np.percentile(r, 90)), 3)],
        "shift_y_median": round(float(np.median(s)), 3),
        "shift_y_p10_p90": [round(float(np.percentile(s, 10)), 3), round(float(np.percentile(s, 90)), 3)],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", action="append", help="detector name(s); default: blazeface")
    ap.add_argument("-n", type=int, default=200)
    args = ap.parse_args(argv)
    for name in args.detector or ["blazeface"]:
        print(json.dumps(measure(name, args.n)))


if __name__ == "__main__":
    main()
