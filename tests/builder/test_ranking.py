"""The rank-based AUROC and ROC curve against pair counts done by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mig_annotator.builder.evaluation.ranking import auroc, roc_curve


def pair_count_auroc(labels: list[bool], scores: list[float]) -> float:
    """The definition: share of (positive, negative) pairs the positive wins, ties counting half."""
    positives = [s for y, s in zip(labels, scores, strict=True) if y]
    negatives = [s for y, s in zip(labels, scores, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def test_auroc_of_a_perfect_an_inverted_and_a_tied_ranking() -> None:
    assert auroc([True, True, False, False], [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert auroc([True, True, False, False], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert auroc([True, False, True, False], [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_auroc_with_ties_matches_a_hand_count() -> None:
    # positives 3, 2, 2; negatives 2, 1: wins 3>2, 3>1, 2>1, 2>1 = 4, ties 2=2 twice = 1 -> 5 / 6
    labels = [True, True, True, False, False]
    scores = [3.0, 2.0, 2.0, 2.0, 1.0]
    assert auroc(labels, scores) == pytest.approx(5 / 6)
    assert pair_count_auroc(labels, scores) == pytest.approx(5 / 6)


def test_auroc_matches_the_pair_count_on_random_tied_scores() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(2, 40))
        labels = [bool(x) for x in rng.integers(0, 2, n)]
        scores = [float(x) for x in rng.integers(0, 5, n)]  # many ties
        if all(labels) or not any(labels):
            assert auroc(labels, scores) is None
            continue
        assert auroc(labels, scores) == pytest.approx(pair_count_auroc(labels, scores))


def test_auroc_without_both_classes_is_none_and_bad_input_is_refused() -> None:
    assert auroc([True, True], [0.1, 0.2]) is None
    assert roc_curve([False], [0.1]) is None
    with pytest.raises(ValueError, match="equal length"):
        auroc([True, False], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        auroc([True, False], [0.1, float("nan")])


def test_roc_curve_runs_from_origin_to_one_with_ties_moved_together_and_its_area_is_the_auroc() -> None:
    labels = [True, True, True, False, False]
    scores = [3.0, 2.0, 2.0, 2.0, 1.0]
    curve = roc_curve(labels, scores)
    assert curve is not None
    # thresholds: >=3 (tp 1), >=2 (tp 3, fp 1), >=1 (tp 3, fp 2)
    assert curve.true_positive_rate == pytest.approx([0, 1 / 3, 1, 1])
    assert curve.false_positive_rate == pytest.approx([0, 0, 0.5, 1])
    area = np.trapezoid(curve.true_positive_rate, curve.false_positive_rate)
    assert area == pytest.approx(curve.auroc) and curve.auroc == pytest.approx(5 / 6)


def test_roc_curve_is_thinned_to_the_point_budget_with_its_ends_kept() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 5000).astype(bool)
    scores = rng.normal(size=5000) + labels
    curve = roc_curve(labels, scores, max_points=50)
    assert curve is not None and len(curve.true_positive_rate) <= 50
    assert (curve.false_positive_rate[0], curve.true_positive_rate[0]) == (0.0, 0.0)
    assert (curve.false_positive_rate[-1], curve.true_positive_rate[-1]) == (1.0, 1.0)
    assert curve.auroc == pytest.approx(auroc(labels, scores))
