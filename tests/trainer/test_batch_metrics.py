"""What MIG changed in a batch: the logged shares, means and spreads, on hand-made groups."""

from __future__ import annotations

import numpy as np
import pytest

from mig_annotator.trainer.advantages import AdvantageSettings, group_token_advantages, unscored
from mig_annotator.trainer.batch_metrics import batch_credit_metrics
from tests.trainer.test_advantages import credit

FOUR = [True] * 4


def used(credits: list, settings: AdvantageSettings, size: int) -> list[np.ndarray]:
    rows: list[np.ndarray] = []
    for start in range(0, len(credits), size):
        rows.extend(group_token_advantages(credits[start : start + size], settings))
    return rows


def test_an_all_wrong_group_with_process_spread_is_zero_for_outcome_only_grpo_and_trained_by_mig() -> None:
    settings = AdvantageSettings()
    all_wrong = [
        credit(0, [0.1], [1], FOUR, FOUR),
        credit(0, [0.5], [1], FOUR, FOUR),
        credit(0, [0.2], [1], FOUR, FOUR),
        credit(0, [0.4], [1], FOUR, FOUR),  # no total equals the mean: none is left at 0
    ]
    mixed = [
        credit(1, [1.3], [1], FOUR, FOUR),  # correct with max_k r_k > 0: the gate opens
        credit(1, [0.0], [1], FOUR, FOUR),  # correct, no positive step: closed
        credit(0, [0.2], [1], FOUR, FOUR),
        unscored(4),
    ]
    credits = all_wrong + mixed
    metrics = batch_credit_metrics(credits, used(credits, settings, 4), 4, settings)

    assert metrics["mig/outcome_mean"] == pytest.approx(2 / 7)
    assert metrics["mig/process_reward_mean"] == pytest.approx((0.1 + 0.5 + 0.2 + 0.4 + 1.3 + 0.0 + 0.2) / 7)
    spreads = [np.std([0.1, 0.5, 0.2, 0.4], ddof=1), np.std([1.3, 0.0, 0.2], ddof=1)]
    assert metrics["mig/process_reward_group_std"] == pytest.approx(np.mean(spreads))
    # outcome-only: the all-wrong group (4) and the unscored member (1) get 0
    assert metrics["mig/zero_advantage_outcome_only"] == pytest.approx(5 / 8)
    # MIG: only the unscored member stays at 0
    assert metrics["mig/zero_advantage_mig"] == pytest.approx(1 / 8)
    assert metrics["mig/mig_changed_zero_advantage"] == pytest.approx(4 / 8)
    assert metrics["mig/sft_gate_open"] == 1.0
    assert metrics["mig/sft_gate_open_rate"] == pytest.approx(1 / 8)
    assert metrics["mig/unscored"] == 1.0


def test_a_group_with_equal_process_totals_shows_no_spread_and_no_change() -> None:
    settings = AdvantageSettings()
    credits = [credit(0, [0.2], [1], FOUR, FOUR) for _ in range(4)]
    metrics = batch_credit_metrics(credits, used(credits, settings, 4), 4, settings)
    assert metrics["mig/process_reward_group_std"] == 0.0
    assert metrics["mig/zero_advantage_outcome_only"] == 1.0
    assert metrics["mig/zero_advantage_mig"] == 1.0
    assert metrics["mig/mig_changed_zero_advantage"] == 0.0


def test_a_batch_that_is_not_whole_groups_is_refused() -> None:
    credits = [credit(0, [0.2], [1], FOUR, FOUR) for _ in range(3)]
    with pytest.raises(ValueError, match="multiple of the group size 4"):
        batch_credit_metrics(credits, [np.zeros(4)] * 3, 4, AdvantageSettings())
