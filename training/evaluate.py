"""Score every row of a manifest and report how well the model separates them (what `deepfake evaluate`,
cli/commands/evaluate.py, runs).

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

import csv
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deepfake.contracts.metadata import CropPolicy
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
