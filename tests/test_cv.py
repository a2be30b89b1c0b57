"""Leave-source-out folds, video draws in the batch mix, out-of-fold scoring and honest failure counts."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from tests.test_model import synthetic_cropset
from training.cv import report, video_probs, window_clips
from training.data import CropSet, concat_crops
from training.evaluate import Item, Scored, build_report
from training.folds import assign_folds, fake_family, fold_unit
from training.samples import KIND_SBI, KIND_VIDEO_FAKE, KIND_VIDEO_REAL, BatchMix, SampleSpec, make_batch
from training.video_crops import sampling_weights


def dev_rows() -> list[dict[str, str]]:
    """A manifest shaped like the dev videos: two-class sources, one-class sources, paired halves."""
    rows = []
    for ds, n_real, n_fake in [
        ("FF", 3, 4),
        ("GRID", 9, 0),
        ("MEAD", 6, 0),
        ("EDTalk", 0, 5),
        ("AniTalker", 0, 4),
        ("LivePortrait", 4, 0),
        ("Loopy", 0, 3),
        ("mix", 2, 2),
    ]:
        rows += [{"path": f"{ds}/r{i}.mp4", "label": "real", "dataset": ds} for i in range(n_real)]
        rows += [{"path": f"{ds}/f{i}.mp4", "label": "fake", "dataset": ds} for i in range(n_fake)]
    for clip in ("A_0", "A_1", "B_0", "C_0"):
        rows.append(
            {"path": f"DeepFaceLive/real/{clip}_left.mp4", "label": "real", "dataset": "DeepFaceLive"}
        )
        rows.append(
            {"path": f"DeepFaceLive/fake/{clip}_right.mp4", "label": "fake", "dataset": "DeepFaceLive"}
        )
    return rows


@pytest.mark.parametrize("k", [2, 3, 4])
def test_folds_never_share_a_source_and_keep_both_classes(k: int) -> None:
    rows = dev_rows()
    fold = assign_folds(rows, k)
    assert fold == assign_folds(list(reversed(rows)), k)  # depends on the rows, not their order
    for ds in {r["dataset"] for r in rows} - {"DeepFaceLive"}:
        assert len({fold[r["path"]] for r in rows if r["dataset"] == ds}) == 1, ds
    for clip in ("A_0", "A_1", "B_0", "C_0"):  # matched halves stay together, clips may spread
        assert fold[f"DeepFaceLive/real/{clip}_left.mp4"] == fold[f"DeepFaceLive/fake/{clip}_right.mp4"]
    for f in range(k):
        labels = {r["label"] for r in rows if fold[r["path"]] == f}
        assert labels == {"real", "fake"}, (f, labels)
    assert fold_unit(rows[0]) == "FF"
    with pytest.raises(ValueError):
        assign_folds(rows, 1)


def test_fake_family() -> None:
    assert fake_family("real", "original (MEAD)") == "real"
    assert fake_family("fake", "faceswap-DeepFaceLive (right half)") == "swap"
    assert fake_family("fake", "Deepfakes") == "swap"
    assert fake_family("fake", "talking-head-EDTalk (audio/video-driven)") == "synthesis"
    assert fake_family("fake", "NeuralTextures") == "synthesis"


def test_sampling_weights_balance_videos_and_damp_large_sources() -> None:
    rows = [{"dataset": "big", "label": "real"}] * 4 + [{"dataset": "small", "label": "real"}]
    frames = [10, 20, 0, 5, 8]  # the third video gave no face
    w = sampling_weights(rows, frames, source_power=0.5)
    assert len(w) == 43
    per_video = [w[0:10].sum(), w[10:30].sum(), w[30:35].sum(), w[35:43].sum()]
    assert per_video[:3] == pytest.approx([1 / np.sqrt(3)] * 3)  # three big-source videos with faces
    assert per_video[3] == pytest.approx(1.0)
    w = sampling_weights(rows, frames, source_power=1.0)  # every source alike: big's three share one
    assert [w[0:35].sum(), w[35:43].sum()] == pytest.approx([1.0, 1.0])
    w = sampling_weights(rows, frames, source_power=0.0)  # every video alike
    assert [w[0:10].sum(), w[10:30].sum(), w[35:43].sum()] == pytest.approx([1.0, 1.0, 1.0])


def video_cropset(n_videos: int = 4, frames: int = 3, size: int = 96) -> CropSet:
    base = synthetic_cropset(n_videos * frames, size)
    labels = np.repeat(np.arange(n_videos) % 2, frames)
    track = np.repeat(np.arange(n_videos), frames)
    weight = np.full(len(labels), 1.0 / frames)
    return CropSet(
        base.images,
        labels,
        base.crop_px,
        [f"v{i // frames}.mp4#{i}" for i in range(len(labels))],
        track,
        weight,
    )


def test_batches_draw_video_items_by_weight() -> None:
    crops = concat_crops(synthetic_cropset(8), video_cropset())
    kw = dict(
        n=16,
        t=1,
        spec=SampleSpec(out=64, mask_out=8, scale_range=(0.8, 1.0), shift=0.05, aug_policy="v1"),
        mix=BatchMix(frac_real=0.25, frac_fake=0.125, frac_video_real=0.25, frac_video_fake=0.25),
    )
    b = make_batch(crops, 3, 1, 0, **kw)
    kinds = b["kind"].numpy()
    assert (kinds == KIND_VIDEO_REAL).sum() == 4 and (kinds == KIND_VIDEO_FAKE).sum() == 4
    assert (kinds == KIND_SBI).sum() == 2
    assert (
        b["label"][kinds == KIND_VIDEO_REAL].eq(0).all() and b["label"][kinds == KIND_VIDEO_FAKE].eq(1).all()
    )
    assert not b["has_mask"][kinds == KIND_VIDEO_FAKE].any() and b["has_mask"][kinds == KIND_VIDEO_REAL].all()
    assert torch.equal(b["clips"], make_batch(crops, 3, 1, 0, **kw)["clips"])
    # video shares without video items fail loudly instead of silently drawing stills
    with pytest.raises(ValueError, match="video"):
        make_batch(synthetic_cropset(8), 3, 1, 0, **kw)


def test_window_clips_follow_serving() -> None:
    crops = np.arange(5 * 8 * 8 * 3, dtype=np.uint8).reshape(5, 8, 8, 3)
    clips = window_clips(crops, np.array([0, 0, 0, 1, 1]), clip_len=2, size=8)
    assert clips.shape == (3, 2, 8, 8, 3)  # window 0: [0,1], [2,2 (padded)]; window 1: [3,4]
    assert np.array_equal(clips[1, 1], crops[2]) and np.array_equal(clips[2, 0], crops[3])
    assert window_clips(crops, np.zeros(5, int), 8, 4).shape == (1, 8, 4, 4, 3)


def record(label: str, logits: list[float], ds: str, fold: int, family: str = "") -> dict:
    return {
        "path": f"{ds}/{label}{logits}",
        "dataset": ds,
        "label": label,
        "fold": fold,
        "family": family or ("real" if label == "real" else "swap"),
        "clip_logits": logits,
        "warnings": [],
    }


def test_out_of_fold_report_counts_failures_and_calibrates() -> None:
    rng = np.random.default_rng(0)
    recs = [record("real", list(rng.normal(-1, 1, 3)), f"s{i % 3}", i % 3) for i in range(30)]
    recs += [record("fake", list(rng.normal(1.5, 1, 3)), f"s{i % 3}", i % 3, "synthesis") for i in range(30)]
    recs.append({**record("fake", [], "s0", 0), "warnings": ["no face found"]})
    rep = report(recs, {0: 0.9, 1: 0.8, 2: 0.85})
    assert rep["failures"] == 1 and rep["failed"][0]["why"] == "no face found"
    assert rep["all"]["n_real"] == 30 and rep["all"]["n_fake"] == 30
    assert rep["all"]["auc"] > 0.8 and rep["synthesis_vs_reals_auc"] == rep["all"]["auc"]
    assert rep["swap_vs_reals_auc"] is None  # no swaps among the fakes
    assert rep["all"]["auc_by_source"] == rep["all"]["auc"]  # 10 per source and label: equal weights
    assert 0.05 <= rep["temperature"] <= 20 and 0 < rep["threshold"] < 1
    assert set(rep["per_source"]) == {"s0", "s1", "s2"}
    # the fitted temperature makes the video scores no worse calibrated than T = 1
    scored = [r for r in recs if r["clip_logits"]]
    y = np.array([r["label"] == "fake" for r in scored])

    def nll(t: float) -> float:
        p = np.clip(video_probs(scored, t), 1e-6, 1 - 1e-6)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    assert nll(rep["temperature"]) <= nll(1.0) + 1e-9
    assert rep["aggregation_auc"]["mean_probability (serving)"] == rep["all"]["auc"]
    flipped = [{**r, "clip_logits_flip": r["clip_logits"]} for r in recs]  # a flip that changes nothing
    agg = report(flipped, {})["aggregation_auc"]
    assert agg["mean_probability, flip-averaged logits"] == agg["mean_probability (serving)"]
    rules = rep["threshold_rules"]
    assert set(rules) == {"videos alike (shipped)", "sources alike"}
    assert rules["videos alike (shipped)"]["threshold"] == rep["threshold"]
    assert (
        rules["videos alike (shipped)"]["cross_fitted_balanced_accuracy"]
        == (rep["all"]["balanced_accuracy_cross_fitted"])
    )


def test_cross_fitted_threshold_rule_counts_sources_called_fake() -> None:
    # fold 0's reals sit where folds 1-2 put their fakes: the threshold those folds choose calls them all fake
    recs = []
    for ds, fold, real_logit, fake_logit in (("a", 1, -3.0, 3.0), ("b", 2, -3.0, 3.0), ("c", 0, 3.0, 6.0)):
        recs += [record("real", [real_logit], ds, fold) for _ in range(5)]
        recs += [record("fake", [fake_logit], ds, fold) for _ in range(5)]
    rule = report(recs, {})["threshold_rules"]["videos alike (shipped)"]
    assert rule["cross_fitted_reals_called_fake"] == pytest.approx(5 / 15, abs=1e-3)
    assert rule["cross_fitted_sources_over_25pct_reals_fake"] == 1  # source c
    assert rule["cross_fitted_balanced_accuracy"] < rule["balanced_accuracy"]


def test_evaluate_reports_figures_without_failures() -> None:
    # one real scored low, two fakes that failed to analyse (scored 0.5): AUC 1.000 only with the failures
    items = [Item("r.mp4", 0, "video"), Item("f1.mp4", 1, "video"), Item("f2.mp4", 1, "video")]
    scored = Scored(
        np.array([0.2, 0.5, 0.5]),
        np.array([False, True, True]),
        [
            {"path": "f1.mp4", "code": "corrupt_video", "error": "x"},
            {"path": "f2.mp4", "code": "corrupt_video", "error": "x"},
        ],
    )
    rep = build_report(items, scored, 0.4, {})
    assert rep["auc"] == 1.0 and rep["n_failed"] == 2 and rep["n_inconclusive"] == 2
    assert rep["analysed_only"]["n"] == 1 and rep["analysed_only"]["auc"] is None


def test_robustness_variants_encode_and_decode(tmp_path) -> None:
    from training.robustness import VARIANTS, read_frames, write_variant

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(6)]
    names = set()
    for i, variant in enumerate(VARIANTS):
        rate = Fraction(15) if i % 2 else Fraction(25)  # an odd rate too: MPEG-2 takes only broadcast ones
        path = write_variant(frames, rate, variant, tmp_path / f"v{i}{variant.suffix}")
        back, rate = read_frames(path, 10.0)
        assert len(back) == 6, variant.name
        h, w = back[0].shape[:2]
        assert (w, h) == (
            max(2, round(64 * variant.scale / 2) * 2),
            max(2, round(48 * variant.scale / 2) * 2),
        )
        if variant.brightness != 1.0:  # brightness moves the mean the way it says
            assert (back[0].mean() > frames[0].mean()) == (variant.brightness > 1.0), variant.name
        names.add(variant.name)
    assert len(VARIANTS) == len(names) == 20
