"""The input of every annotation: one reasoning trace."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator


class Trace(BaseModel):
    """A question, the policy's reasoning (explicit steps or a raw completion) and the reference answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: StrictStr = Field(min_length=1, description="Caller's identifier, echoed in the annotation.")
    question: StrictStr = Field(description="The prompt the policy answered.")
    steps: list[StrictStr] | None = Field(
        default=None, description="Pre-segmented chain-of-thought steps (the last may hold the final answer)."
    )
    completion: StrictStr | None = Field(
        default=None, description="The raw completion, segmented by the configured segmenter."
    )
    reference_answer: StrictStr = Field(description="The gold final answer, teacher-forced by the probe.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form, passed through untouched.")

    @field_validator("question", "reference_answer")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty or whitespace")
        return value

    @model_validator(mode="after")
    def _exactly_one_reasoning_field(self) -> Trace:
        if (self.steps is None) == (self.completion is None):
            raise ValueError("give exactly one of `steps` or `completion`")
        return self
