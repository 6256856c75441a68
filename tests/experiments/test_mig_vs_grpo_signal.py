"""The signal check's AUROC (experiments/mig_vs_grpo/signal_check.py)."""

from __future__ import annotations

import pytest

from tests.experiments.test_mig_vs_grpo_task import _load

signal_check = _load("signal_check")


def test_auroc_counts_pairs_a_positive_wins_and_ties_as_half() -> None:
    assert signal_check.auroc([3.0, 2.0], [1.0, 0.0]) == 1.0
    assert signal_check.auroc([0.0], [1.0, 2.0]) == 0.0
    assert signal_check.auroc([1.0, 3.0], [1.0, 2.0]) == pytest.approx((0.5 + 0 + 1 + 1) / 4)


def test_auroc_refuses_an_empty_class() -> None:
    with pytest.raises(ValueError, match="positive and one negative"):
        signal_check.auroc([], [1.0])
