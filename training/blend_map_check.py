"""How well the exported ``blend_map`` output finds blended pixels: the model card's localisation figures.

The only faces with a known blend region are self-blended ones, so this makes them from DFDC val reals
(seeded blend parameters, the serving view: the whole stored crop resized to the model input, no
augmentation), runs the ONNX file as serving does, and reports the mean IoU of ``blend_map > 0.5`` with
``mask > 0.3`` on the blended faces, plus the mean map value on blended vs untouched real faces.

    python -m training.blend_map_check [model.onnx] [--n 150]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from inference.onnx_backend import read_model_meta
from training.augment import apply_aug, sample_aug
from training.config import REPO_ROOT, TrainConfig, default_data_dir
from training.data import load_crops
from training.sbi import sample_params, self_blend

DEFAULT_MODEL = REPO_ROOT / "model_repository" / "deepfake_detector" / "1" / "model.onnx"


def measure(model_path: Path, data_dir: Path, n: int = 150, seed: int = 7, threads: int = 2) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    size = read_model_meta(sess, model_path).crop.size
    probe = np.zeros((1, 1, size, size, 3), np.uint8)
    map_side = int(sess.run(["blend_map"], {"clips": probe})[0].shape[-1])
    cfg = TrainConfig()  # the crop cache the training runs made (or make) of the val split
    val = load_crops(data_dir, "val", cfg.store_size, cfg.resolved_cache_dir())
    reals = np.flatnonzero(val.labels == 0)[:n]
    view = sample_aug(np.random.default_rng(0), (1.0, 1.0), 0.0, strong=False)
    blended, masks, plain = [], [], []
    for i in reals:
        rng = np.random.default_rng([seed, int(i)])
        img, mask = self_blend(val.images[i], sample_params(rng))
        x, m = apply_aug(img, view, size, rng, mask=mask, mask_out=map_side)
        blended.append(x)
        assert m is not None  # a mask was given, so one comes back
        masks.append(m)
        plain.append(apply_aug(val.images[i], view, size, rng)[0])

    def maps(frames: list[np.ndarray]) -> np.ndarray:
        out = []
        for k in range(0, len(frames), 32):
            clips = np.stack(frames[k : k + 32])[:, None]
            out.append(sess.run(["blend_map"], {"clips": clips})[0][:, 0])
        return np.concatenate(out)

    pred, pred_real = maps(blended), maps(plain)
    truth = np.stack(masks) > 0.3
    hit = pred > 0.5
    inter = (hit & truth).sum(axis=(1, 2))
    union = (hit | truth).sum(axis=(1, 2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return {
        "model": str(model_path),
        "n": int(len(reals)),
        "map_side": int(map_side),
        "mean_iou": round(float(iou.mean()), 3),
        "mean_map_blended": round(float(pred.mean()), 3),
        "mean_map_real": round(float(pred_real.mean()), 3),
        "mean_map_inside_mask": round(float(pred[truth].mean()), 3) if truth.any() else None,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path, nargs="?", default=DEFAULT_MODEL)
    ap.add_argument("--n", type=int, default=150, help="val real faces to blend")
    ap.add_argument("--data-dir", type=Path, default=None, help="DEEPFAKE_DATA_DIR or ../shared/data")
    args = ap.parse_args(argv)
    print(json.dumps(measure(args.model, args.data_dir or default_data_dir(), args.n), indent=2))


if __name__ == "__main__":
    main()
