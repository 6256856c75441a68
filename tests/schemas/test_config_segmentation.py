"""ScoringConfig's segmentation fields: step_regex must compile with RE2 and is bounded in length."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mig_annotator.schemas.config import MAX_STEP_REGEX_CHARS, ScoringConfig


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(a)\1", "invalid escape sequence"),  # backreference
        (r"step(?=:)", "invalid perl operator"),  # lookahead
        (r"(?<=\n)\w+", "invalid perl operator"),  # lookbehind
        ("(unclosed", "missing \\)"),
    ],
)
def test_patterns_re2_cannot_compile_are_refused_naming_step_regex(pattern: str, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ScoringConfig(segmenter="regex", step_regex=pattern)
    (problem,) = caught.value.errors()
    assert problem["loc"] == ("step_regex",)
    assert "not a valid RE2 pattern" in problem["msg"] and "lookaround" in problem["msg"]
    assert reason.replace("\\", "") in problem["msg"]


def test_step_regex_length_is_bounded() -> None:
    assert ScoringConfig(segmenter="regex", step_regex="a" * MAX_STEP_REGEX_CHARS).step_regex is not None
    with pytest.raises(ValidationError) as caught:
        ScoringConfig(segmenter="regex", step_regex="a" * (MAX_STEP_REGEX_CHARS + 1))
    assert caught.value.errors()[0]["loc"] == ("step_regex",)
    assert "512" in ScoringConfig.model_fields["step_regex"].description  # type: ignore[operator]


def test_linear_time_patterns_are_accepted() -> None:
    config = ScoringConfig(segmenter="regex", step_regex=r"(a+)+$")
    assert config.step_regex == r"(a+)+$"
    assert ScoringConfig(segmenter="regex", step_regex=r"(?m)^Step \d+: (?P<step>.+)$").segmenter == "regex"
