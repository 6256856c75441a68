"""The shared models: strict traces, a config hash that tracks every field, consistent spans."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mig_annotator.schemas import CharSpan, PromptTemplate, ScoringConfig, Trace


def test_a_trace_needs_exactly_one_of_steps_or_completion() -> None:
    assert Trace(id="a", question="q", steps=["s"], reference_answer="1").steps == ["s"]
    assert Trace(id="a", question="q", completion="c", reference_answer="1").completion == "c"
    with pytest.raises(ValidationError, match="exactly one"):
        Trace(id="a", question="q", reference_answer="1")


def test_unknown_trace_fields_are_rejected_by_name() -> None:
    with pytest.raises(ValidationError, match="reward"):
        Trace.model_validate(
            {"id": "a", "question": "q", "completion": "c", "reference_answer": "1", "reward": 1}
        )


def test_a_numeric_reference_answer_becomes_its_text_by_one_rule() -> None:
    def answer(value: object) -> str:
        trace = {"id": "a", "question": "q", "completion": "c", "reference_answer": value}
        return Trace.model_validate(trace).reference_answer

    assert [answer(18), answer(18.0), answer(2.5), answer(1e-05), answer(-3)] == [
        "18",
        "18",
        "2.5",
        "1e-05",
        "-3",
    ]
    for refused in (True, float("nan"), ["1"]):
        with pytest.raises(ValidationError, match="reference_answer"):
            answer(refused)


def test_config_hash_is_stable_and_changes_with_every_numeric_option() -> None:
    base = ScoringConfig()
    assert base.config_hash() == ScoringConfig().config_hash() and len(base.config_hash()) == 16
    variants = [
        ScoringConfig(aggregation="sum"),
        ScoringConfig(watermark="gain"),
        ScoringConfig(sft_threshold=0.1),
        ScoringConfig(segmenter="lines"),
        ScoringConfig(prompt=PromptTemplate(answer_prefix="The answer is ")),
        ScoringConfig(prompt=PromptTemplate(chat=True)),
    ]
    hashes = {variant.config_hash() for variant in variants}
    assert len(hashes) == len(variants) and base.config_hash() not in hashes


def test_regex_segmenter_requires_a_pattern() -> None:
    with pytest.raises(ValidationError, match="step_regex is required"):
        ScoringConfig(segmenter="regex")


def test_spans_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="end must be >= start"):
        CharSpan(start=5, end=2)
