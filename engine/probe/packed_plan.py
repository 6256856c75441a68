"""The layout of the packed probe's work: shared headers, member rows, continuation copies, batches.

Pure planning (numpy only); :mod:`mig_annotator.engine.probe.packed_run` runs it. For one trace with
boundaries ``b_0 < ... < b_K`` and continuation ``c`` (answer prompt + answer), probe ``k`` reads
``trace[:b_k] + c``. The packed path forwards each trace once and, for every ``k``, one *copy* of the
continuation placed at position ``b_k`` that attends to the trace's first ``b_k`` positions and to itself.

Groups (:mod:`mig_annotator.engine.probe.groups`) go further: the members of a group share the header
``trace[:b_0]`` and prefix 0, so a *unit* of several members forwards the header once and each member row
forwards only its own tokens ``trace[b_0:]``; only the group's first member carries the copy for ``k = 0``.
A unit of one member has no header: its member row is the whole trace. Headers are forwarded in *waves*
(:func:`plan_waves`: at most ``forward_batch_tokens`` header positions of cache at a time); the member rows
of a wave, of any group, and the lone rows are then batched by their own length (:func:`batch_rows`), each
row reading its own header's cache, so no member is padded to its group's longest; rows of neighbouring
lengths share a batch where the padding costs less than the pass it saves (:data:`PASS_POSITIONS`).

When the continuation is the answer alone (an answer prompt that tokenises to nothing), the hidden state
that predicts the first answer token is the trace's own at ``b_k - 1``; such copies start one token early,
with that trace token (:attr:`ContinuationCopy.start` ``= b_k - 1``), so every read is inside a copy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from mig_annotator.engine.probe.groups import PrefixGroup
from mig_annotator.engine.prompt import ProbeSequence


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
    header: int | None = None  # the wave's header this row reads (set by :func:`plan_waves`)

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


def plan_units(sequences: Sequence[ProbeSequence], groups: Sequence[PrefixGroup]) -> list[PackedUnit]:
    """One unit per group whose members share its header (:func:`shares_header`), else one lone unit per
    member. Only the group's first member scores prefix 0. A shared unit's members are not batched together:
    its header is forwarded once (:func:`plan_waves`) and every member row reads that header's cache from
    whichever batch of rows of its own length it lands in (:func:`batch_rows`)."""
    units: list[PackedUnit] = []
    for group in groups:
        rows = [_member_row(index, sequences[index], first=index == group.first) for index in group.members]
        if shares_header(len(rows), group.header_length):
            units.append(_unit(rows, sequences, group.header_length))
        else:
            units.extend(PackedUnit(None, (row,)) for row in rows)
    return units


def shares_header(members: int, header_length: int) -> bool:
    """Whether a group of ``members`` forwards its ``header_length``-token header once for all of them
    (a shared unit) rather than each member forwarding its whole trace alone: whenever two members or more
    read a header that holds a token.

    Sharing saves ``(members - 1) x header_length`` positions and costs no padding: the header runs in the
    wave's header passes (with the wave's other headers where their padding is cheaper than a pass of their
    own, :func:`length_batches`), and every member row is batched with rows of about its own length
    (:func:`batch_rows`), shared or lone alike."""
    return members > 1 and header_length > 0


def _member_row(index: int, sequence: ProbeSequence, *, first: bool) -> MemberRow:
    ks = range(0 if first else 1, sequence.n_prefixes)
    copies = tuple(continuation_copy(index, sequence, k) for k in ks)
    return MemberRow(index, 0, np.asarray(sequence.trace_ids, dtype=np.int64), copies)


def _unit(rows: list[MemberRow], sequences: Sequence[ProbeSequence], header_length: int) -> PackedUnit:
    header = np.asarray(sequences[rows[0].sequence].trace_ids[:header_length], dtype=np.int64)
    shared_rows = tuple(
        MemberRow(row.sequence, header_length, row.branch_ids[header_length:], row.copies) for row in rows
    )
    return PackedUnit(header, shared_rows)


@dataclass(frozen=True, slots=True)
class Wave:
    """Headers forwarded together and the member rows that read them (``row.header``: an index into
    ``headers``), with any lone rows; the headers' cache lives while the wave's rows run."""

    headers: tuple[np.ndarray, ...]
    rows: tuple[MemberRow, ...]


def plan_waves(units: Sequence[PackedUnit], forward_batch_tokens: int) -> list[Wave]:
    """Units in order, cut into waves whose headers hold at most ``forward_batch_tokens`` positions of
    cache (a header longer than that forms a wave of its own); lone rows join the first wave."""
    waves: list[tuple[list[np.ndarray], list[MemberRow]]] = [([], [])]
    cached = 0
    for unit in units:
        if unit.header_ids is None:
            waves[0][1].extend(unit.rows)
            continue
        headers, rows = waves[-1]
        if headers and cached + unit.header_length > forward_batch_tokens:
            waves.append(([], []))
            headers, rows, cached = *waves[-1], 0
        rows.extend(replace(row, header=len(headers)) for row in unit.rows)
        headers.append(unit.header_ids)
        cached += unit.header_length
    return [Wave(tuple(headers), tuple(rows)) for headers, rows in waves if rows]


PASS_POSITIONS = 16
"""What one forward pass costs beyond its positions, in positions: a pass reads every weight once whatever
its size (SmolLM2-135M fp32 on one CPU thread, measured: about 60 ms a pass against 3 ms a position, so
about 20; 16 errs toward padding less). The batching weighs padding against passes with it."""


def length_batches(
    lengths: Sequence[tuple[int, int]], forward_batch_tokens: int, pass_positions: int = PASS_POSITIONS
) -> Iterator[list[int]]:
    """Indices of items ``(cached, computed)`` in batches, widest first: every item of a batch is padded to
    the batch's widest ``computed`` (and holds its widest ``cached`` columns of cache). Of the cuts of the
    items sorted by width into runs whose ``rows x (cached + computed)`` fit ``forward_batch_tokens`` (an
    item alone is a batch whatever its size), the one with the fewest positions computed, padding included,
    plus ``pass_positions`` per batch (dynamic programming over the sorted items). The transformers probe's
    one batching policy: the packed mode's headers and member rows and the one-pass modes' rows."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i][1], reverse=True)
    n = len(order)
    best = [0] * (n + 1)  # best[i]: the cost of batching order[i:]
    cut = [n] * (n + 1)  # cut[i]: where the batch starting at order[i] ends
    for i in range(n - 1, -1, -1):
        width = lengths[order[i]][1]
        cached = 0
        best[i] = -1
        for j in range(i, n):
            cached = max(cached, lengths[order[j]][0])
            rows = j - i + 1
            if rows > 1 and rows * (cached + width) > forward_batch_tokens:
                break
            cost = pass_positions + rows * width + best[j + 1]
            if best[i] < 0 or cost < best[i]:
                best[i], cut[i] = cost, j + 1
    i = 0
    while i < n:
        yield order[i : cut[i]]
        i = cut[i]


def batch_rows(
    rows: Sequence[MemberRow], forward_batch_tokens: int, pass_positions: int = PASS_POSITIONS
) -> Iterator[list[MemberRow]]:
    """Member rows batched by length (branch and copies, which run in one pass): a shared member reads its
    header from the wave's cache, so rows of different groups and lone rows batch together and pad only to
    their own length where that is cheaper than another pass; a batch holds at most
    ``forward_batch_tokens`` positions of cache (headers included)."""
    lengths = [(row.shared, row_width(row)) for row in rows]
    for indices in length_batches(lengths, forward_batch_tokens, pass_positions):
        yield [rows[i] for i in indices]


def even_chunk(width: int, chunk: int) -> int:
    """The width of each of the fewest equal passes of at most ``chunk`` over ``width`` positions."""
    passes = max(1, -(-width // chunk))
    return max(1, -(-width // passes))


def right_padded(rows: Sequence[np.ndarray], width: int) -> np.ndarray:
    """``rows`` (int64) as one (len(rows), width) array, each row followed by zeros."""
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def row_width(row: MemberRow) -> int:
    """New positions a member row computes: its branch followed by its copies."""
    return len(row.branch_ids) + row.probe_tokens


def batch_positions(rows: Sequence[MemberRow]) -> int:
    """Positions a batch of member rows computes, padding included (the headers are the wave's)."""
    return len(rows) * max(row_width(row) for row in rows)


def forwarded_tokens(units: Sequence[PackedUnit], n_sequences: int) -> list[int]:
    """Real tokens forwarded per sequence: its branch and copies, plus its unit's header on the unit's
    first row (the numbers sum to what the probe forwards, padding excluded)."""
    forwarded = [0] * n_sequences
    for unit in units:
        for position, row in enumerate(unit.rows):
            header = unit.header_length if position == 0 else 0
            forwarded[row.sequence] += header + len(row.branch_ids) + row.probe_tokens
    return forwarded
