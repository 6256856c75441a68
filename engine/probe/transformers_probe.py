"""The embedded probe: a Hugging Face causal LM run by PyTorch (CPU by default, CUDA when present).

Three ways to get the same numbers:

* ``naive``: one sequence per prefix, ``prefix_k + continuation``; the baseline.
* ``packed-single``: one sequence per trace, ``trace + (K+1) x continuation``, in ONE forward pass.
  Copy k of the continuation sees the trace only up to boundary k and itself (a 4-D attention mask)
  and its position ids continue from boundary k, so each copy computes exactly what ``naive``
  computes for prefix k while the trace is forwarded once.
* ``packed`` (default): the same tokens in separate passes (:class:`_PackedRun`, laid out by
  :mod:`mig_annotator.engine.probe.packed_plan`). Traces that share their question prompt and answer (a GRPO
  group, :mod:`mig_annotator.engine.probe.groups`) forward that prompt once (:class:`_HeaderCache`) and score
  prefix 0 once; every member row is batched with rows of about its own length (padding weighed against
  passes, :func:`packed_plan.length_batches`) and starts from its prompt's cache. A batch of rows at most
  :data:`FUSED_WIDTH` wide runs its branches and copies in one pass under one 4-D mask (a pass costs
  about as much as 16-20 positions whatever its size). Wider rows run in stages: the trace passes run
  causal attention and keep the KV cache (a chunk after a cache attends through
  :mod:`mig_annotator.engine.probe.split_attention`, building no mask); the probe passes forward the
  continuation copies against that cache under the 4-D mask restricted to the copies. A pass takes at most
  :meth:`TransformersProbe.pass_chunk` new positions per row (``chunk_tokens``, or what keeps its mask
  within ``mask_budget_mb``), so the mask and the activations stay bounded on 16k-token traces; the KV
  cache grows with the batch's tokens (``forward_batch_tokens``).

All modes gather the hidden states that predict answer tokens and apply the LM head to those alone,
so the vocabulary projection costs ``(K+1) * n_answer`` rows, not one per token.

A vision-language model folder (an image-text-to-text model, its config holding a ``vision_config``) loads
with ``AutoModelForImageTextToText`` and its ``AutoProcessor``: a question's images are placeholder tokens in
the shared header (:class:`engine.prompt.VisionPrefix`), the vision encoder runs once per distinct
image set and ``score()`` call (:class:`_ImageFeatures`), and every pass feeds the language model embeddings
in which those placeholders hold the image features. The packed layouts are unchanged, so the image is
forwarded once per trace, and once per GRPO group whose members share it. Qwen2-VL-shaped models (Qwen2-VL,
Qwen2.5-VL), whose language model takes multimodal rotary positions (M-RoPE), get each image header's 3-D
positions from the model's own ``get_rope_index`` and every later position as its linear one plus the
header's delta (:mod:`mig_annotator.engine.probe.mrope`), in every mode and pass; other M-RoPE models are
refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mig_annotator.engine.probe.base import LocalModelProbe, ProbeCancelled, ProbeError, ProbeResult
from mig_annotator.engine.probe.groups import group_sequences
from mig_annotator.engine.probe.mrope import MROPE_MODEL_TYPES, MultimodalPositions, Qwen2VLImagesProcessor
from mig_annotator.engine.probe.packed_plan import (
    ContinuationCopy,
    MemberRow,
    Wave,
    batch_rows,
    forwarded_tokens,
    length_batches,
    plan_units,
    plan_waves,
    row_width,
)
from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.engine.probe.split_attention import split_attention_pass
from mig_annotator.engine.probe.vision_folder import is_vision_language_folder, load_image_processor
from mig_annotator.engine.prompt import ProbeSequence, Tokenizer, VisionPrefix

if TYPE_CHECKING:
    import torch

MAX_PADDING = 0.05  # share of computed positions a batch may spend on padding
FUSED_WIDTH = 384
"""A batch's branches and copies run in one pass when its rows are at most this wide. The fused pass
attends under a 4-D mask, which the CPU kernel computes in full, where a separate branch pass runs the
causal kernel and skips the blocks above the diagonal: that half of a branch of ``w`` positions costs about
``w^2 / 6,000`` positions of SmolLM2-135M's layers, a pass (:data:`packed_plan.PASS_POSITIONS`) at
``w`` near 300; measured, the 4,550-position bench trace fused ran at 0.66 of a plain forward."""


@dataclass(frozen=True, slots=True)
class _Row:
    """One model input row and where to read log-probs from it."""

    item: int  # index of the trace in the request
    input_ids: np.ndarray  # (L,)
    position_ids: np.ndarray  # (L,)
    segment: np.ndarray | None  # packed: -1 trace, k for copy k; None for naive rows
    visible_limit: np.ndarray | None  # packed: last trace column each query may see
    read_positions: np.ndarray  # (n,) hidden-state indices that predict the targets
    targets: np.ndarray  # (n,) target token ids
    prefixes: np.ndarray  # (n,) which prefix k each target belongs to
    answer_slots: np.ndarray  # (n,) which answer token each target is


class TransformersProbe(LocalModelProbe[TransformersProbeSettings]):
    """A :class:`engine.probe.base.Probe` over a local Hugging Face model folder."""

    backend = "transformers"

    def __init__(self, settings: TransformersProbeSettings) -> None:
        super().__init__(settings)
        import torch
        from transformers import AutoTokenizer

        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        device = torch.device(_resolve_device(settings.device, torch))
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
        self._image_features: _ImageFeatures | None = None
        self._uses_mrope = processor is not None and model.config.model_type in MROPE_MODEL_TYPES
        self._mrope_positions: MultimodalPositions | None = None
        self._split_chunks = False
        text_config = model.config.get_text_config()
        self._context_limit = int(getattr(text_config, "max_position_embeddings", 2048))

    @property
    def processor(self) -> Any | None:
        return self._processor

    def _no_grad(self) -> AbstractContextManager[object]:
        """The autograd context the forward passes run under (a live model's probe uses ``no_grad``)."""
        return self._torch.inference_mode()

    @property
    def shares_group_prefixes(self) -> bool:
        """Only ``packed`` groups (``naive`` and ``packed-single`` batch every row on its own)."""
        return self._settings.mode == "packed" and self._settings.group_prefixes

    def _score_sequences(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        has_images = any(sequence.vision is not None for sequence in sequences)
        self._image_features = _ImageFeatures(self, sequences) if has_images else None
        if has_images and self._uses_mrope:
            self._mrope_positions = MultimodalPositions(self._model.model, sequences)
        try:
            return self._score_modes(sequences)
        finally:
            self._image_features = None
            self._mrope_positions = None

    def _score_modes(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        if self._settings.mode == "packed":
            return self._score_packed(sequences)
        outputs = [np.zeros((s.n_prefixes, s.n_answer_tokens)) for s in sequences]
        build_rows = _naive_rows if self._settings.mode == "naive" else _packed_rows
        rows = [row for index, sequence in enumerate(sequences) for row in build_rows(index, sequence)]
        for batch in _length_sorted_batches(rows, self._settings.forward_batch_tokens):
            logprobs = self._forward(batch)
            for row, row_logprobs in zip(batch, logprobs, strict=True):
                outputs[row.item][row.prefixes, row.answer_slots] = row_logprobs
        forwarded = [
            s.naive_tokens if self._settings.mode == "naive" else s.minimal_tokens for s in sequences
        ]
        return [ProbeResult(out, n) for out, n in zip(outputs, forwarded, strict=True)]

    def _score_packed(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        """Groups forward their header once per wave (:class:`_HeaderCache`); member rows and lone rows are
        batched by length and read their header's cache (:class:`_PackedRun`)."""
        settings = self._settings
        groups = group_sequences(sequences, enabled=settings.group_prefixes)
        units = plan_units(sequences, groups)
        outputs = [np.full((s.n_prefixes, s.n_answer_tokens), np.nan) for s in sequences]
        try:
            with self._no_grad():
                for wave in plan_waves(units, settings.forward_batch_tokens):
                    headers = _HeaderCache(self, wave) if wave.headers else None
                    if headers is not None:
                        self._record_forward(padded_tokens=headers.computed - headers.real)
                    for batch in batch_rows(wave.rows, settings.forward_batch_tokens):
                        run = _PackedRun(self, batch, headers)
                        for copy, logprobs in run.scores():
                            outputs[copy.sequence][copy.k] = logprobs
                        self._record_forward(padded_tokens=run.computed - run.real)
        except ProbeCancelled:
            raise
        except RuntimeError as error:  # OOM, device faults: the caller fails this batch only
            raise ProbeError(f"probe forward failed: {error}") from error
        for group in groups:  # prefix 0 was scored once per group, on its first member
            for member in group.members[1:]:
                outputs[member][0] = outputs[group.first][0]
        forwarded = forwarded_tokens(units, len(sequences))
        return [ProbeResult(out, n) for out, n in zip(outputs, forwarded, strict=True)]

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

    def _additive_mask(self, visible: torch.Tensor) -> torch.Tensor:
        """(B, 1, Q, KV) additive mask from a (B, Q, KV) boolean: 0 where visible, else the dtype's min."""
        mask = self._torch.zeros(visible.shape, dtype=self._dtype, device=self._device)
        mask.masked_fill_(~visible, self._torch.finfo(self._dtype).min)
        return mask[:, None]

    def _log_probs(self, hidden: torch.Tensor, targets: np.ndarray) -> np.ndarray:
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

    def _forward(self, batch: list[_Row]) -> list[np.ndarray]:
        self.check_cancelled()
        torch = self._torch
        try:
            with self._no_grad():
                hidden, read, computed = self._one_pass_hidden(batch)
                row_index = np.concatenate([np.full(len(r.read_positions), i) for i, r in enumerate(batch)])
                selected = hidden[torch.from_numpy(row_index), torch.from_numpy(read)]
                logprobs = self._log_probs(selected, np.concatenate([r.targets for r in batch]))
        except ProbeCancelled:
            raise
        except RuntimeError as error:  # OOM, device faults: the caller fails this batch only
            raise ProbeError(f"probe forward failed: {error}") from error
        self._record_forward(padded_tokens=computed - sum(len(row.input_ids) for row in batch))
        splits = np.cumsum([len(r.read_positions) for r in batch])[:-1]
        return np.split(logprobs, splits)

    def _one_pass_hidden(self, batch: list[_Row]) -> tuple[torch.Tensor, np.ndarray, int]:
        """naive: right-padded rows, causal; packed-single: each row under its own 4-D mask."""
        torch = self._torch
        width = max(len(row.input_ids) for row in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        position_ids = np.zeros((len(batch), width), dtype=np.int64)
        for i, row in enumerate(batch):
            input_ids[i, : len(row.input_ids)] = row.input_ids
            position_ids[i, : len(row.position_ids)] = row.position_ids
        if batch[0].segment is not None:
            attention_mask = self._packed_mask(batch, width)
        else:
            lengths = torch.tensor([len(row.input_ids) for row in batch])
            attention_mask = (torch.arange(width)[None, :] < lengths[:, None]).long().to(self._device)
        sequences = [row.item for row in batch]
        hidden, _ = self.cached_forward(
            input_ids, position_ids, attention_mask, None, sequences, use_cache=False
        )
        return hidden, np.concatenate([r.read_positions for r in batch]), len(batch) * width

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

    def _packed_mask(self, batch: list[_Row], width: int) -> torch.Tensor:
        """Additive (B, 1, L, L) mask: 0 where a query may attend, the dtype's minimum elsewhere."""
        torch = self._torch
        segment = np.full((len(batch), width), -2, dtype=np.int64)  # -2: padding
        limit = np.full((len(batch), width), -1, dtype=np.int64)
        for i, row in enumerate(batch):
            segment[i, : len(row.segment)] = row.segment
            limit[i, : len(row.visible_limit)] = row.visible_limit
        seg = torch.from_numpy(segment).to(self._device)
        lim = torch.from_numpy(limit).to(self._device)
        index = torch.arange(width, device=self._device)
        seg_q, seg_kv = seg[:, :, None], seg[:, None, :]
        causal = index[None, :, None] >= index[None, None, :]
        sees_trace = (seg_kv == -1) & (index[None, None, :] <= lim[:, :, None])
        sees_own_copy = (seg_kv == seg_q) & (seg_q >= 0)
        padding_self = (seg_q == -2) & (index[None, :, None] == index[None, None, :])
        visible = (causal & (sees_trace | sees_own_copy)) | padding_self
        return self._additive_mask(visible)


def _even_chunk(width: int, chunk: int) -> int:
    """The width of each of the fewest equal passes of at most ``chunk`` over ``width`` positions."""
    passes = max(1, -(-width // chunk))
    return max(1, -(-width // passes))


class _HeaderCache:
    """The KV cache of a wave's shared headers (question prompts), forwarded once for every member row.

    Headers run in batches of about one length (right-padded, causal attention, in chunks of
    :meth:`TransformersProbe.pass_chunk`); each header keeps its real positions, per layer. A batch of member
    rows gets a cache of its own (:meth:`for_rows`): row r holds its header's keys and values in its first
    ``shared`` columns, zeros after them up to the batch's widest header (masked, never attended)."""

    def __init__(self, probe: TransformersProbe, wave: Wave) -> None:
        headers = wave.headers
        first_reader: dict[int, int] = {}  # header -> the sequence of its first row (whose images it holds)
        for row in wave.rows:
            if row.header is not None:
                first_reader.setdefault(row.header, row.sequence)
        self._probe = probe
        self.real = sum(len(header) for header in headers)
        self.computed = 0
        self._layers: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in headers]
        budget = probe.settings.forward_batch_tokens
        lengths = [(0, len(header)) for header in headers]
        for indices in length_batches(lengths, budget):
            width = max(len(headers[i]) for i in indices)
            ids = _right_padded([headers[i] for i in indices], width)
            chunk = _even_chunk(width, probe.pass_chunk(len(indices), width))
            cache: object | None = None
            for start in range(0, width, chunk):
                end = min(width, start + chunk)
                positions = np.tile(np.arange(start, end), (len(indices), 1))
                sequences = [first_reader[i] for i in indices]
                _, cache = probe.cached_forward(ids[:, start:end], positions, None, cache, sequences)
                self.computed += len(indices) * (end - start)
            for j, i in enumerate(indices):
                n = len(headers[i])
                self._layers[i] = [
                    (layer.keys[j : j + 1, :, :n], layer.values[j : j + 1, :, :n])
                    for layer in cache.layers  # type: ignore[union-attr]
                ]

    def for_rows(self, rows: Sequence[MemberRow], width: int) -> object:
        """A fresh cache for ``rows``: each row's header in its first ``row.shared`` of ``width`` columns."""
        from transformers import DynamicCache

        data = []
        for layer in range(len(self._layers[0])):
            keys0, values0 = self._layers[0][layer]
            keys = keys0.new_zeros((len(rows), keys0.shape[1], width, keys0.shape[3]))
            values = values0.new_zeros((len(rows), values0.shape[1], width, values0.shape[3]))
            for r, row in enumerate(rows):
                if row.header is not None:
                    header_keys, header_values = self._layers[row.header][layer]
                    keys[r, :, : row.shared] = header_keys[0]
                    values[r, :, : row.shared] = header_values[0]
            data.append((keys, values))
        return DynamicCache(ddp_cache_data=data)


class _PackedRun:
    """One batch of :class:`MemberRow` s through the model, in passes of bounded width.

    1. The rows' cache starts as their headers' (:meth:`_HeaderCache.for_rows`; none when no row shares one).
    2. Branch passes: the rows' own tokens, ``chunk`` columns at a time, each against the cache so far; a
       row sees its header's real positions and its own earlier tokens.
    3. After each branch pass, probe passes for every copy whose prefix is now cached, at most ``chunk``
       copy tokens per row per pass; a copy sees its prefix and itself. The copies' cache entries are
       cropped away after each probe pass, so the cache holds headers and branches only.

    ``chunk`` is :meth:`TransformersProbe.pass_chunk` for the batch's widest cache, and the branch is cut into
    the fewest equal passes of at most that: by default one pass per stage unless the pass's mask would
    outgrow ``mask_budget_mb`` (a long trace), so peak memory is the cache plus one bounded pass.
    """

    def __init__(self, probe: TransformersProbe, rows: list[MemberRow], headers: _HeaderCache | None) -> None:
        self._probe = probe
        self._torch = probe._torch
        self._device = probe._device
        self._rows = rows
        self._header_width = max(row.shared for row in rows)
        self._branch_width = max(len(row.branch_ids) for row in rows)
        columns = self._header_width + self._branch_width + max(row.probe_tokens for row in rows)
        self._chunk = probe.pass_chunk(len(rows), columns)
        self._branch_chunk = _even_chunk(self._branch_width, self._chunk)
        self._shared = self._torch.tensor([row.shared for row in rows], device=self._device)
        self._sequences = [row.sequence for row in rows]
        self._cache: object | None = None
        if self._header_width and headers is not None:
            self._cache = headers.for_rows(rows, self._header_width)
        self.computed = 0  # positions forwarded, padding included
        self.real = sum(row_width(row) for row in rows)
        self._width = max(row_width(row) for row in rows)
        fits = self._width <= probe.pass_chunk(len(rows), self._header_width + self._width)
        self._fused = fits and self._width <= FUSED_WIDTH

    def scores(self) -> Iterator[tuple[ContinuationCopy, np.ndarray]]:
        """Each copy's answer log-probs, as soon as its pass ran."""
        if self._fused:  # rows with nothing of their own (members scoring no prefix) need no pass
            if self._width:
                yield from self._fused_pass()
            return
        pending = [list(row.copies) for row in self._rows]
        done = 0
        while True:
            ready = [
                [copy for copy in queue if row.branch_needed(copy) <= done]
                for row, queue in zip(self._rows, pending, strict=True)
            ]
            for queue, taken in zip(pending, ready, strict=True):
                del queue[: len(taken)]
            yield from self._probe_passes(ready)
            if done >= self._branch_width:
                break
            width = min(self._branch_chunk, self._branch_width - done)
            self._branch_pass(done, width)
            done += width
        if any(pending):
            raise AssertionError("every copy's prefix is cached once the branches are")

    def _fused_pass(self) -> Iterator[tuple[ContinuationCopy, np.ndarray]]:
        """Branches and copies in one pass: row r holds its branch, then its copies end to end, right-padded
        to the batch's widest. A branch token sees its header's real positions and the branch up to itself;
        a copy sees the header and branch positions before its start, and itself up to each token."""
        torch = self._torch
        rows, width = self._rows, self._width
        ids = np.zeros((len(rows), width), dtype=np.int64)
        positions = np.zeros_like(ids)
        segment = np.full_like(ids, -2)  # -1 branch, c for copy c, -2 padding
        limit = np.full_like(ids, -1)  # the last trace position a query sees (branch: itself)
        reads: list[tuple[ContinuationCopy, int, np.ndarray]] = []
        for r, row in enumerate(rows):
            branch = len(row.branch_ids)
            ids[r, :branch] = row.branch_ids
            positions[r, :branch] = row.shared + np.arange(branch)
            segment[r, :branch] = -1
            limit[r, :branch] = positions[r, :branch]
            offset = branch
            for c, copy in enumerate(row.copies):
                span = slice(offset, offset + len(copy))
                ids[r, span] = copy.ids
                positions[r, span] = copy.start + np.arange(len(copy))
                segment[r, span] = c
                limit[r, span] = copy.start - 1
                reads.append((copy, r, offset + copy.read_offsets))
                offset += len(copy)
        device = self._device
        seg = torch.from_numpy(segment).to(device)
        lim = torch.from_numpy(limit).to(device)[:, :, None]
        index = torch.arange(width, device=device)
        header = torch.arange(self._header_width, device=device)
        sees_header = (header[None, None, :] < self._shared[:, None, None]) & (header[None, None, :] <= lim)
        branch_position = np.where(segment == -1, positions, np.iinfo(np.int64).max)  # copies: no trace
        sees_branch = torch.from_numpy(branch_position).to(device)[:, None, :] <= lim
        same_copy = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)
        causal = index[None, :, None] >= index[None, None, :]
        padding_self = (seg[:, :, None] == -2) & (index[None, :, None] == index[None, None, :])
        visible = torch.cat([sees_header, sees_branch | (same_copy & causal) | padding_self], dim=2)
        hidden = self._forward(ids, positions, self._probe._additive_mask(visible))
        self._cache = None
        yield from self._read(hidden, reads)

    def _read(
        self, hidden: torch.Tensor, reads: list[tuple[ContinuationCopy, int, np.ndarray]]
    ) -> Iterator[tuple[ContinuationCopy, np.ndarray]]:
        """Each copy's answer log-probs from the pass's hidden states (row, columns of its reads)."""
        torch, device = self._torch, self._device
        rows = np.concatenate([np.full(len(offsets), r) for _, r, offsets in reads])
        columns_read = np.concatenate([offsets for _, _, offsets in reads])
        selected = hidden[torch.from_numpy(rows).to(device), torch.from_numpy(columns_read).to(device)]
        logprobs = self._probe._log_probs(selected, np.concatenate([copy.targets for copy, _, _ in reads]))
        at = 0
        for copy, _, offsets in reads:
            yield copy, logprobs[at : at + len(offsets)]
            at += len(offsets)

    def _forward(self, ids: np.ndarray, positions: np.ndarray, mask: torch.Tensor | None) -> torch.Tensor:
        hidden, self._cache = self._probe.cached_forward(ids, positions, mask, self._cache, self._sequences)
        self.computed += ids.size
        return hidden

    def _branch_pass(self, start: int, width: int) -> None:
        rows = self._rows
        ids = _right_padded([row.branch_ids[start : start + width] for row in rows], width)
        positions = np.stack([row.shared + start + np.arange(width) for row in rows])
        if all(row.shared == self._header_width for row in rows):
            # one header length (or none): every query sees the whole cache and its branch causally, the
            # causal attention after a cache (split_attention; right padding is harmless)
            mask = None
        else:
            mask = self._causal_mask(self._shared, self._header_width, start, width)
        self._forward(ids, positions, mask)

    def _causal_mask(self, shared: torch.Tensor, header_width: int, start: int, width: int) -> torch.Tensor:
        """Queries at branch columns ``start..start+width``: each sees its row's real header positions
        (``< shared``) and its branch up to itself."""
        torch = self._torch
        columns = torch.arange(header_width + start + width, device=self._device)
        query = start + torch.arange(width, device=self._device)
        branch = columns - header_width
        sees_header = columns[None, None, :] < shared[:, None, None]
        sees_branch = (branch[None, None, :] >= 0) & (branch[None, None, :] <= query[None, :, None])
        return self._probe._additive_mask(sees_header | sees_branch)

    def _probe_passes(
        self, ready: list[list[ContinuationCopy]]
    ) -> Iterator[tuple[ContinuationCopy, np.ndarray]]:
        """Probe passes over the ready copies, at most ``chunk`` copy tokens per row each (one at least)."""
        queues = [list(copies) for copies in ready]
        while any(queues):
            batch: list[list[ContinuationCopy]] = []
            for queue in queues:
                taken, tokens = 0, 0
                while taken < len(queue) and (taken == 0 or tokens + len(queue[taken]) <= self._chunk):
                    tokens += len(queue[taken])
                    taken += 1
                batch.append(queue[:taken])
                del queue[:taken]
            yield from self._probe_pass(batch)

    def _probe_pass(
        self, copies: list[list[ContinuationCopy]]
    ) -> Iterator[tuple[ContinuationCopy, np.ndarray]]:
        torch = self._torch
        width = max(sum(len(copy) for copy in row) for row in copies)
        ids = np.zeros((len(copies), width), dtype=np.int64)
        positions = np.zeros_like(ids)
        copy_id = np.full_like(ids, -1)  # -1: padding
        start = np.zeros_like(ids)
        reads: list[tuple[ContinuationCopy, int, np.ndarray]] = []
        for r, row_copies in enumerate(copies):
            offset = 0
            for c, copy in enumerate(row_copies):
                span = slice(offset, offset + len(copy))
                ids[r, span] = copy.ids
                positions[r, span] = copy.start + np.arange(len(copy))
                copy_id[r, span] = c
                start[r, span] = copy.start
                reads.append((copy, r, offset + copy.read_offsets))
                offset += len(copy)
        cached = self._cache.get_seq_length() if self._cache is not None else 0  # type: ignore[attr-defined]
        device = self._device
        columns = torch.arange(cached, device=device)
        branch = columns - self._header_width
        begin = torch.from_numpy(start).to(device)
        shared = self._shared[:, None]
        sees_header = (columns[None, None, :] < torch.minimum(shared, begin)[:, :, None]) & (
            columns[None, None, :] < self._header_width
        )
        sees_branch = (branch[None, None, :] >= 0) & (branch[None, None, :] < (begin - shared)[:, :, None])
        seg = torch.from_numpy(copy_id).to(device)
        index = torch.arange(width, device=device)
        causal = index[None, :, None] >= index[None, None, :]
        same_copy = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)
        padding_self = (seg[:, :, None] == -1) & (index[None, :, None] == index[None, None, :])
        visible = torch.cat([sees_header | sees_branch, (same_copy & causal) | padding_self], dim=2)
        hidden = self._forward(ids, positions, self._probe._additive_mask(visible))
        self._cache.crop(-width)  # type: ignore[union-attr]  # keep headers and branches only
        yield from self._read(hidden, reads)


class _ImageFeatures:
    """The image features of one ``score()`` call's sequences, each image set encoded once (by its bytes'
    key, so a GRPO group's shared image is encoded once), and the token embeddings that hold them."""

    def __init__(self, probe: TransformersProbe, sequences: Sequence[ProbeSequence]) -> None:
        self._probe = probe
        self._visions = [sequence.vision for sequence in sequences]
        self._features: dict[str, Any] = {}
        self._ranks = {  # per sequence with images: each header position's feature row, -1 for text
            index: _placeholder_ranks(sequence, sequence.vision)
            for index, sequence in enumerate(sequences)
            if sequence.vision is not None
        }

    def embed(
        self, ids_tensor: torch.Tensor, ids: np.ndarray, positions: np.ndarray, sequences: Sequence[int]
    ) -> torch.Tensor:
        """Token embeddings of ``ids``; in rows of a sequence with images, its placeholders at header
        positions hold the features in order (positions index the sequence's own tokens)."""
        embeds = self._probe._embed_tokens(ids_tensor)
        for row, sequence in enumerate(sequences):
            vision = self._visions[sequence]
            if vision is None:
                continue
            columns, feature_rows = self._placeholders(sequence, ids[row], positions[row], vision)
            if not len(columns):
                continue
            features = self._encoded(vision)
            embeds[row, self._probe._torch.from_numpy(columns).to(embeds.device)] = features[
                self._probe._torch.from_numpy(feature_rows).to(embeds.device)
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
        if features is not None:
            return features
        probe = self._probe
        torch = probe._torch
        self._probe.check_cancelled()
        pixel_inputs = {
            name: torch.from_numpy(np.asarray(value)).to(probe._device)
            for name, value in vision.pixel_inputs.items()
        }
        if "pixel_values" in pixel_inputs:
            pixel_inputs["pixel_values"] = pixel_inputs["pixel_values"].to(probe._dtype)
        with probe._no_grad():
            output = probe._model.model.get_image_features(**pixel_inputs)
        pooled = getattr(output, "pooler_output", output)
        if isinstance(pooled, list | tuple):
            pooled = torch.cat([item.reshape(-1, item.shape[-1]) for item in pooled])
        features = pooled.reshape(-1, pooled.shape[-1])
        with probe._stats_lock:
            probe._stats.images_encoded += vision.n_images
            probe._stats.image_tokens_embedded += int(features.shape[0])
        self._features[vision.key] = features
        return features


def _placeholder_ranks(sequence: ProbeSequence, vision: VisionPrefix) -> np.ndarray:
    """For each header position: which image feature it holds (in order), -1 for a text token."""
    header = np.asarray(sequence.trace_ids[: sequence.boundaries[0]], dtype=np.int64)
    is_image = header == vision.image_token_id
    rank = np.full(len(header), -1, dtype=np.int64)
    rank[is_image] = np.arange(int(is_image.sum()))
    return rank


def _right_padded(rows: Sequence[np.ndarray], width: int) -> np.ndarray:
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _resolve_device(device: str, torch: object) -> str:
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"  # type: ignore[attr-defined]


def _packed_rows(item: int, sequence: ProbeSequence) -> Iterator[_Row]:
    """One row: the trace, then K+1 copies of the continuation, copy k branching at boundary k."""
    trace = np.asarray(sequence.trace_ids, dtype=np.int64)
    continuation = np.asarray(sequence.continuation_ids, dtype=np.int64)
    boundaries = np.asarray(sequence.boundaries, dtype=np.int64)
    n_prefixes, width = len(boundaries), len(continuation)
    copy_starts = len(trace) + width * np.arange(n_prefixes)
    offsets = np.arange(width)
    answer_offsets = offsets[width - sequence.n_answer_tokens :]
    # the hidden state predicting continuation token m of copy k: copy position m-1, or boundary k-1 for m=0
    read = np.where(
        answer_offsets[None, :] > 0,
        copy_starts[:, None] + answer_offsets[None, :] - 1,
        boundaries[:, None] - 1,
    )
    yield _Row(
        item=item,
        input_ids=np.concatenate([trace, np.tile(continuation, n_prefixes)]),
        position_ids=np.concatenate(
            [np.arange(len(trace)), (boundaries[:, None] + offsets[None, :]).ravel()]
        ),
        segment=np.concatenate([np.full(len(trace), -1), np.repeat(np.arange(n_prefixes), width)]),
        visible_limit=np.concatenate([np.arange(len(trace)), np.repeat(boundaries - 1, width)]),
        read_positions=read.ravel(),
        targets=np.tile(continuation[answer_offsets], n_prefixes),
        prefixes=np.repeat(np.arange(n_prefixes), len(answer_offsets)),
        answer_slots=np.tile(np.arange(len(answer_offsets)), n_prefixes),
    )


def _naive_rows(item: int, sequence: ProbeSequence) -> Iterator[_Row]:
    """K+1 rows: prefix k followed by the continuation."""
    continuation = np.asarray(sequence.continuation_ids, dtype=np.int64)
    width = len(continuation)
    answer_offsets = np.arange(width - sequence.n_answer_tokens, width)
    for k, boundary in enumerate(sequence.boundaries):
        input_ids = np.concatenate([np.asarray(sequence.trace_ids[:boundary], dtype=np.int64), continuation])
        yield _Row(
            item=item,
            input_ids=input_ids,
            position_ids=np.arange(len(input_ids)),
            segment=None,
            visible_limit=None,
            read_positions=boundary + answer_offsets - 1,
            targets=continuation[answer_offsets],
            prefixes=np.full(len(answer_offsets), k),
            answer_slots=np.arange(len(answer_offsets)),
        )


def _length_sorted_batches(
    rows: list[_Row], forward_batch_tokens: int, max_padding: float = MAX_PADDING
) -> Iterator[list[_Row]]:
    """Longest first; a batch grows while it fits ``forward_batch_tokens`` once padded and while padding
    stays under ``max_padding`` of the positions it computes."""
    ordered = sorted(rows, key=lambda row: len(row.input_ids), reverse=True)
    batch: list[_Row] = []
    real = 0
    for row in ordered:
        if batch:
            computed = (len(batch) + 1) * len(batch[0].input_ids)
            too_padded = computed - real - len(row.input_ids) > max_padding * computed
            if computed > forward_batch_tokens or too_padded:
                yield batch
                batch, real = [], 0
        batch.append(row)
        real += len(row.input_ids)
    if batch:
        yield batch


def load_vision_language_model(folder: Path, dtype: Any) -> tuple[Any, Any]:
    """The image-text-to-text model in ``folder`` with SDPA attention, and its processor (for a
    Qwen2-VL-shaped model, :class:`Qwen2VLImagesProcessor`). Refuses any other model whose language model
    places image tokens on multimodal rotary positions."""
    from transformers import AutoModelForImageTextToText

    with _quiet_progress_bars():
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


def load_causal_lm(folder: Path, dtype: Any) -> Any:
    """The causal LM in ``folder`` with SDPA attention, loaded without transformers' progress bar (see
    :func:`_quiet_progress_bars`): the probe at start and a checkpoint reload load through here."""
    from transformers import AutoModelForCausalLM

    with _quiet_progress_bars():
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa")


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
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
