"""training/notebooks/train.ipynb runs top to bottom (nbclient, a real kernel) on the ``tiny`` config.

Always on: the data root is a tiny synthetic one written here (face crops in the DFDC crop layout plus
two dev videos), so the test needs nothing outside the repository and checks the notebook's whole chain
really ran: a checkpoint, a calibration, an installed ONNX model with metadata, and both evaluation
reports with every row scored. Random-ish tiny training means the figures themselves carry no meaning.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepfake.settings import REPO_ROOT
from tests import synth

NOTEBOOK = REPO_ROOT / "training" / "notebooks" / "train.ipynb"
FIELDS = ["path", "label", "kind", "split", "dataset", "method", "group", "source_repo", "licence"]


def _crop(rng: np.random.Generator, fake: bool) -> np.ndarray:
    """A 96 px face crop of the astronaut photo with jitter; fakes get a recoloured, blurred face patch."""
    head = synth.head_image()
    x1, y1, x2, y2 = (int(v) for v in synth.ASTRONAUT_FACE_BOX - np.array([100, 0, 100, 0]))
    dx, dy = rng.integers(-8, 9, size=2)
    face = head[max(0, y1 + dy - 10) : y2 + dy + 10, max(0, x1 + dx - 10) : x2 + dx + 10].astype(np.float32)
    face = face * rng.uniform(0.8, 1.2, size=3)
    if fake:
        h, w = face.shape[:2]
        inner = face[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]
        face[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = cv2.GaussianBlur(inner, (7, 7), 2) * [1.1, 0.9, 0.95]
    return cv2.resize(np.clip(face, 0, 255).astype(np.uint8), (96, 96), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DFDC-layout crops (16 train, 8 val per class) and two dev videos, with a MANIFEST.tsv."""
    root = tmp_path_factory.mktemp("nbdata")
    rng = np.random.default_rng(0)
    rows = []
    for split, per_class in (("train", 16), ("val", 8)):
        for label in ("real", "fake"):
            folder = root / "crops" / "dfdc" / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                name = f"{split}_{label}_{i}.jpg"
                rgb = _crop(rng, label == "fake")
                cv2.imwrite(str(folder / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                rows.append(
                    [
                        f"crops/dfdc/{split}/{label}/{name}",
                        label,
                        "crop",
                        split,
                        "DFDC",
                        "original" if label == "real" else "DFDC",
                        f"{split}{i}",
                        "synthetic (crop size before resize 120 px)",
                        "test",
                    ]
                )
    (root / "videos").mkdir()
    synth.write_face_video(root / "videos" / "face.mp4", n_frames=24, width=320, height=240, face_px=90)
    synth.write_no_face_video(root / "videos" / "nobody.mp4", n_frames=16, width=320, height=240)
    rows.append(["videos/face.mp4", "fake", "video", "dev", "Synth", "paste", "v1", "synthetic", "test"])
    rows.append(["videos/nobody.mp4", "real", "video", "dev", "Synth", "original", "v2", "synthetic", "test"])
    lines = ["\t".join(FIELDS)] + ["\t".join(r) for r in rows]
    (root / "MANIFEST.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_notebook_runs_the_whole_chain_on_the_tiny_config(tiny_data_dir, default_detector, tmp_path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    run_dir, repo_dir, eval_dir = tmp_path / "run", tmp_path / "model_repository", tmp_path / "eval"
    env = {
        "DEEPFAKE_DATA_DIR": str(tiny_data_dir),
        "NOTEBOOK_CONFIG": "tiny",
        "NOTEBOOK_OVERRIDES": json.dumps({"out_dir": str(run_dir), "cache_dir": str(tmp_path / "cache")}),
        "NOTEBOOK_FRESH": "1",
        "NOTEBOOK_MODEL_REPO": str(repo_dir),
        "NOTEBOOK_EVAL_OUT": str(eval_dir),
        "NOTEBOOK_EVAL_VIDEOS": "1",
        "DEEPFAKE_FRAMES": "8",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel is a child process and inherits these
    try:
        nb = nbformat.read(NOTEBOOK, as_version=4)
        client = nbclient.NotebookClient(
            nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
        )
        client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    # The chain really ran: checkpoint, calibration, installed model, both evaluation reports.
    assert (run_dir / "final.pt").is_file() and (run_dir / "calibration.json").is_file()
    onnx_path = repo_dir / "deepfake_detector" / "1" / "model.onnx"
    assert onnx_path.is_file() and (repo_dir / "deepfake_detector" / "config.pbtxt").is_file()
    crops = json.loads((eval_dir / "crops_val" / "report.json").read_text())
    assert crops["n"] == 16 and crops["n_real"] == 8 and crops["model"]["path"] == str(onnx_path)
    videos = json.loads((eval_dir / "videos_dev" / "report.json").read_text())
    assert videos["n"] == 2 and videos["n_inconclusive"] >= 1  # nobody.mp4 has no face
    calibration = json.loads((run_dir / "calibration.json").read_text())
    assert crops["model"]["temperature"] == pytest.approx(calibration["temperature"], rel=1e-5)
    # The evaluation table and ROC plot were shown in the notebook itself.
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("ALL" in o.get("text", "") for o in outputs if o.get("output_type") == "stream")


def test_notebook_has_no_logic_of_its_own() -> None:
    """Only parameters, imports and calls into the project: no functions, tensors or arrays in cells."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    source = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    for banned in ("def ", "class ", "lambda", "torch", "numpy"):
        assert banned not in source, f"notebook cell contains {banned!r}: move that logic into training/"
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit it cleared"
