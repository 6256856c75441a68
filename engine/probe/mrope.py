"""Qwen2-VL-shaped vision-language models, whose language model takes multimodal rotary positions (M-RoPE).

A position there has three components (temporal, height, width). The model's ``get_rope_index`` gives a
question's image tokens 3-D grid positions and every text token after them three equal components: its
linear index in the sequence plus a constant ``rope_delta`` (the grid's extent minus its token count). A
trace's images sit only in its shared question header, so every later position (the steps, and each
continuation copy whose positions continue from boundary k in the packed layouts) is its linear position
plus the header's delta. :class:`MultimodalPositions` computes each header's positions once, with the
model's own ``get_rope_index``, and lays a pass's linear positions out as the model's (3, B, L).

:class:`Qwen2VLImagesProcessor` prepares the images for these models with Pillow only: transformers'
``Qwen2VLProcessor`` insists on a video processor, which needs torchvision (a CUDA build from PyPI does not
load beside a CPU torch). It expands each image's placeholder as that processor does (one
``<|image_pad|>`` per merged patch of the image's grid) and runs the model's image processor with its PIL
backend.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mig_annotator.engine.prompt import ProbeSequence

if TYPE_CHECKING:
    import torch

# language models on M-RoPE whose image features replace the placeholder embeddings and nothing more
# (Qwen3-VL also feeds vision features into its first layers: not covered)
MROPE_MODEL_TYPES = frozenset({"qwen2_vl", "qwen2_5_vl"})


class Qwen2VLImagesProcessor:
    """The processor the prompt builder calls for a Qwen2-VL-shaped model folder (images, no video).

    ``image_prompt`` is what the header holds per image (the model's vision start, image pad and vision end
    tokens); ``__call__`` expands each ``image_token`` into one per merged patch of its image and returns
    the ids with the image processor's ``pixel_values`` and ``image_grid_thw``."""

    def __init__(self, tokenizer: Any, image_processor: Any, config: Any) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_token_id = int(config.image_token_id)
        self.image_token = tokenizer.convert_ids_to_tokens(self.image_token_id)
        start = tokenizer.convert_ids_to_tokens(int(config.vision_start_token_id))
        end = tokenizer.convert_ids_to_tokens(int(config.vision_end_token_id))
        self.image_prompt = f"{start}{self.image_token}{end}"

    @classmethod
    def from_folder(cls, folder: Path, config: Any) -> Qwen2VLImagesProcessor:
        from transformers import AutoImageProcessor, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        image_processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
        return cls(tokenizer, image_processor, config)

    def __call__(
        self,
        text: list[str],
        images: list[list[Any]],
        add_special_tokens: bool = False,
        return_tensors: str = "np",
    ) -> dict[str, Any]:
        """``text[i]`` holds one ``image_token`` per image of ``images[i]`` (PIL images), in order."""
        if return_tensors != "np":
            raise ValueError("Qwen2VLImagesProcessor returns numpy arrays only (return_tensors='np')")
        pictures = [picture for row in images for picture in row]
        prepared = self.image_processor(images=pictures, return_tensors="np")
        grid = np.asarray(prepared["image_grid_thw"], dtype=np.int64)
        merged = grid.prod(-1) // self.image_processor.merge_size**2
        placeholders = sum(row.count(self.image_token) for row in text)
        if placeholders != len(pictures):
            raise ValueError(f"the text holds {placeholders} {self.image_token} for {len(pictures)} images")
        counts = iter(int(n) for n in merged)
        pattern = re.escape(self.image_token)
        expanded = [re.sub(pattern, lambda _: self.image_token * next(counts), row) for row in text]
        ids = self.tokenizer(expanded, add_special_tokens=add_special_tokens)["input_ids"]
        return {
            "input_ids": np.asarray(ids, dtype=np.int64),
            "pixel_values": np.asarray(prepared["pixel_values"]),
            "image_grid_thw": grid,
        }


class MultimodalPositions:
    """The M-RoPE positions of one ``score()`` call's sequences: each image header's (3, H) positions (the
    model's ``get_rope_index``) and the delta every later text position carries."""

    def __init__(self, model: Any, sequences: Sequence[ProbeSequence]) -> None:
        import torch

        self._headers: dict[int, np.ndarray] = {}
        self._deltas: dict[int, int] = {}
        for index, sequence in enumerate(sequences):
            vision = sequence.vision
            if vision is None:
                continue
            header = torch.tensor([sequence.trace_ids[: sequence.boundaries[0]]], dtype=torch.long)
            positions, deltas = model.get_rope_index(
                input_ids=header,
                mm_token_type_ids=(header == vision.image_token_id).int(),
                image_grid_thw=torch.from_numpy(np.asarray(vision.pixel_inputs["image_grid_thw"])),
            )
            self._headers[index] = positions[:, 0].cpu().numpy().astype(np.int64)
            self._deltas[index] = int(deltas.reshape(-1)[0])

    def layout(self, positions: np.ndarray, sequences: Sequence[int], device: Any) -> torch.Tensor:
        """(3, B, L) position ids for rows of linear ``positions`` (B, L), row ``r`` of sequence
        ``sequences[r]``: its header's 3-D positions inside the header, linear plus its delta after it (a
        text sequence: linear in all three)."""
        import torch

        out = np.repeat(positions[None].astype(np.int64), 3, axis=0)
        for row, sequence in enumerate(sequences):
            header = self._headers.get(sequence)
            if header is None:
                continue
            linear = positions[row]
            inside = (linear >= 0) & (linear < header.shape[1])
            out[:, row] = linear + self._deltas[sequence]
            out[:, row, inside] = header[:, linear[inside]]
        return torch.from_numpy(out).to(device)
