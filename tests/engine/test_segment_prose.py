"""Prose splitting (long lines cut at sentences, then words, packed to min_step_chars) and the step cap."""

from __future__ import annotations

import itertools

import pytest

from mig_annotator.engine.segment import (
    SegmentationError,
    segment_completion,
    segment_for_config,
    segment_steps,
)
from mig_annotator.schemas.config import ScoringConfig

SENTENCES = [
    "Okay, so I need to figure out how many apples are left after the trades.",
    "First, Tom starts with 48 apples and gives away a quarter of them.",
    "A quarter of 48 is 12, so he has 36 left.",
    "Wait.",
    "Then he buys 15 more, e.g. from the market, which gives 51.",
    "Hmm, let me double-check that: 36 + 15 = 51.",
]


def prose(n_sentences: int) -> str:
    return " ".join(SENTENCES[i % len(SENTENCES)] for i in range(n_sentences))


def texts(completion: str, **options: object) -> list[str]:
    return [step.text for step in segment_completion(completion, **options).steps]  # type: ignore[arg-type]


def test_a_short_line_stays_one_step_and_lines_are_never_merged() -> None:
    assert texts("A quarter of 48 is 12. So 36 left.\nok\n#### 36") == [
        "A quarter of 48 is 12. So 36 left.",
        "ok",
    ]


def test_a_long_line_is_cut_at_sentence_ends_into_steps_of_at_least_min_chars() -> None:
    line = " ".join(SENTENCES)
    steps = texts(line, min_step_chars=60, max_step_chars=100)
    assert steps == [
        SENTENCES[0],
        SENTENCES[1],
        f"{SENTENCES[2]} {SENTENCES[3]}",  # 41 chars < 60: the next sentence joins it
        SENTENCES[4],  # "e.g. from" is not a sentence end
        SENTENCES[5],
    ]
    assert " ".join(steps) == line


def test_min_step_chars_packs_sentences_up_to_max() -> None:
    line = " ".join(SENTENCES)
    assert texts(line, min_step_chars=0, max_step_chars=100) == SENTENCES
    packed = texts(line, min_step_chars=150, max_step_chars=200)
    assert all(len(step) <= 200 for step in packed)
    assert all(len(step) >= 150 for step in packed[:-1])
    assert " ".join(packed) == line


def test_sentences_longer_than_max_are_cut_at_words_then_inside_words() -> None:
    words = "alpha beta gamma delta epsilon zeta eta theta"
    assert texts(words, min_step_chars=0, max_step_chars=16) == [
        "alpha beta gamma",
        "delta epsilon",
        "zeta eta theta",
    ]
    assert texts("x" * 25, min_step_chars=0, max_step_chars=10) == ["x" * 10, "x" * 10, "x" * 5]
    assert texts("ab " + "y" * 12, min_step_chars=0, max_step_chars=5) == ["ab", "yyyyy", "yyyyy", "yy"]


def test_a_16k_token_think_trace_without_newlines_gets_meaningful_steps() -> None:
    """~64 KB of prose on one line inside <think> (about 16k tokens): the default options give 100+ steps
    of whole sentences, capped at max_steps=256."""
    body = prose(1300)
    text = f"<think>{body}</think>\n\nSo he has 51 apples.\n\n\\boxed{{51}}"
    result = segment_completion(text)
    assert len(body) > 60_000
    assert 100 <= len(result.steps) <= 256
    assert all(step.text[-1] in ".!?" for step in result.steps)
    assert all(step.text[0].isupper() for step in result.steps)
    assert result.answer is not None and result.answer.text == "51"
    config = ScoringConfig()
    assert segment_for_config(config, completion=text) == result
    uncapped = segment_completion(text, max_steps=None)
    assert len(uncapped.steps) > 256
    assert all(len(step.text) >= 120 for step in uncapped.steps[:-1])


def test_paragraphs_and_display_math() -> None:
    text = "We need x.\n\n\\[\nx^2 = 4\n\\]\n\nSo x = 2.\n$$\ny = 1\n\nz"
    assert texts(text) == ["We need x.", "\\[\nx^2 = 4\n\\]", "So x = 2.", "$$\ny = 1", "z"]


def test_max_steps_merges_the_shortest_adjacent_pairs_first() -> None:
    text = "aaaaaaaaaa\nb\nc\ndddddddddd\ne"
    assert texts(text, max_steps=5) == ["aaaaaaaaaa", "b", "c", "dddddddddd", "e"]
    assert texts(text, max_steps=4) == ["aaaaaaaaaa", "b\nc", "dddddddddd", "e"]
    assert texts(text, max_steps=3) == ["aaaaaaaaaa", "b\nc", "dddddddddd\ne"]
    assert texts(text, max_steps=1) == [text]
    result = segment_completion("one\n\n\ntwo\nthree\n#### 3", max_steps=1)
    assert result.steps[0].text == "one\n\n\ntwo\nthree" and result.steps[0].start == 0
    assert result.answer is not None and result.answer.text == "3"


def test_far_over_the_cap_runs_are_first_joined_by_equal_counts() -> None:
    """Over 4 x max_steps steps, runs of equal step counts are joined first (near-linear cost)."""
    lines = "\n".join("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[:40])
    assert texts(lines, max_steps=5) == ["\n".join(lines.split("\n")[k : k + 8]) for k in range(0, 40, 8)]
    nine = "\n".join("abcdefghi")
    assert texts(nine, max_steps=2) == ["a\nb\nc\nd", "e\nf\ng\nh\ni"]  # 4 runs (2, 2, 2, 3), then pairs


def test_max_steps_applies_to_explicit_steps_and_headers() -> None:
    merged = segment_steps(["a", "bb", "c", "The answer is 4."], max_steps=2)
    assert [s.text for s in merged.steps] == ["a\nbb", "c"]
    assert merged.answer is not None and merged.answer.text == "4"
    headers = "Step 1: a\nStep 2: b\nStep 3: c"
    assert texts(headers, max_steps=2) == ["Step 1: a\nStep 2: b", "Step 3: c"]


def test_config_fields_and_their_checks() -> None:
    assert ScoringConfig().min_step_chars == 120 and ScoringConfig().max_step_chars == 2000
    assert ScoringConfig().max_steps == 256
    with pytest.raises(ValueError, match="min_step_chars"):
        ScoringConfig(min_step_chars=500, max_step_chars=100)
    with pytest.raises(ValueError, match="max_steps"):
        ScoringConfig(max_steps=0)
    options = ({"max_steps": 8}, {"min_step_chars": 3}, {"max_step_chars": 900}, {})
    hashes = {ScoringConfig(**option).config_hash() for option in options}
    assert len(hashes) == 4
    with pytest.raises(SegmentationError, match="max_steps"):
        segment_completion("a", max_steps=0)
    with pytest.raises(SegmentationError, match="min_step_chars"):
        segment_completion("a", min_step_chars=10, max_step_chars=5)
    explicit = segment_for_config(ScoringConfig(max_steps=1), steps=["a", "b"])
    assert [s.text for s in explicit.steps] == ["a\nb"]


def test_a_462_character_think_paragraph_of_six_sentences_is_several_steps() -> None:
    """A long paragraph under max_step_chars (2000) is split at its sentences, not kept as one step."""
    paragraph = " ".join(sentence.replace("apples", "red apples") * 1 for sentence in SENTENCES[:3]) + " "
    paragraph += " ".join(SENTENCES[4:]) + " So the total after both trades is 51 apples in the end."
    paragraph += " That settles it for the first part of the question,"
    paragraph += " and the second part of it follows right now."
    assert 440 <= len(paragraph) <= 480 and paragraph.count(". ") >= 5, len(paragraph)
    steps = texts(f"<think>{paragraph}</think>\nThe answer is 51.")
    assert len(steps) == 3
    assert all(len(step) >= 120 and step[-1] == "." for step in steps[:-1])
    assert " ".join(steps) == paragraph


def test_think_step_counts_grow_smoothly_across_max_step_chars() -> None:
    """A 1,990-character paragraph was 1 step and a 2,010-character one 12: now neighbours differ by one."""
    counts = []
    for n_sentences in range(1, 60):
        paragraph = prose(n_sentences)
        counts.append((len(paragraph), len(texts(f"<think>{paragraph}</think>\nA: 5"))))
    below = max(count for length, count in counts if length < 2000)
    above = min(count for length, count in counts if length > 2000)
    assert above - below <= 1
    assert all(b - a in (0, 1) for (_, a), (_, b) in itertools.pairwise(counts))
    assert all(count >= length // 400 for length, count in counts)


def test_lines_stay_one_step_each_outside_and_inside_think() -> None:
    lines = ["Tom starts with 48 apples.", "He gives away 12, so 36 left.", "Then he buys 15: 36 + 15 = 51."]
    assert texts("\n".join(lines) + "\n#### 51") == lines
    assert texts("<think>\n" + "\n".join(lines) + "\n</think>\n#### 51") == lines
    long_line = prose(6)  # outside a reasoning block a line under max_step_chars stays whole
    assert texts(long_line + "\n#### 51") == [long_line]
