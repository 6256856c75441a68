"""ProcessBench step metrics: the worked example by hand, and the exact threshold search against a scan."""

from __future__ import annotations

import numpy as np
import pytest

from mig_annotator.builder.evaluation.processbench import (
    LabelledSteps,
    best_tau,
    f1_at,
    f1_best,
    f1_cross_validated,
    predict_first_error,
    step_auroc,
)

# the mig_k scores of tests/builder/report_support.STEP_EXAMPLE
MIG = [
    LabelledSteps(np.array([0.5, 0.5]), -1),
    LabelledSteps(np.array([0.5, -1.0, 1.5]), 1),
    LabelledSteps(np.array([-0.5, 0.2]), 1),
    LabelledSteps(np.array([0.2, -0.2, 0.3]), -1),
]


def naive_f1(traces: list[LabelledSteps], tau: float) -> float:
    """ProcessBench F1 straight from the definition."""
    erroneous = [t for t in traces if t.label >= 0]
    correct = [t for t in traces if t.label < 0]
    acc_err = np.mean([predict_first_error(t.scores, tau) == t.label for t in erroneous])
    acc_cor = np.mean([predict_first_error(t.scores, tau) == -1 for t in correct])
    return 0.0 if acc_err + acc_cor == 0 else float(2 * acc_err * acc_cor / (acc_err + acc_cor))


def test_the_first_step_below_minus_tau_is_the_predicted_error() -> None:
    assert predict_first_error(np.array([0.3, -0.1, -0.5]), 0.0) == 1
    assert predict_first_error(np.array([0.3, -0.1, -0.5]), 0.2) == 2
    assert predict_first_error(np.array([0.3, -0.1, -0.5]), 0.5) == -1  # -0.5 is not below -0.5
    assert predict_first_error(np.array([]), 0.0) == -1


def test_step_auroc_of_the_worked_example() -> None:
    # positives: .5 .5 (A), .5 (B), -.5 (C), .2 -.2 .3 (D); negatives: -1 (B), .2 (C)
    # vs -1: 7 wins; vs .2: .5 .5 .5 .3 win, .2 ties -> 4.5; (7 + 4.5) / 14
    result = step_auroc(MIG)
    assert (result.positives, result.negatives) == (7, 2)
    assert result.auroc == pytest.approx(11.5 / 14)


def test_f1_at_tau_zero_of_the_worked_example() -> None:
    # A: none flagged (right); B: step 1 (right); C: step 0, label 1 (wrong); D: step 1, label -1 (wrong)
    result = f1_at(MIG, 0.0)
    assert (result.accuracy_erroneous, result.accuracy_correct, result.f1) == (0.5, 0.5, 0.5)
    assert (result.erroneous, result.correct) == (2, 2)


def test_the_tau_chosen_on_the_data_of_the_worked_example() -> None:
    # right at t = -tau: A t <= .5, D t <= -.2, B -1 < t <= .5, C never; best: t in (-1, -.2] -> F1 2/3;
    # the smallest |tau| there is .2
    assert best_tau(MIG) == pytest.approx(0.2)
    result = f1_best(MIG)
    assert result.tau == pytest.approx(0.2) and result.f1 == pytest.approx(2 / 3)
    assert (result.accuracy_erroneous, result.accuracy_correct) == (0.5, 1.0)


def test_best_tau_is_optimal_against_a_scan_of_taus() -> None:
    rng = np.random.default_rng(3)
    for _ in range(25):
        traces = []
        for _ in range(int(rng.integers(4, 14))):
            scores = np.round(rng.normal(size=int(rng.integers(1, 6))), 1)  # ties on purpose
            label = int(rng.integers(-1, len(scores)))
            traces.append(LabelledSteps(scores, label))
        if all(t.label >= 0 for t in traces) or all(t.label < 0 for t in traces):
            continue
        tau = best_tau(traces)
        chosen = f1_at(traces, tau)
        assert chosen.f1 == pytest.approx(naive_f1(traces, tau))
        scanned = max(naive_f1(traces, float(t)) for t in np.arange(-3.05, 3.05, 0.05))
        assert chosen.f1 >= scanned - 1e-12


def test_cross_validation_on_two_identical_halves_equals_the_tau_chosen_on_the_data() -> None:
    traces = MIG * 2  # stratified folds: each holds one copy of A..D's classes
    cv = f1_cross_validated(traces, seed=1)
    best = f1_best(traces)
    assert len(cv.fold_taus) == 2 and cv.tau is None
    assert (cv.erroneous, cv.correct) == (4, 4)
    assert 0.0 <= cv.f1 <= best.f1  # out-of-fold can never beat the in-sample optimum
    # each fold is scored at a tau chosen on the other; pooled counts are the folds' counts
    again = f1_cross_validated(traces, seed=1)
    assert again == cv


def test_f1_without_erroneous_or_without_correct_traces_is_undefined() -> None:
    only_correct = [t for t in MIG if t.label < 0]
    result = f1_best(only_correct)  # nothing to choose tau for: it stays 0 (D's -0.2 is flagged)
    assert result.tau == 0.0 and result.accuracy_correct == 0.5
    assert result.accuracy_erroneous is None and result.f1 is None
