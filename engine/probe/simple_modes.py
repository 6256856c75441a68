"""The transformers probe's one-pass modes: each batch of rows in one forward pass, no cache.

* ``naive``: one row per prefix, ``prefix_k + continuation``; the baseline.
* ``packed-single``: one row per trace, ``trace + (K+1) x continuation``, in ONE forward pass. Copy k of the
  continuation sees the trace only up to boundary k and itself (a 4-D attention mask) and its position ids
  continue from boundary k, so each copy computes exactly what ``naive`` computes for prefix k while the
  trace is forwarded once.

Rows are batched as every mode batches them: by length, weighing padding against passes within
``forward_batch_tokens`` (:func:`packed_plan.length_batches`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mig_annotator.engine.probe.base import ProbeResult
from mig_annotator.engine.probe.packed_plan import length_batches, right_padded
from mig_annotator.engine.prompt import ProbeSequence

if TYPE_CHECKING:
    import torch

    from mig_annotator.engine.probe.transformers_probe import TransformersProbe


@dataclass(frozen=True, slots=True)
class ScoringRow:
    """One model input row and where to read log-probs from it."""

    item: int  # index of the trace in the request
    input_ids: np.ndarray  # (L,)
    position_ids: np.ndarray  # (L,)
    segment: np.ndarray | None  # packed-single: -1 trace, k for copy k; None for naive rows
    visible_limit: np.ndarray | None  # packed-single: last trace column each query may see
    read_positions: np.ndarray  # (n,) hidden-state indices that predict the targets
    targets: np.ndarray  # (n,) target token ids
    prefixes: np.ndarray  # (n,) which prefix k each target belongs to
    answer_slots: np.ndarray  # (n,) which answer token each target is


def score_one_pass_modes(probe: TransformersProbe, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
    """Every sequence's answer log-probs by ``probe`` in its ``naive`` or ``packed-single`` mode."""
    naive = probe.settings.mode == "naive"
    build_rows = naive_rows if naive else packed_single_rows
    rows = [row for index, sequence in enumerate(sequences) for row in build_rows(index, sequence)]
    outputs = [np.zeros((s.n_prefixes, s.n_answer_tokens)) for s in sequences]
    lengths = [(0, len(row.input_ids)) for row in rows]
    for indices in length_batches(lengths, probe.settings.forward_batch_tokens):
        batch = [rows[i] for i in indices]
        for row, row_logprobs in zip(batch, _batch_logprobs(probe, batch), strict=True):
            outputs[row.item][row.prefixes, row.answer_slots] = row_logprobs
    forwarded = [s.naive_tokens if naive else s.minimal_tokens for s in sequences]
    return [ProbeResult(out, n) for out, n in zip(outputs, forwarded, strict=True)]


def naive_rows(item: int, sequence: ProbeSequence) -> Iterator[ScoringRow]:
    """K+1 rows: prefix k followed by the continuation."""
    continuation = np.asarray(sequence.continuation_ids, dtype=np.int64)
    width = len(continuation)
    answer_offsets = np.arange(width - sequence.n_answer_tokens, width)
    for k, boundary in enumerate(sequence.boundaries):
        input_ids = np.concatenate([np.asarray(sequence.trace_ids[:boundary], dtype=np.int64), continuation])
        yield ScoringRow(
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


def packed_single_rows(item: int, sequence: ProbeSequence) -> Iterator[ScoringRow]:
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
    yield ScoringRow(
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


def _batch_logprobs(probe: TransformersProbe, batch: list[ScoringRow]) -> list[np.ndarray]:
    """One pass over ``batch``, right-padded (naive: causal; packed-single: each row under its own 4-D
    mask): each row's target log-probs."""
    import torch

    width = max(len(row.input_ids) for row in batch)
    input_ids = right_padded([row.input_ids for row in batch], width)
    position_ids = right_padded([row.position_ids for row in batch], width)
    if batch[0].segment is not None:
        attention_mask = _packed_single_mask(probe, batch, width)
    else:
        lengths = torch.tensor([len(row.input_ids) for row in batch])
        attention_mask = (torch.arange(width)[None, :] < lengths[:, None]).long().to(probe.device)
    sequences = [row.item for row in batch]
    hidden, _ = probe.cached_forward(
        input_ids, position_ids, attention_mask, None, sequences, use_cache=False
    )
    row_index = np.concatenate([np.full(len(r.read_positions), i) for i, r in enumerate(batch)])
    read = np.concatenate([r.read_positions for r in batch])
    selected = hidden[torch.from_numpy(row_index), torch.from_numpy(read)]
    logprobs = probe.log_probs(selected, np.concatenate([r.targets for r in batch]))
    probe._record_forward(padded_tokens=len(batch) * width - sum(len(row.input_ids) for row in batch))
    return np.split(logprobs, np.cumsum([len(r.read_positions) for r in batch])[:-1])


def _packed_single_mask(probe: TransformersProbe, batch: list[ScoringRow], width: int) -> torch.Tensor:
    """Additive (B, 1, L, L) mask: a trace token sees the trace causally, copy k the trace up to boundary k
    and itself causally; padding sees only itself."""
    import torch

    segment = np.full((len(batch), width), -2, dtype=np.int64)  # -2: padding
    limit = np.full((len(batch), width), -1, dtype=np.int64)
    for i, row in enumerate(batch):
        segment[i, : len(row.segment)] = row.segment
        limit[i, : len(row.visible_limit)] = row.visible_limit
    device = probe.device
    seg = torch.from_numpy(segment).to(device)
    lim = torch.from_numpy(limit).to(device)
    index = torch.arange(width, device=device)
    seg_q, seg_kv = seg[:, :, None], seg[:, None, :]
    causal = index[None, :, None] >= index[None, None, :]
    sees_trace = (seg_kv == -1) & (index[None, None, :] <= lim[:, :, None])
    sees_own_copy = (seg_kv == seg_q) & (seg_q >= 0)
    padding_self = (seg_q == -2) & (index[None, :, None] == index[None, None, :])
    visible = (causal & (sees_trace | sees_own_copy)) | padding_self
    return probe.additive_mask(visible)
