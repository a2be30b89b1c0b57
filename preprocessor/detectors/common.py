"""Helpers shared by the ONNX face-detector backends: input checks, resizing, NMS, sessions.

Kept in numpy + OpenCV + onnxruntime only, because the services ship without torch.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from preprocessor.detectors.settings import DetectorSettings


def default_weights_dir() -> Path:
    """The configured weights directory (DEEPFAKE_WEIGHTS_DIR, else weights/ in the repository root)."""
    return DetectorSettings().weights_dir


def as_rgb_uint8(frame: np.ndarray) -> np.ndarray:
    """Check a frame and bring it to contiguous RGB uint8 [H, W, 3].

    Grayscale ([H, W] or [H, W, 1]) is expanded and RGBA loses its alpha, so callers may pass what
    image libraries commonly return; anything else is refused with a message that says what was wrong.
    """
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, got {frame.dtype}")
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise ValueError(f"frame must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got shape {frame.shape}")
    if frame.shape[0] < 8 or frame.shape[1] < 8:
        raise ValueError(f"frame is too small to hold a face: {frame.shape[1]}x{frame.shape[0]} pixels")
    if frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    elif frame.shape[2] == 4:
        frame = frame[:, :, :3]
    return np.ascontiguousarray(frame)


def resize_to_fit(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Scale an image so its longer side is `size` and pad the rest with black (top-left anchored).

    Returns the padded square image and the scale factor (square pixels per source pixel), so boxes
    found in the square map back by dividing by it. Padding bottom/right keeps the mapping a pure scale.
    """
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    out = np.zeros((size, size, image.shape[2]), dtype=image.dtype)
    out[:nh, :nw] = resized
    return out, scale


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one [4] x1y1x2y2 box with each row of [N, 4] boxes."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Plain greedy NMS; returns kept indices, most confident first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[iou_one_to_many(boxes[i], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, iou_threshold: float
) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe-style weighted NMS: each cluster is replaced by its score-weighted mean box and points.

    BlazeFace fires on many neighbouring anchors for one face; averaging them (instead of keeping the
    single best) gives a steadier box from frame to frame, which the tracker downstream relies on.
    Returns (box [4], score, points [K, 2]) per cluster, most confident first; score is the cluster's best.
    """
    order = np.argsort(-scores, kind="stable")
    out: list[tuple[np.ndarray, float, np.ndarray]] = []
    while order.size:
        top = int(order[0])
        overlap = iou_one_to_many(boxes[top], boxes[order]) > iou_threshold
        members = order[overlap]
        weights = scores[members][:, None]
        box = (boxes[members] * weights).sum(0) / weights.sum()
        pts = (points[members] * weights[:, :, None]).sum(0) / weights.sum()
        out.append((box.astype(np.float32), float(scores[top]), pts.astype(np.float32)))
        order = order[~overlap]
    return out


def onnx_session(path: Path) -> ort.InferenceSession:
    """A CPU onnxruntime session with few threads: the machine is shared and detection runs per frame.

    DEEPFAKE_DETECTOR_THREADS sets the intra-op thread count (default 1: on small models more threads
    mostly add synchronisation cost, and the pipeline may run other stages alongside).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = DetectorSettings().detector_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = (
        3  # the BlazeFace export carries unused initialisers; their warnings are noise
    )
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
