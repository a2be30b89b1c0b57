"""68-point facial landmarks of training crops, for landmark-shaped self-blending masks (training/sbi.py).

Why landmarks: the SBI paper's ablation credits masks drawn from the hull of facial landmarks, rather than
a generic shape, with about 10 AUC points on Celeb-DF: the seam then runs where a face swap's seam runs
(jaw line, brows), on every face shape and head pose. The predictor is dlib's 68-point shape predictor
(``dlib-bin``), with the model file that ships inside the ``face_recognition_models`` wheel, so nothing is
downloaded. That model was trained on iBUG 300-W, whose licence excludes commercial use: it is used here
to make training masks only, never shipped in the exported model or called at serving time.

Faces are found in the crop with dlib's HOG detector; where it finds none (profile, blur, a crop tighter
than the detector likes) the predictor starts from the box where the face sits in our crops. Landmarks
are computed for real crops only (the only ones that get self-blended) and cached under the cache
directory, keyed by each image's content, so a changed crop policy never reuses stale points.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from training.cache_files import save_npz

N_POINTS = 68
# Where the face box sits in a crop when the detector finds none, as fractions of the side (the median
# HOG box over DFDC training crops, rounded).
FALLBACK_BOX = (0.14, 0.16, 0.86, 0.88)


def predictor_path() -> Path:
    """The 68-point model inside face_recognition_models, found without importing the package (its
    ``__init__`` needs pkg_resources, which current setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "landmark masks need the face_recognition_models package (pip install -e '.[train]')"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise RuntimeError(f"face_recognition_models lacks {path.name}")
    return path


def image_key(img: np.ndarray) -> int:
    """64-bit content key of one crop (two 32-bit checksums): same pixels, same key."""
    buf = np.ascontiguousarray(img).tobytes()
    return (zlib.crc32(buf) << 32) | zlib.adler32(buf)


class LandmarkFinder:
    """dlib face detector + 68-point predictor for square uint8 RGB crops."""

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        self._detect = dlib.get_frontal_face_detector()
        self._predict = dlib.shape_predictor(str(predictor_path()))

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """float32 [68, 2] (x, y) pixel coordinates of one crop."""
        img = np.ascontiguousarray(img)
        boxes = self._detect(img, 0)
        if boxes:
            box = max(boxes, key=lambda b: b.area())
        else:
            s = img.shape[0]
            box = self._dlib.rectangle(*(int(f * s) for f in FALLBACK_BOX))
        shape = self._predict(img, box)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


def crop_landmarks(images: np.ndarray, labels: np.ndarray, cache_dir: str | Path) -> np.ndarray:
    """float32 [N, 68, 2]: landmarks of every real crop (label 0), NaN for the others.

    Cached in ``cache_dir/landmarks_<side>.npz`` by content key; only new crops are computed (about 3 ms
    each on one core), and the cache grows to hold them.
    """
    side = images.shape[1]
    cache = Path(cache_dir) / f"landmarks_{side}.npz"
    known: dict[int, np.ndarray] = {}
    if cache.is_file():
        with np.load(cache) as z:
            known = dict(zip(z["keys"].tolist(), z["points"], strict=True))
    out = np.full((len(images), N_POINTS, 2), np.nan, np.float32)
    todo = []
    for i in np.flatnonzero(labels == 0):
        key = image_key(images[i])
        if key in known:
            out[i] = known[key]
        else:
            todo.append((i, key))
    if todo:
        find, t0 = LandmarkFinder(), time.time()
        for n, (i, key) in enumerate(todo, start=1):
            out[i] = known[key] = find(images[i])
            if n % 5000 == 0 or n == len(todo):
                print(f"landmarks: {n}/{len(todo)} new crops in {time.time() - t0:.0f}s", flush=True)
        keys = np.array(list(known), np.uint64)
        save_npz(cache, {"keys": keys, "points": np.stack([known[int(k)] for k in keys])})
    n_real = int((labels == 0).sum())
    print(f"landmarks: {n_real} real crops ({len(todo)} computed now)", file=sys.stderr, flush=True)
    return out
