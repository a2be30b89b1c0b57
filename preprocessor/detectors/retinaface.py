"""RetinaFace (MobileNet-0.25) on onnxruntime: the design's detector, with five landmarks.

The ONNX file is made once by `make weights RETINAFACE_PTH=...` (retinaface_export.py, the only part
that needs torch) into the weights directory. At run time this module does what the network leaves
to the caller, in numpy: resizing, BGR mean subtraction, prior (anchor) boxes, decoding and NMS.

Priors, as the checkpoint was trained: three levels at strides 8, 16, 32 with two square anchor
sizes per level, centred on each cell; decoding uses the variances (0.1, 0.2):
centre = prior_centre + d * 0.1 * prior_size, size = prior_size * exp(d * 0.2).

Two public MobileNet-0.25 checkpoints share one state-dict layout but differ in activation and anchor
sizes (VARIANTS). Loading one with the other's settings gives confident nonsense (faces at three times
their size, boxes on shirts), so the export records the variant and its anchors in the ONNX file's
metadata and this module reads them from there instead of assuming.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from preprocessor.detectors.base import Face, register
from preprocessor.detectors.common import as_rgb_uint8, default_weights_dir, nms, onnx_session

NAME = "retinaface"
MODEL_FILE = "retinaface_mobilenet0.25.onnx"
BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
METADATA_KEY = "retinaface"
# leaky: the activation's negative slope (0 = ReLU); anchor_sizes: per level, in input pixels.
VARIANTS: dict[str, dict] = {
    # biubug6/Pytorch_Retinaface, weights/mobilenet0.25_Final.pth (cfg_mnet there).
    "pytorch_retinaface": {"leaky": 0.1, "anchor_sizes": [[16, 32], [64, 128], [256, 512]]},
    # biubug6/Face-Detector-1MB-with-landmark, weights/mobilenet0.25_Final.pth (the copy in shared/data).
    "face_detector_1mb": {"leaky": 0.0, "anchor_sizes": [[10, 20], [32, 64], [128, 256]]},
}


def find_model(weights_dir: Path | None = None) -> Path:
    """The exported ONNX file in `weights_dir` (default: DEEPFAKE_WEIGHTS_DIR or weights/)."""
    directory = weights_dir if weights_dir is not None else default_weights_dir()
    path = directory / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"RetinaFace weights not found at {path}. Run `make weights RETINAFACE_PTH=/path/to/"
            "mobilenet0.25_Final.pth` (the MobileNet-0.25 checkpoint released with "
            "biubug6/Pytorch_Retinaface) to export them, with DEEPFAKE_WEIGHTS_DIR pointing at the "
            "weights directory if not weights/."
        )
    return path


def prior_boxes(height: int, width: int, anchor_sizes: list[list[int]]) -> np.ndarray:
    """Anchors [A, 4] as (cx, cy, w, h) in pixels, in the network's output order (level, row, col, size)."""
    levels = []
    for step, sizes in zip(STEPS, anchor_sizes, strict=True):
        rows, cols = -(-height // step), -(-width // step)  # ceil: what the stride-2 convs produce
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        centres = np.stack([(xs + 0.5) * step, (ys + 0.5) * step], axis=-1).reshape(-1, 1, 2)
        size = np.asarray(sizes, dtype=np.float32)[None, :, None].repeat(2, axis=2)
        cell = np.concatenate(
            [
                np.broadcast_to(centres, (centres.shape[0], len(sizes), 2)),
                np.broadcast_to(size, (centres.shape[0], len(sizes), 2)),
            ],
            axis=2,
        )
        levels.append(cell.reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)


class RetinaFaceDetector:
    """RetinaFace through onnxruntime. Frames larger than `max_side` are shrunk first.

    max_side trades small-face recall for speed: the network's cost grows with the pixel count, and
    a face of 5% of a 1080p frame's height (54 px) is only ~18 px at 640, near the smallest anchors.
    score_threshold is the confidence above which a box is kept, before NMS at iou_threshold.
    0.8, measured on the shared videos (4 frames from each of 213, shrunk to 640 as the pipeline does):
    from 0.5 to 0.8 the fraction of frames with a face stays at 0.998 while frames with more than one
    face fall from 8.7% to 3.3% (2.1% at 0.9); but such ~18 px faces score 0.74-0.96, so 0.9 would
    drop many of them, while the tracker already drops detections that do not persist.
    """

    name = NAME

    def __init__(
        self,
        model_path: Path,
        score_threshold: float = 0.8,
        iou_threshold: float = 0.4,
        max_side: int = 640,
    ) -> None:
        if max_side < 32:
            raise ValueError(f"max_side must be at least 32 pixels, got {max_side}")
        self.model_path = model_path
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_side = max_side
        self._session = onnx_session(model_path)
        self._input = self._session.get_inputs()[0].name
        meta = self._session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if meta is None:
            raise ValueError(
                f"{model_path} has no '{METADATA_KEY}' metadata (anchor sizes); "
                "re-export it with `make weights`"
            )
        self.config = json.loads(meta)
        self.anchor_sizes: list[list[int]] = self.config["anchor_sizes"]
        self._priors: dict[tuple[int, int], np.ndarray] = {}

    def _priors_for(self, height: int, width: int) -> np.ndarray:
        key = (height, width)
        if key not in self._priors:
            if len(self._priors) > 8:  # frames of one video share a size; keep the cache small anyway
                self._priors.clear()
            self._priors[key] = prior_boxes(height, width, self.anchor_sizes)
        return self._priors[key]

    def detect(self, frame: np.ndarray) -> list[Face]:
        frame = as_rgb_uint8(frame)
        h, w = frame.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            frame = cv2.resize(
                frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
            )
        ih, iw = frame.shape[:2]
        image = frame[:, :, ::-1].astype(np.float32) - BGR_MEAN  # the checkpoint was trained on BGR
        boxes_d, scores, landmarks_d = self._session.run(None, {self._input: image.transpose(2, 0, 1)[None]})
        keep = np.nonzero(scores[0, :, 1] >= self.score_threshold)[0]
        if keep.size == 0:
            return []
        priors = self._priors_for(ih, iw)[keep]
        d = boxes_d[0, keep]
        centre = priors[:, :2] + d[:, :2] * VARIANCES[0] * priors[:, 2:]
        size = priors[:, 2:] * np.exp(d[:, 2:] * VARIANCES[1])
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        points = (
            priors[:, None, :2] + landmarks_d[0, keep].reshape(-1, 5, 2) * VARIANCES[0] * priors[:, None, 2:]
        )
        conf = scores[0, keep, 1]
        faces = []
        for i in nms(boxes, conf, self.iou_threshold):
            box = np.clip(boxes[i] / scale, 0, [w, h, w, h]).astype(np.float32)
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            faces.append(
                Face(box=box, score=float(conf[i]), landmarks=(points[i] / scale).astype(np.float32))
            )
        return faces


@register(NAME)
def create(weights_dir: Path | None = None) -> RetinaFaceDetector:
    return RetinaFaceDetector(find_model(weights_dir))
