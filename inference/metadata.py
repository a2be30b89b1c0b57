"""The model's own description of how it must be fed and read (metadata, not constants: ARCHITECTURE.md).

The same JSON object is stored in the ONNX file (metadata_props key ``deepfake``) and in Triton's
config.pbtxt (``parameters { key: "deepfake" ... }``), so the in-process and the Triton backends
crop, clip and calibrate exactly as training did.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

METADATA_KEY = "deepfake"
INPUT_NAME = "clips"
OUTPUT_CLIP = "clip_logit"
OUTPUT_FRAMES = "frame_logits"
OUTPUT_BLEND = "blend_map"


class CropPolicy(BaseModel):
    """How a face box becomes a model input; training and serving both follow it."""

    scale: float = Field(1.3, description="Square side = scale * max(box width, box height).")
    size: int = Field(160, description="Side of the resized square crop in pixels.")
    shift_y: float = Field(0.0, description="Centre shift, as a fraction of the box height (down > 0).")


class ModelMeta(BaseModel):
    name: str = "deepfake_detector"
    version: str = "0"
    clip_len: int = Field(8, description="Trained clip length T; shorter clips (T >= 1) also work.")
    crop: CropPolicy = Field(default_factory=CropPolicy)
    temperature: float = Field(1.0, description="Calibrated probability = sigmoid(logit / temperature).")
    threshold: float = Field(0.5, description="Calibrated probability at or above which a clip is fake.")
    training_data: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        return cls.model_validate(json.loads(text))
