"""The reward fields from v_k (mig.reward_fields): one derivation for the engine and a rescore, and a rescore
that equals scoring afresh under the new settings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mig_annotator.engine.annotator import Annotator
from mig_annotator.engine.probe.fake import FakeProbe
from mig_annotator.engine.reward_fields import (
    RESCORABLE_FIELDS,
    rescore_annotation,
    reward_fields,
    settings_needing_probe,
)
from mig_annotator.engine.rewards import aggregate_logprobs, reaggregate_values
from mig_annotator.schemas import CharSpan, PromptTemplate, ScoringConfig, Trace, TraceAnnotation

logprob = st.floats(min_value=-30.0, max_value=0.0, allow_nan=False, allow_infinity=False)
coarse_logprob = st.sampled_from([-4.0, -2.0, -1.5, -1.0, -0.5, 0.0])  # exact sums: ties and equal rows


@st.composite
def logprob_matrices(draw: st.DrawFn) -> np.ndarray:
    shape = (draw(st.integers(1, 12)), draw(st.integers(1, 9)))  # (K+1 prefixes, n answer tokens)
    return draw(arrays(np.float64, shape, elements=st.one_of(logprob, coarse_logprob)))


scoring_configs = st.builds(
    ScoringConfig,
    aggregation=st.sampled_from(["mean", "sum"]),
    watermark=st.sampled_from(["level", "gain"]),
    sft_threshold=st.sampled_from([0.0, 0.05, 0.5, 2.0]),
    sft_statistic=st.sampled_from(["max", "sum"]),
)


def annotation_from(lp: np.ndarray, outcome: int, config: ScoringConfig) -> TraceAnnotation:
    """What the engine writes for a trace whose probe gave ``lp``: its reward fields from reward_fields."""
    steps = [(f"step {k}", CharSpan(start=10 * k, end=10 * k + 9)) for k in range(1, lp.shape[0])]
    fields = reward_fields(aggregate_logprobs(lp, config.aggregation), outcome, steps, config)
    return TraceAnnotation(
        trace_id="t",
        completion="x" * (10 * lp.shape[0]),
        steps_total=len(steps),
        truncated=False,
        cot_span=CharSpan(start=0, end=10 * lp.shape[0]),
        answer="1",
        answer_span=None,
        answer_part_span=None,
        outcome=outcome,
        probe_model="m",
        probe_identity="p",
        tokens_forwarded=1,
        answer_tokens=lp.shape[1],
        **fields.as_fields(),
    )


def assert_rewards_match(got: TraceAnnotation, want: TraceAnnotation, threshold: float) -> None:
    assert got.config_hash == want.config_hash
    assert got.v0 == pytest.approx(want.v0, rel=1e-12, abs=1e-12)
    for name in ("v", "mig", "watermark", "reward"):
        assert [getattr(s, name) for s in got.steps] == pytest.approx(
            [getattr(s, name) for s in want.steps], rel=1e-12, abs=1e-12
        ), name
    assert got.process_reward == pytest.approx(want.process_reward, rel=1e-12, abs=1e-12)
    assert got.max_reward == pytest.approx(want.max_reward, rel=1e-12, abs=1e-12)
    if min(abs(want.max_reward - threshold), abs(want.process_reward - threshold)) > 1e-9:
        assert got.sft_gate is want.sft_gate  # a gate is only ever in doubt at a rounding-level tie
    assert [(s.text, s.span) for s in got.steps] == [(s.text, s.span) for s in want.steps]


@settings(max_examples=300, deadline=None)
@given(lp=logprob_matrices(), old=scoring_configs, new=scoring_configs, outcome=st.sampled_from([0, 1]))
def test_a_rescore_equals_scoring_the_same_probe_values_under_the_new_settings(
    lp: np.ndarray, old: ScoringConfig, new: ScoringConfig, outcome: int
) -> None:
    rescored = rescore_annotation(annotation_from(lp, outcome, old), old, new)
    assert_rewards_match(rescored, annotation_from(lp, outcome, new), new.sft_threshold)


@settings(max_examples=300, deadline=None)
@given(lp=logprob_matrices())
def test_sum_to_mean_is_exactly_numpys_mean_and_mean_to_sum_is_the_sum_to_rounding(lp: np.ndarray) -> None:
    n = lp.shape[1]
    mean, total = aggregate_logprobs(lp, "mean"), aggregate_logprobs(lp, "sum")
    assert np.array_equal(reaggregate_values(total, n, "sum", "mean"), mean)
    np.testing.assert_allclose(reaggregate_values(mean, n, "mean", "sum"), total, rtol=1e-13, atol=1e-12)
    assert np.array_equal(reaggregate_values(mean, n, "mean", "mean"), mean)


def test_reaggregating_refuses_no_answer_tokens_and_unknown_aggregations() -> None:
    with pytest.raises(ValueError, match="answer_tokens must be >= 1"):
        reaggregate_values([0.0], 0, "mean", "sum")
    with pytest.raises(ValueError, match="target aggregation must be 'mean' or 'sum', got 'max'"):
        reaggregate_values([0.0], 1, "mean", "max")  # type: ignore[arg-type]


def test_only_watermark_aggregation_and_sft_settings_are_rescorable() -> None:
    base = ScoringConfig()
    assert RESCORABLE_FIELDS == ("aggregation", "watermark", "sft_threshold", "sft_statistic")
    rescorable = ScoringConfig(aggregation="sum", watermark="gain", sft_threshold=0.3, sft_statistic="sum")
    assert settings_needing_probe(base, rescorable) == []
    changed = ScoringConfig(
        segmenter="lines", context_limit="window", max_steps=8, prompt=PromptTemplate(chat=True)
    )
    assert settings_needing_probe(base, changed) == ["segmenter", "max_steps", "prompt.chat", "context_limit"]


def test_a_rescore_refuses_probe_settings_and_an_annotation_of_another_config() -> None:
    lp = np.array([[-2.0, -1.0], [-1.0, -0.5]])
    annotation = annotation_from(lp, 1, ScoringConfig())
    with pytest.raises(ValueError, match=r"segmenter, prompt\.answer_prefix change what the probe reads"):
        rescore_annotation(
            annotation,
            ScoringConfig(),
            ScoringConfig(segmenter="lines", prompt=PromptTemplate(answer_prefix="A: ")),
        )
    with pytest.raises(ValueError, match=f"scored under config_hash {annotation.config_hash}, not "):
        rescore_annotation(annotation, ScoringConfig(watermark="gain"), ScoringConfig())


def test_reward_fields_refuses_a_step_count_that_does_not_match_the_values() -> None:
    with pytest.raises(ValueError, match="1 steps for a value trajectory of 2 steps"):
        reward_fields([-1.0, -0.5, -0.2], 1, [("a", CharSpan(start=0, end=1))], ScoringConfig())


def test_the_engines_annotation_rescored_equals_the_engines_annotation_under_the_new_settings() -> None:
    traces = [
        Trace(
            id="a", question="What is 2 + 3?", steps=["2 + 3 is 5.", "So 5.", "A: 5"], reference_answer="5"
        ),
        Trace(
            id="b",
            question="What is 7 * 6?",
            completion="7 * 6 = 42\nCheck: 42\nA: 41",
            reference_answer="42",
        ),
    ]
    old = ScoringConfig()
    new = ScoringConfig(aggregation="sum", watermark="gain", sft_threshold=0.1, sft_statistic="sum")
    with Annotator(FakeProbe()) as annotator:
        before = annotator.annotate(traces, old)
        after = annotator.annotate(traces, new)
    for scored, rebuilt in zip(before, after, strict=True):
        rescored = rescore_annotation(scored, old, new)
        assert_rewards_match(rescored, rebuilt, new.sft_threshold)
        assert rescored.sft_gate is rebuilt.sft_gate
        assert rescored.model_dump(
            exclude={"v0", "steps", "process_reward", "max_reward"}
        ) == rebuilt.model_dump(exclude={"v0", "steps", "process_reward", "max_reward"})
    assert any(a.process_reward != b.process_reward for a, b in zip(before, after, strict=True))
