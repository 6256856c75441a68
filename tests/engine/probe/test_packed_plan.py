"""How the packed probe lays out groups: shared headers, who scores prefix 0, splits and token counts."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from mig_annotator.engine.probe.groups import group_sequences, grouped_minimal_tokens
from mig_annotator.engine.probe.packed_plan import (
    batch_positions,
    batch_rows,
    continuation_copy,
    forwarded_tokens,
    length_batches,
    plan_units,
    plan_waves,
    shares_header,
)
from tests.engine.probe.sequences import probe_sequence


def test_a_group_forwards_its_header_once_and_only_its_first_member_scores_prefix_zero() -> None:
    a = probe_sequence((1, 2, 3), [(10, 11), (12,)], (7,))
    b = probe_sequence((1, 2, 3), [(20,)], (7,))
    lone = probe_sequence((5,), [(30,)], (7,))
    sequences = [a, lone, b]
    units = plan_units(sequences, group_sequences(sequences))
    shared, alone = units
    assert shared.header_ids.tolist() == [1, 2, 3] and alone.header_ids is None
    first, second = shared.rows
    assert (first.sequence, second.sequence) == (0, 2)
    assert [copy.k for copy in first.copies] == [0, 1, 2] and [copy.k for copy in second.copies] == [1]
    assert first.branch_ids.tolist() == [10, 11, 12] and second.branch_ids.tolist() == [20]
    assert alone.rows[0].branch_ids.tolist() == [5, 30]
    assert [copy.k for copy in alone.rows[0].copies] == [0, 1]


def test_a_copy_reads_the_answer_rows_of_its_own_tokens() -> None:
    sequence = probe_sequence((1, 2, 3), [(10, 11)], (7, 8))  # continuation 900 901 7 8
    copy = continuation_copy(0, sequence, 1)
    assert copy.start == 5 and copy.ids.tolist() == [900, 901, 7, 8]
    assert copy.read_offsets.tolist() == [1, 2] and copy.targets.tolist() == [7, 8]


def test_an_answer_without_prompt_starts_its_copy_at_the_last_prefix_token() -> None:
    sequence = probe_sequence((1, 2, 3), [(10, 11)], (7, 8), prompt=())
    copy = continuation_copy(0, sequence, 1)
    assert copy.start == 4 and copy.ids.tolist() == [11, 7, 8]  # token 11 predicts answer token 7
    assert copy.read_offsets.tolist() == [0, 1] and copy.targets.tolist() == [7, 8]
    assert continuation_copy(0, sequence, 0).ids.tolist() == [3, 7, 8]


def test_members_of_very_different_lengths_share_their_header_and_are_batched_apart() -> None:
    short = probe_sequence((1, 2, 3), [(10,)], (7,))
    long = probe_sequence((1, 2, 3), [tuple(range(10, 30))], (7,))
    other = probe_sequence((4,), [tuple(range(40, 59))], (7,))  # another question, as long as `long`
    sequences = [short, long, other]
    units = plan_units(sequences, group_sequences(sequences))
    assert [unit.header_length for unit in units] == [3, 0]  # the pair shares; padding no longer decides
    (wave,) = plan_waves(units, forward_batch_tokens=4096)
    assert [header.tolist() for header in wave.headers] == [[1, 2, 3]]
    assert [(row.sequence, row.header, row.shared) for row in wave.rows] == [
        (0, 0, 3),
        (1, 0, 3),
        (2, None, 0),
    ]
    batches = [[row.sequence for row in batch] for batch in batch_rows(wave.rows, 4096)]
    assert batches == [[2, 1], [0]]  # the 20-token branches together, the short one alone
    assert batch_positions([wave.rows[1], wave.rows[2]]) == 2 * (20 + 6)  # other: copies k=0, 1


def test_a_group_shares_its_header_once_two_members_read_a_non_empty_one() -> None:
    assert not shares_header(1, 50)
    assert shares_header(2, 50)
    assert shares_header(2, 1)
    assert not shares_header(2, 0)


def test_headers_over_the_batch_budget_run_in_waves_each_with_its_members() -> None:
    sequences = [
        probe_sequence((q, 1, 2, 3), [tuple(range(10, 10 + n))], (7,)) for q in (1, 2) for n in (5, 9)
    ]
    units = plan_units(sequences, group_sequences(sequences))
    waves = plan_waves(units, forward_batch_tokens=6)  # one 4-token header per wave
    assert [[h.tolist() for h in wave.headers] for wave in waves] == [[[1, 1, 2, 3]], [[2, 1, 2, 3]]]
    assert [[(row.sequence, row.header) for row in wave.rows] for wave in waves] == [
        [(0, 0), (1, 0)],
        [(2, 0), (3, 0)],
    ]


def test_batches_respect_the_budget_unless_a_row_alone_exceeds_it() -> None:
    sequences = [
        probe_sequence((1, q), [tuple(range(10, 10 + n))], (7,)) for q, n in enumerate([5, 40, 6, 7])
    ]
    (wave,) = plan_waves(plan_units(sequences, group_sequences(sequences)), forward_batch_tokens=48)
    batches = list(batch_rows(wave.rows, forward_batch_tokens=48))  # 3 x (9 + 6) fit
    assert sorted(len(batch) for batch in batches) == [1, 3]
    assert all(batch_positions(batch) <= 48 or len(batch) == 1 for batch in batches)


_step = st.lists(st.integers(10, 60), min_size=1, max_size=6).map(tuple)


@given(
    st.lists(
        st.tuples(st.sampled_from([(1, 2), (1, 2, 3), (4,)]), st.lists(_step, min_size=1, max_size=5)),
        min_size=1,
        max_size=10,
    ),
    st.booleans(),
    st.integers(20, 200),
)
def test_every_prefix_is_scored_once_and_the_forwarded_tokens_add_up(
    shapes: list, grouped: bool, budget: int
) -> None:
    sequences = [probe_sequence(header, steps, (7,)) for header, steps in shapes]
    groups = group_sequences(sequences, enabled=grouped)
    units = plan_units(sequences, groups)
    waves = plan_waves(units, budget)
    rows = [row for wave in waves for row in wave.rows]
    scored = sorted((copy.sequence, copy.k) for row in rows for copy in row.copies)
    firsts = {group.first for group in groups}
    expected = sorted(
        (i, k) for i, s in enumerate(sequences) for k in range(s.n_prefixes) if k > 0 or i in firsts
    )
    assert scored == expected
    assert sum(forwarded_tokens(units, len(sequences))) == grouped_minimal_tokens(sequences, enabled=grouped)
    for wave in waves:
        assert sum(len(header) for header in wave.headers) <= budget or len(wave.headers) == 1
        for row in wave.rows:
            header = wave.headers[row.header] if row.header is not None else np.array([], dtype=np.int64)
            assert len(header) == row.shared
            assert np.array_equal(np.concatenate([header, row.branch_ids]), sequences[row.sequence].trace_ids)
        for batch in batch_rows(wave.rows, budget):
            held = len(batch) * (max(r.shared for r in batch) + batch_positions(batch) // len(batch))
            assert held <= budget or len(batch) == 1


def test_rows_of_neighbouring_lengths_share_a_pass_where_padding_costs_less_than_a_pass() -> None:
    # 6 positions of padding (15% of the batch) cost less than a second pass (PASS_POSITIONS = 16) ...
    assert list(length_batches([(0, 20), (0, 14)], 4096)) == [[0, 1]]
    # ... 18 do not, and neither does a batch over the budget
    assert list(length_batches([(0, 20), (0, 2)], 4096)) == [[0], [1]]
    assert list(length_batches([(30, 20), (30, 20)], 64)) == [[0], [1]]
    # the cut is the cheapest one, not the greedy one: 30 alone, then 12 and 10 together
    assert list(length_batches([(0, 30), (0, 12), (0, 10)], 4096)) == [[0], [1, 2]]
