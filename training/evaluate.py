"""`deepfake evaluate`: score every row of a manifest and report how well the model separates them.

Crops are scored directly as single-frame clips (T=1), resized to the model's crop size exactly as
serving resizes a face crop, without detecting the face again (the crops already are face boxes).
Videos go through the same ``Pipeline`` that `deepfake detect` runs, so the video figures measure
the product, not a side path. A video the pipeline calls inconclusive (no usable face) or cannot
analyse gets a fixed, documented score (``--inconclusive-score``, default 0.5: "no evidence either
way") and is counted in the report, because dropping it would flatter the figures.

Everything is reported overall and per ``kind``, ``dataset`` and ``method``, with n per group; AUC,
average precision and EER are null for one-class groups (see training/metrics.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inference.metadata import CropPolicy
from preprocessor.aggregate import calibrate
from preprocessor.cropping import crop_face
from training import data
from training.metrics import roc_auc, roc_curve, summarize

LABELS = {"real": 0, "fake": 1}
GROUP_KEYS = ("kind", "dataset", "method")


@dataclass
class Item:
    """One manifest row: a face crop or a video with its ground truth."""

    path: str
    label: int
    kind: str
    split: str = ""
    dataset: str = ""
    method: str = ""
    group: str = ""

    @classmethod
    def from_row(cls, row: dict[str, str], kind: str) -> Item:
        """An item from a MANIFEST.tsv or scores.tsv row whose label was already checked."""
        return cls(
            path=row["path"],
            label=LABELS[row["label"]],
            kind=kind,
            split=row.get("split") or "",
            dataset=row.get("dataset") or "",
            method=row.get("method") or "",
            group=row.get("group") or "",
        )


@dataclass
class Scored:
    """Scores for a list of items, in order, with why any of them carries the fallback score."""

    scores: np.ndarray
    inconclusive: np.ndarray
    failures: list[dict[str, str]] = field(default_factory=list)


def read_manifest(path: Path) -> list[Item]:
    """Rows of a MANIFEST.tsv (header with at least path, label, kind); bad rows are reported by line."""
    items: list[Item] = []
    for line_no, row in enumerate(data.read_manifest(path, required=("path", "label", "kind")), start=2):
        kind = (row.get("kind") or "").strip().lower()
        if kind not in ("crop", "video"):
            raise ValueError(f"{path}:{line_no}: kind must be crop or video, got {row.get('kind')!r}")
        items.append(Item.from_row(row, kind))
    return items


def filter_items(
    items: Iterable[Item],
    kinds: list[str] | None = None,
    splits: list[str] | None = None,
    datasets: list[str] | None = None,
    limit: int | None = None,
) -> list[Item]:
    """Keep rows matching every given filter (each filter accepts several values)."""
    kept = [
        it
        for it in items
        if (not kinds or it.kind in kinds)
        and (not splits or it.split in splits)
        and (not datasets or it.dataset in datasets)
    ]
    return kept[:limit] if limit else kept


def load_crop(path: Path, size: int) -> np.ndarray:
    """An RGB uint8 [size, size, 3] face crop, resized by serving's own ``crop_face``.

    The whole image is treated as the face box with scale 1 (the crop already is a face box, and
    detecting again would measure the detector, not the model), so the resize (interpolation and
    rounding) is exactly what serving does to a detected face.
    """
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    height, width = rgb.shape[:2]
    box = np.array([0, 0, width, height], dtype=np.float32)
    return crop_face(rgb, box, CropPolicy(scale=1.0, size=size, shift_y=0.0))


class Progress:
    """Plain progress lines on stderr, at most one every few seconds, so logs stay readable."""

    def __init__(self, total: int, what: str, every_s: float = 5.0, quiet: bool = False) -> None:
        self.total, self.what, self.every_s, self.quiet = total, what, every_s, quiet
        self.start = self.last = time.monotonic()
        self.done = 0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if not self.quiet and (now - self.last >= self.every_s or self.done == self.total):
            rate = self.done / max(now - self.start, 1e-9)
            msg = f"[evaluate] {self.what}: {self.done}/{self.total} ({rate:.1f}/s)"
            print(msg, file=sys.stderr, flush=True)
            self.last = now


def score_crops(
    items: list[Item], root: Path, backend: Any, batch_size: int = 32, quiet: bool = False
) -> Scored:
    """Calibrated scores for face crops, batched as [B, 1, S, S, 3] single-frame clips."""
    size = backend.meta.crop.size
    temperature = backend.meta.temperature
    scores = np.zeros(len(items), dtype=np.float64)
    progress = Progress(len(items), "crops", quiet=quiet)
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        clips = np.stack([load_crop(root / it.path, size) for it in batch])[:, None]
        out = backend.infer(clips)
        scores[start : start + len(batch)] = calibrate(np.asarray(out.clip_logits).reshape(-1), temperature)
        progress.update(len(batch))
    return Scored(scores=scores, inconclusive=np.zeros(len(items), dtype=bool))


def score_videos(
    items: list[Item],
    root: Path,
    analyze: Callable[[Path], Any],
    inconclusive_score: float = 0.5,
    quiet: bool = False,
) -> Scored:
    """Video-level scores from the full analysis pipeline (``analyze(path) -> DetectionResult``).

    An inconclusive verdict or a failed analysis gets ``inconclusive_score`` and is recorded, so the
    report can say how many videos the figures lean on that fallback for.
    """
    scores = np.full(len(items), inconclusive_score, dtype=np.float64)
    inconclusive = np.zeros(len(items), dtype=bool)
    failures: list[dict[str, str]] = []
    progress = Progress(len(items), "videos", every_s=0.0, quiet=quiet)
    for i, it in enumerate(items):
        try:
            result = analyze(root / it.path)
        except Exception as exc:  # one bad video must not end a long evaluation; it is recorded instead
            inconclusive[i] = True
            code = getattr(exc, "code", None) or "internal_error"  # VideoError carries a stable code
            failures.append({"path": it.path, "code": code, "error": f"{type(exc).__name__}: {exc}"})
            print(f"[evaluate] FAILED {it.path}: {code}: {exc}", file=sys.stderr, flush=True)
        else:
            if result.verdict == "inconclusive" or result.score is None:
                inconclusive[i] = True
            else:
                scores[i] = float(result.score)
        progress.update()
    return Scored(scores=scores, inconclusive=inconclusive, failures=failures)


def build_report(items: list[Item], scored: Scored, threshold: float, meta: dict[str, Any]) -> dict[str, Any]:
    """Overall figures plus one breakdown per grouping key, every group with its own n."""
    labels = np.array([it.label for it in items], dtype=np.int64)
    overall = summarize(labels, scored.scores, threshold, scored.inconclusive).to_dict()
    report: dict[str, Any] = dict(overall)
    for key in GROUP_KEYS:
        groups: dict[str, Any] = {}
        values = np.array([getattr(it, key) for it in items])
        for name in sorted(set(values.tolist())):
            mask = values == name
            summary = summarize(labels[mask], scored.scores[mask], threshold, scored.inconclusive[mask])
            groups[name] = summary.to_dict()
        report[f"by_{key}"] = groups
    # Failures stay failures: counted, listed, and the headline figures given without them as well, so
    # a fixed score for "could not analyse" can neither flatter nor hide anything.
    analysed = ~scored.inconclusive
    report["n_failed"] = len(scored.failures)
    report["analysed_only"] = (
        summarize(labels[analysed], scored.scores[analysed], threshold).to_dict() if analysed.any() else None
    )
    report["failures"] = scored.failures
    report["model"] = meta
    return report


def write_scores(path: Path, items: list[Item], scored: Scored) -> None:
    """One row per item so anyone can recompute every figure from the raw scores."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["path", "label", "score", "kind", "split", "dataset", "method", "inconclusive"])
        for it, s, inc in zip(items, scored.scores, scored.inconclusive, strict=True):
            label = "fake" if it.label else "real"
            w.writerow([it.path, label, f"{s:.6f}", it.kind, it.split, it.dataset, it.method, int(inc)])


def read_scores(path: Path) -> tuple[list[Item], Scored]:
    """Items and scores back from a scores.tsv written by ``--out``, to re-report without re-scoring."""
    items: list[Item] = []
    scores: list[float] = []
    inconclusive: list[bool] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = {"path", "label", "score"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: not a scores.tsv (lacks column(s) {', '.join(sorted(missing))})")
        for line_no, row in enumerate(reader, start=2):
            if row["label"] not in LABELS:
                raise ValueError(f"{path}:{line_no}: label must be real or fake, got {row['label']!r}")
            try:
                scores.append(float(row["score"]))
            except ValueError as exc:
                raise ValueError(f"{path}:{line_no}: score is not a number: {row['score']!r}") from exc
            items.append(Item.from_row(row, row.get("kind") or "crop"))
            inconclusive.append(row.get("inconclusive", "0") == "1")
    return items, Scored(np.array(scores, dtype=np.float64), np.array(inconclusive, dtype=bool))


def plot_roc(path: Path, items: list[Item], scored: Scored, title: str, max_groups: int = 8) -> None:
    """ROC of all items plus the largest two-class datasets, so per-source weakness is visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.array([it.label for it in items], dtype=np.int64)
    datasets = np.array([it.dataset for it in items])
    curves: list[tuple[str, np.ndarray]] = [("all", np.ones(len(items), dtype=bool))]
    two_class = []
    for name in sorted(set(datasets.tolist())):
        mask = datasets == name
        if 0 < labels[mask].sum() < mask.sum():
            two_class.append((int(mask.sum()), name, mask))
    if len(two_class) > 1 or (two_class and two_class[0][0] != len(items)):
        for _, name, mask in sorted(two_class, key=lambda t: -t[0])[:max_groups]:
            curves.append((name, mask))
    fig, ax = plt.subplots(figsize=(6, 6))
    for name, mask in curves:
        y, s = labels[mask], scored.scores[mask]
        if not 0 < y.sum() < y.size:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(y, s):.3f}, n={y.size})", lw=2 if name == "all" else 1)
    if not ax.lines:  # every group holds one class: there is no curve to draw, say so on the plot
        ax.text(0.5, 0.5, "one class only: ROC undefined", ha="center", va="center")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate (real called fake)")
    ax.set_ylabel("true positive rate (fake caught)")
    ax.set_title(title)
    if len(ax.lines) > 1:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v: float | None) -> str:
    return "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def format_table(report: dict[str, Any]) -> str:
    """The human-readable report: one line per group, n first."""
    head = (
        f"{'group':<44} {'n':>6} {'real':>5} {'fake':>5} {'AUC':>6} {'AP':>6} {'EER':>6} {'acc':>6} "
        f"{'logloss':>7} {'mean':>6} {'inc':>4}"
    )
    lines = [head, "-" * len(head)]

    def row(name: str, g: dict[str, Any]) -> str:
        return (
            f"{name[:44]:<44} {g['n']:>6} {g['n_real']:>5} {g['n_fake']:>5} {_fmt(g['auc']):>6} "
            f"{_fmt(g['average_precision']):>6} {_fmt(g['eer']):>6} {_fmt(g['accuracy']):>6} "
            f"{_fmt(g['log_loss']):>7} {_fmt(g['mean_score']):>6} {g['n_inconclusive']:>4}"
        )

    lines.append(row("ALL", report))
    if report.get("analysed_only") and report["n_inconclusive"]:
        lines.append(row("ALL, analysed only (without inc/failed)", report["analysed_only"]))
    for key in GROUP_KEYS:
        groups = report[f"by_{key}"]
        if len(groups) < 2 and key == "kind":
            continue
        lines.append(f"-- by {key}")
        lines.extend(row(name, g) for name, g in groups.items())
    lines.append(
        f"threshold {report['threshold']:.3f}; mean = mean score; n/a = one class only (AUC undefined); "
        f"inc = inconclusive or failed (scored {report.get('inconclusive_score', 0.5)}); "
        f"{report.get('n_failed', 0)} failed to analyse"
    )
    return "\n".join(lines)


def format_markdown(report: dict[str, Any], keys: tuple[str, ...] = ("dataset",)) -> str:
    """The same figures as a Markdown table (for the model card), one-class groups flagged in a column."""
    lines = [
        "| group | n | real | fake | ROC AUC | AP | EER | accuracy | log loss | mean score | inconclusive |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, g: dict[str, Any]) -> str:
        auc = _fmt(g["auc"]).strip() if g["auc"] is not None else "n/a (one class)"
        cells = [
            name,
            str(g["n"]),
            str(g["n_real"]),
            str(g["n_fake"]),
            auc,
            _fmt(g["average_precision"]).strip(),
            _fmt(g["eer"]).strip(),
            _fmt(g["accuracy"]).strip(),
            _fmt(g["log_loss"]).strip(),
            _fmt(g["mean_score"]).strip(),
            str(g["n_inconclusive"]),
        ]
        return "| " + " | ".join(cells) + " |"

    lines.append(row("**all**", report))
    for key in keys:
        lines.extend(row(f"{key}: {name}", g) for name, g in report[f"by_{key}"].items())
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# CLI (registered in deepfake/cli.py as `deepfake evaluate`)

HELP = "Score a labelled manifest of crops/videos: ROC AUC, AP, EER, accuracy, log loss per source."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from deepfake.commands.common import add_pipeline_arguments

    parser.add_argument(
        "manifest", type=Path, help="MANIFEST.tsv (path, label, kind; optional split, dataset, method)"
    )
    parser.add_argument("--root", type=Path, help="folder the paths are relative to (default: manifest's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument(
        "--markdown", action="store_true", help="print Markdown tables (per dataset and method) instead"
    )
    parser.add_argument("--out", type=Path, help="also write report.json, scores.tsv and roc.png into DIR")
    parser.add_argument(
        "--kind", action="append", choices=["crop", "video"], help="only this kind (repeatable)"
    )
    parser.add_argument("--split", action="append", help="only this split, e.g. val or dev (repeatable)")
    parser.add_argument("--dataset", action="append", help="only this dataset value (repeatable)")
    parser.add_argument("--limit", type=int, help="only the first N matching rows (quick checks)")
    parser.add_argument("--batch-size", type=int, default=32, help="crops per inference batch (default 32)")
    parser.add_argument(
        "--inconclusive-score",
        type=float,
        default=0.5,
        help="score of a video the pipeline calls inconclusive or cannot analyse (default 0.5)",
    )
    parser.add_argument(
        "--from-scores",
        action="store_true",
        help="MANIFEST is a scores.tsv from an earlier --out: recompute the report without scoring again",
    )
    parser.add_argument("--threshold", type=float, help="decision threshold (default: the model's own)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_pipeline_arguments(parser)  # --model, --detector, --weights-dir, --frames, --threads: as `detect`


def run(args: argparse.Namespace) -> int:
    from deepfake.commands.common import (
        SetupError,
        UsageError,
        load_backend,
        load_detector,
        report_error,
        set_threads,
        settings_from_args,
    )

    try:
        if not 0.0 <= args.inconclusive_score <= 1.0:
            raise UsageError("--inconclusive-score must be a probability in [0, 1]")
        if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
            raise UsageError("--batch-size and --limit must be at least 1")
        if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
            raise UsageError("--threshold must be a probability in [0, 1]")
        settings = settings_from_args(args)
        if args.from_scores:
            return _rescore(args, settings)
        try:
            items = read_manifest(args.manifest)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
        root = args.root or args.manifest.parent
        items = filter_items(items, args.kind, args.split, args.dataset, args.limit)
        if not items:
            raise UsageError(f"no rows of {args.manifest} match the filters")
        missing = [it.path for it in items if not (root / it.path).is_file()]
        if missing:
            raise UsageError(
                f"{len(missing)} manifest file(s) not found under {root} (first: {missing[0]}); "
                "pass --root DIR if the paths are relative to another folder"
            )
        set_threads(settings.threads)
        backend = load_backend(settings)
        videos = [it for it in items if it.kind == "video"]
        detector = load_detector(settings) if videos else None
    except (UsageError, SetupError) as exc:
        return report_error(exc)

    start = time.monotonic()
    crops = [it for it in items if it.kind == "crop"]
    ordered = crops + videos
    parts: list[Scored] = []
    if crops:
        try:
            parts.append(score_crops(crops, root, backend, args.batch_size, args.quiet))
        except ValueError as exc:  # an unreadable image or a crop the model refuses: say which, no traceback
            print(f"deepfake: error: {exc}", file=sys.stderr)
            return 1
    if videos:
        from preprocessor.pipeline import Pipeline

        pipeline = Pipeline(settings, backend, detector)
        parts.append(score_videos(videos, root, pipeline.analyze, args.inconclusive_score, args.quiet))
    backend.close()
    scored = Scored(
        scores=np.concatenate([p.scores for p in parts]),
        inconclusive=np.concatenate([p.inconclusive for p in parts]),
        failures=[f for p in parts for f in p.failures],
    )
    meta = {
        "name": backend.info.name,
        "version": backend.info.version,
        "sha256": backend.info.sha256,
        "path": str(settings.model_path),
        "temperature": backend.meta.temperature,
        "crop": backend.meta.crop.model_dump(),
        "clip_len": backend.meta.clip_len,
    }
    threshold = backend.meta.threshold if args.threshold is None else args.threshold
    report = build_report(ordered, scored, threshold, meta)
    report["seconds"] = round(time.monotonic() - start, 1)
    return _finish(args, ordered, scored, report)


def _rescore(args: argparse.Namespace, settings: Any) -> int:
    """``--from-scores``: the report from a saved scores.tsv (filters by kind/dataset still apply)."""
    from deepfake.commands.common import SetupError, UsageError, load_backend, report_error

    try:
        try:
            items, scored = read_scores(args.manifest)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
        keep = [
            i
            for i, it in enumerate(items)
            if (not args.kind or it.kind in args.kind)
            and (not args.split or it.split in args.split)
            and (not args.dataset or it.dataset in args.dataset)
        ][: args.limit or None]
        if not keep:
            raise UsageError(f"no rows of {args.manifest} match the filters")
        meta: dict[str, Any] = {"scores_from": str(args.manifest)}
        threshold = args.threshold
        if threshold is None:
            backend = load_backend(settings)  # only for its shipped threshold
            threshold = backend.meta.threshold
            meta.update(name=backend.info.name, version=backend.info.version, sha256=backend.info.sha256)
            backend.close()
    except (UsageError, SetupError) as exc:
        return report_error(exc)
    items = [items[i] for i in keep]
    scored = Scored(scored.scores[keep], scored.inconclusive[keep])
    return _finish(args, items, scored, build_report(items, scored, threshold, meta))


def _finish(args: argparse.Namespace, ordered: list[Item], scored: Scored, report: dict[str, Any]) -> int:
    """Write the --out files and print the report in the chosen format."""
    meta = report["model"]
    report["inconclusive_score"] = args.inconclusive_score
    report["manifest"] = str(args.manifest)
    report["filters"] = {"kind": args.kind, "split": args.split, "dataset": args.dataset, "limit": args.limit}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_scores(args.out / "scores.tsv", ordered, scored)
        (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        name = f"{meta.get('name', 'model')} v{meta.get('version', '?')}"
        title = f"{name}: {args.manifest.name} ({len(ordered)} items)"
        plot_roc(args.out / "roc.png", ordered, scored, title)
        if not args.quiet:
            print(f"[evaluate] wrote {args.out}/report.json, scores.tsv, roc.png", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    elif args.markdown:
        print(format_markdown(report, ("dataset", "method")))
    else:
        print(format_table(report))
    return 0
