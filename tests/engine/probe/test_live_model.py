"""The probe around a live model object: the engine's numbers on the same weights, no grads, modes kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mig_annotator.engine.annotator import Annotator
from mig_annotator.engine.probe.live_model import LiveModelProbe
from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.engine.probe.transformers_probe import TransformersProbe
from mig_annotator.schemas import Trace, TraceAnnotation
from tests.long_context import tiny_long_context_model
from tests.service.support import small_traces


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_long_context_model(tmp_path_factory.mktemp("tiny-policy"), 2048, seed=7)


def _load(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32", attn_implementation="sdpa")
    return model, AutoTokenizer.from_pretrained(folder)


def _max_difference(first: list[TraceAnnotation], second: list[TraceAnnotation]) -> float:
    worst = 0.0
    for a, b in zip(first, second, strict=True):
        left = np.array([a.v0, *(step.v for step in a.steps)])
        right = np.array([b.v0, *(step.v for step in b.steps)])
        assert left.shape == right.shape
        worst = max(worst, float(np.abs(left - right).max()))
    return worst


def _annotate(probe, traces: list[Trace]) -> list[TraceAnnotation]:
    with Annotator(probe) as annotator:
        return annotator.annotate(traces)


def test_live_probe_equals_the_engine_on_the_same_weights_saved_to_a_folder(tiny_folder: Path) -> None:
    traces = small_traces(6)
    model, tokenizer = _load(tiny_folder)
    model.train()
    live = _annotate(LiveModelProbe(model, tokenizer), traces)
    saved = _annotate(TransformersProbe(TransformersProbeSettings(model=str(tiny_folder))), traces)
    assert _max_difference(live, saved) <= 1e-5
    assert [a.process_reward for a in live] == pytest.approx([a.process_reward for a in saved], abs=1e-5)


def test_scoring_restores_each_modules_mode_and_leaves_no_gradients(tiny_folder: Path) -> None:
    import torch

    model, tokenizer = _load(tiny_folder)
    model.train()
    model.model.layers[0].eval()  # one module in its own mode: it must stay so, not become train
    modes_before = {name: module.training for name, module in model.named_modules()}
    probe = LiveModelProbe(model, tokenizer)
    seen_training: list[bool] = []
    hook = model.model.register_forward_hook(lambda module, *_: seen_training.append(module.training))
    _annotate(probe, small_traces(2))
    hook.remove()
    assert seen_training and not any(seen_training)  # scored in eval mode
    assert {name: module.training for name, module in model.named_modules()} == modes_before
    assert all(parameter.grad is None for parameter in model.parameters())
    # the model trains on afterwards: a forward + backward right after scoring gets gradients
    ids = torch.tensor([tokenizer.encode("1 + 1 = 2")])
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(parameter.grad is not None for parameter in model.parameters() if parameter.requires_grad)


def test_the_identity_follows_the_weights_and_names_a_given_version(tiny_folder: Path) -> None:
    import torch

    model, tokenizer = _load(tiny_folder)
    probe = LiveModelProbe(model, tokenizer)
    (first,) = _annotate(probe, small_traces(1))
    assert first.probe_identity == probe.identity().fingerprint
    assert first.probe_identity.startswith("transformers:policy:float32:")
    assert probe.identity() == LiveModelProbe(_load(tiny_folder)[0], tokenizer).identity()  # same bytes
    with torch.no_grad():  # an optimizer step, in place
        model.model.norm.weight.add_(0.01)
    (second,) = _annotate(probe, small_traces(1))
    assert second.probe_identity != first.probe_identity
    assert second.v0 != first.v0  # it scores the weights as they are now: no copy
    probe.set_version(12)
    (third,) = _annotate(probe, small_traces(1))
    assert third.probe_model == "policy@12"
    assert third.probe_identity.startswith("transformers:policy@12:float32:")


@pytest.mark.model
def test_live_smollm2_equals_the_engine_loaded_from_its_folder(
    default_model_path: Path, packed_probe: TransformersProbe
) -> None:
    traces = small_traces(4)
    model, tokenizer = _load(default_model_path)
    model.train()
    live = _annotate(LiveModelProbe(model, tokenizer, name="smollm2"), traces)
    assert _max_difference(live, _annotate(packed_probe, traces)) <= 1e-5
    assert model.training
