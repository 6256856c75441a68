"""The packed mode (the default): each trace forwarded once, GRPO groups' question prompts once per wave.

The work is laid out by :mod:`mig_annotator.engine.probe.packed_plan`. Traces that share their question
prompt and answer (a GRPO group, :mod:`mig_annotator.engine.probe.groups`) forward that prompt once
(:class:`engine.probe.header_cache.HeaderCache`) and score prefix 0 once; every member row is batched with
rows of about its own length (padding weighed against passes, :func:`packed_plan.length_batches`) and
starts from its prompt's cache. A batch of rows at most :data:`FUSED_WIDTH` wide runs its branches and
copies in one pass under one 4-D mask (a pass costs about as much as 16-20 positions whatever its size).
Wider rows run in stages (:class:`PackedRun`): the trace passes run causal attention and keep the KV cache
(a chunk after a cache attends through :mod:`mig_annotator.engine.probe.split_attention`, building no
mask); the probe passes forward the continuation copies against that cache under the 4-D mask restricted
to the copies. A pass takes at most :meth:`TransformersProbe.pass_chunk` new positions per row
(``chunk_tokens``, or what keeps its mask within ``mask_budget_mb``), so the mask and the activations stay
bounded on 16k-token traces; the KV cache grows with the batch's tokens (``forward_batch_tokens``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from mig_annotator.engine.probe.base import ProbeResult
from mig_annotator.engine.probe.groups import group_sequences
from mig_annotator.engine.probe.header_cache import HeaderCache
from mig_annotator.engine.probe.packed_plan import (
    ContinuationCopy,
    MemberRow,
    batch_rows,
    even_chunk,
    forwarded_tokens,
    plan_units,
    plan_waves,
    right_padded,
    row_width,
)
from mig_annotator.engine.prompt import ProbeSequence

if TYPE_CHECKING:
    import torch

    from mig_annotator.engine.probe.transformers_probe import TransformersProbe

FUSED_WIDTH = 384
"""A batch's branches and copies run in one pass when its rows are at most this wide. The fused pass
attends under a 4-D mask, which the CPU kernel computes in full, where a separate branch pass runs the
causal kernel and skips the blocks above the diagonal: that half of a branch of ``w`` positions costs about
``w^2 / 6,000`` positions of SmolLM2-135M's layers, a pass (:data:`packed_plan.PASS_POSITIONS`) at
``w`` near 300; measured, the 4,550-position bench trace fused ran at 0.66 of a plain forward."""


def score_packed(probe: TransformersProbe, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
    """Every sequence's answer log-probs by ``probe`` in the packed mode: groups forward their header once
    per wave (:class:`HeaderCache`); member rows and lone rows are batched by length and read their
    header's cache (:class:`PackedRun`)."""
    settings = probe.settings
    groups = group_sequences(sequences, enabled=settings.group_prefixes)
    units = plan_units(sequences, groups)
    outputs = [np.full((s.n_prefixes, s.n_answer_tokens), np.nan) for s in sequences]
    for wave in plan_waves(units, settings.forward_batch_tokens):
        headers = HeaderCache(probe, wave) if wave.headers else None
        if headers is not None:
            probe._record_forward(padded_tokens=headers.computed - headers.real)
        for batch in batch_rows(wave.rows, settings.forward_batch_tokens):
            run = PackedRun(probe, batch, headers)
            for copy, logprobs in run.scores():
                outputs[copy.sequence][copy.k] = logprobs
            probe._record_forward(padded_tokens=run.computed - run.real)
    for group in groups:  # prefix 0 was scored once per group, on its first member
        for member in group.members[1:]:
            outputs[member][0] = outputs[group.first][0]
    forwarded = forwarded_tokens(units, len(sequences))
    return [ProbeResult(out, n) for out, n in zip(outputs, forwarded, strict=True)]


class PackedRun:
    """One batch of :class:`MemberRow` s through the model, in passes of bounded width.

    1. The rows' cache starts as their headers' (:meth:`HeaderCache.for_rows`; none when no row shares one).
    2. Branch passes: the rows' own tokens, ``chunk`` columns at a time, each against the cache so far; a
       row sees its header's real positions and its own earlier tokens.
    3. After each branch pass, probe passes for every copy whose prefix is now cached, at most ``chunk``
       copy tokens per row per pass; a copy sees its prefix and itself. The copies' cache entries are
       cropped away after each probe pass, so the cache holds headers and branches only.

    ``chunk`` is :meth:`TransformersProbe.pass_chunk` for the batch's widest cache, and the branch is cut into
    the fewest equal passes of at most that: by default one pass per stage unless the pass's mask would
    outgrow ``mask_budget_mb`` (a long trace), so peak memory is the cache plus one bounded pass.
    """

    def __init__(self, probe: TransformersProbe, rows: list[MemberRow], headers: HeaderCache | None) -> None:
        self._probe = probe
        import torch

        self._torch = torch
        self._device = probe.device
        self._rows = rows
        self._header_width = max(row.shared for row in rows)
        self._branch_width = max(len(row.branch_ids) for row in rows)
        columns = self._header_width + self._branch_width + max(row.probe_tokens for row in rows)
        self._chunk = probe.pass_chunk(len(rows), columns)
        self._branch_chunk = even_chunk(self._branch_width, self._chunk)
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
        hidden = self._forward(ids, positions, self._probe.additive_mask(visible))
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
        logprobs = self._probe.log_probs(selected, np.concatenate([copy.targets for copy, _, _ in reads]))
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
        ids = right_padded([row.branch_ids[start : start + width] for row in rows], width)
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
        return self._probe.additive_mask(sees_header | sees_branch)

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
        hidden = self._forward(ids, positions, self._probe.additive_mask(visible))
        self._cache.crop(-width)  # type: ignore[union-attr]  # keep headers and branches only
        yield from self._read(hidden, reads)
