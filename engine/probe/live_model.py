"""A probe around a model object that is already loaded: the policy being trained, or its reference model.

:class:`LiveModelProbe` scores with the given Hugging Face causal LM and tokenizer through the transformers
probe's scoring paths (packed by default), with no path, no load and no copy of the weights. Each call runs
under ``torch.no_grad()`` with every module in eval mode (dropout off) and puts each module's train/eval mode
back afterwards, so a trainer can score between its optimizer steps. ``no_grad`` rather than
``inference_mode``: tensors a model caches during the call stay usable by the next training forward.

Its identity names the weights it scored with. With ``version`` (e.g. the trainer's global step, also
settable later with :meth:`LiveModelProbe.set_version`) the identity's model is ``NAME@VERSION`` and its
digest is the sha256 of that text (cheap, the caller vouches for it). Without one, the digest is the sha256
of the weights' bytes (every state-dict tensor, by name) and the tokenizer's vocabulary, recomputed only when
a parameter was changed in place (torch's per-tensor version counters moved), i.e. after an optimizer step.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from mig_annotator.engine.probe.base import Probe, ProbeResult
from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.engine.probe.transformers_probe import TransformersProbe
from mig_annotator.engine.prompt import ProbeSequence
from mig_annotator.schemas.probe import ProbeIdentity, ProbeMode

_SETTINGS_DTYPES = ("float32", "bfloat16")


class LiveModelProbe(TransformersProbe):
    """The transformers probe over ``model`` and ``tokenizer`` as they are (no path, no load, no copy)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "policy",
        version: str | int | None = None,
        mode: ProbeMode = "packed",
        forward_batch_tokens: int = 4096,
        chunk_tokens: int | None = None,
        mask_budget_mb: int = 128,
        group_prefixes: bool = True,
    ) -> None:
        parameter = next(model.parameters())
        dtype = _dtype_name(parameter.dtype)
        settings = TransformersProbeSettings(
            model=None,
            mode=mode,
            dtype=dtype if dtype in _SETTINGS_DTYPES else "float32",  # the settings' dtype loads nothing here
            device=str(parameter.device),
            forward_batch_tokens=forward_batch_tokens,
            chunk_tokens=chunk_tokens,
            mask_budget_mb=mask_budget_mb,
            group_prefixes=group_prefixes,
        )
        Probe.__init__(self, settings)  # not TransformersProbe's: that loads a folder, this takes the model
        self._name = name
        self._model_path = Path(name)
        self._version = None if version is None else str(version)
        self._weights_key: tuple[tuple[int, int], ...] | None = None
        self._tokenizer_digest = vocabulary_digest(tokenizer)
        self._use(model, tokenizer)

    @property
    def model(self) -> Any:
        """The model it scores with (the caller's object)."""
        return self._model

    @property
    def model_id(self) -> str:
        return self._name if self._version is None else f"{self._name}@{self._version}"

    def set_version(self, version: str | int | None) -> None:
        """Name the weights from now on (e.g. the trainer's step); None: identify them by their bytes."""
        self._version = None if version is None else str(version)
        self._identity = None

    def identity(self) -> ProbeIdentity:
        """The identity of the weights as they are now (see the module docstring)."""
        if self._version is None:
            key = self._current_weights_key()
            if key != self._weights_key:
                self._identity, self._weights_key = None, key
        return super().identity()

    def _compute_identity(self) -> ProbeIdentity:
        if self._version is not None:
            digest = hashlib.sha256(f"version\0{self.model_id}".encode()).hexdigest()
        else:
            digest = _weights_digest(self._model, self._tokenizer_digest)
        return ProbeIdentity(
            model=self.model_id, digest=digest, backend="transformers", dtype=_dtype_name(self._dtype)
        )

    def _score_sequences(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        with _eval_mode(self._model):
            return super()._score_sequences(sequences)

    def _no_grad(self) -> AbstractContextManager[object]:
        return self._torch.no_grad()

    def _current_weights_key(self) -> tuple[tuple[int, int], ...]:
        """Where each parameter and buffer lives and how often it was changed in place (cheap)."""
        tensors = list(self._model.parameters()) + list(self._model.buffers())
        return tuple((tensor.data_ptr(), tensor._version) for tensor in tensors)


def _dtype_name(dtype: Any) -> str:
    """``torch.bfloat16`` -> ``bfloat16``."""
    return str(dtype).removeprefix("torch.")


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Every module in eval mode for the block, then each module's own mode back (not one mode for all)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _weights_digest(model: Any, tokenizer_digest: str) -> str:
    import torch

    combined = hashlib.sha256(f"tokenizer\0{tokenizer_digest}\0".encode())
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().contiguous().cpu()
        combined.update(f"{name}\0{data.dtype}\0{tuple(data.shape)}\0".encode())
        combined.update(data.view(-1).view(torch.uint8).numpy())
    return combined.hexdigest()


def vocabulary_digest(tokenizer: Any) -> str:
    """sha256 of the tokenizer's vocabulary and special tokens (what decides the token ids)."""
    vocabulary = sorted(tokenizer.get_vocab().items())
    special = getattr(tokenizer, "all_special_tokens", [])
    text = json.dumps([vocabulary, list(special)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
