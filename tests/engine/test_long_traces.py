"""Long reasoning traces: a 16k-token `<think>` prose trace segmented and scored at long contexts.

The tiny random-initialised models (tests/long_context.py) check the plumbing at 16k tokens for each tested
model shape; the real SmolLM2 checks the values of the window policy past its 8,192-token context.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mig_annotator.engine.annotator import Annotator, TraceError
from mig_annotator.engine.probe import TransformersProbeSettings, open_probe
from mig_annotator.engine.prompt import ProbeSequence, PromptBuilder
from mig_annotator.engine.segment import segment_completion
from mig_annotator.schemas import ScoringConfig, Trace, TraceAnnotation
from mig_annotator.schemas.config import DEFAULT_MAX_STEPS
from tests.long_context import (
    ROPE_LINEAR,
    ROPE_LLAMA3,
    ROPE_YARN,
    THINK_CLOSE,
    THINK_OPEN,
    long_think_completion,
    long_think_trace,
    tiny_long_context_model,
)

# ----------------------------------------------------------------------------------------------------------
# the trace and its segmentation (default settings)
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_long_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_long_model)


def test_the_synthetic_completion_is_about_16k_tokens_deterministic_and_mixes_paragraphs_and_runs(
    tokenizer, long_think
) -> None:
    completion = long_think.completion
    tokens = len(tokenizer([completion], add_special_tokens=False)["input_ids"][0])
    assert 16_000 <= tokens <= 16_000 * 1.02
    assert long_think_completion(tokenizer, 16_000, seed=0) == completion
    assert long_think_completion(tokenizer, 16_000, seed=1) != completion
    assert completion.startswith(THINK_OPEN) and completion.count(THINK_CLOSE) == 1
    assert completion.endswith(f"The answer is \\boxed{{{long_think.answer}}}.")
    lines = completion.split("\n")
    assert sum(len(line) > 2_000 for line in lines) >= 5  # runs of sentences without a newline
    assert sum(0 < len(line) <= 2_000 for line in lines) >= 50  # one-line paragraphs


def test_the_16k_trace_gives_100_plus_exact_steps_inside_the_think_block(long_think) -> None:
    completion = long_think.completion
    segmented = segment_completion(completion)  # every default: auto segmenter, 120/2000 chars, 256 steps
    steps = segmented.steps
    assert 100 <= len(steps) <= DEFAULT_MAX_STEPS
    assert len(segment_completion(completion, max_steps=None).steps) == len(steps)  # the cap merged nothing
    think_start = completion.index(THINK_OPEN) + len(THINK_OPEN)
    think_end = completion.index(THINK_CLOSE)
    assert segmented.cot_span == (think_start, think_end)
    for step in steps:
        assert completion[step.start : step.end] == step.text and step.text == step.text.strip()
        assert think_start <= step.start < step.end <= think_end
        assert "<think>" not in step.text and "</think>" not in step.text
    assert all(a.end <= b.start for a, b in itertools.pairwise(steps))
    # prose without newlines is cut at sentences: no step is over max_step_chars, runs give several steps
    assert max(len(step.text) for step in steps) <= 2_000
    run_start = completion.index(max(completion.split("\n"), key=len))
    run_end = completion.index("\n", run_start)
    assert run_end - run_start > 2_000
    assert sum(run_start <= step.start and step.end <= run_end for step in steps) >= 5
    part, answer = segmented.answer_part, segmented.answer
    assert part is not None and answer is not None
    assert part.start >= think_end + len(THINK_CLOSE)
    assert completion[part.start : part.end] == part.text
    assert part.text.endswith(f"\\boxed{{{long_think.answer}}}.")
    assert answer.text == str(long_think.answer) and part.start <= answer.start < answer.end <= part.end


# ----------------------------------------------------------------------------------------------------------
# the tested long-context shapes, scored in process (the CLI, service and builder tests reuse the first)
# ----------------------------------------------------------------------------------------------------------

SHAPES: dict[str, dict[str, Any]] = {
    "llama-rope-default": {},
    "llama-rope-linear": {"rope_parameters": ROPE_LINEAR},
    "llama-rope-yarn": {"rope_parameters": ROPE_YARN},
    "llama-rope-llama3": {"rope_parameters": ROPE_LLAMA3},
    "qwen2": {"architecture": "qwen2"},
}


def plain_answer_logprobs(model_folder: Path, sequence: ProbeSequence, prefixes: list[int]) -> list[float]:
    """v_k for each k in ``prefixes`` by one plain causal forward of prefix k + continuation (no packing,
    no masks); the LM head runs on the answer-predicting rows only (16k rows of logits would be 3 GB)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32).eval()
    n = sequence.n_answer_tokens
    values = []
    for k in prefixes:
        ids = torch.tensor([sequence.probe_ids(k)])
        with torch.inference_mode():
            hidden = model.base_model(input_ids=ids).last_hidden_state[0, -n - 1 : -1]
            logprobs = model.get_output_embeddings()(hidden).double().log_softmax(-1)
        values.append(float(logprobs.gather(1, ids[0, -n:, None]).mean()))
    return values


def check_scored_whole(annotation: TraceAnnotation, long_think) -> None:
    segmented = segment_completion(long_think.completion)
    assert len(annotation.steps) == annotation.steps_total == len(segmented.steps) >= 100
    assert [step.text for step in annotation.steps] == [step.text for step in segmented.steps]
    values = [annotation.v0, *(step.v for step in annotation.steps)]
    assert all(math.isfinite(v) for v in values)
    assert annotation.windowed_steps == 0 and not annotation.truncated
    assert annotation.answer == str(long_think.answer) and annotation.outcome == 1


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_tested_shape_scores_the_16k_trace_exactly(
    shape: str, tiny_long_model: Path, long_think, long_think_reference, tmp_path: Path
) -> None:
    import torch

    folder = tiny_long_model if shape == "llama-rope-default" else None
    if folder is None:
        folder = tiny_long_context_model(tmp_path / shape, **SHAPES[shape])
    threads_before = torch.get_num_threads()
    try:
        probe = open_probe(TransformersProbeSettings(model=str(folder), threads=1))
        assert probe.context_limit == 32_768
        trace = Trace(**long_think.row())
        if folder == tiny_long_model:
            annotation = long_think_reference
        else:
            with Annotator(probe) as annotator:
                (annotation,) = annotator.annotate([trace])
        check_scored_whole(annotation, long_think)
        assert annotation.probe_model == folder.name
        # the packed pass equals a plain forward at both ends: v_0 (short) and v_K (past 16k positions)
        steps = [step.text for step in annotation.steps]
        sequence = PromptBuilder(probe.tokenizer, ScoringConfig().prompt).build(
            trace.question, steps, trace.reference_answer
        )
        assert sequence.probe_length > 16_000
        last = len(steps)
        plain = plain_answer_logprobs(folder, sequence, [0, last])
        assert [annotation.v0, annotation.steps[-1].v] == pytest.approx(plain, abs=1e-4)
    finally:
        torch.set_num_threads(threads_before)


# ----------------------------------------------------------------------------------------------------------
# the real SmolLM2 (8,192-token context) for values: the window policy past its context
# ----------------------------------------------------------------------------------------------------------


def smollm2_window_completions(tokenizer) -> tuple[Trace, Trace]:
    """A `<think>` trace just over SmolLM2's context (four short paragraphs, then one run of ~8k tokens
    without a newline) and the same trace without the run (it fits).

    One run as one step (min_step_chars 30,000 and max_step_chars 60,000 below: inside <think> a line of
    2 x min_step_chars or more is split at sentences) keeps this to a single 8,192-token window: on the
    shared 2-core test machine one SmolLM2 forward of 8k tokens takes about 45 s.
    """
    source = long_think_trace(tokenizer, 8_600, seed=5)
    body = source.completion[len(THINK_OPEN) : source.completion.index(THINK_CLOSE)].strip()
    paragraphs = body.split("\n\n")
    lead, run = paragraphs[:4], " ".join(paragraphs[4:])
    tail = source.completion[source.completion.index(THINK_CLOSE) :]
    question, answer = source.question, str(source.answer)

    def trace(trace_id: str, parts: list[str]) -> Trace:
        completion = THINK_OPEN + "\n" + "\n\n".join(parts) + "\n" + tail
        return Trace(id=trace_id, question=question, completion=completion, reference_answer=answer)

    return trace("over-context", [*lead, run]), trace("fits", lead)


@pytest.mark.model
def test_smollm2_window_scores_every_step_past_8k_and_its_exact_prefixes_match_a_trace_that_fits(
    packed_probe,
) -> None:
    config = ScoringConfig(context_limit="window", min_step_chars=30_000, max_step_chars=60_000)
    over, fits = smollm2_window_completions(packed_probe.tokenizer)
    annotator = Annotator(packed_probe)
    try:
        (plan,) = annotator.plan([over], config)
        assert plan.sequence.probe_length <= packed_probe.context_limit == 8_192  # type: ignore[union-attr]
        assert len(plan.windows) == 1 and plan.windows[0].probe_length == 8_192  # type: ignore[union-attr]
        (refused,) = annotator.plan([over])  # the default policy: over the context is an error
        assert isinstance(refused, TraceError) and "over the probe's context limit of 8192" in refused.problem
        long_annotation, fit_annotation = annotator.annotate([over, fits], config)
    finally:
        annotator.close()
    assert len(long_annotation.steps) == long_annotation.steps_total == 5
    assert long_annotation.windowed_steps == 1 and not long_annotation.truncated
    assert long_annotation.steps[-1].text.count("\n") == 0 and len(long_annotation.steps[-1].text) > 15_000
    long_v = [long_annotation.v0, *(step.v for step in long_annotation.steps)]
    fit_v = [fit_annotation.v0, *(step.v for step in fit_annotation.steps)]
    assert all(math.isfinite(v) for v in long_v)
    assert fit_annotation.windowed_steps == 0 and len(fit_v) == 5
    np.testing.assert_allclose(long_v[:5], fit_v, atol=1e-5, rtol=0)  # prefixes 0..4 fit: exact
    assert long_annotation.outcome == fit_annotation.outcome == 1
