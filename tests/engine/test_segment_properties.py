"""Property tests: on arbitrary text every segmenter returns exact, ordered, disjoint spans inside the
chain of thought that never cover a reasoning tag, at most max_steps of them, and raises nothing."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mig_annotator.engine.segment import SegmentedCompletion, segment_completion, segment_steps

TAG = re.compile(r"</?(?:think|thinking|reasoning)>|<\|(?:begin|end)_of_thought\|>", re.IGNORECASE)

TOKENS = [
    "<think>", "</think>", "<THINKING>", "</reasoning>", "<|begin_of_thought|>", "<|end_of_thought|>",
    "<think", "think>", "<step>", "</step>", "<step ", "<answer>", "</answer>", "\\boxed{", "{", "}", "\\",
    "$", "$$", "\\[", "\\]", "**", "#", "####", "Step 1:", "## Step 2", "A:", "the answer is ", "so, ",
    "final answer: ", ".", "!", "? ", "e.g. ", " ", "  ", "\t", "\n", "\n\n", "\r\n", "\r", "a", "Bob", "42",
    "é", "中。", "😀", "\u2028", "\x85",
]  # fmt: skip

TEXT = st.one_of(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join), st.text(max_size=80))


def assert_valid(result: SegmentedCompletion, max_steps: int | None) -> None:
    text = result.completion
    cot_start, cot_end = result.cot_span
    assert 0 <= cot_start <= cot_end <= len(text)
    previous_end = cot_start
    tags = [match.span() for match in TAG.finditer(text)]
    for step in result.steps:
        assert text[step.start : step.end] == step.text
        assert step.text and step.text == step.text.strip()
        assert previous_end <= step.start < step.end <= cot_end
        previous_end = step.end
        assert not any(step.start < tag_end and tag_start < step.end for tag_start, tag_end in tags)
    if max_steps is not None:
        assert len(result.steps) <= max_steps
    for seg in (result.answer_part, result.answer):
        if seg is not None:
            assert text[seg.start : seg.end] == seg.text


@settings(max_examples=250, deadline=None)
@given(
    text=TEXT,
    segmenter=st.sampled_from(["auto", "tags", "lines", "headers", "regex"]),
    min_chars=st.integers(0, 30),
    extra_chars=st.integers(1, 60),
    max_steps=st.none() | st.integers(1, 6),
)
def test_any_text_segments_into_valid_spans(
    text: str, segmenter: str, min_chars: int, extra_chars: int, max_steps: int | None
) -> None:
    result = segment_completion(
        text,
        segmenter,  # type: ignore[arg-type]
        r"[^\n.]+" if segmenter == "regex" else None,
        min_step_chars=min_chars,
        max_step_chars=min_chars + extra_chars,
        max_steps=max_steps,
    )
    assert_valid(result, max_steps)


@settings(max_examples=120, deadline=None)
@given(text=TEXT, max_chars=st.integers(1, 40))
def test_prose_steps_respect_max_step_chars_unless_a_line_is_kept_whole(text: str, max_chars: int) -> None:
    """Every step is at most max_step_chars long, except a whole line (or display-math block) that was
    short enough, which never needed cutting: so steps over the limit never occur with min_step_chars=0."""
    result = segment_completion(text, "lines", min_step_chars=0, max_step_chars=max_chars, max_steps=None)
    assert_valid(result, None)
    assert all(len(step.text) <= max_chars or "\n" in step.text or "\r" in step.text for step in result.steps)


@settings(max_examples=120, deadline=None)
@given(
    steps=st.lists(TEXT.filter(lambda item: bool(item.strip())), min_size=1, max_size=8),
    max_steps=st.none() | st.integers(1, 4),
)
def test_explicit_steps_give_valid_spans(steps: list[str], max_steps: int | None) -> None:
    result = segment_steps(steps, max_steps=max_steps)
    if max_steps is not None:
        assert len(result.steps) <= max_steps
    previous_end = 0
    for step in result.steps:
        assert result.completion[step.start : step.end] == step.text and step.start >= previous_end
        previous_end = step.end
