"""Segmentation runs in linear time on every input.

Each adversarial input is one that made a pattern or a loop of the old segmenter super-linear (a tag whose
attribute run scanned to the end of the text from every ``"<step "``; two ``[ \\t]*`` around an optional
comma after "so"; markup peeled by re-copying the span) or that stresses a path of the new one (many
unclosed tags, long runs without newlines, millions of ``#``).

How the bound is checked: CPU time (``time.process_time``, median of 3 runs, garbage collector off) of the
input at size n (20,000 characters) and at 2n. Linear code takes ~2x; a quadratic path ~4x. The test allows
3x plus 10 ms for timer noise and re-measures once before failing, so a busy shared machine does not fail
it while a quadratic path (4x every time) still does. Each run must also finish within a generous absolute
bound (2 s at 40 KB; the old segmenter took 11.6 s on ``"<step " * 20_000``, 120 KB).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

import pytest

from mig_annotator.engine.segment import SegmentedCompletion, segment_completion

SIZE = 20_000
ABSOLUTE_LIMIT_S = 2.0
RATIO_LIMIT = 3.0
NOISE_S = 0.01


def texts_of(result: SegmentedCompletion) -> list[str]:
    return [step.text for step in result.steps]


def _cpu_seconds(run: Callable[[], object]) -> float:
    times = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            start = time.process_time()
            run()
            times.append(time.process_time() - start)
    finally:
        gc.enable()
    return statistics.median(times)


def assert_linear(
    make: Callable[[int], str], run: Callable[[str], object] = segment_completion, size: int = SIZE
) -> None:
    """``run(make(2n))`` takes at most ~3x ``run(make(n))`` (see the module doc), and both are fast."""
    small, large = make(size), make(2 * size)
    for _attempt in range(2):
        t_small = _cpu_seconds(lambda: run(small))
        t_large = _cpu_seconds(lambda: run(large))
        assert t_large < ABSOLUTE_LIMIT_S, f"{len(large)} chars took {t_large:.2f} s"
        if t_large <= RATIO_LIMIT * t_small + NOISE_S:
            return
    ratio = t_large / max(t_small, 1e-9)
    pytest.fail(f"doubling the input took {ratio:.1f}x the time ({t_small:.3f} s -> {t_large:.3f} s)")


ADVERSARIAL: dict[str, Callable[[int], str]] = {
    "step_tag_prefix_repeated": lambda n: "<step " * (n // 6),  # 11.6 s at 120 KB with a backtracking pattern
    "step_tag_unclosed_attribute": lambda n: "<step a=" * (n // 8),
    "step_blocks_unclosed": lambda n: "<step>x" * (n // 7),
    "step_close_tag_without_bracket": lambda n: "<step>" + "</step   " * (n // 9),
    "so_then_spaces": lambda n: "so" + " " * n + "x",  # 17.8 s at 20 KB before
    "answer_phrase_then_spaces": lambda n: "the" + " " * n,
    "final_answer_then_spaces": lambda n: "final answer" + " " * n,
    "answer_value_of_dollars": lambda n: "the answer is " + "$" * n,
    "answer_value_of_bold_markers": lambda n: "the answer is " + "**" * (n // 2),
    "answer_value_then_periods": lambda n: "the answer is 5" + "." * n,
    "answer_tags_unclosed": lambda n: "<answer>" * (n // 8),
    "boxed_unclosed": lambda n: "\\boxed{" * (n // 7),
    "boxed_many": lambda n: "\\boxed{1}" * (n // 9),
    "boxed_after_markup_run": lambda n: ("$" * 63 + "x\\boxed{1}") * (n // 74),
    "escaped_braces": lambda n: "\\boxed{" + "\\{" * (n // 2),
    "hashes_without_newline": lambda n: "#" * n,
    "hash_marker_lines": lambda n: "####\n" * (n // 5),
    "step_words": lambda n: "Step" * (n // 4),
    "step_header_lines": lambda n: "Step 1:\n" * (n // 8),
    "step_number_run": lambda n: "Step 1" + "1" * n,
    "prose_without_newlines": lambda n: "We compute the next value carefully. " * (n // 37),
    "abbreviations_without_newlines": lambda n: "e.g. the value is here. " * (n // 24),
    "periods": lambda n: "." * n,
    "period_space": lambda n: ". " * (n // 2),
    "one_long_word": lambda n: "x" * n,
    "spaces": lambda n: " " * n,
    "spaces_then_newline": lambda n: " " * n + "\n",
    "blank_lines_of_spaces": lambda n: (" " * 60 + "\n") * (n // 61),
    "blank_lines_crlf": lambda n: "a\r\n\r\n" * (n // 5),
    "short_lines": lambda n: "a\n" * (n // 2),
    "think_tags_unclosed": lambda n: "<think>" * (n // 7),
    "think_close_tags": lambda n: "</think>" * (n // 8),
    "less_than_signs": lambda n: "<" * n,
    "think_prose": lambda n: "<think>" + "Hmm, so we try again. " * (n // 22) + "</think>The answer is 3.",
    "display_math_unclosed": lambda n: "\\[\n" * (n // 3),
    "display_math_blocks": lambda n: "$$\nx\n" * (n // 5),
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_auto_segmentation_is_linear(name: str) -> None:
    assert_linear(ADVERSARIAL[name])


def test_repeated_open_step_tags_at_120_and_240_kb() -> None:
    """``"<step " * 20_000`` (120 KB) and twice that segment in linear time (a backtracking tag pattern
    took 11.6 s and 46 s on them, blocking the service)."""
    assert_linear(lambda n: "<step " * n, size=20_000)


def test_millions_of_hashes_and_step_words_finish_quickly() -> None:
    for text in ("#" * 2_000_000, "Step" * 250_000, "<step " * 100_000):
        start = time.process_time()
        segment_completion(text)
        assert time.process_time() - start < 10.0, text[:10]


def test_user_regex_iteration_is_linear() -> None:
    """``x|a[^!]*!`` keeps an RE2 thread alive to the end of the text after every match: a whole-text
    ``finditer`` is quadratic (12 s on 160 KB); the windowed search is linear."""
    assert texts_of(segment_completion("ax" * 5000, "regex", r"x|a[^!]*!", max_steps=None)) == ["x"] * 5000
    assert_linear(lambda n: "ax" * (n // 2), lambda text: segment_completion(text, "regex", r"x|a[^!]*!"))


def test_nested_quantifier_pattern_is_instant() -> None:
    """``(a+)+$`` on ``"a" * 26 + "!"`` took 4.8 s with Python's re (x4 per two more characters)."""
    start = time.process_time()
    result = segment_completion("a" * 26 + "!", "regex", r"(a+)+$")
    assert result.steps == ()
    assert time.process_time() - start < 0.5
    assert_linear(lambda n: "a" * n + "!", lambda text: segment_completion(text, "regex", r"(a+)+$"))
