"""User step patterns run on RE2: linear time, refused by name when RE2 cannot compile them."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mig_annotator.engine.segment import SegmentationCancelled, SegmentationError, segment_completion
from mig_annotator.engine.segment.user_regex import MAX_REGEX_WORK, WINDOW_BYTES, StepPattern


def test_regex_steps_have_str_offsets_in_unicode_text() -> None:
    text = "é中 1) alpha 😀 2) beta\n#### 9"
    result = segment_completion(text, "regex", r"\d\)(?P<step>[^\d#]*)")
    assert [s.text for s in result.steps] == ["alpha 😀", "beta"]
    assert all(text[s.start : s.end] == s.text for s in result.steps)


def test_long_texts_are_searched_in_windows_with_the_same_steps_for_short_matches() -> None:
    lines = [f"Line {i}: add {i} and ünïcode {'x' * (i % 50)}" for i in range(2000)]
    text = "\n".join(lines)
    assert len(text.encode()) > 20 * WINDOW_BYTES
    result = segment_completion(text, "regex", r"(?m)^Line \d+: ([^\n]+)$", max_steps=None)
    expected = [m.group(1).strip() for m in re.finditer(r"(?m)^Line \d+: ([^\n]+)$", text)]
    assert [s.text for s in result.steps] == expected
    assert all(text[s.start : s.end] == s.text for s in result.steps)


def test_a_window_without_a_match_moves_on_and_finds_later_matches() -> None:
    text = " " * (3 * WINDOW_BYTES) + "STEP one " + "." * WINDOW_BYTES + " STEP two"
    result = segment_completion(text, "regex", r"STEP \w+")
    assert [s.text for s in result.steps] == ["STEP one", "STEP two"]


def test_empty_matches_advance() -> None:
    assert [s.text for s in segment_completion("ab", "regex", r"x*").steps] == []
    text = "é b " * 1500  # multi-byte characters, longer than a window
    assert len(segment_completion(text, "regex", r"x*").steps) == 0
    assert [s.start for s in segment_completion(text, "regex", r"b|x*", max_steps=None).steps] == list(
        range(2, len(text), 4)
    )


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [(r"(a)\1", "escape"), (r"a(?=b)", "perl operator"), (r"(?<!a)b", "perl operator"), ("(", "missing")],
)
def test_patterns_re2_cannot_compile_are_refused_by_name(pattern: str, reason: str) -> None:
    with pytest.raises(SegmentationError, match=rf"step_regex .*{reason}.*RE2"):
        StepPattern(pattern)


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(alphabet="ab\n é", max_size=60),
    pattern=st.sampled_from([r"a+", r"(a)b", r"(?P<step>b+)a", r"[^\n]+", r"(?m)^a.*$", r"é|ab"]),
)
def test_short_texts_match_like_pythons_re(text: str, pattern: str) -> None:
    compiled = re.compile(pattern)
    group = "step" if "step" in compiled.groupindex else min(compiled.groups, 1)
    expected = [m.span(group) for m in compiled.finditer(text) if m.start(group) >= 0]
    assert list(StepPattern(pattern).spans(text, 0, len(text))) == expected


def test_a_pattern_too_costly_for_the_completion_is_refused_before_any_matching() -> None:
    pattern = StepPattern("(.*a){1000}")  # valid RE2: thousands of instructions, RE2's DFA runs out of memory
    text = "a" * 200_000
    assert pattern.program_size * len(text) > MAX_REGEX_WORK
    with pytest.raises(SegmentationError, match=r"too costly.*\d+ instructions.*200000 bytes.*limit"):
        list(pattern.spans(text, 0, len(text)))
    with pytest.raises(SegmentationError, match="too costly"):
        segment_completion(text, "regex", "(.*a){1000}")


def test_a_cheap_pattern_on_the_same_long_completion_is_searched() -> None:
    text = "a!" * 100_000
    assert len(segment_completion(text, "regex", r"a!", max_steps=None).steps) == 100_000


def test_a_search_whose_request_ended_is_abandoned_at_the_next_window() -> None:
    text = "b" * (40 * WINDOW_BYTES)
    asked = []

    def ended() -> bool:
        asked.append(True)
        return len(asked) >= 3

    with pytest.raises(SegmentationCancelled):
        segment_completion(text, "regex", r"x|a[^!]*!", cancelled=ended)
    assert len(asked) == 3  # two windows searched, then abandoned (the text has 79 half-window steps)
