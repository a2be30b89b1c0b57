"""Leave-source-out folds over the dev videos: the validation protocol every recipe decision uses.

Why by source: users send footage from sources the model never saw, so a fold never shares a ``dataset``
(the source column of MANIFEST.tsv) with its training data, and a ``group`` never splits. One exception:
the DeepFaceLive demos were cut into a real left half and a swapped right half of the same clip; those
fold by clip (both halves of one clip on one side), so the matched halves can be scored out of fold.

Sources with one class only (most talking-head repositories hold only fakes, most corpora only reals)
are spread greedily so every fold holds reals and fakes: units are placed largest first, each into the
fold whose fuller class (after adding it) is fullest relative to that class's total the least.
The assignment depends only on the manifest rows, so it is the same on every machine.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

PAIRED_DATASETS = ("DeepFaceLive",)  # real/fake halves of one clip: fold by clip, not by source
_HALF = re.compile(r"_(left|right)$")


def fold_unit(row: dict[str, str]) -> str:
    """What stays together: the source, or one clip for the matched-halves sources."""
    dataset = row.get("dataset", "")
    if dataset in PAIRED_DATASETS:
        return f"{dataset}/{_HALF.sub('', PurePosixPath(row['path']).stem)}"
    return dataset


def assign_folds(rows: list[dict[str, str]], k: int) -> dict[str, int]:
    """``path -> fold`` (0..k-1) for video rows, by :func:`fold_unit`, balanced per class."""
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    units: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        units.setdefault(fold_unit(row), []).append(row)
    totals = {c: max(1, sum(r["label"] == c for r in rows)) for c in ("real", "fake")}
    counts = [{"real": 0, "fake": 0} for _ in range(k)]
    fold_of_unit: dict[str, int] = {}
    for name, members in sorted(units.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        add = {c: sum(r["label"] == c for r in members) for c in ("real", "fake")}

        def load(f: int, add: dict[str, int] = add) -> tuple[float, float]:
            fill = [(counts[f][c] + add[c]) / totals[c] for c in ("real", "fake")]
            return max(fill), sum(fill)

        best = min(range(k), key=lambda f: (load(f), f))
        fold_of_unit[name] = best
        for c in ("real", "fake"):
            counts[best][c] += add[c]
    return {r["path"]: fold_of_unit[fold_unit(r)] for r in rows}


def fake_family(label: str, method: str) -> str:
    """``real`` for real videos; for fakes ``swap`` (face swaps: a blended seam exists) or ``synthesis``
    (talking heads, lip-sync, reenactment, generated video: the face or the frame is synthesised)."""
    if label == "real":
        return "real"
    m = method.lower()
    if any(key in m for key in ("swap", "deepfakes", "dfdc-fake", "deepfacelive")):
        return "swap"
    return "synthesis"


__all__ = ["assign_folds", "fake_family", "fold_unit"]
