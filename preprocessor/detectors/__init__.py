"""Face detectors behind one interface and one registry (DeepfakeBench style)."""

from preprocessor.detectors.base import Face, FaceDetector, available_detectors, create_detector, register

__all__ = ["Face", "FaceDetector", "available_detectors", "create_detector", "register"]
