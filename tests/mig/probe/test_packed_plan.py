"""How the packed probe lays out groups: shared headers, who scores prefix 0, splits and token counts."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from mig_annotator.mig.probe.groups import group_sequences, grouped_minimal_tokens
from mig_annotator.mig.probe.packed_plan import (
    batch_positions,
    batch_units,
    continuation_copy,
    forwarded_tokens,
    plan_units,
)
from tests.mig.probe.sequences import probe_sequence


def test_a_group_forwards_its_header_once_and_only_its_first_member_scores_prefix_zero() -> None:
    a = probe_sequence((1, 2, 3), [(10, 11), (12,)], (7,))
    b = probe_sequence((1, 2, 3), [(20,)], (7,))
    lone = probe_sequence((5,), [(30,)], (7,))
    sequences = [a, lone, b]
    units = plan_units(sequences, group_sequences(sequences), forward_batch_tokens=4096)
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


def test_members_of_very_different_lengths_do_not_share_a_header_but_still_score_prefix_zero_once() -> None:
    short = probe_sequence((1, 2, 3), [(10,)], (7,))
    long = probe_sequence((1, 2, 3), [tuple(range(10, 30))], (7,))  # padding 19 > header saved 3
    units = plan_units([short, long], group_sequences([short, long]), forward_batch_tokens=4096)
    assert [unit.header_ids for unit in units] == [None, None]
    assert [[copy.k for copy in unit.rows[0].copies] for unit in units] == [[0, 1], [1]]


def test_a_group_over_the_batch_budget_is_split_and_a_lone_part_has_no_header() -> None:
    members = [probe_sequence((1, 2, 3, 4), [tuple(range(10, 40))], (7,)) for _ in range(3)]
    units = plan_units(members, group_sequences(members), forward_batch_tokens=80)
    assert [len(unit.rows) for unit in units] == [2, 1]
    assert units[0].header_length == 4 and units[1].header_ids is None
    assert [copy.k for copy in units[1].rows[0].copies] == [1]  # prefix 0 is the first member's


def test_batches_respect_the_budget_unless_a_unit_alone_exceeds_it() -> None:
    sequences = [
        probe_sequence((1, q), [tuple(range(10, 10 + n))], (7,)) for q, n in enumerate([5, 40, 6, 7])
    ]
    units = plan_units(sequences, group_sequences(sequences), forward_batch_tokens=48)
    batches = list(batch_units(units, forward_batch_tokens=48, max_padding=0.5))  # 3 x (9 + 6) fit
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
    units = plan_units(sequences, groups, budget)
    scored = sorted((copy.sequence, copy.k) for unit in units for row in unit.rows for copy in row.copies)
    firsts = {group.first for group in groups}
    expected = sorted(
        (i, k) for i, s in enumerate(sequences) for k in range(s.n_prefixes) if k > 0 or i in firsts
    )
    assert scored == expected
    forwarded = sum(forwarded_tokens(units, len(sequences)))
    group_of = {index: group for group in groups for index in group.members}
    units_per_group: dict[int, int] = {}
    for unit in units:
        first = group_of[unit.rows[0].sequence].first
        units_per_group[first] = units_per_group.get(first, 0) + 1
    repeated_headers = sum(
        (count - 1) * sequences[first].boundaries[0] for first, count in units_per_group.items()
    )
    assert forwarded == grouped_minimal_tokens(sequences, enabled=grouped) + repeated_headers
    for unit in units:
        for row in unit.rows:
            assert np.array_equal(
                np.concatenate([unit.header_ids if unit.header_ids is not None else [], row.branch_ids]),
                sequences[row.sequence].trace_ids,
            )
