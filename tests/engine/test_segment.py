"""Tests for mig.segment: chain-of-thought step splitting and final-answer extraction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mig_annotator.engine.segment import (
    Segment,
    SegmentationError,
    SegmentedCompletion,
    segment_completion,
    segment_steps,
)

GSM8K_ROLLOUT = (
    "Janet eats 3 ducks eggs for breakfast every morning and she sells the rest so she has "
    "16 - 3 = <<16-3=13>>13 ducks eggs left\n"
    "She has 13 ducks eggs and she sells 2 each day so she makes 13 * 2 = $<<13*2=26>>26\n"
    "A: 26"
)


def assert_consistent(result: SegmentedCompletion) -> None:
    """Every span indexes the completion exactly; steps are ordered and precede the answer part."""
    text = result.completion
    previous_end = 0
    for step in result.steps:
        assert text[step.start : step.end] == step.text
        assert step.text == step.text.strip() and step.text
        assert step.start >= previous_end
        previous_end = step.end
    assert previous_end <= result.cot_span[1]
    for seg in (result.answer_part, result.answer):
        if seg is not None:
            assert text[seg.start : seg.end] == seg.text == seg.text.strip()


def texts(result: SegmentedCompletion) -> list[str]:
    return [step.text for step in result.steps]


def answer_of(result: SegmentedCompletion) -> tuple[str | None, str | None]:
    part = result.answer_part.text if result.answer_part else None
    return part, (result.answer.text if result.answer else None)


def test_gsm8k_rollout_lines_and_a_marker() -> None:
    result = segment_completion(GSM8K_ROLLOUT)
    assert_consistent(result)
    first, second = GSM8K_ROLLOUT.split("\n")[:2]
    assert result.steps == (
        Segment(first, 0, len(first)),
        Segment(second, len(first) + 1, len(first) + 1 + len(second)),
    )
    assert result.answer_part == Segment("A: 26", len(GSM8K_ROLLOUT) - 5, len(GSM8K_ROLLOUT))
    assert result.answer == Segment("26", len(GSM8K_ROLLOUT) - 2, len(GSM8K_ROLLOUT))
    assert result.cot_span == (0, len(GSM8K_ROLLOUT) - 5)


def test_reference_solution_hash_marker_with_trailing_whitespace() -> None:
    text = "Natalia sold 48/2 = 24 clips.\nShe sold 48+24 = 72.\n#### 72\n\n"
    result = segment_completion(text)
    assert_consistent(result)
    assert texts(result) == ["Natalia sold 48/2 = 24 clips.", "She sold 48+24 = 72."]
    assert result.answer_part == Segment("#### 72", 51, 58)
    assert result.answer == Segment("72", 56, 58)


@pytest.mark.parametrize(
    ("text", "steps", "part", "answer"),
    [
        ("x\nThe answer is 18.", ["x"], "The answer is 18.", "18"),
        ("x\nTherefore, the final answer is $18$.", ["x"], "Therefore, the final answer is $18$.", "18"),
        ("x\nSo the answer is **7**", ["x"], "So the answer is **7**", "7"),
        ("x\nThus, THE ANSWER IS: 3.5.", ["x"], "Thus, THE ANSWER IS: 3.5.", "3.5"),
        ("x\n**Final Answer:** 18", ["x"], "**Final Answer:** 18", "18"),
        ("x\nfinal answer: 42", ["x"], "final answer: 42", "42"),
        ("x\nHence, the answer is \\boxed{12}.", ["x"], "Hence, the answer is \\boxed{12}.", "12"),
        ("x\n<answer>18</answer>", ["x"], "<answer>18</answer>", "18"),
        ("x\n<answer>\n 18\n</answer>.", ["x"], "<answer>\n 18\n</answer>.", "18"),
        ("x\n$\\boxed{18}$.", ["x"], "$\\boxed{18}$.", "18"),
        ("x\n\\[\n\\boxed{8}\n\\]\n", ["x"], "\\[\n\\boxed{8}\n\\]", "8"),
        ("x\n\\boxed{\\frac{1}{2}}", ["x"], "\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("x\n\\boxed{\\{1, 2\\}}", ["x"], "\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("x\nA: -4", ["x"], "A: -4", "-4"),
        ("x\n<answer>$\\boxed{18}$</answer>", ["x"], "<answer>$\\boxed{18}$</answer>", "18"),
    ],
)
def test_answer_formats(text: str, steps: list[str], part: str, answer: str) -> None:
    result = segment_completion(text)
    assert_consistent(result)
    assert texts(result) == steps
    assert answer_of(result) == (part, answer)
    assert result.cot_span == (0, text.index(part))


def test_answer_marker_mid_line_keeps_prefix_in_cot() -> None:
    result = segment_completion("So 5+3=8. The answer is 8.")
    assert result.steps == (Segment("So 5+3=8.", 0, 9),)
    assert result.answer_part == Segment("The answer is 8.", 10, 26)
    assert result.answer == Segment("8", 24, 25)
    result = segment_completion("We get $\\boxed{5}$ in the end")
    assert texts(result) == ["We get"]
    assert answer_of(result) == ("$\\boxed{5}$", "5")


def test_last_marker_wins_and_trailing_text_is_excluded() -> None:
    text = "The answer is 3.\nWait, recheck.\n#### 4\nextra words"
    result = segment_completion(text)
    assert_consistent(result)
    assert texts(result) == ["The answer is 3.", "Wait, recheck."]
    assert answer_of(result) == ("#### 4", "4")
    assert result.cot_span == (0, text.index("#### 4"))


def test_degenerate_repetition_stays_fast_and_takes_first_phrase_of_line() -> None:
    text = "ok\n" + "the answer is 4, " * 20000
    result = segment_completion(text)
    assert texts(result) == ["ok"]
    assert result.answer_part is not None and result.answer_part.start == 3
    assert segment_completion("\\boxed{" * 20000 + "x}").answer == Segment("x", 140000, 140001)


def test_nested_boxed_takes_outermost_braces() -> None:
    result = segment_completion("x \\boxed{a + \\boxed{b}} and \\boxed{unclosed")
    assert answer_of(result) == ("\\boxed{a + \\boxed{b}}", "a + \\boxed{b}")
    assert texts(result) == ["x"]


def test_no_answer_and_zero_steps() -> None:
    result = segment_completion("just thinking\nmore thinking")
    assert texts(result) == ["just thinking", "more thinking"]
    assert result.answer_part is None and result.answer is None
    assert result.cot_span == (0, 27)
    dangling = segment_completion("I wonder what the answer is\nkeep going")
    assert texts(dangling) == ["I wonder what the answer is", "keep going"]
    assert dangling.answer_part is None
    empty = segment_completion("")
    assert empty == SegmentedCompletion("", (), None, None)
    only_answer = segment_completion("  \n#### 18")
    assert only_answer.steps == ()
    assert only_answer.answer == Segment("18", 8, 10)


def test_lines_handles_crlf_cr_and_blank_lines() -> None:
    text = "  a \r\nb\rc\n\n \t \nd\r\n#### 1\r\n"
    result = segment_completion(text, "lines")
    assert_consistent(result)
    assert [(s.text, s.start, s.end) for s in result.steps] == [
        ("a", 2, 3),
        ("b", 6, 7),
        ("c", 8, 9),
        ("d", 15, 16),
    ]
    assert answer_of(result) == ("#### 1", "1")


def test_unicode_spans_are_str_indices() -> None:
    text = "Ünïcødé → 中文 step\n😀 second\nthe answer is 中."
    result = segment_completion(text)
    assert_consistent(result)
    assert texts(result) == ["Ünïcødé → 中文 step", "😀 second"]
    assert result.answer == Segment("中", text.index("中."), text.index("中.") + 1)


def test_tags_segmenter_ignores_outside_text() -> None:
    text = "intro\n<step> first </step> noise <step>second\nline</step>\n<answer>7</answer>"
    result = segment_completion(text)
    assert_consistent(result)
    assert texts(result) == ["first", "second\nline"]
    assert answer_of(result) == ("<answer>7</answer>", "7")
    assert segment_completion("<step>a</step><step>b").steps[-1] == Segment("b", 20, 21)


def test_headers_segmenter_groups_lines_under_headers() -> None:
    text = (
        "Let me plan.\n## Step 1: add\n2+2=4\n**Step 2:** double\n8\nStep 3. check\n### Step 4\ndone\n#### 8"
    )
    result = segment_completion(text)
    assert_consistent(result)
    assert texts(result) == [
        "Let me plan.",
        "## Step 1: add\n2+2=4",
        "**Step 2:** double\n8",
        "Step 3. check",
        "### Step 4\ndone",
    ]
    assert answer_of(result) == ("#### 8", "8")


def test_hash_step_header_is_not_an_answer() -> None:
    result = segment_completion("#### Step 1\nadd\n#### Step 2\nmore")
    assert result.answer_part is None
    assert texts(result) == ["#### Step 1\nadd", "#### Step 2\nmore"]


def test_auto_falls_back_to_lines_and_explicit_segmenters_override() -> None:
    text = "Step one is easy\n<b>\nStep 1: real header"
    assert texts(segment_completion(text, "lines")) == ["Step one is easy", "<b>", "Step 1: real header"]
    assert texts(segment_completion(text)) == ["Step one is easy\n<b>", "Step 1: real header"]
    assert segment_completion(text, "tags").steps == ()


def test_regex_segmenter_group_selection() -> None:
    text = "1) alpha 2) beta 3)  \n#### 9"
    named = segment_completion(text, "regex", r"\d\)(?P<step>[^\d#]*)")
    assert texts(named) == ["alpha", "beta"]
    assert named.answer == Segment("9", len(text) - 1, len(text))
    assert texts(segment_completion("a1 b2", "regex", r"(\w)\d")) == ["a", "b"]
    assert texts(segment_completion("a1 b2", "regex", r"\w\d")) == ["a1", "b2"]
    assert texts(segment_completion("ab", step_regex=r"\w")) == ["a", "b"]


@pytest.mark.parametrize("bad", ["(unclosed", "*", None])
def test_regex_segmenter_errors_name_step_regex(bad: str | None) -> None:
    with pytest.raises(SegmentationError, match="step_regex"):
        segment_completion("a\nb", "regex", bad)


def test_invalid_arguments() -> None:
    with pytest.raises(SegmentationError, match="segmenter"):
        segment_completion("a", "bogus")  # type: ignore[arg-type]
    with pytest.raises(SegmentationError, match="step_regex"):
        segment_completion("a", "lines", r"\w")
    # lookaround (which could make steps overlap) and backreferences are not RE2 syntax: refused by name
    with pytest.raises(SegmentationError, match=r"step_regex .*lookaround"):
        segment_completion("abc", "regex", r"(?=(\w\w))")
    with pytest.raises(SegmentationError, match=r"step_regex .*backreferences"):
        segment_completion("abab", "regex", r"(ab)\1")


def test_segment_steps_splits_answer_from_last_step() -> None:
    result = segment_steps(["First  ", "  second", "So c. The answer is 5."])
    assert_consistent(result)
    assert result.completion == "First  \n  second\nSo c. The answer is 5."
    assert result.steps == (Segment("First", 0, 5), Segment("second", 10, 16), Segment("So c.", 17, 22))
    assert result.answer_part == Segment("The answer is 5.", 23, 39)
    assert result.answer == Segment("5", 37, 38)


def test_segment_steps_drops_last_step_that_is_only_the_answer() -> None:
    result = segment_steps(["a", "#### 5"])
    assert texts(result) == ["a"]
    assert answer_of(result) == ("#### 5", "5")
    earlier = segment_steps(["The answer is 3.", "more work"])
    assert texts(earlier) == ["The answer is 3.", "more work"]
    assert earlier.answer_part is None
    assert segment_steps([]) == SegmentedCompletion("", (), None, None)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["a", "b", 3], r"steps\[2\] must be a string, got int"),
        (["a", "  \n"], r"steps\[1\] is empty"),
        ("abc", "sequence of strings"),
    ],
)
def test_segment_steps_errors(steps: list[object], message: str) -> None:
    with pytest.raises(SegmentationError, match=message):
        segment_steps(steps)  # type: ignore[arg-type]


def test_segment_invariants_are_enforced() -> None:
    with pytest.raises(SegmentationError):
        Segment("ab", 0, 1)
    with pytest.raises(SegmentationError):
        SegmentedCompletion("abc", (Segment("b", 0, 1),), None, None)


_LINE = st.text(alphabet="abcxyz0189 +-=*/.,é中→∑\t", max_size=20)


@given(
    lines=st.lists(_LINE, max_size=8),
    answer=st.none() | st.integers(min_value=-(10**6), max_value=10**6),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_property_lines_with_optional_hash_answer(lines: list[str], answer: int | None, newline: str) -> None:
    all_lines = [*lines, f"#### {answer}"] if answer is not None else lines
    text = newline.join(all_lines)
    result = segment_completion(text)
    assert_consistent(result)
    assert texts(result) == [line.strip() for line in lines if line.strip()]
    if answer is None:
        assert result.answer_part is None and result.answer is None
    else:
        assert result.answer is not None and result.answer.text == str(answer)
        assert result.answer_part is not None and result.answer_part.end == len(text)
