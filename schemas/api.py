"""Request and response models of the reward service's HTTP API, and the rows of its audit log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, create_model, model_validator

from mig_annotator.schemas.annotation import TraceAnnotation
from mig_annotator.schemas.config import PromptTemplate, ScoringConfig
from mig_annotator.schemas.token_alignment import placed_rewards
from mig_annotator.schemas.trace import NonBlankText, Trace

RewardScalar = Literal["outcome", "process", "mixed"]
"""How one number is made from an annotation: outcome, process_reward, or outcome + lambda * process."""


class PromptOptions(PromptTemplate):
    """The prompt template as a request gives it: JSON types only (no "true" for a boolean)."""

    model_config = ConfigDict(strict=True)


def _all_optional(model: type[BaseModel], name: str, doc: str) -> type[BaseModel]:
    """A model with every field of ``model``, each optional: left out means the server's value. A field keeps
    its own type, so an explicit null is refused where ``model`` refuses it, as the JSON schema says; values
    are validated strictly (a boolean is not a number, a string not a boolean), as JSON Schema types are."""
    fields: dict[str, Any] = {
        field_name: (
            PromptOptions if field.annotation is PromptTemplate else field.annotation,
            Field(default=None, description=field.description),
        )
        for field_name, field in model.model_fields.items()
    }
    config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, json_schema_extra=_no_defaults)
    return create_model(name, __config__=config, __doc__=doc, **fields)


def _no_defaults(schema: dict[str, Any]) -> None:
    """A left-out option takes the server's default, which the schema cannot know (GET /v1/info says)."""
    for field in schema.get("properties", {}).values():
        field.pop("default", None)


ScoringOptions = _all_optional(
    ScoringConfig,
    "ScoringOptions",
    "Per-request scoring options. Every field is optional: the ones left out take the server's defaults "
    "(GET /v1/info shows them). The merged options are validated as a ScoringConfig.",
)


TokenOffset = Annotated[
    list[Annotated[StrictInt, Field(ge=0)]],
    Field(
        min_length=2,
        max_length=2,
        description="[start, end): the characters of the completion one token covers.",
    ),
]
"""One policy token's half-open character range in the trace's completion."""


def _one_of_trace_or_traces(schema: dict[str, Any]) -> None:
    """The JSON schema says what the validator checks: exactly one of trace/traces is given and not null
    (null counts as absent, as in the model)."""
    schema["oneOf"] = [
        {"required": ["trace"], "properties": {"trace": {"type": "object"}}},
        {"required": ["traces"], "properties": {"traces": {"type": "array"}}},
    ]


TraceItem = Annotated[Trace | dict[str, Any], Field(union_mode="left_to_right")]
"""One entry of ``traces``: a :class:`Trace`, or any other JSON object, which the service answers as that
trace's error (its fields are checked per trace, so one bad trace does not refuse the request)."""


class AnnotateRequest(BaseModel):
    """One trace (``trace``) or a rollout group (``traces``), with optional scoring options."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra=_one_of_trace_or_traces)

    trace: Trace | None = Field(default=None, description="A single trace.")
    traces: list[TraceItem] | None = Field(
        default=None,
        min_length=1,
        description="A list of traces (a rollout group); answered in input order. Each entry is a JSON "
        "object checked as a Trace on its own: one whose fields are bad gets null and its error in `errors` "
        "(`strict`: the request's 422), the others are scored.",
    )
    config: ScoringOptions | None = Field(  # type: ignore[valid-type]
        default=None, description="Scoring options; missing ones take the server defaults."
    )
    strict: StrictBool = Field(
        default=False,
        description="All or nothing: one trace that cannot be scored (bad fields included) fails the whole "
        "request (422, or 504 at the deadline). By default each such trace gets its error in `errors` and "
        "the others are scored. A single `trace` is always strict.",
    )
    min_probe_version: StrictInt | None = Field(
        default=None,
        ge=1,
        description="Refuse (409) unless the serving probe's version (annotations' probe_version) is at "
        "least this: e.g. the version a checkpoint reload returned.",
    )
    token_offsets: list[list[TokenOffset] | None] | None = Field(
        default=None,
        description="Per-token rewards: one entry per trace (for `trace`, a list of one), each the policy "
        "tokens' [start, end) character offsets into that trace's completion (a tokenizer's offset mapping), "
        "or null for none. Starts and ends must not decrease and must lie within the completion; bad "
        "offsets are that trace's error (field `token_offsets[i]`). The answer's `token_rewards` then holds "
        "each trace's per-token rewards and masks.",
    )

    @model_validator(mode="after")
    def _exactly_one_of_trace_or_traces(self) -> AnnotateRequest:
        if (self.trace is None) == (self.traces is None):
            raise ValueError("give exactly one of `trace` or `traces`")
        if self.token_offsets is not None and len(self.token_offsets) != len(self.trace_list):
            raise ValueError(
                f"token_offsets has {len(self.token_offsets)} entries for {len(self.trace_list)} traces: "
                "give one per trace (null for a trace without offsets)"
            )
        return self

    @property
    def trace_list(self) -> list[Trace | dict[str, Any]]:
        """The traces in request order; an entry that is not a valid :class:`Trace` stays a dict."""
        return [self.trace] if self.trace is not None else list(self.traces or [])

    @property
    def field_name(self) -> str:
        """The request field the traces came in: names them in error messages."""
        return "trace" if self.trace is not None else "traces"


class ReloadRequest(BaseModel):
    """A checkpoint folder (on the server's disk) to load into the running probe."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1, description="The folder: same tokenizer and architecture as the probe's."
    )


class ReloadResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    probe_version: int = Field(description="The probe version now serving (annotations' probe_version).")
    fingerprint: str = Field(description="The new probe_identity.")
    digest: str
    seconds: float = Field(description="Checking and loading the folder, and swapping the weights in.")


TraceFailureCode = Literal["invalid_trace", "deadline_exceeded"]
"""Why one trace has no annotation: it cannot be scored as sent, or it was not scored in time (retry it)."""


class TraceFailure(BaseModel):
    """One trace of a request that got no annotation; the request's other traces are unaffected."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(
        ge=0, description="The trace's position in the request (its `annotations` entry is null)."
    )
    field: str = Field(description="Where the problem is, e.g. 'traces[3].completion'.")
    message: str
    code: TraceFailureCode = Field(
        description="invalid_trace: fix the trace; deadline_exceeded: not scored in time, send it again."
    )


class TokenRewards(BaseModel):
    """One trace's rewards placed on the policy's tokens (``schemas.token_alignment``): the rule of the
    builder's token columns and of ``client.verl.token_rewards``. Every list but ``step_end_tokens`` has one
    entry per token of the request's ``token_offsets``."""

    model_config = ConfigDict(extra="forbid")

    rewards: list[float] = Field(
        description="r_k on the last token of step k plus the outcome on the last answer token, 0 elsewhere."
    )
    outcome_index: int | None = Field(
        description="The token the outcome sits on; null when none covers text."
    )
    step_end_tokens: list[int] = Field(description="Per step: the token r_k sits on (-1 when none).")
    completion_mask: list[bool] = Field(description="Tokens that cover text.")
    cot_mask: list[bool] = Field(description="Tokens of the chain of thought (process rewards apply).")
    answer_mask: list[bool] = Field(description="Tokens of the answer part (the outcome applies).")

    @classmethod
    def of(cls, annotation: TraceAnnotation, offsets: Sequence[Sequence[int]]) -> TokenRewards:
        """Place ``annotation``'s rewards on the tokens of ``offsets`` (weights 1: raw r_k and outcome)."""
        alignment, rewards = placed_rewards(annotation, [tuple(pair) for pair in offsets])
        return cls(
            rewards=rewards.tolist(),
            outcome_index=alignment.outcome_index,
            step_end_tokens=alignment.step_end_tokens.tolist(),
            completion_mask=alignment.completion_mask.tolist(),
            cot_mask=alignment.cot_mask.tolist(),
            answer_mask=alignment.answer_mask.tolist(),
        )


class AnnotateResponse(BaseModel):
    """``annotations[i]`` is null exactly when ``errors`` holds an entry with ``index == i``."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    annotations: list[TraceAnnotation | None] = Field(
        description="One per trace, in input order; null for a trace that failed (see `errors`)."
    )
    errors: list[TraceFailure] = Field(
        default_factory=list, description="The traces that got no annotation, in input order."
    )
    token_rewards: list[TokenRewards | None] | None = Field(
        default=None,
        description="Only when the request gave `token_offsets`: one per trace, in input order; null for a "
        "trace without offsets or without an annotation.",
    )


class OpenRLHFRewardRequest(BaseModel):
    """OpenRLHF's remote reward-model request (``--remote_rm_url``): three lists of equal length."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    query: list[str] = Field(
        min_length=1,
        description="Prompt + response, as the trainer decoded them; the response after the prompt must not "
        "be blank.",
    )
    prompts: list[NonBlankText] = Field(
        description="The prompts (not blank); each must occur in its query (the rest is scored)."
    )
    labels: list[NonBlankText] = Field(description="The reference answers (not blank).")

    @model_validator(mode="after")
    def _equal_lengths(self) -> OpenRLHFRewardRequest:
        if not len(self.query) == len(self.prompts) == len(self.labels):
            raise ValueError(
                f"query, prompts and labels must have equal lengths, got {len(self.query)}, "
                f"{len(self.prompts)} and {len(self.labels)}"
            )
        return self


class OpenRLHFRewardResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rewards: list[float] = Field(description="The configured scalar per query (MIG_OPENRLHF_REWARD).")
    scores: list[float] = Field(description="The outcome (0 or 1) per query, for OpenRLHF's filtering.")
    extra_logs: dict[str, list[float]] = Field(
        description="Per-query outcome, process_reward, max_reward and step count, for the trainer's logs."
    )


class HealthResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["ok"] = "ok"


class ReadinessResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ready: bool
    probe: Literal["loading", "ready", "failed", "unreachable"]
    audit: Literal["ok", "failing", "disabled"]
    detail: str | None = Field(default=None, description="Why the service is not ready, when it is not.")


class ProbeInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str
    model: str | None = Field(description="The probe model's id (None while loading).")
    fingerprint: str | None = Field(
        description="backend:model:dtype:digest prefix, as annotations' probe_identity (None while loading)."
    )
    digest: str | None = Field(
        description="sha256 of the weight and tokenizer files' contents (None while loading)."
    )
    dtype: str | None = Field(description="The dtype the probe computes in (None while loading).")
    context_limit: int | None


class LimitsInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int
    max_traces_per_request: int
    max_steps_per_trace: int | None = Field(description="None: no cap beyond the probe's context.")
    max_tokens_per_trace: int | None = Field(
        description="Probe tokens one trace may take: the setting, else the loaded probe's context length "
        "(None while the probe loads)."
    )
    request_timeout_s: float
    queue_max_traces: int
    max_request_probe_tokens: int | None = Field(
        default=None,
        description="Forwarded probe tokens one request may plan (413 over it; a trace over it alone fails "
        "alone unless the request is strict): MIG_MAX_REQUEST_PROBE_TOKENS, else the probe's tokens per "
        "second x request_timeout_s (None from a service older than the field).",
    )
    probe_budget_source: Literal["setting", "measured", "default"] | None = Field(
        default=None,
        description="Where max_request_probe_tokens comes from: a setting, the measured throughput of the "
        "probe being served, or the default rate before any measurement.",
    )
    probe_tokens_per_second: float | None = Field(
        default=None, description="The probe's forwarding rate the budget comes from (set or measured)."
    )
    probe_tokens_per_byte: float | None = Field(
        default=None,
        description="Probe tokens per UTF-8 byte of trace text under the rule of schemas.probe_cost "
        "(measured on a calibration pass with the probe's tokenizer): what clients size requests with. "
        "None until measured.",
    )


class InfoResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service_version: str
    probe: ProbeInfo
    scoring_defaults: ScoringConfig
    limits: LimitsInfo
    exact_batching: bool = Field(
        description="Each GRPO group (each trace without group-mates) gets a probe call of its own: results "
        "never depend on the other groups in flight."
    )
    openrlhf_reward: RewardScalar
    openrlhf_lambda: float
    auth_required: bool
    audit_enabled: bool


class FieldError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="Where the problem is, e.g. 'traces[3].completion' or 'body'.")
    message: str


class ErrorResponse(BaseModel):
    """Every error the service answers: a machine-readable code, a message, and the fields at fault."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(description="e.g. invalid_request, payload_too_large, overloaded, probe_unavailable.")
    message: str
    fields: list[FieldError] = Field(default_factory=list)
    request_id: str | None = None


class AuditRecord(BaseModel):
    """One served annotation, as the audit log stores it (one Parquet row)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str
    received_at: datetime = Field(description="When the request arrived (UTC).")
    endpoint: str
    api_key_id: str | None = Field(description="The id of the API key used (never the key itself).")
    trace_id: str
    trace_sha256: str = Field(
        description="SHA-256 of the trace text (question, steps or completion, answer)."
    )
    config_hash: str
    probe_model: str
    probe_identity: str = Field(description="The probe's fingerprint (ProbeIdentity.fingerprint).")
    v0: float
    v_final: float = Field(description="v_K, after the last scored step (v0 with no steps).")
    n_steps: int = Field(description="Steps scored (K).")
    step_rewards: list[float] = Field(description="r_k for k = 1..K.")
    process_reward: float
    max_reward: float
    outcome: int
    sft_gate: bool
    truncated: bool
    latency_ms: float = Field(description="From the request's arrival to its answer.")
