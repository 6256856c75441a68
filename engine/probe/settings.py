"""Probe settings: one class per backend, each registered in :mod:`engine.probe.registry`, which builds the
union of them (told apart by ``backend``) and names the probe class each one opens.

Nothing heavy is imported here: the service's settings, the CLI and the builder validate probe settings
without loading torch, vLLM or httpx. A setting shared by several backends is declared once (a function
below) so that it has one description.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from mig_annotator.schemas.probe import ProbeDType, ProbeMode, VLLMPathChoice

API_KEY_ENV = "MIG_PROBE__API_KEY"  # the one variable that holds a vLLM server's key, for every command


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_base_urls(value: str | Sequence[str]) -> list[str]:
    """``base_url`` as a list: one URL, URLs separated by commas, or a JSON list of URLs.

    Raises ``ValueError`` naming the setting for an empty list, a duplicate or a URL that is not http(s).
    """
    if isinstance(value, str):
        text = value.strip()
        items = json.loads(text) if text.startswith("[") else text.split(",")
    else:
        items = list(value)
    urls = [str(item).strip().rstrip("/") for item in items if str(item).strip()]
    if not urls:
        raise ValueError("probe base_url: no server URL given")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"probe base_url: {url!r} is not an http:// or https:// URL")
    duplicates = sorted({url for url in urls if urls.count(url) > 1})
    if duplicates:
        raise ValueError(f"probe base_url: {', '.join(duplicates)} given more than once")
    return urls


def _model_field() -> Any:
    """The one declaration of ``model`` (every model backend has it)."""
    return Field(
        default=None,
        description="A local Hugging Face model folder (vllm-server: the folder of the served model's "
        "tokenizer, checked against the server's, and of a vision-language model's processor, which lays "
        "out a question's images). None: SmolLM2-135M-Instruct, prepared by `mig-annotator model prepare`.",
    )


def _dtype_field(default: str) -> Any:
    """The one declaration of ``dtype`` (the backends that load the weights have it)."""
    return Field(
        default=default,
        description="The dtype the weights compute in: float32 or bfloat16 (vllm: any vLLM dtype, e.g. "
        "auto).",
    )


def _vllm_path_field() -> Any:
    """The one declaration of ``vllm_path`` (both vLLM backends have it)."""
    return Field(
        default="auto",
        description="The scoring path: token-scores, prefix-cached or prompt-logprobs; auto takes the "
        "fastest one the engine supports.",
    )


def _group_prefixes_field() -> Any:
    """The one declaration of ``group_prefixes`` (every model backend has it)."""
    return Field(
        default=True,
        description="Traces that share their question prompt and answer (a GRPO group) are scored as one "
        "group: the question forwarded once (transformers, packed), and the prefix-0 probe once per group.",
    )


class TransformersProbeSettings(_Settings):
    """The embedded probe, a local Hugging Face model folder run by PyTorch.

    Defaults: SmolLM2-135M-Instruct on the CPU.
    """

    backend: Literal["transformers"] = "transformers"
    model: str | None = _model_field()
    mode: ProbeMode = Field(
        default="packed",
        description="packed (one pass over the trace, then the answer probes over its KV cache), "
        "packed-single (one packed sequence per trace) or naive (one forward pass per prefix).",
    )
    dtype: ProbeDType = _dtype_field("float32")
    device: str = Field(
        default="auto", description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N."
    )
    threads: int | None = Field(
        default=None, ge=1, description="CPU threads for torch; None: torch's default."
    )
    forward_batch_tokens: int = Field(
        default=4096,
        ge=64,
        description="Padded positions one forward batch of the probe holds (its rows' KV cache and passes). "
        "Not the service's micro-batch budget (MIG_MICRO_BATCH_TOKENS).",
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


class VLLMServerProbeSettings(_Settings):
    """A vLLM OpenAI-compatible server (or several) over HTTP.

    Opened as :class:`engine.probe.vllm_server.VLLMServerProbe`.
    """

    backend: Literal["vllm-server"] = "vllm-server"
    model: str | None = _model_field()
    base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="The server's root URL, or several servers (comma-separated or a JSON list): requests go "
        "to the one with the fewest in flight, a failing one is taken out and probed back in.",
    )
    vllm_path: VLLMPathChoice = _vllm_path_field()
    api_key: SecretStr | None = Field(
        default=None,
        description=f"The key the server was started with (its --api-key); every command reads it from "
        f"${API_KEY_ENV}, the better place for it (a command line is visible to other users).",
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
        parse_base_urls(value)  # one URL, a comma-separated list or a JSON list, each http(s)://
        return value


class VLLMProbeSettings(_Settings):
    """vLLM's engine (vllm.LLM) in this process, for offline builds on a GPU box."""

    backend: Literal["vllm"] = "vllm"
    model: str | None = _model_field()
    vllm_path: VLLMPathChoice = _vllm_path_field()
    dtype: str = _dtype_field("float32")
    max_model_len: int | None = Field(
        default=None, ge=16, description="The longest sequence vLLM holds; None: the model's own limit."
    )
    enforce_eager: bool = Field(default=True, description="No CUDA graphs / compilation (fast start-up).")
    block_size: int | None = Field(default=None, ge=1, description="KV block size (prefix-cache grain).")
    gpu_memory_utilization: float = Field(default=0.5, gt=0, le=1, description="GPU memory share.")
    engine_args: dict[str, Any] = Field(default_factory=dict, description="More vllm.LLM keyword arguments.")
    group_prefixes: bool = _group_prefixes_field()


class FakeProbeSettings(_Settings):
    """A deterministic fake probe without a model, for logic tests and dry runs.

    Opened as :class:`engine.probe.fake.FakeProbe`.
    """

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
