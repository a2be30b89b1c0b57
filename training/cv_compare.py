"""Compare cross-validation runs on the folds they have all scored: ``python -m training.cv_compare RUN ...``.

A recipe's full table (training/cv.py) needs every fold; a run stopped part way, or an experiment dropped
after two folds, can still be held against another on the same held-out videos. Per run: ROC AUC of the
video score (mean clip logit of the main track, the ranking serving's mean probability gives) over the
videos every run scored, per fold, and face swaps / synthesis fakes against all reals
(training/folds.py fake_family), and ``by_source``: the AUC with each video weighted by 1 / (compared videos
of its source and label), so every source has the same say (GRID's 41 real sentences from 6 speakers
otherwise weigh as much as 41 sources would, and the sealed evaluation is of other sources). Reads
``runs/cv/<RUN>/fold<k>/oof.json``; a baseline scored by ``training.cv --baseline-onnx`` is the run
``<NAME>/baseline``.

``--flip`` scores each video by the mean of its clips' logits and their mirror images' (the records keep
both), ``--ensemble`` adds a row for the runs together: the sum of each run's video scores standardised over
the compared videos (so a run with wide logits does not outvote the others), the ensemble serving would
get by running every model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from training.config import REPO_ROOT
from training.metrics import group_balanced_weights, roc_auc

CV_ROOT = REPO_ROOT / "runs" / "cv"


def scored_folds(runs: list[str], root: Path, n_folds: int) -> list[int]:
    """The folds whose out-of-fold scores every run has."""
    return [f for f in range(n_folds) if all((root / r / f"fold{f}" / "oof.json").is_file() for r in runs)]


def video_score(record: dict, flip: bool) -> float:
    """Mean clip logit of a video; with ``flip``, of its clips and their mirror images together."""
    logits = list(record["clip_logits"])
    if flip:
        if not record.get("clip_logits_flip"):
            raise SystemExit(f"{record['path']}: no mirrored clip logits in this run's records for --flip")
        logits += record["clip_logits_flip"]
    return float(np.mean(logits))


def compare(
    runs: list[str], root: Path = CV_ROOT, n_folds: int = 3, flip: bool = False, ensemble: bool = False
) -> dict:
    """The table as a dict: folds compared, videos, and per run (and the ensemble) its AUC rows."""
    folds = scored_folds(runs, root, n_folds)
    if not folds:
        raise SystemExit(f"no fold has out-of-fold scores for all of {runs} under {root}")
    records = {}
    for run in runs:
        records[run] = {
            rec["path"]: rec
            for f in folds
            for rec in json.loads((root / run / f"fold{f}" / "oof.json").read_text())
            if rec["clip_logits"]  # failed videos are not scored by that run
        }
    paths = sorted(set.intersection(*(set(r) for r in records.values())))
    first = records[runs[0]]
    y = np.array([first[p]["label"] == "fake" for p in paths])
    family = np.array([first[p]["family"] for p in paths])
    fold = np.array([first[p]["fold"] for p in paths])
    by_source = group_balanced_weights([(first[p]["dataset"], first[p]["label"]) for p in paths])
    table: dict = {"folds": folds, "videos": len(paths), "runs": {}}
    scores = {run: np.array([video_score(records[run][p], flip) for p in paths]) for run in runs}
    if ensemble:
        scores["ensemble"] = sum((s - s.mean()) / (s.std() or 1.0) for s in scores.values())
    for run, score in scores.items():
        row = {"all": roc_auc(y, score), "by_source": roc_auc(y, score, by_source)}
        for f in folds:
            row[f"fold{f}"] = roc_auc(y[fold == f], score[fold == f])
        for fam in ("swap", "synthesis"):
            keep = (family == fam) | ~y
            row[f"{fam}_vs_reals"] = roc_auc(y[keep], score[keep])
        table["runs"][run] = row
    return table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run names under runs/cv/")
    ap.add_argument("--root", type=Path, default=CV_ROOT, help="folder of the runs (default runs/cv)")
    ap.add_argument("--folds", type=int, default=3, help="number of folds of the protocol")
    ap.add_argument("--flip", action="store_true", help="average each clip with its mirror image")
    ap.add_argument("--ensemble", action="store_true", help="add a row for the runs' standardised sum")
    args = ap.parse_args(argv)
    table = compare(args.runs, args.root, args.folds, flip=args.flip, ensemble=args.ensemble)
    print(f"folds {table['folds']}, {table['videos']} videos scored by every run (ROC AUC)")
    columns = list(next(iter(table["runs"].values())))
    print(f"{'run':16s}" + "".join(f"{c:>20s}" for c in columns))
    for run, row in table["runs"].items():
        cells = "".join(f"{'-' if row[c] is None else format(row[c], '.3f'):>20s}" for c in columns)
        print(f"{run:16s}{cells}")


if __name__ == "__main__":
    main()
