"""Scoring configuration: everything that changes the numbers, hashed into every annotation."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SegmenterName = Literal["auto", "tags", "lines", "headers", "regex"]
Aggregation = Literal["mean", "sum"]
WatermarkKind = Literal["level", "gain"]
ContextLimitPolicy = Literal["error", "truncate_steps"]
SftStatistic = Literal["max", "sum"]


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
    )
    step: str = Field(default="{step}\n", description="Text of one step; must contain {step}.")
    answer_prefix: str = Field(
        default="Therefore, the final answer is: ",
        description="Answer-elicitation suffix read after the steps and before the reference answer.",
    )
    chat: bool = Field(default=False, description="Wrap the question in the probe model's chat template.")
    chat_user_message: str = Field(
        default="{question}", description="The user turn in chat mode; must contain {question}."
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
    """What to score and how. Defaults follow the MIG paper."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    segmenter: SegmenterName = Field(default="auto", description="How a raw completion is split into steps.")
    step_regex: str | None = Field(default=None, description="The pattern for segmenter='regex'.")
    prompt: PromptTemplate = Field(default_factory=PromptTemplate)
    aggregation: Aggregation = Field(
        default="mean", description="v_k: mean (default) or sum of answer log-probs."
    )
    watermark: WatermarkKind = Field(default="level", description="level: over v (default); gain: over mig.")
    sft_threshold: float = Field(
        default=0.0,
        description="SFT gate: correct outcome and the gate statistic (sft_statistic) > threshold.",
    )
    sft_statistic: SftStatistic = Field(
        default="max",
        description="The SFT gate's statistic: max (default, as the method states: max_k r_k) or sum "
        "(sum_k r_k). They agree at threshold 0.",
    )
    context_limit: ContextLimitPolicy = Field(
        default="error",
        description="A trace over the probe's context: 'error', or 'truncate_steps' to score the leading "
        "steps that fit (reported as truncated).",
    )

    @model_validator(mode="after")
    def _regex_given_for_regex_segmenter(self) -> ScoringConfig:
        if self.segmenter == "regex" and not self.step_regex:
            raise ValueError("step_regex is required when segmenter='regex'")
        return self

    def config_hash(self) -> str:
        """A stable 16-hex-digit digest of every field (changes whenever the numbers could)."""
        canonical = self.model_dump_json(round_trip=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
