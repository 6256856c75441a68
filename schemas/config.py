"""Scoring configuration: everything that changes the numbers, hashed into every annotation."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SegmenterName = Literal["auto", "tags", "lines", "headers", "regex"]
Aggregation = Literal["mean", "sum"]
WatermarkKind = Literal["level", "gain"]
ContextLimitPolicy = Literal["error", "truncate_steps", "window"]
SftStatistic = Literal["max", "sum"]

MAX_STEP_REGEX_CHARS = 512
DEFAULT_MIN_STEP_CHARS = 120
DEFAULT_MAX_STEP_CHARS = 2000
DEFAULT_MAX_STEPS = 256


def check_step_regex(pattern: str) -> None:
    """Raise ValueError unless RE2 (the linear-time engine that runs it) compiles ``pattern``.

    Without google-re2 (the base, client-only install) the check is left to the engine, which compiles the
    pattern with RE2 before running it and refuses it there with the same reason.
    """
    try:
        import re2  # google-re2 (the engine extra); imported here so that loading the schemas stays light
    except ImportError:
        return

    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(pattern, options)
    except re2.error as error:
        reason = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else str(error)
        raise ValueError(
            f"step_regex {pattern!r} is not a valid RE2 pattern: {reason} (RE2 runs in linear time and "
            "has no backreferences or lookaround)"
        ) from error


class PromptTemplate(BaseModel):
    """How a probe prompt is laid out.

    Prefix k of a trace is ``header + step(s_1) + ... + step(s_k)``; the probe then reads
    ``answer_prefix + reference_answer`` after it and scores only the answer tokens. Whitespace
    that ends ``answer_prefix`` moves into the continuation, as lm-evaluation-harness does.
    With ``chat=True`` the header is the model's chat template applied to ``chat_user_message``
    (with the generation prompt), so the steps read as the assistant's turn.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    header: str = Field(
        default="Question: {question}\nAnswer: Let's think step by step.\n",
        description="Text before the first step; must contain {question}.",
        json_schema_extra={"pattern": r"\{question\}"},
    )
    step: str = Field(
        default="{step}\n",
        description="Text of one step; must contain {step}.",
        json_schema_extra={"pattern": r"\{step\}"},
    )
    answer_prefix: str = Field(
        default="Therefore, the final answer is: ",
        description="Answer-elicitation suffix read after the steps and before the reference answer.",
    )
    chat: bool = Field(default=False, description="Wrap the question in the probe model's chat template.")
    chat_user_message: str = Field(
        default="{question}",
        description="The user turn in chat mode; must contain {question}.",
        json_schema_extra={"pattern": r"\{question\}"},
    )

    @model_validator(mode="after")
    def _placeholders_present(self) -> PromptTemplate:
        for field_name, placeholder in (
            ("header", "{question}"),
            ("step", "{step}"),
            ("chat_user_message", "{question}"),
        ):
            if placeholder not in getattr(self, field_name):
                raise ValueError(f"prompt.{field_name} must contain {placeholder}")
        return self


class ScoringConfig(BaseModel):
    """What to score and how. Defaults follow the MIG paper. Numbers must be finite (NaN and infinities
    would all share one ``config_hash``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    segmenter: SegmenterName = Field(default="auto", description="How a raw completion is split into steps.")
    step_regex: str | None = Field(
        default=None,
        max_length=MAX_STEP_REGEX_CHARS,
        description=f"The pattern for segmenter='regex' (at most {MAX_STEP_REGEX_CHARS} characters), run "
        "with RE2 (linear time; no backreferences or lookaround). A step is group 'step', else group 1, "
        "else the match. Completions over 2,048 UTF-8 bytes are searched in 2,048-byte windows "
        "overlapping by half: there a match over 1,024 bytes may be missed or cut,"
        " and $ also matches at a window end.",
    )
    min_step_chars: int = Field(
        default=DEFAULT_MIN_STEP_CHARS,
        ge=0,
        le=100_000,
        description="Prose splitting (segmenter 'lines'/'auto' without tags or headers): pieces cut from a "
        "line longer than max_step_chars are packed into steps of at least this many characters. Whole "
        "lines are never merged: a trace written one step per line keeps one step per line.",
    )
    max_step_chars: int = Field(
        default=DEFAULT_MAX_STEP_CHARS,
        ge=1,
        le=1_000_000,
        description="A line longer than this is split at sentence ends (then whitespace) into steps of at "
        "most this many characters.",
    )
    max_steps: int | None = Field(
        default=DEFAULT_MAX_STEPS,
        ge=1,
        description="At most this many steps per trace (any segmenter, explicit steps too): adjacent steps "
        "are merged, the pair with the shortest merged span first (over 4 x max_steps steps, runs of equal "
        "step counts are joined first), instead of failing. None: no cap.",
    )
    prompt: PromptTemplate = Field(
        default_factory=PromptTemplate, description="How a probe prompt is laid out."
    )
    aggregation: Aggregation = Field(
        default="mean", description="v_k: mean or sum of the answer tokens' log-probs."
    )
    watermark: WatermarkKind = Field(
        default="level",
        description="level: reward v_k over the best v so far; gain: mig_k over the best gain so far.",
    )
    sft_threshold: float = Field(
        default=0.0,
        description="SFT gate: a correct outcome and the gate statistic (sft_statistic) over this threshold.",
    )
    sft_statistic: SftStatistic = Field(
        default="max",
        description="The SFT gate's statistic: max (max_k r_k, as the method states) or sum (sum_k r_k). "
        "They agree at threshold 0.",
    )
    context_limit: ContextLimitPolicy = Field(
        default="error",
        description="A trace over the probe's context: 'error'; 'truncate_steps' to score the leading "
        "steps that fit (reported as truncated); or 'window' to score every step, each prefix that does not "
        "fit read as the question and only its most recent step tokens that fit (left-truncated at a token "
        "boundary): an approximation, reported as windowed_steps.",
    )

    @field_validator("step_regex")
    @classmethod
    def _step_regex_compiles_with_re2(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            check_step_regex(pattern)
        return pattern

    @model_validator(mode="after")
    def _regex_given_for_regex_segmenter(self) -> ScoringConfig:
        if self.segmenter == "regex" and not self.step_regex:
            raise ValueError("step_regex is required when segmenter='regex'")
        if self.min_step_chars > self.max_step_chars:
            raise ValueError(
                f"min_step_chars ({self.min_step_chars}) must not exceed "
                f"max_step_chars ({self.max_step_chars})"
            )
        return self

    def config_hash(self) -> str:
        """A stable 16-hex-digit digest of every field (changes whenever the numbers could)."""
        canonical = self.model_dump_json(round_trip=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
