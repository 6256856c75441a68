"""The MIG credit record that carries a sample's per-step credit in verl's rm_scores row (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from mig_annotator.client.verl_credit import (
    HEADER,
    MAGIC,
    NOT_SCORED,
    SCORED,
    TOO_SHORT,
    decode_credit,
    encode_credit,
    record_size,
)


def test_a_scored_record_reads_back_exactly_in_float32() -> None:
    tokens = 60
    rng = np.random.default_rng(3)
    cot = rng.random(tokens) < 0.6
    completion = cot | (rng.random(tokens) < 0.5)
    rewards = np.array([0.125, 0.0, 0.3125, 0.5])
    ends = np.array([7, 7, 30, 41])
    row = encode_credit(
        tokens,
        outcome=1.0,
        step_rewards=rewards,
        step_end_tokens=ends,
        cot_mask=cot,
        completion_mask=completion,
    )
    assert row.dtype == np.float32 and row.shape == (tokens,)
    assert row[0] == MAGIC and row[1] == SCORED
    assert np.all(row[record_size(4, tokens) :] == 0)
    record = decode_credit(np.concatenate([row, np.zeros(5, dtype=np.float32)]), tokens)
    assert record.status == SCORED and record.outcome == 1.0
    assert record.step_rewards.tolist() == rewards.tolist()
    assert record.step_end_tokens.tolist() == ends.tolist()
    assert record.cot_mask.tolist() == cot.tolist()
    assert record.completion_mask.tolist() == completion.tolist()


def test_an_unscored_sample_and_a_row_too_short_for_its_record_decode_as_not_scored() -> None:
    unscored = decode_credit(encode_credit(12), 12)
    assert unscored.outcome is None and unscored.status == NOT_SCORED
    assert not unscored.cot_mask.any() and not unscored.completion_mask.any()
    ones = np.ones(8, dtype=bool)
    short = encode_credit(
        8, outcome=0.0, step_rewards=[0.1, 0.2], step_end_tokens=[3, 7], cot_mask=ones, completion_mask=ones
    )
    assert record_size(2, 8) > 8
    decoded = decode_credit(short, 8)
    assert decoded.outcome is None and decoded.status == TOO_SHORT
    assert decode_credit(encode_credit(2), 2).outcome is None  # under HEADER slots: what fits of the header
    assert HEADER == 5


def test_a_row_that_is_not_a_record_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="rm_scores row 3 is not a MIG credit record"):
        decode_credit(np.array([0.0, 0.5, 1.0], dtype=np.float32), 3, where="rm_scores row 3")
    with pytest.raises(ValueError, match="step-end tokens"):
        encode_credit(
            9, outcome=1.0, step_rewards=[0.1], step_end_tokens=[], cot_mask=[1] * 9, completion_mask=[1] * 9
        )
