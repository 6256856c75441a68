"""`offsets_problem`: which policy-token offsets fit a completion (pairs within it, never decreasing), and
`placed_rewards`, the one placement the service's answer and client.verl.token_rewards share."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mig_annotator.schemas import TraceAnnotation
from mig_annotator.schemas.api import TokenRewards
from mig_annotator.schemas.token_alignment import align_annotation, offsets_problem, placed_rewards
from tests.schemas.test_token_alignment import annotation


@st.composite
def text_and_offsets(draw: st.DrawFn) -> tuple[int, list[list[int]]]:
    """A text length and offsets a tokenizer could give: consecutive pieces, some zero-width, some sharing
    a character (byte-level pieces of one character)."""
    length = draw(st.integers(0, 60))
    cuts = sorted(draw(st.lists(st.integers(0, length), max_size=30)))
    offsets: list[list[int]] = []
    start = 0
    for cut in [*cuts, length]:
        offsets.append([start, cut])
        if draw(st.booleans()):
            offsets.append([start, cut])  # a second piece of the same characters
        start = cut
    return length, offsets


@given(text_and_offsets())
def test_offsets_that_follow_the_text_pass(case: tuple[int, list[list[int]]]) -> None:
    length, offsets = case
    assert offsets_problem(offsets, length) is None


@given(text_and_offsets(), st.data())
def test_a_token_moved_back_or_past_the_end_is_named(
    case: tuple[int, list[list[int]]], data: st.DataObject
) -> None:
    length, offsets = case
    index = data.draw(st.integers(0, len(offsets) - 1))
    broken = [list(pair) for pair in offsets]
    if data.draw(st.booleans()):
        broken[index][1] = length + data.draw(st.integers(1, 5))
        broken[index][0] = min(broken[index][0], broken[index][1])
    else:
        if index == 0 or broken[index - 1][0] == 0:
            broken[index] = [broken[index][0], broken[index][0] - 1] if broken[index][0] else [0, -1]
        else:
            broken[index] = [broken[index - 1][0] - 1, broken[index - 1][1]]
    found = offsets_problem(broken, length)
    assert found is not None and found[0] <= index


def test_each_rule_has_its_reason() -> None:
    assert offsets_problem([[0, 2], [2, 1]], 5) == (1, "[2, 1] is not a range: need 0 <= start <= end")
    assert offsets_problem([[-1, 2]], 5) == (0, "[-1, 2] is not a range: need 0 <= start <= end")
    assert offsets_problem([[0, 6]], 5) == (0, "[0, 6] ends past the completion's 5 characters")
    assert offsets_problem([[1, 3], [0, 4]], 5) == (
        1,
        "[0, 4] goes back from the previous token's [1, 3]: offsets must not decrease",
    )
    assert offsets_problem([[0, 3], [2, 2]], 5) is not None  # ends before the previous token's end
    assert offsets_problem([[0, 3], [2, 4]], 5) is None  # overlapping but not going back
    assert offsets_problem([[0, 1, 2]], 5) == (0, "[0, 1, 2] is not a [start, end] pair")
    assert offsets_problem([], 0) is None
    assert offsets_problem([[0, 3], [3, 3], [3, 5], [3, 5]], 5) is None


def one_step() -> TraceAnnotation:
    """ "One step.\nA: 5": one step (0-9, r 0.25), the answer part 10-14, the answer 13-14, correct."""
    return annotation(
        [(0, 9, 0.25)], completion="One step.\nA: 5", cot=(0, 9), part=(10, 14), answer=(13, 14)
    )


def test_the_services_token_rewards_are_the_shared_placement() -> None:
    offsets = [(0, 3), (3, 9), (9, 10), (10, 13), (13, 14), (14, 14)]
    placed = TokenRewards.of(one_step(), offsets)
    _, rewards = placed_rewards(one_step(), offsets)
    assert placed.rewards == rewards.tolist() == [0.0, 0.25, 0.0, 0.0, 1.0, 0.0]
    assert placed.step_end_tokens == [1] and placed.outcome_index == 4
    assert placed.cot_mask == [True, True, False, False, False, False]
    assert placed.answer_mask == [False, False, False, True, True, False]
    assert placed.completion_mask == align_annotation(one_step(), offsets).completion_mask.tolist()
    _, weighted = placed_rewards(one_step(), offsets, process_weight=2.0, outcome_weight=0.5)
    assert weighted.tolist() == [0.0, 0.5, 0.0, 0.0, 0.5, 0.0]
