"""Contact sheet of self-blended training fakes: look at the masks before training on them.

    python -m training.sbi_sheet --config cpu --set sbi_mask=landmarks --out runs/sbi_sheet.png

Rows of (real crop with its landmarks, blend mask, self-blended fake) for seeded real crops of the
config's training set (DFDC crops and, with ``videos``, the video tracks), drawn as training draws them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from training.config import get_config
from training.data import concat_crops, load_crops
from training.sbi import sample_params, self_blend
from training.train import parse_overrides


def sheet(images: np.ndarray, landmarks: np.ndarray | None, idx: np.ndarray, seed: int) -> np.ndarray:
    """uint8 RGB image: one (crop + points, mask, blend) triple per index, four triples per row."""
    tiles = []
    for i in idx:
        img = images[i]
        points = None if landmarks is None else landmarks[i]
        blended, mask = self_blend(img, sample_params(np.random.default_rng([seed, int(i)])), points)
        marked = img.copy()
        if points is not None and not np.isnan(points).any():
            for x, y in points.round().astype(int):
                cv2.circle(marked, (int(x), int(y)), 1, (0, 255, 0), -1)
        heat = cv2.cvtColor((mask * 255).astype(np.uint8), cv2.COLOR_GRAY2RGB)
        tiles.append(np.hstack([marked, heat, blended]))
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    return np.vstack([np.hstack(tiles[r : r + 4]) for r in range(0, len(tiles), 4)])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="cpu", help="preset name (training/config.py)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    ap.add_argument("--n", type=int, default=24, help="real crops on the sheet")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/sbi_sheet.png"))
    args = ap.parse_args(argv)
    cfg = get_config(args.config, **parse_overrides(args.set))
    cache = cfg.resolved_cache_dir()
    crops = load_crops(cfg.resolved_data_dir(), "train", cfg.store_size, cache, max_items=cfg.max_train_items)
    if cfg.videos:
        from training.video_crops import load_video_crops

        crops = concat_crops(crops, load_video_crops(cfg))
    landmarks = None
    if cfg.sbi_mask == "landmarks":
        from training.landmarks import crop_landmarks

        landmarks = crop_landmarks(crops.images, crops.labels, cache)
    reals = np.flatnonzero(crops.labels == 0)
    idx = np.random.default_rng(args.seed).choice(reals, size=min(args.n, len(reals)), replace=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(
        str(args.out), cv2.cvtColor(sheet(crops.images, landmarks, idx, args.seed), cv2.COLOR_RGB2BGR)
    )
    print(f"wrote {args.out} ({len(idx)} crops, mask: {cfg.sbi_mask})")


if __name__ == "__main__":
    main()
