"""The one interface every model runtime implements, so the pipeline never knows which it talks to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from deepfake.contracts.metadata import ModelMeta
from deepfake.contracts.schemas import ModelInfo


@dataclass
class ClipOutputs:
    """Raw (uncalibrated) logits for a batch of clips."""

    clip_logits: np.ndarray  # [B] float32
    frame_logits: np.ndarray  # [B, T] float32
    blend_maps: np.ndarray | None = None  # [B, T, h, w] float32 in [0, 1], when the model exports one


class InferenceBackend(Protocol):
    meta: ModelMeta
    info: ModelInfo

    def infer(self, clips: np.ndarray) -> ClipOutputs:
        """Run uint8 RGB clips [B, T, H, W, 3] (all with the same T) through the model."""
        ...

    def close(self) -> None: ...
