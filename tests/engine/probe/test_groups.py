"""Grouping probe sequences that share a question prefix (GRPO groups)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mig_annotator.engine.probe.groups import group_key, group_sequences, grouped_minimal_tokens
from tests.engine.probe.sequences import probe_sequence


def test_members_of_one_question_form_one_group_in_input_order() -> None:
    a = probe_sequence((1, 2, 3), [(10, 11), (12,)], (7,))
    b = probe_sequence((1, 2, 3), [(20,)], (7,))
    other_question = probe_sequence((1, 2, 4), [(10, 11)], (7,))
    other_answer = probe_sequence((1, 2, 3), [(10, 11)], (8,))
    groups = group_sequences([a, other_question, b, other_answer])
    assert [group.members for group in groups] == [(0, 2), (1,), (3,)]
    assert groups[0].header_length == 3


def test_the_shared_header_and_prefix_zero_are_counted_once() -> None:
    a = probe_sequence((1, 2, 3), [(10, 11), (12,)], (7,))  # 6 trace tokens, 3 prefixes, continuation 3
    b = probe_sequence((1, 2, 3), [(20,)], (7,))  # 4 trace tokens, 2 prefixes
    assert a.minimal_tokens + b.minimal_tokens == (6 + 3 * 3) + (4 + 2 * 3)
    # header 3 + prefix-0 continuation 3, then a's steps 3 + 2 continuations, b's step 1 + 1 continuation
    assert grouped_minimal_tokens([a, b]) == 3 + 3 + (3 + 2 * 3) + (1 + 1 * 3)
    assert grouped_minimal_tokens([a, b], enabled=False) == a.minimal_tokens + b.minimal_tokens


@given(
    st.lists(
        st.tuples(
            st.sampled_from([(1, 2), (1, 2, 3), (5,)]),
            st.lists(
                st.lists(st.integers(10, 40), min_size=1, max_size=3).map(tuple),
                min_size=1,
                max_size=4,
            ),
            st.sampled_from([(7,), (7, 8)]),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_groups_partition_the_batch_and_share_exactly_their_key(shapes: list) -> None:
    sequences = [probe_sequence(header, steps, answer) for header, steps, answer in shapes]
    groups = group_sequences(sequences)
    assert sorted(i for group in groups for i in group.members) == list(range(len(sequences)))
    assert len({group_key(sequences[group.first]) for group in groups}) == len(groups)
    for group in groups:
        assert {group_key(sequences[i]) for i in group.members} == {group_key(sequences[group.first])}
        assert list(group.members) == sorted(group.members)
    saved = sum(sequences[g.first].boundaries[0] + len(sequences[g.first].continuation_ids) for g in groups)
    total = sum(s.boundaries[0] + len(s.continuation_ids) for s in sequences)
    assert grouped_minimal_tokens(sequences) == sum(s.minimal_tokens for s in sequences) - total + saved
    ungrouped = group_sequences(sequences, enabled=False)
    assert [g.members for g in ungrouped] == [(i,) for i in range(len(sequences))]
