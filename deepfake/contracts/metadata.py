"""The model's own description of how it must be fed and read (metadata, not constants: ARCHITECTURE.md).

The same JSON object is stored in the ONNX file (metadata_props key ``deepfake``) and in Triton's
config.pbtxt (``parameters { key: "deepfake" ... }``), so the in-process and the Triton backends
crop, clip and calibrate exactly as training did.
"""

from __future__ import annotations

import json
from typing import Any, Self

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


class _JsonMeta(BaseModel):
    """Metadata stored as one JSON string (ONNX metadata_props, Triton parameters)."""

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls.model_validate(json.loads(text))


class ModelMeta(_JsonMeta):
    name: str = "deepfake_detector"
    version: str = "0"
    clip_len: int = Field(8, description="Trained clip length T; shorter clips (T >= 1) also work.")
    crop: CropPolicy = Field(default_factory=CropPolicy)
    temperature: float = Field(1.0, description="Calibrated probability = sigmoid(logit / temperature).")
    threshold: float = Field(0.5, description="Calibrated probability at or above which a clip is fake.")
    training_data: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)


AV_METADATA_KEY = "deepfake_av_meta"
AV_INPUT_MOUTH = "mouth"
AV_INPUT_MEL = "mel"
AV_OUTPUT = "sync_logits"


class SyncMeta(_JsonMeta):
    """The audio-visual sync model's description (ONNX metadata_props key ``deepfake_av_meta``): how its
    inputs are made (preprocessor/audio.py, preprocessor/mouth.py) and how its logits become a score
    (preprocessor/audio_visual.py). Inputs ``mouth`` [N, T, 48, 96] uint8 and ``mel`` [N, K, 80, 64]
    float32; output ``sync_logits`` [N, K] float32."""

    name: str = "av_sync"
    version: str = "0"
    sample_rate: int = 16000
    n_mels: int = 80
    hop_s: float = 0.01
    mel_frames: int = 64
    mouth: tuple[int, int] = Field((48, 96), description="Mouth crop (height, width), uint8 grayscale.")
    clip_len: int = Field(8, description="Mouth frames per window T (the visual model's clip length).")
    offsets_s: list[float] = Field(
        default_factory=list, description="Candidate audio offsets (s; + means audio late), one logit each."
    )
    min_speech_fraction: float = Field(0.3, description="A window with less speech is not scored.")
    min_windows: int = Field(2, description="A track with fewer speech windows gets no score.")
    plausible_offset_s: float = Field(
        0.2, description="A best offset beyond this is implausible for a real recording (evidence of a fake)."
    )
    score_coef: dict[str, float] = Field(
        default_factory=dict,
        description="P(out of sync) = sigmoid(intercept + sum coef * feature) over the track's features "
        "(preprocessor/audio_visual.py track_features); fitted out of fold.",
    )
    out_of_sync_threshold: float = Field(
        0.5, description="P(out of sync) at or above which a track is out of sync."
    )
    combiner: dict[str, float] = Field(
        default_factory=dict,
        description="Fused P(fake) = sigmoid(intercept + visual * logit(visual p) + audio_visual * "
        "logit(P(out of sync))); fitted on out-of-fold scores (preprocessor/audio_visual.py fuse).",
    )
    threshold: float = Field(
        0.5,
        description="Fused probability at or above which a video with an audio-visual score is fake; "
        "chosen out of fold to call no more real videos fake than the visual model does at its own "
        "threshold (training/sync_eval.py same_false_alarms). Videos without one keep the visual threshold.",
    )
    training_data: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)
