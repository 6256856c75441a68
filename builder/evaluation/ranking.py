"""Exact, rank-based AUROC and ROC curves (no scikit-learn dependency).

AUROC is the Mann-Whitney statistic: the share of (positive, negative) pairs in which the positive scores
higher, a tie counting one half. It equals the area under the ROC curve drawn with tied scores moved
together (a diagonal segment), which :func:`roc_curve` returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RocCurve:
    """ROC points from (0, 0) to (1, 1), one per distinct threshold, and the area under them."""

    false_positive_rate: list[float]
    true_positive_rate: list[float]
    auroc: float


def _arrays(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, ...]:
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D and of equal length, got {y.shape} and {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores must not be NaN")
    return y, s


def auroc(labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float | None:
    """P(score of a positive > score of a negative) + P(tie) / 2; None without both classes."""
    y, s = _arrays(labels, scores)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    sorted_scores = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # mid-ranks: tied scores share the mean of the ranks they span (1-based)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mid = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(mid, counts)
    rank_sum = ranks[y].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def roc_curve(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray, *, max_points: int = 200
) -> RocCurve | None:
    """The ROC curve (thinned to about ``max_points`` points, ends kept) and the exact AUROC."""
    y, s = _arrays(labels, scores)
    area = auroc(y, s)
    if area is None:
        return None
    order = np.argsort(-s, kind="mergesort")
    sorted_scores, sorted_labels = s[order], y[order]
    # the last index of each run of equal scores: thresholds between distinct scores
    cuts = np.flatnonzero(np.diff(sorted_scores) != 0)
    cuts = np.append(cuts, len(s) - 1)
    tps = np.cumsum(sorted_labels)[cuts]
    fps = (cuts + 1) - tps
    tpr = np.concatenate([[0.0], tps / tps[-1]])
    fpr = np.concatenate([[0.0], fps / fps[-1]])
    if len(tpr) > max_points:
        keep = np.unique(np.linspace(0, len(tpr) - 1, max_points).round().astype(int))
        tpr, fpr = tpr[keep], fpr[keep]
    return RocCurve([float(x) for x in fpr], [float(x) for x in tpr], area)
