"""Weight soups: one model whose weights are the mean of several trained runs of one architecture.

``python -m training.soup --out runs/soup/final.pt runs/a/final.pt runs/b/final.pt ...``

WHY: runs fine-tuned from the same ImageNet initialisation land close enough in weight space that their
averaged weights are a working model (Wortsman et al., "Model soups", ICML 2022; Izmailov et al., SWA),
and such a soup tends to keep an ensemble's gain on data unlike the training data at the cost of one
model: serving, the exported graph and the speed stay exactly as they are. Our recipes differ by less
than the noise between their runs (MODEL_CARD.md), so averaging them is a way to use them all.

The soup checkpoint carries the first ingredient's config (with ``style_mix`` off: a training-only
switch) and the ingredients' paths in ``config.extra["soup"]``; every ingredient must build the same
network and cut the same serving crops. Cross-validated soups: ``python -m training.cv --soup ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from training.train import save_atomic
from training.weights import read_checkpoint

# Fields that fix the network's tensors or what the exported model expects at serving time.
SHAPE_FIELDS = (
    "image_size",
    "clip_len",
    "embed_dim",
    "n_layers",
    "n_heads",
    "serve_crop_scale",
    "serve_shift_y",
)


def average_checkpoints(paths: list[Path]) -> dict[str, Any]:
    """The uniform mean of the checkpoints' floating-point tensors (BatchNorm statistics included; integer
    counters are taken from the first) as a checkpoint ``load_trained`` reads."""
    if not paths:
        raise ValueError("a soup needs at least one checkpoint")
    states = [read_checkpoint(path) for path in paths]
    first = states[0]
    for path, state in zip(paths[1:], states[1:], strict=True):
        differ = [f for f in SHAPE_FIELDS if state["config"].get(f) != first["config"].get(f)]
        if differ or state["model"].keys() != first["model"].keys():
            raise ValueError(
                f"{path} is not the same network as {paths[0]} (differs in {differ or 'tensors'})"
            )
    model = {}
    for key, tensor in first["model"].items():
        if tensor.is_floating_point():
            model[key] = sum(s["model"][key].double() for s in states).div(len(states)).to(tensor.dtype)
        else:
            model[key] = tensor.clone()
    config = dict(first["config"])
    config["style_mix"] = 0.0
    config["extra"] = {**config.get("extra", {}), "soup": [str(p) for p in paths]}
    return {"model": model, "config": config, "elapsed_s": sum(s.get("elapsed_s", 0.0) for s in states)}


def write_soup(paths: list[Path], out: Path) -> Path:
    """Average ``paths`` into ``out`` (written whole, then renamed: a stopped run leaves no half file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(average_checkpoints(paths), out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path, help="final.pt files of runs of one architecture")
    ap.add_argument(
        "--out", type=Path, required=True, help="where to write the soup (e.g. runs/soup/final.pt)"
    )
    args = ap.parse_args(argv)
    out = write_soup(args.checkpoints, args.out)
    print(f"wrote {out}: the mean of {len(args.checkpoints)} checkpoints")


if __name__ == "__main__":
    main()
