"""A staged reload holds the new weights in memory: the swap copies them in and reads no file.

A trainer that saves its next checkpoint into the same folder (or a rotation that deletes it) between the
stage and the swap must not change what the swap puts in; and the swap, which runs while scoring waits,
must not be where the weights are read from disk.
"""

from __future__ import annotations

from pathlib import Path

from mig_annotator.engine.probe.reload import stage_reload
from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.engine.probe.transformers_probe import TransformersProbe
from tests.long_context import tiny_long_context_model


def test_the_swap_puts_in_the_staged_weights_even_if_the_files_change_after_the_stage(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    running = tiny_long_context_model(tmp_path / "running", 2048, seed=1)
    new = tiny_long_context_model(tmp_path / "new", 2048, seed=2)
    expected = {
        name: tensor.detach().clone()
        for name, tensor in AutoModelForCausalLM.from_pretrained(new).state_dict().items()
    }
    probe = TransformersProbe(TransformersProbeSettings(model=str(running), threads=1))
    staged = stage_reload(probe, new)
    for weights in new.glob("*.safetensors"):  # overwritten in place, as a save into the same folder
        with weights.open("r+b") as handle:
            size = handle.seek(0, 2)
            handle.seek(0)
            handle.write(b"\0" * size)
    staged.apply()
    got = probe._model.state_dict()
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    assert got["model.embed_tokens.weight"].abs().sum() > 0  # the file's zeros did not get in
    assert probe.model_path == new
