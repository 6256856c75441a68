"""The output of an annotation: per-step MIG rewards and the trace-level verdicts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CharSpan(BaseModel):
    """A half-open ``[start, end)`` range of characters in the completion."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: int = Field(ge=0)
    end: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> CharSpan:
        if self.end < self.start:
            raise ValueError("end must be >= start")
        return self


class StepScore(BaseModel):
    """One chain-of-thought step and its reward."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=1, description="k, 1-based.")
    text: str
    span: CharSpan = Field(description="Where the step stands in the completion.")
    v: float = Field(description="v_k: aggregated log P(answer | question, s_1..s_k).")
    mig: float = Field(description="v_k - v_{k-1}.")
    watermark: float = Field(description="level: W_k = max(v_0..v_k); gain: max(mig_1..mig_k).")
    reward: float = Field(ge=0.0, description="r_k, the rectified step reward.")


class TraceAnnotation(BaseModel):
    """Everything a trainer needs about one trace."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trace_id: str
    completion: str = Field(description="The text every span indexes into (joined steps for explicit steps).")
    v0: float = Field(description="v_0: the answer's score from the question alone.")
    steps: list[StepScore]
    steps_total: int = Field(ge=0, description="Steps found; more than len(steps) only when truncated.")
    truncated: bool = Field(description="True when context_limit='truncate_steps' dropped trailing steps.")
    windowed_steps: int = Field(
        default=0,
        ge=0,
        description="Steps whose v_k is an approximation: with context_limit='window', the last steps whose "
        "prefix was over the probe's context were scored on the question and only the most recent step "
        "tokens that fit. 0: every v_k is exact.",
    )
    cot_span: CharSpan = Field(description="The chain-of-thought region: process rewards apply here.")
    answer: str | None = Field(description="The final answer extracted from the completion.")
    answer_span: CharSpan | None = Field(description="Where the extracted answer stands.")
    answer_part_span: CharSpan | None = Field(
        description="The whole final-answer part: the outcome applies here."
    )
    outcome: int = Field(ge=0, le=1, description="1 if the answer equals the reference (math-aware).")
    process_reward: float = Field(description="sum_k r_k.")
    max_reward: float = Field(description="max_k r_k (0 with no steps).")
    sft_gate: bool = Field(
        description="outcome == 1 and the gate statistic > sft_threshold: max_reward (default), or "
        "process_reward with sft_statistic='sum'."
    )
    probe_model: str
    probe_identity: str = Field(
        description="ProbeIdentity.fingerprint: backend, model, dtype and the weights' content digest."
    )
    probe_version: int | None = Field(
        default=None,
        description="The service's probe version that scored it: 1 for the probe it started with, +1 per "
        "reload (POST /v1/admin/reload); with probe_identity's digest it names the weights. None outside "
        "the service.",
    )
    config_hash: str
    tokens_forwarded: int = Field(
        ge=0, description="Probe tokens forwarded for this trace (padding excluded)."
    )
    answer_tokens: int = Field(ge=1, description="Tokens of the reference answer the probe scored.")
