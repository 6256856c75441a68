"""The decoupled advantages and the SFT gate, against a per-token reference written plainly with loops."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mig_annotator.schemas.scalar import sft_gate as annotation_sft_gate
from mig_annotator.schemas.token_alignment import align_annotation
from mig_annotator.trainer.advantages import (
    AdvantageSettings,
    CompletionCredit,
    credit_from_annotation,
    group_token_advantages,
    sft_gate,
    unscored,
)
from tests.schemas.test_token_alignment import COMPLETION, annotation, offsets_of, tokenizer  # noqa: F401


def mean_and_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def reference(members: list[CompletionCredit], s: AdvantageSettings) -> list[list[float]]:
    """A_it token by token, straight from the method's formulas."""
    scored = [m for m in members if m.outcome is not None]
    o_mean, o_std = mean_and_std([m.outcome for m in scored])  # type: ignore[misc]
    if s.placement == "sequence":
        p_mean, p_std = mean_and_std([sum(m.step_rewards.tolist()) for m in scored])
    else:
        p_mean, p_std = mean_and_std([r for m in scored for r in m.step_rewards.tolist()])

    def normal_process(x: float) -> float:
        if not s.process_std:
            return x - p_mean
        scale = max(p_std, s.process_std_floor)
        return (x - p_mean) / scale if scale > 0 else 0.0

    result = []
    for m in members:
        row = []
        for t in range(m.n_tokens):
            if m.outcome is None or len(scored) < 2:
                row.append(0.0)
                continue
            outcome = 0.0
            if m.completion_mask[t]:
                outcome = (m.outcome - o_mean) / (o_std + s.eps) if s.outcome_std else m.outcome - o_mean
            process = 0.0
            if m.cot_mask[t]:
                if s.placement == "sequence":
                    process = normal_process(sum(m.step_rewards.tolist()))
                else:
                    for k in range(len(m.step_rewards)):
                        end = min(int(m.step_end_tokens[k]), m.n_tokens - 1)
                        if m.step_end_tokens[k] >= 0 and end >= t:
                            process += normal_process(float(m.step_rewards[k]))
            row.append(s.process_weight * process + s.outcome_weight * outcome)
        result.append(row)
    return result


def credit(
    outcome: float | None, rewards: list[float], ends: list[int], cot: list[bool], done: list[bool]
) -> Any:
    return CompletionCredit(
        outcome=outcome,
        step_rewards=np.array(rewards, dtype=np.float64),
        step_end_tokens=np.array(ends, dtype=np.int64),
        cot_mask=np.array(cot, dtype=bool),
        completion_mask=np.array(done, dtype=bool),
    )


@st.composite
def members(draw: Any) -> CompletionCredit:
    n_tokens = draw(st.integers(0, 8))
    if draw(st.booleans()) and draw(st.booleans()):
        return unscored(n_tokens)
    n_steps = draw(st.integers(0, 4))
    rewards = draw(st.lists(st.floats(0.0, 2.0), min_size=n_steps, max_size=n_steps))
    ends = draw(st.lists(st.integers(-1, max(n_tokens - 1, -1)), min_size=n_steps, max_size=n_steps))
    done = draw(st.lists(st.booleans(), min_size=n_tokens, max_size=n_tokens))
    cot = [d and draw(st.booleans()) for d in done]
    return credit(float(draw(st.sampled_from([0, 1]))), rewards, ends, cot, done)


advantage_settings = st.builds(
    AdvantageSettings,
    placement=st.sampled_from(["sequence", "step"]),
    process_weight=st.floats(0.0, 2.0),
    outcome_weight=st.floats(0.0, 2.0),
    outcome_std=st.booleans(),
    process_std=st.booleans(),
    process_std_floor=st.sampled_from([0.0, 0.05, 0.25, 1.0]),
)


@settings(max_examples=300, deadline=None)
@given(group=st.lists(members(), min_size=1, max_size=6), s=advantage_settings)
def test_group_advantages_equal_the_per_token_reference(
    group: list[CompletionCredit], s: AdvantageSettings
) -> None:
    got = group_token_advantages(group, s)
    assert [len(a) for a in got] == [m.n_tokens for m in group]
    for values, expected in zip(got, reference(group, s), strict=True):
        assert values.tolist() == pytest.approx(expected, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(group=st.lists(members(), min_size=1, max_size=5), s=advantage_settings, n_tokens=st.integers(0, 6))
def test_an_unscored_member_gets_zero_and_leaves_the_others_unchanged(
    group: list[CompletionCredit], s: AdvantageSettings, n_tokens: int
) -> None:
    with_failure = group_token_advantages([*group, unscored(n_tokens)], s)
    assert with_failure[-1].tolist() == [0.0] * n_tokens
    for a, b in zip(with_failure[:-1], group_token_advantages(group, s), strict=True):
        assert a.tolist() == b.tolist()


@pytest.mark.parametrize("placement", ["sequence", "step"])
def test_a_group_of_one_gets_zero_advantage(placement: str) -> None:
    alone = credit(1.0, [0.4, 0.9], [0, 2], [True, True, True, False], [True] * 4)
    (values,) = group_token_advantages([alone], AdvantageSettings(placement=placement))  # type: ignore[arg-type]
    assert values.tolist() == [0.0] * 4


def test_equal_outcomes_give_no_outcome_advantage_only_process_credit_on_the_cot() -> None:
    cot, done = [True, True, False, False], [True, True, True, False]
    group = [credit(1.0, [0.1], [1], cot, done), credit(1.0, [0.9], [1], cot, done)]
    low, high = group_token_advantages(group, AdvantageSettings(process_std_floor=0.0))
    # P = 0.1 and 0.9: mean 0.5, std 0.566; the outcome part is 0 on every token
    assert high.tolist() == pytest.approx([0.4 / math.sqrt(0.32)] * 2 + [0.0, 0.0])
    assert low.tolist() == pytest.approx([-0.4 / math.sqrt(0.32)] * 2 + [0.0, 0.0])


def test_the_all_wrong_example_is_not_blown_up_to_unit_scale() -> None:
    """An all-wrong GSM8K group: P_i from 0.22 to 0.32. Without a floor, GRPO's normalisation
    makes +-1.2 of it; the default floor (0.25) keeps it within +-0.25, under an outcome's +-0.5..1.5."""
    totals = [0.22, 0.25, 0.29, 0.32]
    group = [credit(0.0, [p], [0], [True], [True]) for p in totals]
    blown = [float(a[0]) for a in group_token_advantages(group, AdvantageSettings(process_std_floor=0.0))]
    assert min(blown) == pytest.approx(-1.14, abs=0.01) and max(blown) == pytest.approx(1.14, abs=0.01)
    floored = [float(a[0]) for a in group_token_advantages(group, AdvantageSettings())]
    assert floored == pytest.approx([(p - 0.27) / 0.25 for p in totals])
    assert max(abs(a) for a in floored) < 0.25
    mixed = [credit(float(p == 0.32), [p], [0], [True], [True]) for p in totals]  # one correct
    outcome_only = group_token_advantages(mixed, AdvantageSettings(process_weight=0.0))
    assert float(outcome_only[-1][0]) == pytest.approx(1.5, abs=1e-5)


def test_step_placement_credits_each_cot_token_with_the_steps_ending_at_or_after_it() -> None:
    # member a: steps end at tokens 1 and 3 (r 0.1, 0.3); member b: one step ending at 2 (r 0.2)
    a = credit(1.0, [0.1, 0.3], [1, 3], [True, True, True, True, False], [True] * 5)
    b = credit(0.0, [0.2], [2], [True, True, True, False, False], [True] * 5)
    s = AdvantageSettings(placement="step", outcome_weight=0.0, process_std_floor=0.0)
    got_a, got_b = group_token_advantages([a, b], s)
    # pooled steps 0.1, 0.3, 0.2: mean 0.2, std 0.1 -> normalised -1, +1, 0
    assert got_a.tolist() == pytest.approx([0.0, 0.0, 1.0, 1.0, 0.0])
    assert got_b.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.0])


def test_credit_from_an_annotation_uses_the_alignment_rule(tokenizer: Any) -> None:  # noqa: F811
    scored = annotation([(0, 17, 0.5), (18, 42, 0.25)])
    offsets = offsets_of(tokenizer)
    got = credit_from_annotation(scored, offsets)
    aligned = align_annotation(scored, offsets)
    assert got.step_end_tokens.tolist() == [5, 21]  # the two '.' tokens, where step_rewards puts r_k
    assert got.step_rewards.tolist() == [0.5, 0.25]
    assert got.cot_mask.tolist() == aligned.cot_mask.tolist()
    assert got.completion_mask.tolist() == aligned.completion_mask.tolist()
    assert got.outcome == 1.0 and len(COMPLETION) == offsets[-1][1]


@pytest.mark.parametrize(
    ("outcome", "rewards", "threshold", "statistic", "expected"),
    [
        (1.0, [0.0, 0.3], 0.0, "max", True),
        (0.0, [0.0, 0.3], 0.0, "max", False),  # wrong answer
        (1.0, [0.0, 0.0], 0.0, "max", False),  # correct, no breakthrough
        (1.0, [0.2, 0.2], 0.3, "max", False),
        (1.0, [0.2, 0.2], 0.3, "sum", True),
        (1.0, [], 0.0, "max", False),
    ],
)
def test_the_sft_gate_is_the_annotations_rule(
    outcome: float, rewards: list[float], threshold: float, statistic: str, expected: bool
) -> None:
    s = AdvantageSettings(sft_threshold=threshold, sft_statistic=statistic)  # type: ignore[arg-type]
    member = credit(outcome, rewards, [0] * len(rewards), [True], [True])
    assert sft_gate(member, s) is expected
    gate_value = max(rewards, default=0.0) if statistic == "max" else sum(rewards)
    assert annotation_sft_gate(int(outcome), gate_value, threshold) is expected
    assert sft_gate(unscored(3), s) is False


def test_mismatched_lengths_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="step_end_tokens"):
        credit(1.0, [0.1, 0.2], [0], [True], [True])
    with pytest.raises(ValueError, match="cot_mask"):
        credit(1.0, [], [], [True, False], [True])
