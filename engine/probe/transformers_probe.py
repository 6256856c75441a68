"""The embedded probe: a Hugging Face causal LM run by PyTorch (CPU by default, CUDA when present).

:class:`TransformersProbe` holds the model (:mod:`engine.probe.model_loading`) and runs its passes: one
backbone pass over ids at given positions after a KV cache (:meth:`TransformersProbe.cached_forward`), the
additive masks, and the LM head over the hidden states that predict answer tokens alone, so the vocabulary
projection costs ``(K+1) * n_answer`` rows, not one per token. Three modes lay the work out and get the same
numbers:

* ``naive`` and ``packed-single`` (:mod:`engine.probe.simple_modes`): one pass per batch of rows, one row
  per prefix or one per trace with K+1 continuation copies under a 4-D mask;
* ``packed`` (default, :mod:`engine.probe.packed_run`): each trace forwarded once in bounded passes, a GRPO
  group's question prompt once (:mod:`engine.probe.header_cache`).

Every mode batches its rows by length, weighing padding against passes within ``forward_batch_tokens``
(:func:`engine.probe.packed_plan.length_batches`).

A vision-language model folder (an image-text-to-text model, its config holding a ``vision_config``) loads
with ``AutoModelForImageTextToText`` and its ``AutoProcessor``; a question's images are encoded once per
``score()`` call and sit in the shared header's embeddings (:mod:`engine.probe.image_features`). Qwen2-VL-
shaped models (Qwen2-VL, Qwen2.5-VL), whose language model takes multimodal rotary positions (M-RoPE), get
each image header's 3-D positions from the model's own ``get_rope_index`` and every later position as its
linear one plus the header's delta (:mod:`mig_annotator.engine.probe.mrope`), in every mode and pass; other
M-RoPE models are refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import numpy as np

from mig_annotator.engine.probe.base import LocalModelProbe, ProbeCancelled, ProbeError, ProbeResult
from mig_annotator.engine.probe.image_features import ImageFeatures, encode_images
from mig_annotator.engine.probe.model_loading import (
    load_causal_lm,
    load_vision_language_model,
    resolve_device,
)
from mig_annotator.engine.probe.mrope import MROPE_MODEL_TYPES, MultimodalPositions
from mig_annotator.engine.probe.packed_run import score_packed
from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.engine.probe.simple_modes import score_one_pass_modes
from mig_annotator.engine.probe.split_attention import split_attention_pass
from mig_annotator.engine.probe.vision_folder import is_vision_language_folder
from mig_annotator.engine.prompt import ProbeSequence, Tokenizer, VisionPrefix

if TYPE_CHECKING:
    import torch


class TransformersProbe(LocalModelProbe[TransformersProbeSettings]):
    """A :class:`engine.probe.base.Probe` over a local Hugging Face model folder."""

    backend = "transformers"

    def __init__(self, settings: TransformersProbeSettings) -> None:
        super().__init__(settings)
        import torch
        from transformers import AutoTokenizer

        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        device = torch.device(resolve_device(settings.device, torch))
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[settings.dtype]
        if is_vision_language_folder(self._model_path):
            model, processor = load_vision_language_model(self._model_path, dtype)
            self._use(model.to(device).eval(), processor.tokenizer, processor)
            return
        tokenizer = AutoTokenizer.from_pretrained(self._model_path)
        self._use(load_causal_lm(self._model_path, dtype).to(device).eval(), tokenizer)
        # a model of its own: chunks after a cache attend through split_attention (CPU SDPA only)
        self._split_chunks = device.type == "cpu" and self._model.config._attn_implementation == "sdpa"

    def _use(self, model: Any, tokenizer: Tokenizer, processor: Any | None = None) -> None:
        """Score with ``model`` (a causal LM, or with ``processor`` an image-text-to-text model, on the
        device and in the dtype of its parameters) and ``tokenizer``: the state a loaded probe and a live
        model's probe share."""
        import torch

        parameter = next(model.parameters())
        self._torch = torch
        self._device = parameter.device
        self._dtype = parameter.dtype
        self._tokenizer = tokenizer
        self._model = model
        self._processor = processor
        self._backbone = model.get_decoder() if processor is not None else model.base_model
        self._embed_tokens = self._backbone.get_input_embeddings()
        self._lm_head = model.get_output_embeddings()
        self._image_features: ImageFeatures | None = None
        self._uses_mrope = processor is not None and model.config.model_type in MROPE_MODEL_TYPES
        self._mrope_positions: MultimodalPositions | None = None
        self._split_chunks = False
        text_config = model.config.get_text_config()
        self._context_limit = int(getattr(text_config, "max_position_embeddings", 2048))

    @property
    def processor(self) -> Any | None:
        return self._processor

    @property
    def device(self) -> torch.device:
        """The device the model's parameters (and every pass's tensors) are on."""
        return self._device

    def _no_grad(self) -> AbstractContextManager[object]:
        """The autograd context the forward passes run under (a live model's probe uses ``no_grad``)."""
        return self._torch.inference_mode()

    @property
    def shares_group_prefixes(self) -> bool:
        """Only ``packed`` groups (``naive`` and ``packed-single`` batch every row on its own)."""
        return self._settings.mode == "packed" and self._settings.group_prefixes

    def _score_sequences(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        try:
            if any(sequence.vision is not None for sequence in sequences):
                self._image_features = ImageFeatures(sequences, self._embed_tokens, self._encode_images)
                if self._uses_mrope:
                    self._mrope_positions = MultimodalPositions(self._model.model, sequences)
            return self._score_in_mode(sequences)
        finally:
            self._image_features = None
            self._mrope_positions = None

    def _score_in_mode(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        try:
            with self._no_grad():
                if self._settings.mode == "packed":
                    return score_packed(self, sequences)
                return score_one_pass_modes(self, sequences)
        except ProbeCancelled:
            raise
        except RuntimeError as error:  # OOM, device faults: the caller fails this batch only
            raise ProbeError(f"probe forward failed: {error}") from error

    def _encode_images(self, vision: VisionPrefix) -> torch.Tensor:
        """The features of ``vision``'s images by the model's vision encoder, counted in the stats."""
        self.check_cancelled()
        features = encode_images(self._model, vision, self._device, self._dtype)
        with self._stats_lock:
            self._stats.images_encoded += vision.n_images
            self._stats.image_tokens_embedded += int(features.shape[0])
        return features

    def pass_chunk(self, rows: int, columns: int) -> int:
        """New positions per row in one pass over ``rows`` rows whose cache reaches ``columns`` positions:
        ``chunk_tokens`` when set, else as many as keep the pass's attention mask (rows x new positions x
        columns, 4 bytes each) within ``mask_budget_mb``."""
        if self._settings.chunk_tokens is not None:
            return self._settings.chunk_tokens
        elements = self._settings.mask_budget_mb * 2**20 // 4
        return max(16, elements // (rows * max(columns, 1)))

    def cached_forward(
        self,
        ids: np.ndarray,
        positions: np.ndarray,
        mask: torch.Tensor | None,
        cache: object | None,
        sequences: Sequence[int],
        *,
        use_cache: bool = True,
    ) -> tuple[torch.Tensor, object]:
        """One backbone pass over ``ids`` after ``cache`` (None: none yet); ``mask`` None: causal attention
        over the cache and the new positions (right padding is then harmless). Row ``r`` belongs to
        sequence ``sequences[r]`` (its images, if any: :meth:`model_inputs`). Without ``use_cache`` the
        pass keeps no cache (None is returned for it)."""
        self.check_cancelled()
        split = mask is None and cache is not None and self._split_chunks
        with split_attention_pass(self._model.config) if split else contextlib.nullcontext():
            out = self._backbone(
                **self.model_inputs(np.ascontiguousarray(ids), positions, sequences),
                position_ids=self.position_ids(positions, sequences),
                attention_mask=mask,
                past_key_values=cache,
                use_cache=use_cache,
            )
        return out.last_hidden_state, out.past_key_values if use_cache else None

    def additive_mask(self, visible: torch.Tensor) -> torch.Tensor:
        """(B, 1, Q, KV) additive mask from a (B, Q, KV) boolean: 0 where visible, else the dtype's min."""
        mask = self._torch.zeros(visible.shape, dtype=self._dtype, device=self._device)
        mask.masked_fill_(~visible, self._torch.finfo(self._dtype).min)
        return mask[:, None]

    def log_probs(self, hidden: torch.Tensor, targets: np.ndarray) -> np.ndarray:
        """Log-probs of ``targets`` under the LM head applied to ``hidden`` (n, H) only."""
        torch = self._torch
        logits = self._lm_head(hidden).float()
        target_ids = torch.from_numpy(targets).to(self._device)
        return logits.log_softmax(dim=-1).gather(1, target_ids[:, None])[:, 0].double().cpu().numpy()

    def plain_forward(self, token_rows: Sequence[Sequence[int]]) -> None:
        """A plain causal forward of the backbone over equal-length rows (the throughput ceiling)."""
        torch = self._torch
        with torch.inference_mode():
            self._backbone(input_ids=torch.tensor(token_rows, device=self._device), use_cache=False)

    def position_ids(self, positions: np.ndarray, sequences: Sequence[int]) -> torch.Tensor:
        """The language model's position ids for rows at linear trace ``positions`` (B, L): those, or for
        an M-RoPE model scoring images, their (3, B, L) layout (:class:`MultimodalPositions`)."""
        if self._mrope_positions is not None:
            return self._mrope_positions.layout(positions, sequences, self._device)
        return self._torch.from_numpy(np.ascontiguousarray(positions)).to(self._device)

    def model_inputs(
        self, ids: np.ndarray, positions: np.ndarray, sequences: Sequence[int]
    ) -> dict[str, Any]:
        """The language model's token input for rows of ``ids`` (row ``r`` belongs to sequence
        ``sequences[r]``, its tokens at trace positions ``positions[r]``): ``input_ids``, or, when the
        call holds images, ``inputs_embeds`` whose image placeholders hold the image features."""
        ids_tensor = self._torch.from_numpy(ids).to(self._device)
        if self._image_features is None:
            return {"input_ids": ids_tensor}
        return {"inputs_embeds": self._image_features.embed(ids_tensor, ids, positions, sequences)}
