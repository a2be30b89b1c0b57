"""Face detector backends: real networks on real images (scikit-image's astronaut photo).

The astronaut's face (Eileen Collins, forehead to chin) sits at about x 175-275, y 65-175 in the
512x512 photo; that region was read off the image by eye and is what the boxes are checked against.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from deepfake.settings import REPO_ROOT, data_dir
from preprocessor.detectors import available_detectors, create_detector, retinaface
from preprocessor.detectors.base import DEFAULT_DETECTOR
from preprocessor.detectors.blazeface import BlazeFaceDetector, square_views
from preprocessor.detectors.blazeface import find_model as find_blazeface
from preprocessor.detectors.common import default_weights_dir, iou_one_to_many, nms, weighted_nms
from preprocessor.detectors.retinaface import prior_boxes

ASTRONAUT_FACE = np.array([175, 65, 275, 175], dtype=np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(iou_one_to_many(a, b[None])[0])


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def blazeface():
    return create_detector("blazeface")


# ---------------------------------------------------------------- registry and helpers


def test_default_detector_is_registered():
    assert DEFAULT_DETECTOR in available_detectors()


def test_unknown_detector_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown face detector 'nope'.*blazeface"):
        create_detector("nope")


def test_nms_keeps_best_of_overlapping_and_separate_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=np.float32)
    scores = np.array([0.8, 0.9, 0.7], dtype=np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]


def test_weighted_nms_averages_a_cluster_by_score():
    boxes = np.array([[0, 0, 10, 10], [2, 2, 12, 12], [100, 100, 110, 110]], dtype=np.float32)
    scores = np.array([0.75, 0.25, 0.5], dtype=np.float32)
    points = np.zeros((3, 1, 2), dtype=np.float32)
    points[1] = 4.0
    merged = weighted_nms(boxes, scores, points, 0.3)
    assert len(merged) == 2
    box, score, pts = merged[0]
    np.testing.assert_allclose(box, [0.5, 0.5, 10.5, 10.5], atol=1e-5)
    assert score == pytest.approx(0.75)
    np.testing.assert_allclose(pts, [[1.0, 1.0]], atol=1e-5)


@pytest.mark.parametrize("w,h", [(1920, 1080), (1080, 1920), (640, 480), (500, 500), (1000, 200)])
def test_square_views_cover_the_frame(w: int, h: int):
    views = square_views(w, h)
    assert views[0] == (0, 0, max(w, h))  # the whole frame, letterboxed
    covered = np.zeros((h, w), dtype=bool)
    for x0, y0, side in views[1:]:
        assert side == min(w, h) and x0 + side <= w and y0 + side <= h
        covered[y0 : y0 + side, x0 : x0 + side] = True
    assert len(views) == 1 or covered.all()


# ---------------------------------------------------------------- BlazeFace (embedded default)


def test_blazeface_finds_the_astronaut(blazeface, astronaut):
    faces = blazeface.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert iou(face.box, ASTRONAUT_FACE) > 0.6
    assert 0.75 <= face.score <= 1.0
    right_eye, left_eye, nose = face.keypoints[0], face.keypoints[1], face.keypoints[2]
    # The subject's right eye is on the image's left; the nose is below the eyes.
    assert right_eye[0] < nose[0] < left_eye[0]
    assert nose[1] > max(right_eye[1], left_eye[1])
    x1, y1, x2, y2 = face.box
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.keypoints[:4])


@pytest.mark.parametrize("kind", ["blank", "noise", "gradient"])
def test_blazeface_finds_nothing_without_a_face(blazeface, kind: str):
    rng = np.random.default_rng(0)
    image = {
        "blank": np.full((480, 640, 3), 128, dtype=np.uint8),
        "noise": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        "gradient": np.broadcast_to(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], (480, 640, 3)),
    }[kind]
    assert blazeface.detect(np.ascontiguousarray(image)) == []


def test_blazeface_accepts_grayscale_and_rgba(blazeface, astronaut):
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    for image in (gray, gray[:, :, None], rgba):
        faces = blazeface.detect(image)
        assert len(faces) == 1 and iou(faces[0].box, ASTRONAUT_FACE) > 0.5


@pytest.mark.parametrize(
    "canvas,offset,zoom",
    [((613, 1001), (37, 411), 1.0), ((1080, 1920), (500, 1300), 0.5), ((1917, 1079), (1201, 333), 0.75)],
)
def test_blazeface_maps_boxes_back_on_odd_and_wide_frames(blazeface, astronaut, canvas, offset, zoom):
    """The photo pasted (maybe shrunk) into a larger frame: the box must move and scale with it.

    The 1920x1080 case puts a ~50 px face at the right, where only the tiles see it at full detail.
    """
    photo = cv2.resize(astronaut, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA)
    frame = np.full((*canvas, 3), 90, dtype=np.uint8)
    oy, ox = offset
    frame[oy : oy + photo.shape[0], ox : ox + photo.shape[1]] = photo
    expected = ASTRONAUT_FACE * zoom + np.array([ox, oy, ox, oy], dtype=np.float32)
    faces = blazeface.detect(frame)
    assert len(faces) == 1
    assert iou(faces[0].box, expected) > 0.5


def test_blazeface_tiles_find_a_face_the_whole_frame_view_misses(astronaut):
    """A ~60 px face in 1920x1080: too small once the frame is squeezed to 256, found in a tile."""
    photo = cv2.resize(astronaut, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
    frame = np.full((1080, 1920, 3), 90, dtype=np.uint8)
    frame[300 : 300 + photo.shape[0], 1200 : 1200 + photo.shape[1]] = photo
    expected = ASTRONAUT_FACE * 0.7 + np.array([1200, 300, 1200, 300], dtype=np.float32)
    model = find_blazeface()
    assert BlazeFaceDetector(model, tiles="never").detect(frame) == []
    for mode in ("fallback", "always"):
        faces = BlazeFaceDetector(model, tiles=mode).detect(frame)
        assert len(faces) == 1 and iou(faces[0].box, expected) > 0.5, mode
    with pytest.raises(ValueError, match="tiles must be one of"):
        BlazeFaceDetector(model, tiles="sometimes")


@pytest.mark.parametrize(
    "frame,error",
    [
        (np.zeros((64, 64, 3), dtype=np.float32), "must be uint8"),
        (np.zeros((64, 64, 2), dtype=np.uint8), "got shape"),
        (np.zeros((4, 64, 3), dtype=np.uint8), "too small"),
        ([[0, 1], [2, 3]], "numpy array"),
    ],
)
def test_blazeface_refuses_bad_frames(blazeface, frame, error: str):
    with pytest.raises((ValueError, TypeError), match=error):
        blazeface.detect(frame)


def test_blazeface_missing_weights_names_make_setup(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("DEEPFAKE_BLAZEFACE_DIR", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="make setup"):
        create_detector("blazeface", weights_dir=tmp_path)


def test_detector_threads_follow_the_environment(monkeypatch):
    monkeypatch.setenv("DEEPFAKE_DETECTOR_THREADS", "2")
    detector = create_detector("blazeface")
    assert detector._session.get_session_options().intra_op_num_threads == 2


# ---------------------------------------------------------------- RetinaFace (design's choice)


def shared_checkpoint() -> Path:
    return data_dir() / "weights" / "mobilenet0.25_Final.pth"


def retinaface_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights directory holding the RetinaFace ONNX: the configured one, else exported here.

    Exporting needs torch and the MobileNet-0.25 checkpoint (DEEPFAKE_DATA_DIR/weights); without
    either the RetinaFace tests skip and say which is missing. Also used by test_real_footage.py.
    """
    configured = default_weights_dir()
    if (configured / retinaface.MODEL_FILE).is_file():
        return configured
    checkpoint = shared_checkpoint()
    if not checkpoint.is_file():
        pytest.skip(f"no RetinaFace ONNX in {configured} and no checkpoint at {checkpoint} to export one")
    pytest.importorskip("torch", reason="exporting RetinaFace to ONNX needs torch (the train extra)")
    from preprocessor.detectors.retinaface_export import export

    out = tmp_path_factory.mktemp("weights")
    export(checkpoint, out)
    return out


@pytest.fixture(scope="module")
def retinaface_dir(tmp_path_factory) -> Path:
    return retinaface_weights(tmp_path_factory)


@pytest.fixture(scope="module")
def retina(retinaface_dir):
    return create_detector("retinaface", weights_dir=retinaface_dir)


def test_prior_boxes_layout():
    anchors = [[10, 20], [32, 64], [128, 256]]
    priors = prior_boxes(512, 480, anchors)
    assert priors.shape == ((64 * 60 + 32 * 30 + 16 * 15) * 2, 4)
    np.testing.assert_allclose(priors[:3], [[4, 4, 10, 10], [4, 4, 20, 20], [12, 4, 10, 10]])
    np.testing.assert_allclose(priors[-1], [464, 496, 256, 256])
    # Odd sizes round up, as the stride-2 convolutions do.
    assert prior_boxes(33, 17, anchors).shape == ((5 * 3 + 3 * 2 + 2 * 1) * 2, 4)


def test_retinaface_finds_the_astronaut_with_landmarks(retina, astronaut):
    faces = retina.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert iou(face.box, ASTRONAUT_FACE) > 0.6
    assert face.score >= retina.score_threshold
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert lx < nx < rx  # eyes in image order, nose between them
    assert max(ly, ry) < ny < min(mly, mry)  # eyes above the nose, mouth corners below
    assert mlx < mrx
    x1, y1, x2, y2 = face.box
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_retinaface_finds_nothing_without_a_face(retina, kind: str):
    rng = np.random.default_rng(1)
    image = (
        np.full((360, 640, 3), 128, np.uint8)
        if kind == "blank"
        else rng.integers(0, 256, (360, 640, 3), np.uint8)
    )
    assert retina.detect(image) == []


@pytest.mark.parametrize(
    "canvas,offset,zoom",
    # 0.6 in 1920x1080: a ~60 px face, ~20 px once the frame is shrunk to 640 (scores 0.9-0.96).
    [((613, 1001), (37, 411), 1.0), ((1080, 1920), (300, 1200), 0.6), ((1917, 1079), (1201, 333), 0.75)],
)
def test_retinaface_maps_boxes_back_on_odd_and_wide_frames(retina, astronaut, canvas, offset, zoom):
    photo = cv2.resize(astronaut, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA)
    frame = np.full((*canvas, 3), 90, dtype=np.uint8)
    oy, ox = offset
    frame[oy : oy + photo.shape[0], ox : ox + photo.shape[1]] = photo
    expected = ASTRONAUT_FACE * zoom + np.array([ox, oy, ox, oy], dtype=np.float32)
    faces = retina.detect(frame)
    assert len(faces) == 1
    assert iou(faces[0].box, expected) > 0.5


def test_retinaface_accepts_grayscale(retina, astronaut):
    faces = retina.detect(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY))
    assert len(faces) == 1 and iou(faces[0].box, ASTRONAUT_FACE) > 0.5


def test_retinaface_records_its_variant(retina):
    assert retina.config["variant"] in retinaface.VARIANTS
    assert retina.anchor_sizes == retinaface.VARIANTS[retina.config["variant"]]["anchor_sizes"]


def test_retinaface_missing_weights_names_make_weights(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="make weights"):
        create_detector("retinaface", weights_dir=tmp_path)


def test_retinaface_refuses_an_onnx_without_anchor_metadata(tmp_path: Path):
    # Any ONNX file without the export's metadata, here the BlazeFace model under RetinaFace's name.
    (tmp_path / retinaface.MODEL_FILE).write_bytes(find_blazeface().read_bytes())
    with pytest.raises(ValueError, match="metadata.*make weights"):
        create_detector("retinaface", weights_dir=tmp_path)


def test_export_refuses_a_checkpoint_of_another_network(tmp_path: Path):
    torch = pytest.importorskip("torch", reason="the RetinaFace export needs torch (the train extra)")
    from preprocessor.detectors.retinaface_export import export

    bogus = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, bogus)
    with pytest.raises(ValueError, match="does not match RetinaFace"):
        export(bogus, tmp_path / "out")
    with pytest.raises(ValueError, match="unknown RetinaFace variant"):
        export(bogus, tmp_path / "out", variant="resnet")
    with pytest.raises(FileNotFoundError):
        export(tmp_path / "missing.pth", tmp_path / "out")
    assert not (tmp_path / "out" / retinaface.MODEL_FILE).exists()


def test_detectors_run_without_importing_torch(retinaface_dir):
    """Services ship without torch: creating and running both backends must not import it."""
    code = (
        "import sys; from pathlib import Path; import numpy as np\n"
        "from preprocessor.detectors import create_detector\n"
        "frame = np.zeros((120, 160, 3), np.uint8)\n"
        "for name, wd in (('blazeface', None), ('retinaface', Path(sys.argv[1]))):\n"
        "    create_detector(name, wd).detect(frame)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(retinaface_dir)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
