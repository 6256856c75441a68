"""Loading a new checkpoint folder into a running transformers probe, in place.

:func:`stage_reload` does the slow, checked part while the probe keeps scoring: the folder must hold a
``config.json`` and weights, the same tokenizer files (by content) as the folder the probe runs, the same
architecture (every config entry but bookkeeping ones) and the same parameter names and shapes; otherwise
:class:`ReloadRefused` names what differs and the probe is untouched. :meth:`StagedWeights.apply` is the
quick part (the caller runs it between probe calls): it copies the new tensors into the loaded model's own
tensors and makes the probe's identity the new folder's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mig_annotator.engine.probe.checkpoint_files import (
    CheckpointRefused,
    check_folder_shape,
    check_same_tensors,
    folder_shapes,
)
from mig_annotator.engine.probe.identity import folder_digest, local_model_identity
from mig_annotator.engine.probe.model_loading import load_causal_lm
from mig_annotator.engine.probe.transformers_probe import TransformersProbe
from mig_annotator.schemas.probe import ProbeIdentity

# config entries that say how a folder was written, not what the model computes
_BOOKKEEPING = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures", "use_cache"}


class ReloadRefused(ValueError):
    """The folder cannot replace the probe's weights; the message says what is missing or differs."""


def check_checkpoint_folder(folder: Path | str) -> Path:
    """The folder, once shaped like a checkpoint (``config.json`` and weights, regular files, small files
    size-bounded): run before anything in it is read or hashed. Else :class:`ReloadRefused`."""
    path = Path(folder).expanduser()
    try:
        check_folder_shape(path)
    except CheckpointRefused as error:
        raise ReloadRefused(str(error)) from error
    return path


@dataclass
class StagedWeights:
    """A checked checkpoint, loaded next to the running one, ready to be copied in."""

    probe: TransformersProbe
    folder: Path
    state: dict[str, Any]
    identity: ProbeIdentity

    def apply(self) -> ProbeIdentity:
        """Copy the weights into the probe's model in place; the probe then identifies as the new folder."""
        torch = self.probe._torch
        target = self.probe._model.state_dict()
        with torch.no_grad():
            for name, tensor in target.items():
                tensor.copy_(self.state[name])
        self.probe._model_path = self.folder
        self.probe._identity = self.identity
        self.state = {}
        return self.identity


def stage_reload(probe: TransformersProbe, folder: Path | str) -> StagedWeights:
    """Check ``folder`` against the running probe and load its weights (slow; the probe is untouched)."""
    from transformers import AutoConfig

    folder = check_checkpoint_folder(folder)
    try:
        tokenizer = folder_digest(folder, tokenizer_only=True)
    except FileNotFoundError:
        raise ReloadRefused(f"{folder}: no tokenizer files") from None
    if tokenizer != folder_digest(probe.model_path, tokenizer_only=True):
        _check_same_tokenization(probe, folder)
    running = probe._model.config.to_dict()
    try:
        new_config = AutoConfig.from_pretrained(folder).to_dict()
    except Exception as error:  # transformers raises what its parsers raise
        raise ReloadRefused(f"{folder}: config.json cannot be read: {error}") from error
    differences = [
        f"{key}: {new_config.get(key)!r} (running: {running.get(key)!r})"
        for key in sorted(set(running) | set(new_config))
        if key not in _BOOKKEEPING and running.get(key) != new_config.get(key)
    ]
    if differences:
        raise ReloadRefused(
            f"{folder}: another architecture; config.json differs in " + "; ".join(differences)
        )
    _check_tensor_files(probe, folder)
    try:
        loaded = load_causal_lm(folder, probe._dtype)
    except Exception as error:  # safetensors and torch raise their own errors on a corrupt file
        raise ReloadRefused(f"{folder}: the weights cannot be loaded: {error}") from error
    # read into memory here, while the probe still serves: the loaded tensors may map the files, and the
    # swap (scoring waits for it) must only copy, and copy what was checked even if the files change
    state = {name: tensor.detach().clone() for name, tensor in loaded.state_dict().items()}
    del loaded
    target = probe._model.state_dict()
    mismatched = [
        name
        for name, tensor in target.items()
        if name not in state or tuple(state[name].shape) != tuple(tensor.shape)
    ]
    if mismatched:
        raise ReloadRefused(f"{folder}: parameters missing or of another shape: {', '.join(mismatched[:5])}")
    identity = local_model_identity(folder, "transformers", probe.settings.dtype)
    return StagedWeights(probe, folder, state, identity)


def _check_tensor_files(probe: TransformersProbe, folder: Path) -> None:
    """The folder's safetensors headers hold exactly the tensors (names and shapes) of the running
    checkpoint's files, or of the model's state dict when those are not safetensors."""
    try:
        got = folder_shapes(check_folder_shape(folder))
        if got is None:
            return  # pytorch_model*.bin only: the loader refuses pickles, and the loaded state is compared
        running = probe.model_path
        expected = folder_shapes(check_folder_shape(running)) if running.is_dir() else None
        if expected is None:
            expected = {name: tuple(t.shape) for name, t in probe._model.state_dict().items()}
        check_same_tensors(folder, got, expected)
    except CheckpointRefused as error:
        raise ReloadRefused(str(error)) from error


def _check_same_tokenization(probe: TransformersProbe, folder: Path) -> None:
    """Tokenizer files that differ byte for byte (a trainer's save writes its padding side, length limit
    and formatting) are fine when the vocabulary, the special tokens and the chat template are the same:
    those decide the probe's token ids. Otherwise :class:`ReloadRefused` names what differs."""
    from transformers import AutoTokenizer

    from mig_annotator.engine.probe.live_model import vocabulary_digest

    try:
        candidate = AutoTokenizer.from_pretrained(folder)
    except Exception as error:  # the tokenizers library raises its own errors on a corrupt tokenizer.json
        files = ", ".join(sorted(p.name for p in folder.iterdir() if p.name.startswith("tokenizer")))
        raise ReloadRefused(f"{folder}: the tokenizer files ({files}) cannot be read: {error}") from error
    running = probe._tokenizer
    name = probe.model_path.name
    if vocabulary_digest(candidate) != vocabulary_digest(running):
        raise ReloadRefused(f"{folder}: the tokenizer's vocabulary or special tokens differ from {name}'s")
    if getattr(candidate, "chat_template", None) != getattr(running, "chat_template", None):
        raise ReloadRefused(f"{folder}: the tokenizer's chat template differs from {name}'s")
