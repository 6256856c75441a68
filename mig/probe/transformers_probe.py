"""The embedded probe: a Hugging Face causal LM run by PyTorch (CPU by default, CUDA when present).

Three ways to get the same numbers:

* ``naive``: one sequence per prefix, ``prefix_k + continuation``; the baseline.
* ``packed-single``: one sequence per trace, ``trace + (K+1) x continuation``, in ONE forward pass.
  Copy k of the continuation sees the trace only up to boundary k and itself (a 4-D attention mask)
  and its position ids continue from boundary k, so each copy computes exactly what ``naive``
  computes for prefix k while the trace is forwarded once.
* ``packed`` (default): the same tokens in two passes per batch. The trace pass runs the plain causal
  kernel over the traces and keeps their KV cache; the probe pass forwards all K+1 copies of every
  trace at once against that cache, under the same 4-D mask restricted to the copies. Same tokens as
  ``packed-single``, but the L x L masked attention over the whole row becomes causal attention
  over the trace plus a small (K+1)C x (T + (K+1)C) block: faster on one long trace, not settled
  on GSM8K (BENCHMARKS.md).

All modes gather the hidden states that predict answer tokens and apply the LM head to those alone,
so the vocabulary projection costs ``(K+1) * n_answer`` rows, not one per token.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mig_annotator.mig.probe.base import Probe, ProbeError, ProbeResult
from mig_annotator.mig.probe.settings import TransformersProbeSettings
from mig_annotator.mig.prompt import ProbeSequence, Tokenizer
from mig_annotator.schemas.probe import ProbeDType, ProbeIdentity, ProbeMode

if TYPE_CHECKING:
    import torch

__all__ = ["ProbeDType", "ProbeMode", "TransformersProbe", "TransformersProbeSettings"]
MAX_PADDING = 0.05  # share of computed positions a batch may spend on padding


@dataclass(frozen=True, slots=True)
class _Row:
    """One model input row and where to read log-probs from it."""

    item: int  # index of the trace in the request
    trace_length: int  # packed: tokens before the first continuation copy; naive: the whole row
    input_ids: np.ndarray  # (L,)
    position_ids: np.ndarray  # (L,)
    segment: np.ndarray | None  # packed: -1 trace, k for copy k; None for naive rows
    visible_limit: np.ndarray | None  # packed: last trace column each query may see
    read_positions: np.ndarray  # (n,) hidden-state indices that predict the targets
    targets: np.ndarray  # (n,) target token ids
    prefixes: np.ndarray  # (n,) which prefix k each target belongs to
    answer_slots: np.ndarray  # (n,) which answer token each target is


class TransformersProbe(Probe):
    """A :class:`mig.probe.base.Probe` over a local Hugging Face model folder."""

    backend = "transformers"

    def __init__(self, settings: TransformersProbeSettings) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from mig_annotator.mig.model_store import resolve_model_path

        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        self._settings = settings
        self._model_path = resolve_model_path(settings.model)
        self._torch = torch
        self._device = torch.device(_resolve_device(settings.device, torch))
        self._dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[settings.dtype]
        self._tokenizer = AutoTokenizer.from_pretrained(self._model_path)
        model = AutoModelForCausalLM.from_pretrained(
            self._model_path, dtype=self._dtype, attn_implementation="sdpa"
        )
        self._model = model.to(self._device).eval()
        self._backbone = self._model.base_model
        self._lm_head = self._model.get_output_embeddings()
        self._context_limit = int(getattr(self._model.config, "max_position_embeddings", 2048))

    @property
    def model_id(self) -> str:
        return self._model_path.name

    @property
    def model_path(self) -> Path:
        return self._model_path

    @property
    def context_limit(self) -> int:
        return self._context_limit

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @property
    def settings(self) -> TransformersProbeSettings:
        return self._settings

    def _compute_identity(self) -> ProbeIdentity:
        from mig_annotator.mig.probe.identity import local_model_identity

        return local_model_identity(self._model_path, "transformers", self._settings.dtype)

    def _score_sequences(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        outputs = [np.zeros((s.n_prefixes, s.n_answer_tokens)) for s in sequences]
        build_rows = _naive_rows if self._settings.mode == "naive" else _packed_rows
        rows = [row for index, sequence in enumerate(sequences) for row in build_rows(index, sequence)]
        two_pass = self._settings.mode == "packed"
        for batch in _length_sorted_batches(rows, self._settings.max_batch_tokens, two_pass):
            logprobs = self._forward(batch)
            for row, row_logprobs in zip(batch, logprobs, strict=True):
                outputs[row.item][row.prefixes, row.answer_slots] = row_logprobs
        forwarded = [
            s.naive_tokens if self._settings.mode == "naive" else s.minimal_tokens for s in sequences
        ]
        return [ProbeResult(out, n) for out, n in zip(outputs, forwarded, strict=True)]

    def plain_forward(self, token_rows: Sequence[Sequence[int]]) -> None:
        """A plain causal forward of the backbone over equal-length rows (the throughput ceiling)."""
        torch = self._torch
        with torch.inference_mode():
            self._backbone(input_ids=torch.tensor(token_rows, device=self._device), use_cache=False)

    def _forward(self, batch: list[_Row]) -> list[np.ndarray]:
        torch = self._torch
        hidden_states = self._two_pass_hidden if self._settings.mode == "packed" else self._one_pass_hidden
        try:
            with torch.inference_mode():
                hidden, read, computed = hidden_states(batch)
                row_index = np.concatenate([np.full(len(r.read_positions), i) for i, r in enumerate(batch)])
                targets = torch.from_numpy(np.concatenate([r.targets for r in batch])).to(self._device)
                selected = hidden[torch.from_numpy(row_index), torch.from_numpy(read)]
                logits = self._lm_head(selected).float()
                logprobs = logits.log_softmax(dim=-1).gather(1, targets[:, None])[:, 0].double().cpu().numpy()
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
        hidden = self._backbone(
            input_ids=torch.from_numpy(input_ids).to(self._device),
            position_ids=torch.from_numpy(position_ids).to(self._device),
            attention_mask=attention_mask,
            use_cache=False,
        ).last_hidden_state
        return hidden, np.concatenate([r.read_positions for r in batch]), len(batch) * width

    def _two_pass_hidden(self, batch: list[_Row]) -> tuple[torch.Tensor, np.ndarray, int]:
        """Trace pass (plain causal kernel, KV cached), then one probe pass for every copy of every row.

        Returns the hidden states of both passes side by side, (B, T_max + Q_max, H), each row's read
        positions mapped into that layout, and the positions computed (padding included).
        """
        torch = self._torch
        trace_width = max(row.trace_length for row in batch)
        probe_width = max(len(row.input_ids) - row.trace_length for row in batch)
        trace_ids = np.zeros((len(batch), trace_width), dtype=np.int64)
        probe_ids = np.zeros((len(batch), probe_width), dtype=np.int64)
        probe_positions = np.zeros((len(batch), probe_width), dtype=np.int64)
        segment = np.full((len(batch), probe_width), -2, dtype=np.int64)
        limit = np.full((len(batch), probe_width), -1, dtype=np.int64)
        for i, row in enumerate(batch):
            t, n = row.trace_length, len(row.input_ids) - row.trace_length
            trace_ids[i, :t] = row.input_ids[:t]
            probe_ids[i, :n] = row.input_ids[t:]
            probe_positions[i, :n] = row.position_ids[t:]
            segment[i, :n] = row.segment[t:]
            limit[i, :n] = row.visible_limit[t:]
        device = self._device
        # Right padding needs no mask in the trace pass: causal attention never looks ahead at the padding.
        trace_out = self._backbone(input_ids=torch.from_numpy(trace_ids).to(device), use_cache=True)
        seg = torch.from_numpy(segment).to(device)
        lim = torch.from_numpy(limit).to(device)
        cache_cols = torch.arange(trace_width, device=device)
        probe_cols = torch.arange(probe_width, device=device)
        sees_trace = cache_cols[None, None, :] <= lim[:, :, None]
        same_copy = (seg[:, None, :] == seg[:, :, None]) & (seg[:, :, None] >= 0)
        causal = probe_cols[None, :, None] >= probe_cols[None, None, :]
        padding_self = (seg[:, :, None] == -2) & (probe_cols[None, :, None] == probe_cols[None, None, :])
        visible = torch.cat([sees_trace, (same_copy & causal) | padding_self], dim=2)
        mask = torch.zeros(visible.shape, dtype=self._dtype, device=device)
        mask.masked_fill_(~visible, torch.finfo(self._dtype).min)
        probe_out = self._backbone(
            input_ids=torch.from_numpy(probe_ids).to(device),
            position_ids=torch.from_numpy(probe_positions).to(device),
            attention_mask=mask[:, None],
            past_key_values=trace_out.past_key_values,
            use_cache=True,
        )
        hidden = torch.cat([trace_out.last_hidden_state, probe_out.last_hidden_state], dim=1)
        read = [
            np.where(
                row.read_positions < row.trace_length,
                row.read_positions,
                row.read_positions - row.trace_length + trace_width,
            )
            for row in batch
        ]
        return hidden, np.concatenate(read), len(batch) * (trace_width + probe_width)

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
        mask = torch.zeros(visible.shape, dtype=self._dtype, device=self._device)
        mask.masked_fill_(~visible, torch.finfo(self._dtype).min)
        return mask[:, None]


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
        trace_length=len(trace),
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
            trace_length=len(input_ids),
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
    rows: list[_Row], max_batch_tokens: int, two_pass: bool, max_padding: float = MAX_PADDING
) -> Iterator[list[_Row]]:
    """Longest first; a batch grows while it fits ``max_batch_tokens`` once padded and while padding
    stays under ``max_padding`` of the positions it computes."""
    ordered = sorted(rows, key=lambda row: (row.trace_length, len(row.input_ids)), reverse=True)
    batch: list[_Row] = []
    real = 0
    for row in ordered:
        if batch:
            candidate = [*batch, row]
            computed = _computed_positions(candidate, two_pass)
            if computed > max_batch_tokens or computed - real - len(row.input_ids) > max_padding * computed:
                yield batch
                batch, real = [], 0
        batch.append(row)
        real += len(row.input_ids)
    if batch:
        yield batch


def _computed_positions(batch: list[_Row], two_pass: bool) -> int:
    """Positions a padded batch computes: the widest trace and widest probe block (two passes), or the
    widest row (one pass), times the rows."""
    if two_pass:
        trace_width = max(row.trace_length for row in batch)
        probe_width = max(len(row.input_ids) - row.trace_length for row in batch)
        return len(batch) * (trace_width + probe_width)
    return len(batch) * max(len(row.input_ids) for row in batch)
