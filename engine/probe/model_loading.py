"""Loading the transformers probe's model from a local folder: a causal LM, or an image-text-to-text model
with its processor, with SDPA attention and without transformers' progress bar."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mig_annotator.engine.probe.base import ProbeError
from mig_annotator.engine.probe.mrope import MROPE_MODEL_TYPES, Qwen2VLImagesProcessor
from mig_annotator.engine.probe.vision_folder import load_image_processor


def resolve_device(device: str, torch: Any) -> str:
    """The device setting as torch names it: ``auto`` is CUDA when present, else CPU."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_causal_lm(folder: Path, dtype: Any) -> Any:
    """The causal LM in ``folder`` with SDPA attention, loaded without transformers' progress bar (see
    :func:`quiet_progress_bars`): the probe at start and a checkpoint reload load through here."""
    from transformers import AutoModelForCausalLM

    with quiet_progress_bars():
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa")


def load_vision_language_model(folder: Path, dtype: Any) -> tuple[Any, Any]:
    """The image-text-to-text model in ``folder`` with SDPA attention, and its processor (for a
    Qwen2-VL-shaped model, :class:`Qwen2VLImagesProcessor`). Refuses any other model whose language model
    places image tokens on multimodal rotary positions."""
    from transformers import AutoModelForImageTextToText

    with quiet_progress_bars():
        model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa")
    model_type = model.config.model_type
    if model_type in MROPE_MODEL_TYPES:
        return model, Qwen2VLImagesProcessor.from_folder(folder, model.config)
    if hasattr(model.model, "get_rope_index"):
        raise ProbeError(
            f"{folder.name}: a {model_type} model places image tokens on multimodal rotary positions "
            "(M-RoPE), which the transformers probe lays out only for "
            f"{', '.join(sorted(MROPE_MODEL_TYPES))}; also supported: vision-language models whose language "
            "model uses 1-D positions (LLaVA, Idefics3/SmolVLM-shaped)"
        )
    return model, load_image_processor(folder)


@contextlib.contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """No "Loading weights" bar on every command, unless transformers is asked to talk
    (``TRANSFORMERS_VERBOSITY=info`` or lower)."""
    from transformers.utils import logging as hf_logging

    if hf_logging.get_verbosity() <= hf_logging.INFO or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
