"""A question's images in the transformers probe: their features, and the token embeddings that hold them.

A question's images are placeholder tokens in the shared header (:class:`engine.prompt.VisionPrefix`). The
vision encoder runs once per distinct image set and ``score()`` call (:class:`ImageFeatures`, by the images'
bytes, so a GRPO group's shared image is encoded once), and every pass feeds the language model embeddings in
which those placeholders hold the image features. The packed layouts are unchanged, so an image is forwarded
once per trace, and once per GRPO group whose members share it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mig_annotator.engine.prompt import ProbeSequence, VisionPrefix

if TYPE_CHECKING:
    import torch


class ImageFeatures:
    """The image features of one ``score()`` call's sequences, each image set encoded on first use by
    ``encode`` and kept by its bytes' key, and the token embeddings (``embed_tokens``) that hold them."""

    def __init__(
        self,
        sequences: Sequence[ProbeSequence],
        embed_tokens: Callable[[torch.Tensor], torch.Tensor],
        encode: Callable[[VisionPrefix], torch.Tensor],
    ) -> None:
        self._embed_tokens = embed_tokens
        self._encode = encode
        self._visions = [sequence.vision for sequence in sequences]
        self._features: dict[str, torch.Tensor] = {}
        self._ranks = {  # per sequence with images: each header position's feature row, -1 for text
            index: placeholder_ranks(sequence, sequence.vision)
            for index, sequence in enumerate(sequences)
            if sequence.vision is not None
        }

    def embed(
        self, ids_tensor: torch.Tensor, ids: np.ndarray, positions: np.ndarray, sequences: Sequence[int]
    ) -> torch.Tensor:
        """Token embeddings of ``ids``; in rows of a sequence with images, its placeholders at header
        positions hold the features in order (positions index the sequence's own tokens)."""
        import torch

        embeds = self._embed_tokens(ids_tensor)
        for row, sequence in enumerate(sequences):
            vision = self._visions[sequence]
            if vision is None:
                continue
            columns, feature_rows = self._placeholders(sequence, ids[row], positions[row], vision)
            if not len(columns):
                continue
            features = self._encoded(vision)
            embeds[row, torch.from_numpy(columns).to(embeds.device)] = features[
                torch.from_numpy(feature_rows).to(embeds.device)
            ].to(embeds.dtype)
        return embeds

    def _placeholders(
        self, sequence: int, ids: np.ndarray, positions: np.ndarray, vision: VisionPrefix
    ) -> tuple[np.ndarray, np.ndarray]:
        """The columns of one row that hold the sequence's image placeholders, and their feature rows."""
        rank = self._ranks[sequence]
        inside = (positions >= 0) & (positions < len(rank))
        columns = np.nonzero(inside & (ids == vision.image_token_id))[0]
        columns = columns[rank[positions[columns]] >= 0]
        return columns, rank[positions[columns]]

    def _encoded(self, vision: VisionPrefix) -> torch.Tensor:
        """(n_placeholders, hidden) features of the vision's images, encoded on first use."""
        features = self._features.get(vision.key)
        if features is None:
            features = self._features[vision.key] = self._encode(vision)
        return features


def encode_images(model: Any, vision: VisionPrefix, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n_placeholders, hidden) features of ``vision``'s images by the vision-language ``model``'s encoder
    (its pixel inputs on ``device``, the pixel values in ``dtype``), one row per placeholder in order."""
    import torch

    pixel_inputs = {
        name: torch.from_numpy(np.asarray(value)).to(device) for name, value in vision.pixel_inputs.items()
    }
    if "pixel_values" in pixel_inputs:
        pixel_inputs["pixel_values"] = pixel_inputs["pixel_values"].to(dtype)
    output = model.model.get_image_features(**pixel_inputs)
    pooled = getattr(output, "pooler_output", output)
    if isinstance(pooled, list | tuple):
        pooled = torch.cat([item.reshape(-1, item.shape[-1]) for item in pooled])
    return pooled.reshape(-1, pooled.shape[-1])


def placeholder_ranks(sequence: ProbeSequence, vision: VisionPrefix) -> np.ndarray:
    """For each header position: which image feature it holds (in order), -1 for a text token."""
    header = np.asarray(sequence.trace_ids[: sequence.boundaries[0]], dtype=np.int64)
    is_image = header == vision.image_token_id
    rank = np.full(len(header), -1, dtype=np.int64)
    rank[is_image] = np.arange(int(is_image.sum()))
    return rank
