"""Binary detection metrics in plain numpy, so every reported figure can be checked by hand.

Label 1 means fake (the positive class), scores are calibrated probabilities of manipulation. The
definitions follow the usual conventions (ROC AUC as the Mann-Whitney statistic with ties counted
half, average precision as the step-wise sum used by scikit-learn, EER where the false positive and
false negative rates cross), and they return ``None`` rather than a number when a metric is
undefined: a group with only real or only fake items has no AUC, and saying so is more honest than
a NaN or a fake 0.5.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LOG_LOSS_EPS = 1e-7
"""Probabilities are clipped to [eps, 1 - eps] so one confident mistake costs ~16, not infinity."""


def _check(labels: np.ndarray | list[int], scores: np.ndarray | list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert inputs; bad input gets a message that names the problem."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite numbers")
    return y.astype(np.int64), s


def check_weights(weights: np.ndarray | list[float] | None, scores: np.ndarray) -> np.ndarray:
    """One finite, non-negative weight per item (all 1 when none are given); shared by every weighted
    figure here and by training/calibrate.py's threshold, so a bad weight fails the same way everywhere."""
    w = np.ones(scores.shape) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != scores.shape or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be one finite, non-negative number per item")
    return w


def _both_classes(y: np.ndarray) -> bool:
    return bool(y.size) and 0 < int(y.sum()) < y.size


def roc_auc(
    labels: np.ndarray | list[int],
    scores: np.ndarray | list[float],
    weights: np.ndarray | list[float] | None = None,
) -> float | None:
    """Probability that a random fake scores above a random real (ties count half); None if one class.

    ``weights`` (one per item, >= 0) draw the random fake and real in proportion to them instead of
    uniformly: e.g. :func:`group_balanced_weights` of (source, label) gives every source the same say, so
    a corpus of 41 clips does not decide the figure alone (training/cv_compare.py). Computed as the
    Mann-Whitney statistic over groups of tied scores: the sum over (fake, real) pairs of
    w_fake * w_real * [fake above real] (ties half), over the sum of w_fake * w_real.
    """
    y, s = _check(labels, scores)
    if not _both_classes(y):
        return None
    w = check_weights(weights, s)
    w_pos, w_neg = np.where(y == 1, w, 0.0), np.where(y == 0, w, 0.0)
    if not w_pos.sum() or not w_neg.sum():
        return None
    values, group = np.unique(s, return_inverse=True)  # groups of tied scores, in increasing order
    pos = np.bincount(group, w_pos, values.size)
    neg = np.bincount(group, w_neg, values.size)
    below = np.cumsum(neg) - neg  # real weight strictly below each score
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def group_sizes(groups: list) -> np.ndarray:
    """Per item, how many items share its group (e.g. the videos of its source and label)."""
    counts = Counter(groups)
    return np.array([counts[g] for g in groups], dtype=np.int64)


def group_balanced_weights(groups: list) -> np.ndarray:
    """1 / (items of the item's group) per item: every group weighs the same in a weighted metric."""
    return 1.0 / group_sizes(groups)


def roc_curve(
    labels: np.ndarray | list[int], scores: np.ndarray | list[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), one point per distinct score plus the (0, 0) start.

    A point at threshold t counts everything with score >= t as fake, so tied scores move together
    and the curve has a diagonal step there (which is what makes the trapezoid area equal roc_auc).
    """
    y, s = _check(labels, scores)
    if not _both_classes(y):
        raise ValueError("a ROC curve needs both real and fake items")
    order = np.argsort(-s, kind="mergesort")
    s_desc, y_desc = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(s_desc[1:] != s_desc[:-1]), s_desc.size - 1]
    tp = np.cumsum(y_desc)[last_of_run]
    fp = (last_of_run + 1) - tp
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (y.size - y.sum())]
    thresholds = np.r_[np.inf, s_desc[last_of_run]]
    return fpr, tpr, thresholds


def average_precision(labels: np.ndarray | list[int], scores: np.ndarray | list[float]) -> float | None:
    """Sum over distinct thresholds of (recall step) x precision; None if there is no fake or no real."""
    y, s = _check(labels, scores)
    if not _both_classes(y):
        return None
    order = np.argsort(-s, kind="mergesort")
    s_desc, y_desc = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(s_desc[1:] != s_desc[:-1]), s_desc.size - 1]
    tp = np.cumsum(y_desc)[last_of_run].astype(np.float64)
    predicted = (last_of_run + 1).astype(np.float64)
    precision = tp / predicted
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def equal_error_rate(labels: np.ndarray | list[int], scores: np.ndarray | list[float]) -> float | None:
    """The error rate where false positives and false negatives are equally frequent.

    Linear interpolation between the two ROC points where FPR - FNR changes sign; None if one class.
    """
    y, _ = _check(labels, scores)
    if not _both_classes(y):
        return None
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    diff = fpr - fnr  # rises from -1 at (0, 0) to +1 at (1, 1)
    i = int(np.argmax(diff >= 0))
    if diff[i] == 0:
        return float((fpr[i] + fnr[i]) / 2.0)
    frac = -diff[i - 1] / (diff[i] - diff[i - 1])
    return float(fpr[i - 1] + frac * (fpr[i] - fpr[i - 1]))


def log_loss(
    labels: np.ndarray | list[int], probs: np.ndarray | list[float], eps: float = LOG_LOSS_EPS
) -> float:
    """Mean binary cross-entropy of calibrated probabilities, clipped to [eps, 1 - eps]."""
    y, p = _check(labels, probs)
    if not y.size:
        raise ValueError("log loss of an empty set is undefined")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("log loss needs probabilities in [0, 1]")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1.0 - p)))


def accuracy(labels: np.ndarray | list[int], scores: np.ndarray | list[float], threshold: float) -> float:
    """Share of items called correctly when score >= threshold means fake (the serving rule)."""
    y, s = _check(labels, scores)
    if not y.size:
        raise ValueError("accuracy of an empty set is undefined")
    return float(np.mean((s >= threshold).astype(np.int64) == y))


def balanced_accuracy(
    labels: np.ndarray | list[int],
    scores: np.ndarray | list[float],
    threshold: float,
    weights: np.ndarray | list[float] | None = None,
) -> float | None:
    """Mean of the share of fakes caught and the share of reals cleared at ``threshold``; None if one
    class (the figure the shipped threshold maximises). ``weights`` as in :func:`roc_auc`: the shares
    are weighted, so with :func:`group_balanced_weights` of (source, label) every source counts alike."""
    y, s = _check(labels, scores)
    if not _both_classes(y):
        return None
    w = check_weights(weights, s)
    pred = s >= threshold
    fake, real = y == 1, y == 0
    if not w[fake].sum() or not w[real].sum():
        return None
    caught = w[fake & pred].sum() / w[fake].sum()
    cleared = w[real & ~pred].sum() / w[real].sum()
    return float((caught + cleared) / 2)


@dataclass
class Summary:
    """All figures for one group of items; undefined ones are None with the reason in ``note``."""

    n: int
    n_real: int
    n_fake: int
    auc: float | None
    average_precision: float | None
    eer: float | None
    accuracy: float
    log_loss: float
    threshold: float
    mean_score: float = 0.0  # for one-class groups the most telling figure beside accuracy
    n_inconclusive: int = 0
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(
    labels: np.ndarray | list[int],
    scores: np.ndarray | list[float],
    threshold: float,
    inconclusive: np.ndarray | list[bool] | None = None,
) -> Summary:
    """Every metric for one group, at the model's shipped threshold."""
    y, s = _check(labels, scores)
    n_fake = int(y.sum())
    note = None
    if not _both_classes(y):
        only = "fake" if n_fake else "real"
        note = f"only {only} items: AUC, average precision and EER are undefined"
    n_inc = int(np.asarray(inconclusive, dtype=bool).sum()) if inconclusive is not None else 0
    return Summary(
        n=int(y.size),
        n_real=int(y.size - n_fake),
        n_fake=n_fake,
        auc=roc_auc(y, s),
        average_precision=average_precision(y, s),
        eer=equal_error_rate(y, s),
        accuracy=accuracy(y, s, threshold),
        log_loss=log_loss(y, s),
        threshold=float(threshold),
        mean_score=float(np.mean(s)),
        n_inconclusive=n_inc,
        note=note,
    )
