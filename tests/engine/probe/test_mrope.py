"""M-RoPE positions and image preparation for Qwen2-VL-shaped probes (engine/probe/mrope.py), against the
tiny random-initialised Qwen2-VL model of tests/vision_support.py: the positions the probe lays out from
linear ones are those the model's own ``get_rope_index`` gives the whole probe sequence."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from mig_annotator.engine.probe.base import ProbeError
from mig_annotator.engine.probe.model_loading import load_vision_language_model
from mig_annotator.engine.probe.mrope import MultimodalPositions, Qwen2VLImagesProcessor
from mig_annotator.engine.prompt import ProbeSequence, PromptBuilder
from mig_annotator.schemas import Trace
from mig_annotator.schemas.config import PromptTemplate
from tests.vision_support import clevr_scene, tiny_vlm


@pytest.fixture(scope="module")
def qwen2_vl(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Qwen2VLImagesProcessor]:
    from transformers import AutoModelForImageTextToText

    folder: Path = tiny_vlm(tmp_path_factory.mktemp("tiny-qwen2-vl"), "qwen2_vl")
    model = AutoModelForImageTextToText.from_pretrained(folder)
    return model, Qwen2VLImagesProcessor.from_folder(folder, model.config)


def _sequence(processor: Qwen2VLImagesProcessor, scenes: list[bytes]) -> ProbeSequence:
    """A trace whose question holds ``scenes`` (in order) then its text, built into probe inputs."""
    content = [{"type": "image", "base64": base64.b64encode(scene).decode()} for scene in scenes]
    question = [{"role": "user", "content": [*content, {"type": "text", "text": "Which shape is red?"}]}]
    trace = Trace(id="t", question=question, steps=["A circle.", "It is red."], reference_answer="circle")
    builder = PromptBuilder(processor.tokenizer, PromptTemplate(), processor)
    return builder.build(trace.question, trace.steps, trace.reference_answer, trace.images)


def test_each_image_is_wrapped_in_vision_tokens_and_expanded_to_one_pad_per_merged_patch(qwen2_vl) -> None:
    _, processor = qwen2_vl
    sequence = _sequence(processor, [clevr_scene(0), clevr_scene(1, size=(64, 64))])
    ids = np.asarray(sequence.trace_ids)
    grid = sequence.vision.pixel_inputs["image_grid_thw"]
    assert grid.tolist() == [[1, 8, 12], [1, 8, 8]]  # 96x64 and 64x64 pixels in 8-pixel patches
    assert int((ids == processor.image_token_id).sum()) == 24 + 16  # 2x2 patches merged into one token
    start, end = processor.tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>"])
    assert int((ids == start).sum()) == int((ids == end).sum()) == 2
    pad_runs = np.flatnonzero(np.diff((ids == processor.image_token_id).astype(int)))
    assert ids[pad_runs[0]] == start and ids[pad_runs[1] + 1] == end  # the first image's pads in between


def test_positions_laid_out_from_linear_ones_are_the_models_own_for_every_prefix(qwen2_vl) -> None:
    import torch

    model, processor = qwen2_vl
    sequence = _sequence(processor, [clevr_scene(0), clevr_scene(1, size=(64, 64))])
    positions = MultimodalPositions(model.model, [sequence])
    grid = torch.from_numpy(sequence.vision.pixel_inputs["image_grid_thw"])
    for k in range(sequence.n_prefixes):
        ids = torch.tensor([sequence.probe_ids(k)])
        expected, _ = model.model.get_rope_index(
            ids, mm_token_type_ids=(ids == processor.image_token_id).int(), image_grid_thw=grid
        )
        laid_out = positions.layout(np.arange(ids.shape[1])[None], [0], "cpu")
        assert torch.equal(laid_out, expected)
    assert not torch.equal(expected[0], expected[1])  # the image tokens' height and width differ


def test_rows_of_a_text_sequence_keep_linear_positions_and_rows_after_an_image_header_carry_its_delta(
    qwen2_vl,
) -> None:
    model, processor = qwen2_vl
    image_sequence = _sequence(processor, [clevr_scene(0)])
    text_sequence = PromptBuilder(processor.tokenizer, PromptTemplate(), processor).build("Q?", ["A."], "B")
    positions = MultimodalPositions(model.model, [image_sequence, text_sequence])
    header = image_sequence.boundaries[0]
    linear = np.stack([np.arange(header, header + 4)] * 2)  # the first steps' tokens, and a text row's
    laid_out = positions.layout(linear, [0, 1], "cpu").numpy()
    # a 96x64 scene: 24 pads on a 4x6 grid take 6 positions, 18 fewer than their count
    assert (laid_out[:, 0] == linear[0] - 18).all()
    assert (laid_out[:, 1] == linear[1]).all()


def test_an_mrope_model_of_another_family_is_refused_when_loaded(tmp_path: Path) -> None:
    """Qwen3-VL also feeds vision features into its first layers (deepstack): not laid out, so refused."""
    import torch
    from transformers import AutoModelForImageTextToText, Qwen3VLConfig

    config = Qwen3VLConfig(
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 8,
            "num_position_embeddings": 16,
            "deepstack_visual_indexes": [1],
        },
        text_config={
            "vocab_size": 256,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "rope_parameters": {
                "rope_type": "default",
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
        },
    )
    AutoModelForImageTextToText.from_config(config).save_pretrained(tmp_path)
    with pytest.raises(ProbeError) as refused:
        load_vision_language_model(tmp_path, torch.float32)
    assert f"{tmp_path.name}: a qwen3_vl model places image tokens on multimodal rotary positions" in str(
        refused.value
    )
    assert "lays out only for qwen2_5_vl, qwen2_vl" in str(refused.value)
