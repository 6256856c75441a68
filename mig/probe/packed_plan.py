"""The layout of the packed probe's work: shared headers, member rows, continuation copies, batches.

Pure planning (numpy only); :mod:`mig_annotator.mig.probe.transformers_probe` runs it. For one trace with
boundaries ``b_0 < ... < b_K`` and continuation ``c`` (answer prompt + answer), probe ``k`` reads
``trace[:b_k] + c``. The packed path forwards each trace once and, for every ``k``, one *copy* of the
continuation placed at position ``b_k`` that attends to the trace's first ``b_k`` positions and to itself.

Groups (:mod:`mig_annotator.mig.probe.groups`) go further: the members of a group share the header
``trace[:b_0]`` and prefix 0, so a *unit* of several members forwards the header once (a header row whose
KV cache every member row reads), each member row forwards only its own tokens ``trace[b_0:]``, and only
the group's first member carries the copy for ``k = 0``. A unit of one member has no header row: its
member row is the whole trace. A group's members share a header only when that saves more positions than
padding its rows to the longest costs (:func:`sharing_pays`); otherwise they run as lone rows, batched by
length with everything else, and still score prefix 0 once.

When the continuation is the answer alone (an answer prompt that tokenises to nothing), the hidden state
that predicts the first answer token is the trace's own at ``b_k - 1``; such copies start one token early,
with that trace token (:attr:`ContinuationCopy.start` ``= b_k - 1``), so every read is inside a copy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from mig_annotator.mig.probe.groups import PrefixGroup
from mig_annotator.mig.prompt import ProbeSequence


@dataclass(frozen=True, slots=True)
class ContinuationCopy:
    """Probe ``k`` of one sequence: ``ids`` at positions ``start..``, seeing trace positions ``< start``."""

    sequence: int
    k: int
    start: int
    ids: np.ndarray  # (n,) int64
    read_offsets: np.ndarray  # offsets in the copy whose hidden states predict the answer tokens
    targets: np.ndarray  # the answer token ids, in order

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class MemberRow:
    """One model row: ``branch_ids`` at positions ``shared..``, after ``shared`` header positions read from
    the unit's header cache (``shared == 0``: no header row, the branch is the whole trace)."""

    sequence: int
    shared: int
    branch_ids: np.ndarray
    copies: tuple[ContinuationCopy, ...]  # by start position

    @property
    def probe_tokens(self) -> int:
        return sum(len(copy) for copy in self.copies)

    def branch_needed(self, copy: ContinuationCopy) -> int:
        """Branch tokens that must be in the cache before ``copy`` can run."""
        return max(0, copy.start - self.shared)


@dataclass(frozen=True, slots=True)
class PackedUnit:
    """Member rows that forward their shared header once (``header_ids`` None: a lone member)."""

    header_ids: np.ndarray | None
    rows: tuple[MemberRow, ...]

    @property
    def header_length(self) -> int:
        return 0 if self.header_ids is None else len(self.header_ids)

    @property
    def branch_width(self) -> int:
        return max(len(row.branch_ids) for row in self.rows)

    @property
    def probe_width(self) -> int:
        return max(row.probe_tokens for row in self.rows)

    @property
    def real_tokens(self) -> int:
        return self.header_length + sum(len(row.branch_ids) + row.probe_tokens for row in self.rows)


def continuation_copy(index: int, sequence: ProbeSequence, k: int) -> ContinuationCopy:
    """The copy that scores prefix ``k`` of ``sequence`` (see the module docstring for the early start)."""
    continuation = np.asarray(sequence.continuation_ids, dtype=np.int64)
    width, n_answer = len(continuation), sequence.n_answer_tokens
    lead = 1 if n_answer == width else 0
    boundary = sequence.boundaries[k]
    ids = continuation
    if lead:
        ids = np.concatenate([np.asarray(sequence.trace_ids[boundary - 1 : boundary], dtype=np.int64), ids])
    answer_slots = np.arange(width - n_answer, width)  # continuation index of each answer token
    return ContinuationCopy(
        sequence=index,
        k=k,
        start=boundary - lead,
        ids=ids,
        read_offsets=answer_slots + lead - 1,
        targets=continuation[answer_slots],
    )


def plan_units(
    sequences: Sequence[ProbeSequence], groups: Sequence[PrefixGroup], forward_batch_tokens: int
) -> list[PackedUnit]:
    """One unit per group, split into consecutive sub-units when a group's padded positions exceed
    ``forward_batch_tokens`` (each sub-unit forwards the header again; a sub-unit of one member has none).
    Only the group's first member scores prefix 0."""
    units: list[PackedUnit] = []
    for group in groups:
        rows = [_member_row(index, sequences[index], first=index == group.first) for index in group.members]
        for part in _split(rows, group.header_length, forward_batch_tokens):
            if len(part) > 1 and sharing_pays(part, group.header_length):
                units.append(_unit(part, sequences, group.header_length))
            else:
                units.extend(PackedUnit(None, (row,)) for row in part)
    return units


def sharing_pays(rows: Sequence[MemberRow], header_length: int) -> bool:
    """Whether forwarding the header once beats lone rows: sharing saves ``(n - 1) x header`` positions
    but pads every member row to the group's longest, where lone rows are batched with rows of their own
    length (almost no padding). Prefix 0 is scored once per group either way."""
    branches = [len(row.branch_ids) - header_length for row in rows]
    padding = len(rows) * max(branches) - sum(branches)
    return (len(rows) - 1) * header_length > padding


def _member_row(index: int, sequence: ProbeSequence, *, first: bool) -> MemberRow:
    ks = range(0 if first else 1, sequence.n_prefixes)
    copies = tuple(continuation_copy(index, sequence, k) for k in ks)
    return MemberRow(index, 0, np.asarray(sequence.trace_ids, dtype=np.int64), copies)


def _unit(rows: list[MemberRow], sequences: Sequence[ProbeSequence], header_length: int) -> PackedUnit:
    if len(rows) == 1:
        return PackedUnit(None, (rows[0],))
    header = np.asarray(sequences[rows[0].sequence].trace_ids[:header_length], dtype=np.int64)
    shared_rows = tuple(
        MemberRow(row.sequence, header_length, row.branch_ids[header_length:], row.copies) for row in rows
    )
    return PackedUnit(header, shared_rows)


def _split(rows: list[MemberRow], header_length: int, forward_batch_tokens: int) -> Iterator[list[MemberRow]]:
    part: list[MemberRow] = []
    for row in rows:
        if part and _padded_positions([*part, row], header_length) > forward_batch_tokens:
            yield part
            part = []
        part.append(row)
    if part:
        yield part


def _padded_positions(rows: Sequence[MemberRow], header_length: int) -> int:
    """Positions a unit of these (unshared) rows computes once the header is shared and rows are padded."""
    if len(rows) == 1:
        return len(rows[0].branch_ids) + rows[0].probe_tokens
    branch = max(len(row.branch_ids) for row in rows) - header_length
    probe = max(row.probe_tokens for row in rows)
    return header_length + len(rows) * (branch + probe)


def batch_positions(units: Sequence[PackedUnit]) -> int:
    """Positions a batch of units computes, padding included: one header row per shared unit (padded to
    the longest header), then every member row padded to the widest branch and the widest copy block."""
    header_rows = sum(1 for unit in units if unit.header_ids is not None)
    header_width = max(unit.header_length for unit in units)
    member_rows = sum(len(unit.rows) for unit in units)
    branch = max(unit.branch_width for unit in units)
    probe = max(unit.probe_width for unit in units)
    return header_rows * header_width + member_rows * (branch + probe)


def batch_units(
    units: Sequence[PackedUnit], forward_batch_tokens: int, max_padding: float
) -> Iterator[list[PackedUnit]]:
    """Widest branch first; a batch grows while its padded positions fit ``forward_batch_tokens`` and padding
    stays under ``max_padding`` of them (a unit's own padding counts once it has company)."""
    ordered = sorted(units, key=lambda unit: (unit.branch_width, unit.probe_width), reverse=True)
    batch: list[PackedUnit] = []
    real = 0
    for unit in ordered:
        if batch:
            computed = batch_positions([*batch, unit])
            if computed > forward_batch_tokens or computed - real - unit.real_tokens > max_padding * computed:
                yield batch
                batch, real = [], 0
        batch.append(unit)
        real += unit.real_tokens
    if batch:
        yield batch


def forwarded_tokens(units: Sequence[PackedUnit], n_sequences: int) -> list[int]:
    """Real tokens forwarded per sequence: its branch and copies, plus its unit's header on the unit's
    first row (the numbers sum to what the probe forwards, padding excluded)."""
    forwarded = [0] * n_sequences
    for unit in units:
        for position, row in enumerate(unit.rows):
            header = unit.header_length if position == 0 else 0
            forwarded[row.sequence] += header + len(row.branch_ids) + row.probe_tokens
    return forwarded
