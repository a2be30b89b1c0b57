"""training/cv_compare.py on out-of-fold files the test writes: only folds every run scored, only videos
every run scored, AUC per fold and per fake family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cv_compare import compare, main


def write_fold(root: Path, run: str, fold: int, records: list[dict]) -> None:
    (root / run / f"fold{fold}").mkdir(parents=True, exist_ok=True)
    (root / run / f"fold{fold}" / "oof.json").write_text(json.dumps(records))


def rec(path: str, label: str, family: str, fold: int, logit: float | None, dataset: str = "") -> dict:
    return {"path": path, "dataset": dataset or path, "label": label, "family": family, "fold": fold,
            "clip_logits": [] if logit is None else [logit, logit]}  # fmt: skip


def test_compare_uses_the_common_folds_and_videos(tmp_path: Path, capsys) -> None:
    fold0 = [
        rec("r0", "real", "real", 0, 0.0),
        rec("s0", "fake", "swap", 0, 1.0),
        rec("t0", "fake", "synthesis", 0, -1.0),
    ]
    write_fold(tmp_path, "good", 0, fold0)
    write_fold(tmp_path, "bad", 0, [{**r, "clip_logits": [-x for x in r["clip_logits"]]} for r in fold0])
    fold1 = [
        rec("r1", "real", "real", 1, 0.0),
        rec("s1", "fake", "swap", 1, 2.0),
        rec("x1", "fake", "swap", 1, None),
    ]
    write_fold(tmp_path, "good", 1, fold1)  # "bad" has no fold 1: it is left out of the comparison
    table = compare(["good", "bad"], tmp_path)
    assert table["folds"] == [0] and table["videos"] == 3
    assert table["runs"]["good"]["all"] == 0.5 and table["runs"]["good"]["swap_vs_reals"] == 1.0
    assert table["runs"]["bad"]["swap_vs_reals"] == 0.0 and table["runs"]["bad"]["synthesis_vs_reals"] == 1.0
    # alone, "good" is compared on both folds; the video its run failed (no clip logits) is not counted
    alone = compare(["good"], tmp_path)
    assert alone["folds"] == [0, 1] and alone["videos"] == 5 and alone["runs"]["good"]["fold1"] == 1.0
    main(["good", "bad", "--root", str(tmp_path)])
    assert "folds [0], 3 videos" in capsys.readouterr().out


def test_by_source_gives_every_source_the_same_say(tmp_path: Path) -> None:
    """Three reals of one big source all below the fake, one real of a small source above it: plain AUC
    3/4, with sources weighted alike 1/2 (the big source's three reals count as one)."""
    records = [rec(f"g{i}", "real", "real", 0, -1.0, "grid") for i in range(3)]
    records += [rec("m0", "real", "real", 0, 2.0, "mead"), rec("f0", "fake", "swap", 0, 1.0, "dfl")]
    write_fold(tmp_path, "r", 0, records)
    row = compare(["r"], tmp_path)["runs"]["r"]
    assert row["all"] == 0.75 and row["by_source"] == 0.5


def test_no_common_fold_is_a_clear_error(tmp_path: Path) -> None:
    write_fold(tmp_path, "a", 0, [rec("r", "real", "real", 0, 0.0)])
    with pytest.raises(SystemExit, match="no fold has out-of-fold scores"):
        compare(["a", "missing"], tmp_path)


def test_flip_and_ensemble_rows(tmp_path: Path) -> None:
    """--flip averages each video's clips with their mirror images; --ensemble sums the runs' standardised
    scores, so two runs that each get one pair wrong, on different videos and with very different logit
    scales, are right together."""

    def two(path: str, label: str, a: float, b: float) -> dict:
        return {**rec(path, label, "swap" if label == "fake" else "real", 0, a), "clip_logits_flip": [b]}

    a = [two("r0", "real", 0, 0), two("r1", "real", 2, -2), two("f0", "fake", 1, 1), two("f1", "fake", 3, 3)]
    b = [two("r0", "real", 0, 0), two("r1", "real", -90, -90), two("f0", "fake", -10, -10)]
    write_fold(tmp_path, "a", 0, a)
    write_fold(tmp_path, "b", 0, [*b, two("f1", "fake", 100, 100)])
    plain = compare(["a", "b"], tmp_path, ensemble=True)["runs"]
    assert plain["a"]["all"] == 0.75 and plain["b"]["all"] == 0.75 and plain["ensemble"]["all"] == 1.0
    flipped = compare(["a"], tmp_path, flip=True)["runs"]["a"]
    assert flipped["all"] == 1.0  # r1's mirror image (-2) pulls it below both fakes
    write_fold(tmp_path, "c", 0, [rec("r0", "real", "real", 0, 0.0)])  # records without mirror images
    with pytest.raises(SystemExit, match="no mirrored clip logits"):
        compare(["c"], tmp_path, flip=True)
