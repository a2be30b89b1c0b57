"""The face-detector interface and registry.

Backends register a factory under a name; the pipeline asks the registry for one by name, so
adding a detector never touches the pipeline.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass
class Face:
    """One detected face in the coordinates of the frame it was found in."""

    box: np.ndarray  # [4] float32: x1, y1, x2, y2 in pixels
    score: float
    # [5, 2] float32 (eyes, nose, mouth corners) when the backend gives them
    landmarks: np.ndarray | None = None
    # Backend-specific points that do not fit the 5-point layout above, e.g. BlazeFace's six
    # (right eye, left eye, nose tip, mouth centre, right ear, left ear): [K, 2] float32.
    keypoints: np.ndarray | None = None


class FaceDetector(Protocol):
    name: str

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces in one RGB uint8 frame [H, W, 3], most confident first."""
        ...


# The embedded detector: its weights come from a registry package at `make setup`, so it works offline.
DEFAULT_DETECTOR = "blazeface"

# A factory takes the weights directory (None: the backend's own default) and returns a detector.
DetectorFactory = Callable[[Path | None], FaceDetector]
_REGISTRY: dict[str, DetectorFactory] = {}
# Backends are imported lazily so a missing optional dependency only breaks the backend that needs it.
_BACKEND_MODULES = ("preprocessor.detectors.blazeface", "preprocessor.detectors.retinaface")


def register(name: str) -> Callable[[DetectorFactory], DetectorFactory]:
    def wrap(factory: DetectorFactory) -> DetectorFactory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def _load_backends() -> None:
    for module in _BACKEND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def available_detectors() -> list[str]:
    _load_backends()
    return sorted(_REGISTRY)


def create_detector(name: str, weights_dir: Path | None = None) -> FaceDetector:
    _load_backends()
    if name not in _REGISTRY:
        raise ValueError(f"unknown face detector {name!r}; choose one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](weights_dir)
