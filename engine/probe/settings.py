"""Probe settings: one class per backend, told apart by ``backend`` (a discriminated union).

Nothing heavy is imported here: the service's settings, the CLI and the builder validate probe settings
without loading torch or vLLM. A plain dict (or environment, ``MIG_PROBE__<FIELD>``) without ``backend``
means the embedded transformers probe, so ``{"model": "/models/x"}`` keeps working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

from mig_annotator.engine.renamed import move_renamed
from mig_annotator.schemas.probe import ProbeBackend, ProbeDType, ProbeMode, VLLMPathChoice

DEFAULT_BACKEND: ProbeBackend = "transformers"
API_KEY_ENV = "MIG_PROBE__API_KEY"  # the one variable that holds a vLLM server's key, for every command
RENAMED_TRANSFORMERS_FIELDS = {
    "max_batch_tokens": (
        "forward_batch_tokens",
        "the probe setting max_batch_tokens (--max-batch-tokens, MIG_PROBE__MAX_BATCH_TOKENS) is deprecated: "
        "use forward_batch_tokens (--forward-batch-tokens, MIG_PROBE__FORWARD_BATCH_TOKENS)",
    )
}
"""Old field -> (new field, the deprecation note); see :func:`engine.renamed.move_renamed`."""


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _group_prefixes_field() -> Any:
    """The one declaration of ``group_prefixes`` (every model backend has it)."""
    return Field(
        default=True,
        description="Traces that share their question prompt and answer (a GRPO group) are scored as one "
        "group: the question forwarded once (transformers, packed), and the prefix-0 probe once per group.",
    )


class TransformersProbeSettings(_Settings):
    """The embedded probe: a local Hugging Face folder run by PyTorch. Defaults: SmolLM2-135M on the CPU."""

    backend: Literal["transformers"] = "transformers"
    model: str | None = Field(
        default=None, description="A local Hugging Face model folder; None prepares and uses SmolLM2-135M."
    )
    mode: ProbeMode = Field(default="packed", description="packed (default), packed-single or naive.")
    dtype: ProbeDType = "float32"
    device: str = Field(
        default="auto", description="auto (CUDA when present, else CPU) | cpu | cuda | cuda:N"
    )
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (None: torch's default).")
    forward_batch_tokens: int = Field(
        default=4096,
        ge=64,
        description="Padded positions one forward batch of the probe holds (its rows' KV cache and passes); "
        "formerly max_batch_tokens. Not the service's micro-batch budget (MIG_MICRO_BATCH_TOKENS).",
    )
    chunk_tokens: int | None = Field(
        default=None,
        ge=16,
        description="packed: at most this many new positions per row in one forward pass (header, trace and "
        "probe passes), cut into equal passes. None (default): chosen per batch from mask_budget_mb, so a "
        "stage runs in one pass unless its attention mask would outgrow the budget (a long trace).",
    )
    mask_budget_mb: int = Field(
        default=128,
        ge=1,
        description="packed, chunk_tokens None: the most memory one pass's attention mask may take (rows x "
        "new positions x cached positions x 4 bytes); 128 MB: a 16k-token trace in passes of about 1,800.",
    )
    group_prefixes: bool = _group_prefixes_field()

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        return move_renamed(data, RENAMED_TRANSFORMERS_FIELDS)


class VLLMServerProbeSettings(_Settings):
    """A vLLM OpenAI-compatible server over HTTP (:mod:`engine.probe.vllm_server`)."""

    backend: Literal["vllm-server"] = "vllm-server"
    model: str | None = Field(
        default=None,
        description="A local folder with the served model's tokenizer (checked against the server's) and, "
        "for a vision-language model, its processor (which lays out a question's images); None: the default "
        "SmolLM2 folder.",
    )
    base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="The server's root URL, or several servers (comma-separated or a JSON list): requests go "
        "to the one with the fewest in flight, a failing one is taken out and probed back in.",
    )
    vllm_path: VLLMPathChoice = Field(
        default="auto", description="Scoring path: auto | token-scores | prefix-cached | prompt-logprobs."
    )
    api_key: SecretStr | None = Field(
        default=None, description=f"The server's --api-key (environment: {API_KEY_ENV})."
    )
    request_timeout_s: float = Field(default=120.0, gt=0, description="Per-request timeout.")
    max_concurrency: int = Field(default=8, ge=1, description="HTTP requests in flight at most.")
    max_retries: int = Field(default=4, ge=0, description="Retries on 429, 5xx or no connection.")
    prompts_per_request: int = Field(default=16, ge=1, description="Probes per /v1/completions request.")
    backoff_s: float = Field(default=0.5, ge=0, description="First retry delay; doubles each retry.")
    follow_weight_version: bool = Field(
        default=False,
        description="A trainer's own vLLM, whose weights change: read the served weights' version (vLLM's "
        "GET /weight_info, dev mode) around every scoring call; annotations name it, and a call during "
        "which it changed is scored again.",
    )
    group_prefixes: bool = _group_prefixes_field()

    @field_validator("base_url")
    @classmethod
    def _urls_parse(cls, value: str) -> str:
        from mig_annotator.engine.probe.server_pool import parse_base_urls

        parse_base_urls(value)  # one URL, a comma-separated list or a JSON list, each http(s)://
        return value


class VLLMProbeSettings(_Settings):
    """vLLM's engine in this process (``vllm.LLM``), for offline builds on a GPU box."""

    backend: Literal["vllm"] = "vllm"
    model: str | None = Field(
        default=None,
        description="A local Hugging Face model folder (None: SmolLM2); a vision-language one (config with "
        "a vision_config) reads a question's images.",
    )
    vllm_path: VLLMPathChoice = Field(
        default="auto", description="Scoring path: auto | token-scores | prefix-cached | prompt-logprobs."
    )
    dtype: str = Field(default="float32", description="vLLM dtype: float32, bfloat16, auto, ...")
    max_model_len: int | None = Field(default=None, ge=16, description="None: the model's own limit.")
    enforce_eager: bool = Field(default=True, description="No CUDA graphs / compilation (fast start-up).")
    block_size: int | None = Field(default=None, ge=1, description="KV block size (prefix-cache grain).")
    gpu_memory_utilization: float = Field(default=0.5, gt=0, le=1, description="GPU memory share.")
    engine_args: dict[str, Any] = Field(default_factory=dict, description="More vllm.LLM keyword arguments.")
    group_prefixes: bool = _group_prefixes_field()


class FakeProbeSettings(_Settings):
    """The deterministic fake probe (:mod:`engine.probe.fake`): no model, for logic tests and dry runs."""

    backend: Literal["fake"] = "fake"
    model: str = Field(default="fake-probe", description="The name it reports as its model.")
    tokenizer: str | None = Field(
        default=None,
        description="A local Hugging Face tokenizer folder; None: a built-in byte tokenizer (no files).",
    )
    context_limit: int = Field(default=32768, ge=16, description="The context limit it enforces.")
    seed: int = Field(default=0, description="Changes every log-prob (and the identity).")
    fail_marker: str | None = Field(
        default=None,
        description="Tests: score() raises ProbeError for a batch holding a trace whose text contains this.",
    )
    delay_s: float = Field(default=0.0, ge=0, description="Tests: seconds each score() call sleeps.")
    delay_per_token_s: float = Field(
        default=0.0,
        ge=0,
        description="Tests and benchmarks: seconds each score() call also sleeps per token it forwards (a "
        "probe of a set throughput).",
    )


ProbeSettings = Annotated[
    Annotated[TransformersProbeSettings, Tag("transformers")]
    | Annotated[VLLMServerProbeSettings, Tag("vllm-server")]
    | Annotated[VLLMProbeSettings, Tag("vllm")]
    | Annotated[FakeProbeSettings, Tag("fake")],
    Discriminator(lambda value: _backend_of(value)),
]
"""Any backend's settings; ``backend`` picks the class (missing: transformers)."""

PROBE_SETTINGS_ADAPTER: TypeAdapter[ProbeSettings] = TypeAdapter(ProbeSettings)


def parse_probe_settings(data: Any) -> ProbeSettings:
    """Validate a plain mapping (or settings object) into the backend's settings class."""
    return PROBE_SETTINGS_ADAPTER.validate_python(data)


def _backend_of(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("backend", DEFAULT_BACKEND))
    return str(getattr(value, "backend", DEFAULT_BACKEND))


SETTINGS_CLASSES: dict[str, type[BaseModel]] = {
    "transformers": TransformersProbeSettings,
    "vllm-server": VLLMServerProbeSettings,
    "vllm": VLLMProbeSettings,
    "fake": FakeProbeSettings,
}
