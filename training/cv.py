"""Leave-source-out cross-validation on the dev videos: ``python -m training.cv`` (``make cv``).

The protocol (MODEL_CARD.md "How the recipe is chosen"): the dev videos are cut into ``n_folds`` folds by
source (training/folds.py). For each fold the recipe trains on the DFDC crops plus the videos of the other
folds (``video_fold`` in the config), then scores the held-out videos the way serving does: the main face
track's crops (the serving pipeline's, cached by training/video_crops.py), one clip per sampling window of
``clip_len`` frames padded by repeating the last crop, the video score the mean of the clips' calibrated
probabilities. The out-of-fold scores of all folds together are what every recipe decision looks at, and
what the shipped threshold and temperature are fitted on (``calibration.json``): every source in them was
scored by a model that never saw it, as the sources of users' videos will be.

Each fold is an ordinary resumable run under ``runs/cv/<name>/fold<k>/``; a stopped cross-validation
continues where it stopped. Videos with no usable face are failures: counted and listed, never scored.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.optimize import minimize_scalar

from training.calibrate import best_threshold
from training.config import TrainConfig, get_config
from training.folds import assign_folds, fake_family
from training.metrics import balanced_accuracy, group_balanced_weights, log_loss, roc_auc
from training.soup import write_soup
from training.train import parse_overrides, predict, train
from training.video_crops import _pipeline, video_rows, video_track
from training.weights import load_trained, read_checkpoint


def fold_config(preset: str, overrides: dict, name: str, fold: int, n_folds: int) -> TrainConfig:
    """The recipe with fold ``fold`` held out, in its own run directory."""
    return get_config(
        preset,
        **{**overrides, "video_fold": fold, "n_folds": n_folds, "out_dir": f"runs/cv/{name}/fold{fold}"},
    )


def soup_ingredient(spec: str, fold: int, n_folds: int) -> Path:
    """A soup ingredient of fold ``fold``: the fold model of the cross-validated run ``spec``
    (``runs/cv/<spec>/fold<k>/final.pt``), or a checkpoint file that trained on no dev video (the same
    for every fold, so nothing held out leaks in)."""
    path = Path(spec)
    if path.suffix == ".pt":
        state = read_checkpoint(path)
        if state["config"].get("videos"):
            raise SystemExit(f"{spec} trained on videos ({state['config']['videos']}): use its fold models")
        return path
    run = fold_config("cpu", {}, spec, fold, n_folds).resolved_out_dir() / "final.pt"
    if not run.is_file():
        raise SystemExit(f"soup ingredient {spec}: fold {fold} is not trained ({run})")
    return run


def window_clips(crops: np.ndarray, windows: np.ndarray, clip_len: int, size: int) -> np.ndarray:
    """Serving's clips of one track: per sampling window, runs of ``clip_len`` crops padded with the last
    one (preprocessor.pipeline.make_clips), resized to the model's input side."""
    if crops.shape[1] != size:
        crops = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
    clips = []
    for w in np.unique(windows):
        idx = np.flatnonzero(windows == w)
        for start in range(0, len(idx), clip_len):
            part = list(idx[start : start + clip_len])
            part += [part[-1]] * (clip_len - len(part))
            clips.append(crops[part])
    return np.stack(clips)


def score_videos(checkpoint: Path, rows: list[dict[str, str]], fold: int, frames: int = 0) -> list[dict]:
    """Clip logits of each video's main track under the checkpoint's model (uncalibrated); ``frames`` > 0
    samples that many frames per video instead of the recipe's ``video_frames`` (more windows)."""
    model, cfg = load_trained(checkpoint)
    if frames:
        cfg = dataclasses.replace(cfg, video_frames=frames)
    torch.set_num_threads(cfg.threads)
    bs = max(1, 32 // cfg.clip_len)
    return score_tracks(
        lambda clips: predict(model, clips, bs), cfg, cfg.clip_len, cfg.image_size, rows, fold
    )


def score_tracks(
    logits_of, cfg: TrainConfig, clip_len: int, size: int, rows: list[dict[str, str]], fold: int
):
    """Per video: the main track's cached serving crops (``cfg``'s crop settings) as clips, scored by
    ``logits_of(clips) -> clip logits``, as is and mirrored."""
    pipeline = _pipeline(cfg)
    out = []
    for row in rows:
        got, _ = video_track(cfg, pipeline, Path(row["path"]))
        record = {
            "path": row["path"],
            "dataset": row.get("dataset", ""),
            "label": row["label"],
            "family": fake_family(row["label"], row.get("method", "")),
            "fold": fold,
            "clip_logits": [],
            "warnings": got["warnings"].tolist(),
        }
        if len(got["crops"]):
            clips = window_clips(got["crops"], got["windows"], clip_len, size)
            record["clip_logits"] = np.asarray(logits_of(clips)).round(4).tolist()
            # mirrored crops too: whether averaging over a horizontal flip would pay (report: flip_tta)
            mirrored = np.ascontiguousarray(clips[:, :, :, ::-1])
            record["clip_logits_flip"] = np.asarray(logits_of(mirrored)).round(4).tolist()
        out.append(record)
    return out


def score_onnx(
    model_path: Path, cfg: TrainConfig, rows: list[dict[str, str]], fold_of: dict[str, int]
) -> list[dict]:
    """A model that never trained on the videos (e.g. an earlier shipped ONNX file), scored on every
    fold the same way: the row of the ablation table without video training."""
    from inference.onnx_backend import OnnxBackend

    backend = OnnxBackend(model_path, threads=cfg.threads)
    meta = backend.meta
    cfg = dataclasses.replace(cfg, serve_crop_scale=meta.crop.scale, serve_shift_y=meta.crop.shift_y)

    def logits_of(clips: np.ndarray) -> np.ndarray:
        return np.concatenate([backend.infer(clips[i : i + 4]).clip_logits for i in range(0, len(clips), 4)])

    records = []
    for fold in sorted(set(fold_of.values())):
        held = [r for r in rows if fold_of[r["path"]] == fold]
        records += score_tracks(logits_of, cfg, meta.clip_len, meta.crop.size, held, fold)
    backend.close()
    return records


def video_probs(records: list[dict], temperature: float) -> np.ndarray:
    """Serving's video score: mean over clips of sigmoid(logit / T)."""
    return np.array(
        [float(np.mean(1 / (1 + np.exp(-np.asarray(r["clip_logits"]) / temperature)))) for r in records]
    )


def fit_temperature(records: list[dict]) -> float:
    """The T in [0.05, 20] minimising the log loss of the video scores (serving's rule, not per clip)."""
    labels = np.array([r["label"] == "fake" for r in records], float)
    res = minimize_scalar(
        lambda lt: log_loss(labels, video_probs(records, float(np.exp(lt)))),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(res.x))


def rates(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    auc = roc_auc(labels, probs)
    pred = probs >= threshold
    return {
        "n_real": int((labels == 0).sum()),
        "n_fake": int((labels == 1).sum()),
        "auc": None if auc is None else round(auc, 3),
        "reals_called_fake": round(float(pred[labels == 0].mean()), 3) if (labels == 0).any() else None,
        "fakes_caught": round(float(pred[labels == 1].mean()), 3) if (labels == 1).any() else None,
    }


def cross_fitted_calls(
    probs: np.ndarray, labels: np.ndarray, folds: np.ndarray, weights: np.ndarray | None
) -> np.ndarray:
    """Each fold's fake/real calls at the threshold the other folds choose (same rule, same weights):
    how well a threshold fitted on some sources carries to new ones."""
    calls = np.zeros(len(probs), bool)
    for f in np.unique(folds):
        inside = folds == f
        rest = labels[~inside]
        if len(set(rest.tolist())) == 2:
            w = None if weights is None else weights[~inside]
            thr = best_threshold(probs[~inside], rest, w)
        else:  # one fold alone (a partial run) has no other folds to choose its threshold
            thr = best_threshold(probs, labels, weights)
        calls[inside] = probs[inside] >= thr
    return calls


def sources_over_25pct(calls: np.ndarray, labels: np.ndarray, datasets: list[str]) -> list[str]:
    """The real sources with more than a quarter of their real videos called fake (``calls`` > 0)."""
    real = labels == 0
    names = np.array(datasets)
    return [d for d in sorted(set(names[real].tolist())) if calls[real & (names == d)].mean() > 0.25]


def threshold_rule_figures(
    probs: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    datasets: list[str],
    source_weights: np.ndarray,
    rule_weights: np.ndarray | None,
) -> dict:
    """One threshold rule (balanced accuracy maximised with these weights), judged pooled and cross-fitted,
    with videos alike and with sources alike, and by how many real sources it calls over 25 % fake."""
    threshold = best_threshold(probs, labels, rule_weights)
    cross = cross_fitted_calls(probs, labels, folds, rule_weights).astype(float)
    pooled = (probs >= threshold).astype(float)
    return {
        "threshold": round(threshold, 4),
        "balanced_accuracy": round(balanced_accuracy(labels, pooled, 0.5) or 0.0, 3),
        "balanced_accuracy_sources_alike": round(
            balanced_accuracy(labels, pooled, 0.5, source_weights) or 0.0, 3
        ),
        "cross_fitted_balanced_accuracy": round(balanced_accuracy(labels, cross, 0.5) or 0.0, 3),
        "cross_fitted_balanced_accuracy_sources_alike": round(
            balanced_accuracy(labels, cross, 0.5, source_weights) or 0.0, 3
        ),
        "reals_called_fake": round(float(pooled[labels == 0].mean()), 3),
        "cross_fitted_reals_called_fake": round(float(cross[labels == 0].mean()), 3),
        "sources_over_25pct_reals_fake": len(sources_over_25pct(pooled, labels, datasets)),
        "cross_fitted_sources_over_25pct_reals_fake": len(sources_over_25pct(cross, labels, datasets)),
    }


def report(records: list[dict], dfdc_val: dict[int, float | None]) -> dict:
    """Out-of-fold figures: temperature and threshold fitted on all of them, plus a cross-fitted
    balanced accuracy (each fold judged at the threshold the other folds' scores choose)."""
    scored = [r for r in records if r["clip_logits"]]
    failed = [r for r in records if not r["clip_logits"]]
    temperature = fit_temperature(scored)
    probs = video_probs(scored, temperature)
    labels = np.array([r["label"] == "fake" for r in scored], int)
    threshold = best_threshold(probs, labels)
    folds = np.array([r["fold"] for r in scored])
    datasets = [r["dataset"] for r in scored]
    # Every (source, label) weighs the same: GRID's 41 real sentences count as one source, not 41.
    source_weights = group_balanced_weights([(r["dataset"], r["label"]) for r in scored])
    threshold_rules = {
        rule: threshold_rule_figures(probs, labels, folds, datasets, source_weights, w)
        for rule, w in (("videos alike (shipped)", None), ("sources alike", source_weights))
    }
    fam = np.array([r["family"] for r in scored])
    real = labels == 0

    def versus_reals(mask: np.ndarray) -> float | None:
        sel = real | mask
        auc = roc_auc(labels[sel], probs[sel])
        return None if auc is None else round(auc, 3)

    # Serving's rule against the alternatives, on the same out-of-fold clip logits (ranking only).
    rules = {
        "mean_probability (serving)": probs,
        "mean_logit": np.array([np.mean(r["clip_logits"]) for r in scored]),
        "max_clip": np.array([np.max(r["clip_logits"]) for r in scored]),
        "median_clip": np.array([np.median(r["clip_logits"]) for r in scored]),
    }
    if all("clip_logits_flip" in r for r in scored):
        flip = [
            {**r, "clip_logits": (np.add(r["clip_logits"], r["clip_logits_flip"]) / 2).tolist()}
            for r in scored
        ]
        rules["mean_probability, flip-averaged logits"] = video_probs(flip, temperature)
    aggregation_auc = {k: round(roc_auc(labels, v) or 0.0, 3) for k, v in rules.items()}
    dfl = np.array([r["dataset"] == "DeepFaceLive" for r in scored])
    dfl_auc = roc_auc(labels[dfl], probs[dfl])
    per_source = {}
    for ds in sorted({r["dataset"] for r in scored}):
        sel = np.array([r["dataset"] == ds for r in scored])
        per_source[ds] = rates(probs[sel], labels[sel], threshold)
    return {
        "temperature": round(temperature, 4),
        "threshold": round(threshold, 4),
        "fitted_on": f"out-of-fold video scores of {len(scored)} dev videos, {len(set(folds.tolist()))} "
        "leave-source-out folds (training/cv.py)",
        "n_videos": len(records),
        "failures": len(failed),
        "failed": [{"path": r["path"], "why": "; ".join(r["warnings"])} for r in failed],
        "all": {
            **rates(probs, labels, threshold),
            "auc_by_source": round(roc_auc(labels, probs, source_weights) or 0.0, 3),
            "log_loss": round(log_loss(labels, probs), 3),
            "balanced_accuracy": round(balanced_accuracy(labels, probs, threshold) or 0.0, 3),
            "balanced_accuracy_cross_fitted": threshold_rules["videos alike (shipped)"][
                "cross_fitted_balanced_accuracy"
            ],
        },
        "swap_vs_reals_auc": versus_reals(fam == "swap"),
        "synthesis_vs_reals_auc": versus_reals(fam == "synthesis"),
        "deepfacelive_halves_auc": None if dfl_auc is None else round(dfl_auc, 3),
        "sources_over_25pct_reals_fake": sources_over_25pct(
            (probs >= threshold).astype(float), labels, datasets
        ),
        "threshold_rules": threshold_rules,
        "dfdc_val_auc_per_fold": dfdc_val,
        "aggregation_auc": aggregation_auc,
        "per_source": per_source,
    }


def last_val_auc(run_dir: Path) -> float | None:
    """The last DFDC val AUC a run logged (its in-distribution check)."""
    path = run_dir / "log.csv"
    if not path.is_file():
        return None
    with path.open() as fh:
        values = [r["val_auc"] for r in csv.DictReader(fh) if r.get("val_auc")]
    return float(values[-1]) if values else None


def print_report(rep: dict) -> None:
    a = rep["all"]
    print(
        f"\nout of fold: {rep['n_videos']} videos, {rep['failures']} failed; AUC {a['auc']} (sources "
        f"weighted alike {a['auc_by_source']}), log loss "
        f"{a['log_loss']}, balanced accuracy {a['balanced_accuracy']} (cross-fitted "
        f"{a['balanced_accuracy_cross_fitted']}) at threshold {rep['threshold']} (T {rep['temperature']}); "
        f"reals called fake {a['reals_called_fake']}, fakes caught {a['fakes_caught']}"
    )
    print(
        f"face swaps vs reals AUC {rep['swap_vs_reals_auc']}; synthesis vs reals AUC "
        f"{rep['synthesis_vs_reals_auc']}; DeepFaceLive halves AUC {rep['deepfacelive_halves_auc']}; "
        f"DFDC val AUC per fold {rep['dfdc_val_auc_per_fold']}"
    )
    print(f"video score rule, AUC: {rep['aggregation_auc']}")
    for rule, v in rep["threshold_rules"].items():
        print(f"threshold chosen with {rule}: {v}")
    print("\n| source | reals | fakes | AUC | reals called fake | fakes caught |\n|---|---|---|---|---|---|")
    for ds, v in rep["per_source"].items():
        print(
            f"| {ds} | {v['n_real']} | {v['n_fake']} | {v['auc'] if v['auc'] is not None else '-'} | "
            f"{v['reals_called_fake'] if v['reals_called_fake'] is not None else '-'} | "
            f"{v['fakes_caught'] if v['fakes_caught'] is not None else '-'} |"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="cpu", help="the recipe's preset (see training/config.py)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides, as train")
    ap.add_argument("--name", default="", help="run name under runs/cv/ (default: the preset)")
    ap.add_argument("--folds", type=int, default=0, help="number of folds (default: the config's n_folds)")
    ap.add_argument("--fold", type=int, action="append", help="run only these folds (repeatable)")
    ap.add_argument("--rescore", action="store_true", help="score the held-out videos again (trained folds)")
    ap.add_argument(
        "--frames",
        type=int,
        default=0,
        help="score the trained folds' held-out videos with this many sampled frames per video (more "
        "windows than the recipe's video_frames) and print that table (writes runs/cv/<name>/frames<N>.json)",
    )
    ap.add_argument(
        "--baseline-onnx",
        type=Path,
        help="instead of training: score this ONNX model (trained without the videos) on every fold the same "
        "way and print its table (writes runs/cv/<name>/baseline.json, and its per-video scores as the run "
        "<name>/baseline for training.cv_compare)",
    )
    ap.add_argument(
        "--soup",
        nargs="+",
        metavar="RUN",
        help="instead of training: each fold's model is the weight soup (training/soup.py) of these "
        "cross-validated runs' fold models (names under runs/cv/), or of a .pt file that trained on no "
        "video; scored with the first one's recipe (its video_frames and crops)",
    )
    args = ap.parse_args(argv)
    overrides = parse_overrides(args.set)
    base = get_config(args.config, **overrides)
    if not base.videos:
        raise SystemExit("cross-validation needs videos: --set videos=manifest:/path/MANIFEST.tsv:dev")
    n_folds = args.folds or base.n_folds
    name = args.name or args.config
    root = fold_config(args.config, overrides, name, 0, n_folds).resolved_out_dir().parent
    rows = video_rows(dataclasses.replace(base, video_fold=-1))  # every video; the folds split them below
    fold_of = assign_folds(rows, n_folds)
    if args.baseline_onnx:
        records = score_onnx(args.baseline_onnx, base, rows, fold_of)
        rep = report(records, {})
        rep["model"] = str(args.baseline_onnx)
        for fold in range(n_folds):  # per video too: the run <name>/baseline for training.cv_compare
            fold_dir = root / "baseline" / f"fold{fold}"
            fold_dir.mkdir(parents=True, exist_ok=True)
            (fold_dir / "oof.json").write_text(json.dumps([r for r in records if r["fold"] == fold]))
        (root / "baseline.json").write_text(json.dumps(rep, indent=2))
        print_report(rep)
        return
    if args.frames:
        records = []
        for fold in range(n_folds):
            final = fold_config(args.config, overrides, name, fold, n_folds).resolved_out_dir() / "final.pt"
            if not final.is_file():
                raise SystemExit(f"fold {fold} is not trained yet ({final}): run the folds first")
            held = [r for r in rows if fold_of[r["path"]] == fold]
            records += score_videos(final, held, fold, frames=args.frames)
        rep = report(records, {})
        rep["frames_per_video"] = args.frames
        (root / f"frames{args.frames}.json").write_text(json.dumps(rep, indent=2))
        print_report(rep)
        return
    for fold in args.fold or range(n_folds):
        cfg = fold_config(args.config, overrides, name, fold, n_folds)
        run_dir = cfg.resolved_out_dir()
        oof = run_dir / "oof.json"
        if args.rescore:
            oof.unlink(missing_ok=True)
        if oof.is_file():
            continue
        final = run_dir / "final.pt"
        if not final.is_file() and args.soup:
            write_soup([soup_ingredient(spec, fold, n_folds) for spec in args.soup], final)
            print(f"== fold {fold}/{n_folds}: the soup of {', '.join(args.soup)} in {run_dir}", flush=True)
        elif not final.is_file():
            print(f"== fold {fold}/{n_folds}: training in {run_dir}", flush=True)
            train(cfg)
        t0 = time.time()
        held = [r for r in rows if fold_of[r["path"]] == fold]
        oof.write_text(json.dumps(score_videos(final, held, fold)))
        print(f"== fold {fold}: scored {len(held)} held-out videos in {time.time() - t0:.0f}s", flush=True)
    records, dfdc_val = [], {}
    for fold in range(n_folds):
        run_dir = fold_config(args.config, overrides, name, fold, n_folds).resolved_out_dir()
        if not (run_dir / "oof.json").is_file():
            print(f"fold {fold} not done yet: rerun to continue", flush=True)
            return
        records += json.loads((run_dir / "oof.json").read_text())
        dfdc_val[fold] = last_val_auc(run_dir)
    rep = report(records, dfdc_val)
    rep["recipe"] = {
        "config": args.config,
        "overrides": overrides,
        "n_folds": n_folds,
        "soup": args.soup or [],
    }
    rep["recipe_config"] = dataclasses.asdict(base)
    (root / "calibration.json").write_text(json.dumps(rep, indent=2))
    print_report(rep)
    print(f"\nwrote {root / 'calibration.json'}")


if __name__ == "__main__":
    main()
