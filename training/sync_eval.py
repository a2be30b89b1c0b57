"""Measure the audio-visual sync model out of fold and fit its decision rule and combiner:
``python -m training.sync_eval`` prints the tables and writes runs/sync/eval.json (what
training/export_sync.py stores in the model's metadata).

Protocol (model_repository/av_sync/MODEL_CARD.md): fold K's sync model (runs/sync/fold<K>, trained on
the other folds' reals) scores fold K's dev videos that carry an audio stream, through
preprocessor/audio_visual.py's rule, on the windows serving samples (``--frames`` 32 by default: 4
windows of 8 frames every 2nd frame), each real one three times: as it is, with its audio 0.5 s late and
0.5 s early. Then:

(a) shift table: P(out of sync) = sigmoid(coef . features), its coefficients fitted on the other folds'
    reals (as is: in sync; shifted: out of sync), so every figure is out of fold; share of shifted reals
    flagged (P >= 0.5) and of unshifted ones kept in sync;
(b) lip-sync and talking-head fakes with audio vs reals with audio: ROC AUC of P(out of sync) alone;
(c) fusion: logistic regression on [logit(visual p), logit(P(out of sync))] over the videos with an
    audio-visual score, fitted leave-one-fold-out; visual-only vs fused AUC on every video with audio
    (fused = visual where no audio-visual score exists). The visual model's out-of-fold scores and
    their calibration are those of its cv run (``--visual-oof``, runs/cv/<recipe>/).
The coefficients written for the shipped model (score_coef, combiner) are fitted on all folds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from deepfake.contracts.metadata import SyncMeta
from preprocessor.audio import AudioTrack, decode_audio, log_mel
from preprocessor.audio_visual import FEATURES, OFFSETS_S, score_mouths
from preprocessor.errors import AudioError
from preprocessor.sampling import plan_windows
from training.config import REPO_ROOT, default_data_dir
from training.folds import assign_folds, fake_family
from training.metrics import roc_auc
from training.sync_data import dev_video_rows, frame_count, has_audio, load_track, visual_meta
from training.sync_model import TorchSyncModel
from training.train_sync import RUNS, STRIDE, load_sync, run_dir

SHIFTS_S = (0.5, -0.5)
# The shipped visual model's cross-validated recipe (training/cv.py): its fold*/oof.json scores and the
# temperature and threshold of its calibration.json, which the shipped model carries too.
DEFAULT_OOF = REPO_ROOT / "runs" / "cv" / "cpu-res"


def is_av_fake(row: dict[str, str]) -> bool:
    """A fake whose face is driven by (or re-rendered to) the audio: lip-sync and talking heads."""
    m = row.get("method", "").lower()
    return row["label"] == "fake" and ("lip" in m or "talking-head" in m)


def serving_windows(track: dict[str, np.ndarray], duration: float, fps: float, frames: int, clip_len: int):
    """The mouth windows serving would score: plan_windows' starts, clip_len frames every STRIDE-th frame
    from the dense track's first frame at or after each start (skipped where the track is absent)."""
    plan = plan_windows(duration, fps, frames, clip_len, STRIDE)
    t, mouth = track["t"], track["mouth"]
    step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0 / max(fps, 1.0)
    out = []
    for start in plan.starts:
        i = int(np.searchsorted(t, start - step / 2))
        idx = np.arange(i, i + plan.stride * clip_len, plan.stride)
        if idx[-1] >= len(t) or t[idx[-1]] - t[idx[0]] > (idx[-1] - idx[0]) * step * 1.5:
            continue
        out.append((mouth[idx], t[idx]))
    return out


def shifted(audio: AudioTrack, by_s: float) -> AudioTrack:
    """The same audio ``by_s`` seconds late (early when negative) against the video."""
    return AudioTrack(audio.samples, audio.start_s + by_s)


def score_fold(fold: int, rows: list[dict[str, str]], frames: int, root: Path) -> list[dict]:
    """Per held-out video and audio condition: reason, windows, features, best offset."""
    torch.set_num_threads(1)
    model = load_sync(run_dir(fold, root) / "checkpoint.pt")
    sync = TorchSyncModel(model, SyncMeta(clip_len=model.cfg.clip_len, offsets_s=list(OFFSETS_S)))
    meta = visual_meta()
    cache_dir = REPO_ROOT / "cache"
    records = []
    for row in rows:
        path = Path(row["path"])
        base: dict = {k: row.get(k, "") for k in ("path", "label", "dataset", "method")}
        base |= {"fold": fold, "family": fake_family(row["label"], row.get("method", ""))}
        try:
            audio = decode_audio(path)
        except AudioError as exc:
            records.append({**base, "condition": "as_is", "reason": "audio_error", "error": str(exc)})
            continue
        track = load_track(cache_dir, path, meta)
        duration, fps = frame_count(path)
        windows = serving_windows(track, duration, fps, frames, model.cfg.clip_len)
        conditions = [("as_is", 0.0)] + (
            [(f"{s:+.1f}", s) for s in SHIFTS_S] if row["label"] == "real" else []
        )
        for name, by in conditions:
            a = shifted(audio, by) if audio is not None and by else audio
            res = score_mouths(a, log_mel(a) if a is not None else None, windows, sync)
            records.append(
                {
                    **base,
                    "condition": name,
                    "reason": res.reason,
                    "windows": len(windows),
                    "windows_scored": res.windows_scored,
                    "features": res.features,
                    "offset_s": res.offset_s,
                }
            )
    return records


def score_all(frames: int, root: Path) -> list[dict]:
    """:func:`score_fold` for every fold's held-out videos with an audio stream."""
    rows = dev_video_rows(default_data_dir())
    fold_of = assign_folds(rows, 3)
    with_audio = [r for r in rows if has_audio(Path(r["path"]))]
    records: list[dict] = []
    for k in range(3):
        if not (run_dir(k, root) / "checkpoint.pt").is_file():
            sys.exit(f"fold {k} not trained: python -m training.train_sync --fold {k}")
        held = [r for r in with_audio if fold_of[r["path"]] == k]
        records += score_fold(k, held, frames, root)
        print(f"fold {k}: {len(held)} videos with audio scored", flush=True)
    return records


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float = 1.0) -> tuple[float, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=c, max_iter=1000, class_weight="balanced").fit(x, y)
    return float(lr.intercept_[0]), lr.coef_[0].astype(float)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def feature_matrix(recs: list[dict]) -> np.ndarray:
    return np.array([[r["features"][f] for f in FEATURES] for r in recs], np.float64)


def shift_table(records: list[dict]) -> tuple[dict, dict]:
    """(a): out-of-fold P(out of sync) for every scored record (in place, ``p_oos``), the table, and the
    coefficients fitted on every fold (the shipped rule)."""
    reals = [r for r in records if r["label"] == "real" and r.get("features")]

    def fit(recs: list[dict]) -> dict[str, float]:
        y = np.array([r["condition"] != "as_is" for r in recs], int)
        b, w = fit_logistic(feature_matrix(recs), y)
        return {"intercept": b, **{f: float(v) for f, v in zip(FEATURES, w, strict=True)}}

    def apply(coef: dict[str, float], recs: list[dict]) -> np.ndarray:
        x = feature_matrix(recs)
        return sigmoid(coef["intercept"] + x @ np.array([coef[f] for f in FEATURES]))

    folds = sorted({r["fold"] for r in records})
    for k in folds:
        train = [r for r in reals if r["fold"] != k]
        coef = fit(train)
        held = [r for r in records if r["fold"] == k and r.get("features")]
        for r, p in zip(held, apply(coef, held), strict=True):
            r["p_oos"] = float(p)
    real_as_is = [r for r in records if r["label"] == "real" and r["condition"] == "as_is"]
    table: dict = {"real_videos_with_audio": len(real_as_is)}
    for cond in ("as_is", *(f"{s:+.1f}" for s in SHIFTS_S)):
        recs = [r for r in records if r["label"] == "real" and r["condition"] == cond]
        scored = [r for r in recs if "p_oos" in r]
        flagged = sum(r["p_oos"] >= 0.5 for r in scored)
        reasons: dict[str, int] = {}
        for r in recs:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        table[cond] = {
            "scored": len(scored),
            "flagged_out_of_sync": flagged,
            "share_flagged": round(flagged / len(scored), 3) if scored else None,
            "reasons": reasons,
            "offset_within_0.2s": sum(abs(r["offset_s"]) <= 0.2 for r in scored),
            "offset_within_0.1s_of_true": sum(
                abs(r["offset_s"] - (0.0 if cond == "as_is" else float(cond))) <= 0.1 for r in scored
            ),
        }
    shipped = fit(reals) if reals else {}
    return table, shipped


def visual_calibration(oof_dir: Path) -> tuple[float, float]:
    """The visual recipe's (temperature, threshold), fitted on its out-of-fold scores by training/cv.py."""
    path = oof_dir / "calibration.json"
    if not path.is_file():
        raise SystemExit(f"{path} missing: run python -m training.cv for that recipe first")
    cal = json.loads(path.read_text())
    return float(cal["temperature"]), float(cal["threshold"])


def visual_probs(oof_dir: Path, temperature: float) -> dict[str, dict]:
    """path -> {p, fold} of the visual model's out-of-fold video scores, calibrated as serving does."""
    out = {}
    for f in sorted(oof_dir.glob("fold*/oof.json")):
        for rec in json.loads(f.read_text()):
            logits = np.array(rec.get("clip_logits") or [], np.float64)
            if len(logits):
                out[rec["path"]] = {
                    "p": float(sigmoid(logits / temperature).mean()),
                    "fold": rec["fold"],
                }
    return out


def auc(y: np.ndarray, s: np.ndarray) -> float | None:
    value = roc_auc(y, s) if len(set(y.tolist())) == 2 else None
    return None if value is None else round(float(value), 3)


def same_false_alarms(recs: list[dict], threshold: float) -> float:
    """The fused threshold that calls no more of these reals (those with an audio-visual score) fake than
    the visual model does at its own threshold: the lowest such, so as many fakes as possible are caught
    at that rate."""
    reals = [r for r in recs if r["label"] == "real"]
    allowed = sum(r["visual_p"] >= threshold for r in reals)
    fused = sorted((r["fused_p"] for r in reals), reverse=True)
    if allowed >= len(fused):
        return 0.0
    return float(np.nextafter(fused[allowed], 1.0))


def fusion(records: list[dict], visual: dict[str, dict], threshold: float) -> tuple[dict, dict]:
    """(b) and (c): AUCs out of fold, and the combiner fitted on every fold (the shipped one); the fused
    rates are at :func:`same_false_alarms`' threshold, the visual ones at the visual model's."""
    as_is = [r for r in records if r["condition"] == "as_is" and r["path"] in visual]
    for r in as_is:
        r["visual_p"] = visual[r["path"]]["p"]
    scored = [r for r in as_is if "p_oos" in r]
    av_set = [r for r in scored if r["label"] == "real" or is_av_fake(r)]
    y_av = np.array([r["label"] == "fake" for r in av_set], int)
    res: dict = {
        "av_alone": {
            "videos": len(av_set),
            "fakes": int(y_av.sum()),
            "reals": int(len(y_av) - y_av.sum()),
            "auc_av": auc(y_av, np.array([r["p_oos"] for r in av_set])),
            "auc_visual_same_videos": auc(y_av, np.array([r["visual_p"] for r in av_set])),
        }
    }

    def xy(recs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        x = np.array([[logit(np.array(r["visual_p"])), logit(np.array(r["p_oos"]))] for r in recs])
        return x, np.array([r["label"] == "fake" for r in recs], int)

    for r in as_is:
        r["fused_p"] = r["visual_p"]
    for k in sorted({r["fold"] for r in as_is}):
        train = [r for r in scored if r["fold"] != k]
        held = [r for r in scored if r["fold"] == k]
        if not held or len({r["label"] for r in train}) < 2:
            continue
        x, y = xy(train)
        b, w = fit_logistic(x, y)
        hx, _ = xy(held)
        for r, p in zip(held, sigmoid(b + hx @ w), strict=True):
            r["fused_p"] = float(p)

    fused_threshold = same_false_alarms(scored, threshold)

    def compare(recs: list[dict]) -> dict:
        y = np.array([r["label"] == "fake" for r in recs], int)
        v = np.array([r["visual_p"] for r in recs])
        f = np.array([r["fused_p"] for r in recs])
        # as serving decides: the fused threshold where an audio-visual score exists, else the visual one
        at_f = np.array([fused_threshold if "p_oos" in r else threshold for r in recs])
        reals, fakes = y == 0, y == 1

        def share(x: np.ndarray, at: float | np.ndarray) -> float | None:
            return round(float((x >= at).mean()), 3) if len(x) else None

        return {
            "videos": len(recs),
            "fakes": int(y.sum()),
            "auc_visual": auc(y, v),
            "auc_fused": auc(y, f),
            "reals_called_fake_visual": share(v[reals], threshold),
            "reals_called_fake_fused": share(f[reals], at_f[reals]),
            "fakes_caught_visual": share(v[fakes], threshold),
            "fakes_caught_fused": share(f[fakes], at_f[fakes]),
        }

    res["fused_threshold"] = round(fused_threshold, 4)
    res["fusion_all_with_audio"] = compare(as_is)
    res["fusion_av_fakes_vs_reals"] = compare([r for r in as_is if r["label"] == "real" or is_av_fake(r)])
    res["fusion_scored_only"] = compare(scored)
    combiner = {}
    if len({r["label"] for r in scored}) == 2:
        x, y = xy(scored)
        b, w = fit_logistic(x, y)
        combiner = {"intercept": b, "visual": float(w[0]), "audio_visual": float(w[1])}
    return res, combiner


class OnnxSync:
    """The exported sync model in ONNX Runtime behind the SyncModel protocol (for the cost benchmark; the
    serving backends live in inference/)."""

    def __init__(self, path: Path, threads: int = 1):
        import onnx
        import onnxruntime as ort

        from deepfake.contracts.metadata import AV_METADATA_KEY

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        self.meta = SyncMeta.from_json(props[AV_METADATA_KEY])

    def sync_logits(self, mouth: np.ndarray, mel: np.ndarray) -> np.ndarray:
        return self.session.run(["sync_logits"], {"mouth": mouth, "mel": mel})[0]

    def close(self) -> None:
        pass


def bench(video: Path, sync_path: Path, repeats: int = 3) -> dict:
    """Cost of the audio-visual signal on one video against the end-to-end analysis without it: the
    median over ``repeats`` of Pipeline.analyze (visual model, in-process ONNX, default settings) and of
    the extra work the audio-visual signal adds to it (decode the audio, log-mel, mouth crops of every
    track's windows from the crops the pipeline has anyway, the sync model over all offsets)."""
    import time

    from inference.onnx_backend import OnnxBackend
    from preprocessor.audio_visual import score_track
    from preprocessor.pipeline import Pipeline
    from preprocessor.settings import PipelineSettings

    settings = PipelineSettings()
    pipeline = Pipeline(settings, OnnxBackend(REPO_ROOT / "model_repository/deepfake_detector/1/model.onnx"))
    sync = OnnxSync(sync_path, threads=settings.threads)
    faces = pipeline.extract_faces(video)
    per_track = []
    for track in faces.tracks:
        by_window: dict[int, list] = {}
        for d in track.detections:
            by_window.setdefault(d.window, []).append(d)
        per_track.append(
            [(np.stack([d.crop for d in ds]), np.array([d.t for d in ds])) for ds in by_window.values()]
        )
    visual, extra, results = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pipeline.analyze(video)
        visual.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        audio = decode_audio(video, settings.max_duration_s)
        mel = log_mel(audio) if audio is not None else None
        results = [score_track(audio, mel, windows, sync) for windows in per_track]
        extra.append(time.perf_counter() - t0)
    v, e = float(np.median(visual)), float(np.median(extra))
    return {
        "video": str(video),
        "end_to_end_s": round(v, 3),
        "audio_visual_extra_s": round(e, 3),
        "ratio_with_audio": round((v + e) / v, 3),
        "tracks": len(per_track),
        "results": [r.reason for r in results],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="out-of-fold evaluation of the sync model (runs/sync/eval.json)")
    ap.add_argument("--frames", type=int, default=32, help="sampled frames per video, as serving's FRAMES")
    ap.add_argument("--visual-oof", type=Path, default=DEFAULT_OOF, help="the visual model's cv run folder")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "sync" / "eval.json")
    ap.add_argument("--root", type=Path, default=RUNS, help="the folds' runs folder (train_sync --root)")
    ap.add_argument("--refit", action="store_true", help="reuse the records of --out, only fit and report")
    ap.add_argument("--bench", type=Path, help="instead: time the audio-visual signal on this video")
    ap.add_argument("--sync-model", type=Path, default=REPO_ROOT / "model_repository/av_sync/1/model.onnx")
    args = ap.parse_args(argv)
    if args.bench:
        print(json.dumps(bench(args.bench, args.sync_model), indent=2))
        return
    if args.refit:
        keep = (
            "path label dataset method fold family condition reason windows windows_scored features".split()
        )
        keep += ["offset_s", "error"]
        records = [{k: r[k] for k in keep if k in r} for r in json.loads(args.out.read_text())["records"]]
    else:
        records = score_all(args.frames, args.root)
    for r in records:  # the fold models carry no fitted rule: their "uncalibrated" is scored here
        if r.get("features"):
            r["reason"] = "scored"
    table, score_coef = shift_table(records)
    temperature, threshold = visual_calibration(args.visual_oof)
    res, combiner = fusion(records, visual_probs(args.visual_oof, temperature), threshold)
    out = {
        "protocol": f"out of fold (3 leave-source-out folds), {args.frames} sampled frames per video",
        "command": "python -m training.sync_eval " + " ".join(argv or sys.argv[1:]),
        "shift_table": table,
        **res,
        "score_coef": score_coef,
        "combiner": combiner,
        "threshold": res["fused_threshold"],
        "visual_threshold": threshold,
        "visual_temperature": temperature,
        "records": records,
    }
    out["metrics"] = {k: v for k, v in out.items() if k not in ("records", "score_coef", "combiner")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out["metrics"], indent=2))


if __name__ == "__main__":
    main()
