"""Load a trained checkpoint (``final.pt`` or ``ckpt.pt``) back into a model and its config."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from training.config import TrainConfig
from training.model import DeepfakeDetector, build_model


def config_from_dict(values: dict) -> TrainConfig:
    """Rebuild a TrainConfig saved with dataclasses.asdict (tuples come back as lists; unknown keys drop)."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    kept: dict[str, Any] = {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in fields
    }
    return TrainConfig(**kept)


def read_checkpoint(checkpoint: str | Path) -> dict[str, Any]:
    """A training checkpoint's dict (``model`` state and ``config`` values at least), on CPU."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if "model" not in state or "config" not in state:
        raise ValueError(f"{path} is not a training checkpoint (needs 'model' and 'config')")
    return state


def load_trained(checkpoint: str | Path) -> tuple[DeepfakeDetector, TrainConfig]:
    """The model in eval mode, on CPU, with its training config; no ImageNet weights are read."""
    state = read_checkpoint(checkpoint)
    cfg = config_from_dict(state["config"])
    model = build_model(dataclasses.replace(cfg, pretrained=False))
    model.load_state_dict(state["model"])
    model.eval()
    return model, cfg
