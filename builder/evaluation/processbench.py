"""Step-level fidelity in the ProcessBench format (arXiv 2412.06559).

A trace's ``label`` is the 0-based index of its earliest wrong step, -1 when every step is right. A step
score (higher = better step) predicts the earliest error as the first step whose score falls below -tau
(-1 when none does). ProcessBench's F1 is the harmonic mean of the accuracy on erroneous traces (the
predicted index equals the label) and on all-correct traces (nothing predicted).

Every accuracy here is exact for any threshold: a trace is predicted right exactly when the threshold
``t = -tau`` lies in one interval (erroneous: ``score[label] < t <= min(score[:label])``; all-correct:
``t <= min(score)``), so the accuracies are counts of intervals holding ``t``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mig_annotator.builder.evaluation.ranking import auroc


@dataclass(frozen=True)
class LabelledSteps:
    """One trace's step scores (k = 1..K, as a 0-based array) and its ProcessBench label."""

    scores: np.ndarray
    label: int


@dataclass(frozen=True)
class F1Result:
    """ProcessBench F1 at one threshold (``tau`` None for cross-validation, which uses one per fold)."""

    method: str
    tau: float | None
    fold_taus: tuple[float, ...]
    accuracy_erroneous: float | None
    accuracy_correct: float | None
    f1: float | None
    erroneous: int
    correct: int


@dataclass(frozen=True)
class StepAuroc:
    """AUROC of a step score: correct steps before the first error (positives) vs the first wrong step."""

    positives: int
    negatives: int
    auroc: float | None


def predict_first_error(scores: np.ndarray, tau: float) -> int:
    """The index of the first step whose score is below -tau, or -1."""
    below = np.flatnonzero(np.asarray(scores) < -tau)
    return int(below[0]) if below.size else -1


def step_auroc(traces: Sequence[LabelledSteps]) -> StepAuroc:
    labels: list[bool] = []
    scores: list[float] = []
    for trace in traces:
        upto = len(trace.scores) if trace.label < 0 else trace.label
        labels += [True] * upto
        scores += [float(x) for x in trace.scores[:upto]]
        if trace.label >= 0:
            labels.append(False)
            scores.append(float(trace.scores[trace.label]))
    positives = sum(labels)
    return StepAuroc(positives, len(labels) - positives, auroc(labels, scores) if labels else None)


class _Intervals:
    """Per trace, the thresholds t (= -tau) at which its prediction is right, as counting structures."""

    def __init__(self, traces: Sequence[LabelledSteps]) -> None:
        lows, highs, correct_highs = [], [], []
        for trace in traces:
            s = np.asarray(trace.scores, dtype=np.float64)
            if trace.label < 0:
                correct_highs.append(float(s.min()) if s.size else np.inf)
            else:
                low = float(s[trace.label])
                high = float(s[: trace.label].min()) if trace.label else np.inf
                lows.append(low)
                highs.append(high if high > low else low)  # an empty interval (low, low]
        self.lows = np.sort(np.asarray(lows, dtype=np.float64))
        self.highs = np.sort(np.asarray(highs, dtype=np.float64))
        self.correct_highs = np.sort(np.asarray(correct_highs, dtype=np.float64))

    @property
    def erroneous(self) -> int:
        return len(self.lows)

    @property
    def correct(self) -> int:
        return len(self.correct_highs)

    def hits(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Right predictions at each threshold: (erroneous traces, all-correct traces)."""
        err = np.searchsorted(self.lows, t, side="left") - np.searchsorted(self.highs, t, side="left")
        cor = self.correct - np.searchsorted(self.correct_highs, t, side="left")
        return err, cor

    def endpoints(self) -> np.ndarray:
        values = np.concatenate([self.lows, self.highs, self.correct_highs])
        return np.unique(values[np.isfinite(values)])


def _f1(err_hits: np.ndarray, cor_hits: np.ndarray, erroneous: int, correct: int) -> np.ndarray:
    acc_err = err_hits / erroneous
    acc_cor = cor_hits / correct
    total = acc_err + acc_cor
    return np.where(total > 0, 2 * acc_err * acc_cor / np.where(total > 0, total, 1.0), 0.0)


def _result(
    method: str, tau: float | None, folds: tuple[float, ...], err: int, cor: int, n_err: int, n_cor: int
) -> F1Result:
    acc_err = err / n_err if n_err else None
    acc_cor = cor / n_cor if n_cor else None
    f1 = None
    if acc_err is not None and acc_cor is not None:
        f1 = 0.0 if acc_err + acc_cor == 0 else 2 * acc_err * acc_cor / (acc_err + acc_cor)
    return F1Result(method, tau, folds, acc_err, acc_cor, f1, n_err, n_cor)


def _hits_at(traces: Sequence[LabelledSteps], tau: float) -> tuple[int, int, int, int]:
    """(right erroneous, right all-correct, erroneous, all-correct) at one tau."""
    intervals = _Intervals(traces)
    err, cor = intervals.hits(np.asarray([-tau]))
    return int(err[0]), int(cor[0]), intervals.erroneous, intervals.correct


def f1_at(traces: Sequence[LabelledSteps], tau: float, method: str = "tau = 0") -> F1Result:
    """ProcessBench F1 when the earliest error is the first step scoring below -tau."""
    return _result(method, tau, (), *_hits_at(traces, tau))


def best_tau(traces: Sequence[LabelledSteps]) -> float:
    """The tau with the highest F1 on ``traces`` (ties: the smallest |tau|, then the smallest tau); 0 when
    the traces lack erroneous or all-correct ones (F1 is undefined then)."""
    intervals = _Intervals(traces)
    if intervals.erroneous == 0 or intervals.correct == 0:
        return 0.0
    ends = intervals.endpoints()
    # accuracies change only at the endpoints: try them, the midpoints and one beyond each end
    between = (ends[:-1] + ends[1:]) / 2 if ends.size > 1 else np.empty(0)
    outside = np.asarray([ends[0] - 1.0, ends[-1] + 1.0]) if ends.size else np.asarray([0.0])
    t = np.unique(np.concatenate([ends, between, outside, [0.0]]))
    err, cor = intervals.hits(t)
    f1 = _f1(err, cor, intervals.erroneous, intervals.correct)
    best = np.flatnonzero(f1 == f1.max())
    taus = -t[best]
    choice = min(taus, key=lambda tau: (abs(tau), tau))
    return float(choice) + 0.0  # no -0.0


def f1_best(traces: Sequence[LabelledSteps]) -> F1Result:
    """F1 at the tau chosen on the same data (an optimistic bound, as ProcessBench tunes scalar PRMs)."""
    return f1_at(traces, best_tau(traces), "tau chosen on the data")


def f1_cross_validated(traces: Sequence[LabelledSteps], seed: int = 0) -> F1Result:
    """2-fold cross-validation, stratified by erroneous / all-correct: each fold is scored at the tau
    chosen on the other one, and the out-of-fold predictions are pooled into one F1."""
    rng = np.random.default_rng(seed)
    folds: list[list[LabelledSteps]] = [[], []]
    for group in ([t for t in traces if t.label >= 0], [t for t in traces if t.label < 0]):
        for position, index in enumerate(rng.permutation(len(group))):
            folds[position % 2].append(group[index])
    taus = (best_tau(folds[1]), best_tau(folds[0]))
    totals = [0, 0, 0, 0]
    for fold, tau in zip(folds, taus, strict=True):
        totals = [a + b for a, b in zip(totals, _hits_at(fold, tau), strict=True)]
    return _result("tau by 2-fold CV", None, taus, *totals)
