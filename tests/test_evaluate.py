"""Evaluation: metrics against cases worked out by hand, and `deepfake evaluate` run end to end.

The end-to-end test builds a tiny manifest of synthetic crops and videos and a random-weight ONNX
model with the real model contract, then runs the real command (crop path and full video pipeline).
Random weights mean the figures carry no meaning; what is checked is that every row is scored,
the report is consistent with scores.tsv, and the files are written.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss

from deepfake.settings import REPO_ROOT
from training import metrics

# -- metrics, hand-computed --------------------------------------------------------------------------


def test_auc_counts_ties_half() -> None:
    # fakes: 0.8, 0.4; reals: 0.4, 0.1. Pairs (fake, real): (0.8,0.4)=1 (0.8,0.1)=1 (0.4,0.4)=0.5 (0.4,0.1)=1
    assert metrics.roc_auc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(3.5 / 4)


def test_auc_perfect_inverted_and_all_tied() -> None:
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.9]) == 1.0
    assert metrics.roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.3, 0.1]) == 0.0
    assert metrics.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_auc_undefined_for_one_class() -> None:
    assert metrics.roc_auc([1, 1, 1], [0.2, 0.5, 0.9]) is None
    assert metrics.average_precision([0, 0], [0.2, 0.5]) is None
    assert metrics.equal_error_rate([0, 0], [0.2, 0.5]) is None


def test_weighted_auc_by_hand_and_against_sklearn() -> None:
    # fakes 0.8 (w 1), 0.4 (w 3); reals 0.4 (w 1), 0.1 (w 1). Pairs: 0.8 beats both (1*1 + 1*1), 0.4 ties
    # 0.4 (3*1*0.5) and beats 0.1 (3*1) -> 6.5 of (1+3)*(1+1) = 8
    assert metrics.roc_auc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1], [1, 3, 1, 1]) == pytest.approx(6.5 / 8)
    # equal weights are the plain statistic; a zero weight drops the item
    assert metrics.roc_auc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1], [2, 2, 2, 2]) == pytest.approx(3.5 / 4)
    assert metrics.roc_auc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1], [1, 0, 1, 1]) == 1.0
    rng = np.random.default_rng(0)
    y, s, w = rng.integers(0, 2, 300), rng.integers(0, 20, 300) / 20, rng.random(300)
    assert metrics.roc_auc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w))
    assert metrics.roc_auc([1, 0], [0.3, 0.2], [0, 1]) is None  # no weight on the fakes
    with pytest.raises(ValueError, match="weights"):
        metrics.roc_auc([1, 0], [0.3, 0.2], [1, -1])


def test_weighted_balanced_accuracy_against_sklearn() -> None:
    rng = np.random.default_rng(1)
    y, s, w = rng.integers(0, 2, 200), rng.random(200), rng.random(200)
    pred = (s >= 0.4).astype(int)
    expected = balanced_accuracy_score(y, pred, sample_weight=w)
    assert metrics.balanced_accuracy(y, s, 0.4, w) == pytest.approx(expected)
    assert metrics.balanced_accuracy(y, s, 0.4) == pytest.approx(balanced_accuracy_score(y, pred))
    assert metrics.balanced_accuracy([1, 0], [0.3, 0.2], 0.25, [0, 1]) is None  # no weight on the fakes
    with pytest.raises(ValueError, match="weights"):
        metrics.balanced_accuracy([1, 0], [0.3, 0.2], 0.25, [1, 2, 3])


def test_roc_curve_area_equals_auc_with_ties() -> None:
    y = [1, 1, 0, 0, 1, 0]
    s = [0.9, 0.5, 0.5, 0.2, 0.2, 0.1]
    fpr, tpr, thr = metrics.roc_curve(y, s)
    # thresholds inf, 0.9, 0.5, 0.2, 0.1 -> (fp, tp): (0,0) (0,1) (1,2) (2,3) (3,3)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1, 1])
    assert thr[0] == math.inf
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(metrics.roc_auc(y, s))
    # Mann-Whitney by hand: fakes 0.9, 0.5, 0.2 vs reals 0.5, 0.2, 0.1 -> 3 + (0.5+1+1) + (0+0.5+1) = 7 of 9
    assert metrics.roc_auc(y, s) == pytest.approx(7 / 9)


def test_average_precision_by_hand() -> None:
    # Ranked: 0.9 fake (P=1, R=1/2), 0.6 real, 0.3 fake (P=2/3, R=1) -> AP = 1/2*1 + 1/2*2/3
    assert metrics.average_precision([1, 0, 1, 0], [0.9, 0.6, 0.3, 0.1]) == pytest.approx(0.5 + 1 / 3)


def test_eer_exact_and_interpolated() -> None:
    # Points (fpr, fnr): (0,1) (0,.5) (.5,.5) ... FPR == FNR exactly at 0.5.
    assert metrics.equal_error_rate([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.5)
    # Separable: EER 0.
    assert metrics.equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.9]) == pytest.approx(0.0)
    # Fakes 0.5, 0.5, 0.5 tie with a real at 0.5; other real 0.1. (fpr, fnr) points: (0, 1) (1/2, 0) (1, 0).
    # FPR - FNR goes -1 -> +1/2, crossing 2/3 of the way: EER = 2/3 * 1/2 = 1/3.
    assert metrics.equal_error_rate([1, 1, 1, 0, 0], [0.5, 0.5, 0.5, 0.5, 0.1]) == pytest.approx(1 / 3)


def test_log_loss_by_hand_and_clipped() -> None:
    assert metrics.log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # A certain mistake costs -log(eps), not infinity.
    assert metrics.log_loss([1], [0.0]) == pytest.approx(-math.log(metrics.LOG_LOSS_EPS))
    assert metrics.log_loss([0], [1.0]) == pytest.approx(-math.log(metrics.LOG_LOSS_EPS), rel=1e-6)
    with pytest.raises(ValueError, match="probabilities"):
        metrics.log_loss([1], [1.5])


def test_accuracy_uses_score_at_or_above_threshold_as_fake() -> None:
    assert metrics.accuracy([1, 0, 1, 0], [0.7, 0.7, 0.69, 0.1], threshold=0.7) == pytest.approx(0.5)


def test_bad_input_is_rejected_clearly() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        metrics.roc_auc([0, 1], [0.1])
    with pytest.raises(ValueError, match="0 \\(real\\) or 1 \\(fake\\)"):
        metrics.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        metrics.roc_auc([0, 1], [0.1, float("nan")])


def test_summary_flags_one_class_groups() -> None:
    s = metrics.summarize([1, 1], [0.9, 0.2], threshold=0.5, inconclusive=[False, True])
    assert s.auc is None and s.note and "only fake" in s.note
    assert s.accuracy == 0.5 and s.n_inconclusive == 1 and s.n_fake == 2 and s.n_real == 0
    assert s.mean_score == pytest.approx(0.55)


# -- `deepfake evaluate` end to end --------------------------------------------------------------------

CROP_COLOURS = {  # RGB fill per crop; the random model's logit is linear in the mean colour
    "real_a.jpg": ("real", (40, 90, 200)),
    "real_b.jpg": ("real", (60, 160, 80)),
    "real_c.jpg": ("real", (200, 200, 200)),
    "fake_a.jpg": ("fake", (220, 60, 40)),
    "fake_b.jpg": ("fake", (120, 120, 30)),
}
HEADER = "path\tlabel\tkind\tsplit\tdataset\tmethod\tgroup\n"


def _write_crops(folder: Path) -> None:
    """Textured 100x100 JPEG 'crops' (not the model's 64 px, so the serving resize really runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (_, colour) in CROP_COLOURS.items():
        img = np.clip(np.array(colour, dtype=np.float32) + rng.normal(0, 20, (100, 100, 3)), 0, 255)
        cv2.imwrite(str(folder / name), cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory, synth_videos, bad_inputs) -> Path:
    """Five crops (two datasets) and three videos: one with a face, one with nobody, one truncated."""
    root = tmp_path_factory.mktemp("evalset")
    _write_crops(root / "crops")
    rows = [
        f"crops/{name}\t{label}\tcrop\tval\t{'A' if name.endswith('a.jpg') else 'B'}\t"
        f"{'original' if label == 'real' else 'swap'}\t{name[:-4]}\n"
        for name, (label, _) in CROP_COLOURS.items()
    ]
    (root / "videos").mkdir()
    for name, source, label in [
        ("face.mp4", synth_videos["pan"].path, "fake"),
        ("nobody.mp4", synth_videos["none"].path, "real"),
        ("broken.mp4", bad_inputs["corrupt_video"], "real"),
    ]:
        shutil.copy(source, root / "videos" / name)
        rows.append(f"videos/{name}\t{label}\tvideo\tdev\tV\ttest\t{name}\n")
    rows.append("crops/real_a.jpg\treal\tcrop\ttrain\tA\toriginal\tx\n")  # filtered out by --split
    manifest = root / "MANIFEST.tsv"
    manifest.write_text(HEADER + "".join(rows), encoding="utf-8")
    return manifest


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "evaluate", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )


def test_evaluate_end_to_end(tiny_manifest, random_model_path, default_detector, tmp_path, capsys) -> None:
    from deepfake.contracts.metadata import CropPolicy
    from preprocessor.aggregate import calibrate
    from preprocessor.cropping import crop_face
    from tests.random_model import reference_logits

    out = tmp_path / "eval"
    model = ["--model", str(random_model_path)]
    run = _evaluate(
        str(tiny_manifest),
        "--json",
        "--out",
        str(out),
        "--model",
        str(random_model_path),
        "--split",
        "val",
        "--split",
        "dev",
        "--frames",
        "8",
        "--inconclusive-score",
        "0.25",
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert "[evaluate]" in run.stderr  # progress goes to stderr, stdout stays one JSON object

    # Every selected row scored once; the train row was filtered out.
    rows = list(csv.DictReader((out / "scores.tsv").open(), delimiter="\t"))
    assert len(rows) == report["n"] == 8 and report["n_real"] == 5 and report["n_fake"] == 3
    by_path = {r["path"]: r for r in rows}

    # Crops: the score is the model's output on the crop resized by serving's crop_face, calibrated.
    root = tiny_manifest.parent
    for name in CROP_COLOURS:
        rgb = cv2.cvtColor(cv2.imread(str(root / "crops" / name)), cv2.COLOR_BGR2RGB)
        crop = crop_face(rgb, np.array([0, 0, 100, 100], np.float32), CropPolicy(scale=1.0, size=64))
        expected = calibrate(reference_logits(crop[None, None])[0], 1.0)[0]
        assert float(by_path[f"crops/{name}"]["score"]) == pytest.approx(expected, abs=2e-6)

    # Videos: a face gives a real score; nobody -> inconclusive; a broken file -> recorded failure.
    assert by_path["videos/face.mp4"]["inconclusive"] == "0"
    assert by_path["videos/nobody.mp4"]["inconclusive"] == "1"
    assert float(by_path["videos/nobody.mp4"]["score"]) == 0.25
    assert float(by_path["videos/broken.mp4"]["score"]) == 0.25
    assert report["n_inconclusive"] == 2
    assert [f["path"] for f in report["failures"]] == ["videos/broken.mp4"]
    assert report["failures"][0]["code"] == "corrupt_video"

    # The report is recomputable from scores.tsv, and agrees with an independent implementation.
    y = np.array([r["label"] == "fake" for r in rows], dtype=int)
    s = np.array([float(r["score"]) for r in rows])
    assert report["auc"] == pytest.approx(roc_auc_score(y, s))
    assert report["log_loss"] == pytest.approx(sk_log_loss(y, s))
    assert report["accuracy"] == pytest.approx(np.mean((s >= report["threshold"]) == y))
    # Per-group breakdown with n; one-class groups say why their AUC is missing.
    assert set(report["by_dataset"]) == {"A", "B", "V"}
    assert report["by_kind"]["crop"]["n"] == 5 and report["by_kind"]["video"]["n"] == 3
    assert report["by_method"]["swap"]["auc"] is None and "only fake" in report["by_method"]["swap"]["note"]
    assert report["by_dataset"]["V"]["n_inconclusive"] == 2
    assert json.loads((out / "report.json").read_text()) == report
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --from-scores recomputes the same figures from scores.tsv alone (filters still apply).
    from cli.main import main

    assert main(["evaluate", str(out / "scores.tsv"), "--from-scores", "--json", "--quiet", *model]) == 0
    again = json.loads(capsys.readouterr().out)
    for key in ("n", "auc", "average_precision", "eer", "accuracy", "log_loss", "n_inconclusive"):
        assert again[key] == pytest.approx(report[key], abs=1e-6), key
    assert again["by_dataset"]["A"]["auc"] == pytest.approx(report["by_dataset"]["A"]["auc"], abs=1e-6)
    assert (
        main(
            [
                "evaluate",
                str(out / "scores.tsv"),
                "--from-scores",
                "--kind",
                "video",
                "--markdown",
                "--threshold",
                "0.2",
                "--quiet",
            ]
        )
        == 0
    )
    markdown = capsys.readouterr().out.splitlines()
    assert markdown[0].startswith("| group | n |") and markdown[2].startswith("| **all** | 3 | 2 | 1 |")
    assert any(line.startswith("| method: test | 3 |") for line in markdown)


def test_evaluate_table_and_crop_filter(tiny_manifest, random_model_path) -> None:
    run = _evaluate(str(tiny_manifest), "--kind", "crop", "--dataset", "A", "--model", str(random_model_path))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split()[:5] == ["group", "n", "real", "fake", "AUC"]
    all_row = next(line for line in lines if line.startswith("ALL"))
    assert all_row.split()[1:4] == ["3", "2", "1"]  # real_a, fake_a (val) and real_a (train)


def test_evaluate_refuses_bad_input_clearly(tiny_manifest, random_model_path, tmp_path, capsys) -> None:
    from cli.main import main

    def refused(*args: str) -> tuple[int, str]:
        status = main(["evaluate", *args])
        return status, capsys.readouterr().err

    model = ("--model", str(random_model_path))
    assert refused(str(tmp_path / "missing.tsv"), *model) == (
        2,
        f"deepfake: error: manifest not found: {tmp_path / 'missing.tsv'}\n",
    )
    bad = tmp_path / "bad.tsv"
    bad.write_text("path\tlabel\tkind\nx.jpg\tmaybe\tcrop\n")
    status, err = refused(str(bad), *model)
    assert status == 2 and "bad.tsv:2: label must be real or fake" in err
    status, err = refused(str(tiny_manifest), "--root", str(tmp_path), *model)
    assert status == 2 and "not found under" in err and "--root" in err
    status, err = refused(str(tiny_manifest), "--dataset", "nope", *model)
    assert status == 2 and "no rows" in err
    status, err = refused(str(tiny_manifest), "--model", str(tmp_path / "none.onnx"))
    assert status == 1 and "model file not found" in err
    status, err = refused(str(tiny_manifest), "--inconclusive-score", "2", *model)
    assert status == 2 and "--inconclusive-score" in err
    broken = tmp_path / "broken"
    (broken / "crops").mkdir(parents=True)
    (broken / "crops" / "x.jpg").write_bytes(b"not a jpeg")
    (broken / "m.tsv").write_text("path\tlabel\tkind\ncrops/x.jpg\tfake\tcrop\n")
    status, err = refused(str(broken / "m.tsv"), "--quiet", *model)
    assert status == 1 and "cannot read image" in err and "x.jpg" in err
