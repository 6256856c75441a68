"""Vision-language probes: a question's images are encoded once per trace (once per GRPO group
that shares them) and sit in the shared header, so packed scoring equals naive scoring, and naive scoring
equals the model's own forward with its pixel inputs. Tiny random-initialised models of four families built
here from their configs (tests/vision_support.py: Idefics3, LLaVA, and Qwen2-VL / Qwen2.5-VL, whose language
model takes multimodal rotary positions), scenes drawn with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mig_annotator.engine.annotator import Annotator, TraceError
from mig_annotator.engine.probe.groups import group_sequences, grouped_minimal_tokens
from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.engine.probe.transformers_probe import TransformersProbe
from mig_annotator.engine.prompt import PromptBuilder
from mig_annotator.schemas import Trace
from mig_annotator.schemas.config import PromptTemplate
from tests.vision_support import FAMILIES, clevr_scene, image_question, tiny_vlm

QUESTION = "How many red shapes are in the scene?"
STEPS = ["I see a red circle on the left.", "There is also a red square.", "Nothing else is red."]


@pytest.fixture(scope="module", params=FAMILIES)
def vlm_folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_vlm(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param)


@pytest.fixture(scope="module")
def probes(vlm_folder: Path) -> dict[str, TransformersProbe]:
    """naive, packed and packed-single; ``chunked``: packed in passes of 16 positions (the header's image
    placeholders span several header-cache passes); ``ungrouped``: packed, each GRPO member on its own."""

    def probe(mode: str = "packed", **settings: object) -> TransformersProbe:
        return TransformersProbe(
            TransformersProbeSettings(model=str(vlm_folder), mode=mode, threads=1, **settings)
        )

    return {
        "naive": probe("naive"),
        "packed": probe(),
        "packed-single": probe("packed-single"),
        "chunked": probe(chunk_tokens=16),
        "ungrouped": probe(group_prefixes=False),
    }


def _group_traces() -> list[Trace]:
    """Two GRPO groups of two completions each, one scene per group (same size, other pixels)."""
    return [
        Trace(
            id=f"g{group}-{member}",
            question=image_question(QUESTION, clevr_scene(group)),
            steps=STEPS[: 2 + member],
            reference_answer="2",
            group_id=f"g{group}",
        )
        for group in (0, 1)
        for member in (0, 1)
    ]


def _values(probe: TransformersProbe, traces: list[Trace]) -> np.ndarray:
    with Annotator(probe) as annotator:
        annotations = annotator.annotate(traces)
    return np.concatenate([[a.v0, *(step.v for step in a.steps)] for a in annotations])


def test_packed_scoring_of_image_questions_equals_naive_to_1e4_in_fp32(probes) -> None:
    traces = [
        *_group_traces(),
        Trace(id="text", question="What is 2 + 3?", steps=STEPS, reference_answer="5"),
    ]
    naive = _values(probes["naive"], traces)
    for mode in ("packed", "packed-single", "chunked", "ungrouped"):
        assert np.max(np.abs(_values(probes[mode], traces) - naive)) < 1e-4, mode


def test_a_grpo_group_sharing_an_image_scores_the_same_grouped_and_ungrouped(probes) -> None:
    probe, ungrouped = probes["packed"], probes["ungrouped"]
    builder = PromptBuilder(probe.tokenizer, PromptTemplate(), probe.processor)
    sequences = [builder.build(t.question, t.steps, t.reference_answer, t.images) for t in _group_traces()]
    before = ungrouped.stats.images_encoded
    alone = ungrouped.score(sequences)
    assert ungrouped.stats.images_encoded - before == 2  # once per distinct image and call, grouped or not
    assert sum(r.tokens_forwarded for r in alone) == sum(
        s.minimal_tokens for s in sequences
    )  # once per trace
    for grouped, single in zip(probe.score(sequences), alone, strict=True):
        assert np.max(np.abs(grouped.token_logprobs - single.token_logprobs)) < 1e-4


def test_naive_scoring_equals_the_models_own_forward_with_its_pixel_inputs(probes) -> None:
    import torch

    probe = probes["naive"]
    builder = PromptBuilder(probe.tokenizer, PromptTemplate(), probe.processor)
    trace = _group_traces()[1]
    sequence = builder.build(trace.question, trace.steps, trace.reference_answer, trace.images)
    (result,) = probe.score([sequence])
    pixel_inputs = {name: torch.from_numpy(value) for name, value in sequence.vision.pixel_inputs.items()}
    for k in range(sequence.n_prefixes):
        ids = torch.tensor([sequence.probe_ids(k)])
        if (
            "image_grid_thw" in pixel_inputs
        ):  # Qwen2-VL-shaped: the model lays its M-RoPE positions out itself
            pixel_inputs["mm_token_type_ids"] = (ids == sequence.vision.image_token_id).int()
        with torch.inference_mode():
            logits = probe._model(input_ids=ids, **pixel_inputs).logits[0].double()
        answer = np.arange(len(ids[0]) - sequence.n_answer_tokens, len(ids[0]))
        expected = logits[answer - 1].log_softmax(-1)[np.arange(len(answer)), ids[0, answer]].numpy()
        assert np.max(np.abs(result.token_logprobs[k] - expected)) < 1e-4


def test_the_image_is_encoded_once_per_group_and_its_tokens_forwarded_once(probes) -> None:
    probe = probes["packed"]
    traces = _group_traces()
    builder = PromptBuilder(probe.tokenizer, PromptTemplate(), probe.processor)
    sequences = [builder.build(t.question, t.steps, t.reference_answer, t.images) for t in traces]
    images_before, embedded_before = probe.stats.images_encoded, probe.stats.image_tokens_embedded
    results = probe.score(sequences)
    n_placeholders = int((np.asarray(sequences[0].trace_ids) == sequences[0].vision.image_token_id).sum())
    assert n_placeholders > 0
    assert probe.stats.images_encoded - images_before == 2  # two groups, one scene each
    assert probe.stats.image_tokens_embedded - embedded_before == 2 * n_placeholders
    assert [len(g) for g in group_sequences(sequences)] == [2, 2]
    assert sum(r.tokens_forwarded for r in results) == grouped_minimal_tokens(sequences)  # headers once


def test_the_same_text_with_other_pixels_is_not_one_group_and_scores_differently(probes) -> None:
    probe = probes["packed"]
    builder = PromptBuilder(probe.tokenizer, PromptTemplate(), probe.processor)
    traces = [
        Trace(
            id=str(seed),
            question=image_question(QUESTION, clevr_scene(seed)),
            steps=STEPS,
            reference_answer="2",
        )
        for seed in (3, 4)
    ]
    sequences = [builder.build(t.question, t.steps, t.reference_answer, t.images) for t in traces]
    assert sequences[0].trace_ids == sequences[1].trace_ids  # the same placeholders for other pixels
    assert len(group_sequences(sequences)) == 2
    first, second = probe.score(sequences)
    assert np.max(np.abs(first.token_logprobs[0] - second.token_logprobs[0])) > 1e-6


def test_a_text_only_probe_refuses_a_question_with_images(packed_probe) -> None:
    trace = Trace(
        id="img", question=image_question(QUESTION, clevr_scene(0)), steps=STEPS, reference_answer="2"
    )
    with Annotator(packed_probe) as annotator, pytest.raises(TraceError) as caught:
        annotator.annotate([trace])
    assert caught.value.field == "question"
    assert "this probe reads text only, and the question holds images" in caught.value.problem
    assert (
        f"the transformers probe {packed_probe.model_id} is not a vision-language probe"
        in caught.value.problem
    )


def test_a_question_with_images_over_the_context_is_not_windowed_but_may_be_truncated(probes) -> None:
    from mig_annotator.schemas import ScoringConfig

    long_steps = ["I look at the scene.", "Then I count every shape again. " * 400]
    trace = Trace(
        id="long", question=image_question(QUESTION, clevr_scene(0)), steps=long_steps, reference_answer="2"
    )
    annotator = Annotator(probes["packed"])
    [refused] = annotator.plan([trace], ScoringConfig(context_limit="window"))
    assert isinstance(refused, TraceError) and refused.field == "steps"
    assert "a question with images cannot be windowed" in refused.problem
    [truncated] = annotator.plan([trace], ScoringConfig(context_limit="truncate_steps"))
    assert not isinstance(truncated, TraceError)
    assert truncated.truncated and truncated.sequence.n_prefixes == 2  # v_0 and the first step
    assert truncated.sequence.vision is not None
