"""Open the probe a configuration names: the one place that maps settings to a backend."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from mig_annotator.mig.probe.base import Probe
from mig_annotator.mig.probe.transformers_probe import ProbeDType, ProbeMode
from mig_annotator.mig.probe.vllm_common import PathChoice

ProbeBackend = Literal["transformers", "vllm-server", "vllm"]


class ProbeSettings(BaseModel):
    """Which probe to run and how. The defaults give the embedded SmolLM2 probe on the CPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: ProbeBackend = Field(
        default="transformers",
        description="transformers (embedded), vllm-server (a vLLM OpenAI-compatible server over HTTP) "
        "or vllm (vllm.LLM in this process).",
    )
    model: str | None = Field(
        default=None,
        description="A local Hugging Face model folder; None prepares and uses SmolLM2-135M. For "
        "vllm-server: the folder of the served model's tokenizer (checked against the server's).",
    )
    mode: ProbeMode = Field(
        default="packed", description="transformers: packed (default), packed-single or naive."
    )
    dtype: ProbeDType = "float32"
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (None: torch's default).")
    max_batch_tokens: int = Field(default=4096, ge=64, description="Padded tokens per forward pass.")

    # vLLM backends
    vllm_path: PathChoice = Field(
        default="auto",
        description="vLLM scoring path: auto (fastest available), token-scores, prefix-cached or "
        "prompt-logprobs (mig.probe.vllm_common).",
    )
    base_url: str = Field(default="http://127.0.0.1:8000", description="vllm-server: the server's URL.")
    api_key: SecretStr | None = Field(default=None, description="vllm-server: the server's --api-key.")
    request_timeout_s: float = Field(default=120.0, gt=0, description="vllm-server: per-request timeout.")
    max_concurrency: int = Field(default=8, ge=1, description="vllm-server: HTTP requests in flight.")
    max_retries: int = Field(default=4, ge=0, description="vllm-server: retries on 429/5xx/no connection.")
    max_model_len: int | None = Field(default=None, ge=16, description="vllm: the engine's context length.")
    gpu_memory_utilization: float = Field(default=0.5, gt=0, le=1, description="vllm: GPU memory share.")
    engine_args: dict[str, Any] = Field(default_factory=dict, description="vllm: more vllm.LLM arguments.")


def open_probe(settings: ProbeSettings) -> Probe:
    """Load the probe (slow: loads model weights). Heavy imports happen here, not at import time."""
    from mig_annotator.mig.model_store import resolve_model_path

    if settings.backend == "vllm-server":
        from mig_annotator.mig.probe.vllm_server import VLLMServerProbe, VLLMServerSettings

        return VLLMServerProbe(
            VLLMServerSettings(
                base_url=settings.base_url,
                tokenizer_path=resolve_model_path(settings.model),
                path=settings.vllm_path,
                api_key=settings.api_key,
                timeout_s=settings.request_timeout_s,
                max_concurrency=settings.max_concurrency,
                max_retries=settings.max_retries,
            )
        )
    if settings.backend == "vllm":
        from mig_annotator.mig.probe.vllm_inprocess import VLLMProbe, VLLMProbeSettings

        return VLLMProbe(
            VLLMProbeSettings(
                model_path=resolve_model_path(settings.model),
                path=settings.vllm_path,
                dtype=settings.dtype,
                max_model_len=settings.max_model_len,
                gpu_memory_utilization=settings.gpu_memory_utilization,
                engine_args=settings.engine_args,
            )
        )

    from mig_annotator.mig.probe.transformers_probe import TransformersProbe, TransformersProbeSettings

    return TransformersProbe(
        TransformersProbeSettings(
            model_path=resolve_model_path(settings.model),
            mode=settings.mode,
            dtype=settings.dtype,
            device=settings.device,
            threads=settings.threads,
            max_batch_tokens=settings.max_batch_tokens,
        )
    )
