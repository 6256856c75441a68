"""Reasoning blocks: the content of <think>..</think> (and variants) is the chain of thought, the text
after it is the answer part, and the tags are never steps nor inside a step."""

from __future__ import annotations

import pytest

from mig_annotator.engine.segment import Segment, segment_completion


def texts(completion: str, **options: object) -> list[str]:
    return [step.text for step in segment_completion(completion, **options).steps]  # type: ignore[arg-type]


def test_think_block_content_is_the_cot_and_the_rest_the_answer_part() -> None:
    text = (
        "<think>\nFirst, 2+3=5.\nThen 5*2=10.\n</think>\n\n"
        "So the total is 10.\n\n**Final Answer**: \\boxed{10}"
    )
    result = segment_completion(text)
    assert [s.text for s in result.steps] == ["First, 2+3=5.", "Then 5*2=10."]
    assert result.cot_span == (len("<think>"), text.index("</think>"))
    part = text[text.index("So the") :]
    assert result.answer_part == Segment(part, text.index("So the"), len(text))
    assert result.answer == Segment("10", len(text) - 3, len(text) - 1)


@pytest.mark.parametrize(
    ("opening", "closing"),
    [
        ("<think>", "</think>"),
        ("<thinking>", "</thinking>"),
        ("<reasoning>", "</reasoning>"),
        ("<|begin_of_thought|>", "<|end_of_thought|>"),
        ("<THINK>", "</Think>"),
    ],
)
def test_tag_variants(opening: str, closing: str) -> None:
    text = f"{opening}a is 1.\nb is 2.{closing}The answer is 3."
    result = segment_completion(text)
    assert [s.text for s in result.steps] == ["a is 1.", "b is 2."]
    assert result.answer_part is not None and result.answer_part.text == "The answer is 3."
    assert result.answer is not None and result.answer.text == "3"


def test_the_closing_tag_without_an_opening_one_ends_the_cot() -> None:
    """Chat templates that put <think> into the prompt: the completion starts inside the block."""
    text = "Let me see.\n7 * 6 = 42.\n</think>\n#### 42"
    result = segment_completion(text)
    assert [s.text for s in result.steps] == ["Let me see.", "7 * 6 = 42."]
    assert result.cot_span == (0, text.index("</think>"))
    assert result.answer_part == Segment("#### 42", len(text) - 7, len(text))
    assert result.answer == Segment("42", len(text) - 2, len(text))


def test_an_unclosed_block_is_a_cut_completion() -> None:
    text = "<think>\nStep one here.\nStep two: still going"
    result = segment_completion(text)
    assert [s.text for s in result.steps] == ["Step one here.", "Step two: still going"]
    assert result.answer_part is None and result.answer is None
    assert result.cot_span == (7, len(text))
    with_marker = segment_completion("<think>so 2+2=4\nthe answer is 4")
    assert [s.text for s in with_marker.steps] == ["so 2+2=4"]
    assert with_marker.answer is not None and with_marker.answer.text == "4"
    assert with_marker.cot_span == (7, with_marker.answer_part.start)  # type: ignore[union-attr]


def test_text_around_the_block_and_inner_answers() -> None:
    """A preamble before the tag is not a step; an answer phrase inside the block is reasoning, not the
    final answer; the tags themselves appear in no step."""
    text = "Sure!\n<think>The answer is 5? No.\nRecheck: 6.</think>"
    result = segment_completion(text)
    assert [s.text for s in result.steps] == ["The answer is 5? No.", "Recheck: 6."]
    assert result.answer_part is None and result.answer is None
    nested = "<think>a\n<think>b\nc</think>d"
    assert texts(nested) == ["b", "c"]
    assert segment_completion(nested).answer_part == Segment("d", len(nested) - 1, len(nested))
    assert texts("</think></think>x") == []
    assert texts("<think></think>") == [] and segment_completion("<think></think>").answer_part is None


def test_think_tags_are_never_steps_with_every_segmenter() -> None:
    text = "<think>\n<step>one</step>\n<step>two</step>\n</think>\n<answer>2</answer>"
    for segmenter in ("auto", "tags", "lines", "headers"):
        result = segment_completion(text, segmenter)  # type: ignore[arg-type]
        assert all("think>" not in step.text for step in result.steps), segmenter
        assert result.answer is not None and result.answer.text == "2"
    assert texts(text) == ["one", "two"]
    assert texts(text, segmenter="lines") == ["<step>one</step>", "<step>two</step>"]
    assert texts(text, segmenter="regex", step_regex=r"<step>(\w+)</step>") == ["one", "two"]


def test_the_answer_after_repeated_closing_tags_is_found_after_the_last_one() -> None:
    """``"</think>" * 5000 + "A: 5"`` has its answer: the answer region starts after the last closing tag
    (after the first one, ``A:`` would not be at a line start)."""
    text = "</think>" * 5000 + "A: 5"
    result = segment_completion(text)
    assert result.answer_part == Segment("A: 5", len(text) - 4, len(text))
    assert result.answer == Segment("5", len(text) - 1, len(text))
    assert result.steps == ()


def test_nested_blocks_end_with_the_answer_after_the_last_closing_tag() -> None:
    text = "<think>Outer.\n<think>Inner: 2+3=5.</think>\nBack outside.</think>\nThe answer is 5."
    result = segment_completion(text)
    assert result.answer_part is not None and result.answer_part.text == "The answer is 5."
    assert result.answer is not None and result.answer.text == "5"
    assert [s.text for s in result.steps] == ["Inner: 2+3=5."]
    assert all("think>" not in step.text for step in result.steps)
    repeated = "<think>a is 1.</think>A: 4\n<think>No, recheck.</think>\n#### 5"
    assert segment_completion(repeated).answer.text == "5"  # type: ignore[union-attr]


def test_an_answer_after_repeated_closing_tags_scores_outcome_one() -> None:
    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.engine.probe.fake import FakeProbe
    from mig_annotator.schemas.trace import Trace

    traces = [
        Trace(id="repeated", question="2+3?", completion="</think>" * 5000 + "A: 5", reference_answer="5"),
        Trace(
            id="nested",
            question="2+3?",
            completion="<think>hm\n<think>2+3=5</think>\nok</think>\nThe answer is 5.",
            reference_answer="5",
        ),
    ]
    with Annotator(FakeProbe()) as annotator:
        results = annotator.annotate(traces)
    assert [(r.trace_id, r.outcome) for r in results] == [("repeated", 1), ("nested", 1)]
