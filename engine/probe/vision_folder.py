"""Vision-language model folders: telling them apart and loading their Hugging Face processor.

Every backend that reads a question's images needs the model's processor: it expands each image token of the
question header into the image's placeholder run (:class:`engine.prompt.PromptBuilder`), which is
the token layout the probe scores. The transformers probe also feeds the processor's pixel inputs to the
model; the vLLM backends send vLLM the images and check that vLLM's expansion matches this layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mig_annotator.engine.probe.base import ProbeError


def is_vision_language_folder(folder: Path) -> bool:
    """Whether the model in ``folder`` is an image-text-to-text model (its config holds a vision config)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        return False
    config = json.loads(config_path.read_text(encoding="utf-8"))
    return isinstance(config, dict) and "vision_config" in config


def load_image_processor(folder: Path) -> Any:
    """The processor saved in ``folder``; refuses one that names no image token."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    if getattr(processor, "image_token", None) is None or getattr(processor, "image_token_id", None) is None:
        raise ProbeError(f"{folder.name}: the processor names no image token (image_token, image_token_id)")
    return processor
