"""Open the probe a configuration names: the one place that maps settings to a backend."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mig.probe.base import Probe
from mig.probe.transformers_probe import ProbeDType, ProbeMode

ProbeBackend = Literal["transformers"]


class ProbeSettings(BaseModel):
    """Which probe to run and how. The defaults give the embedded SmolLM2 probe on the CPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: ProbeBackend = Field(default="transformers", description="Probe backend.")
    model: str | None = Field(
        default=None, description="A local Hugging Face model folder; None prepares and uses SmolLM2-135M."
    )
    mode: ProbeMode = Field(
        default="packed", description="transformers: packed (default), packed-single or naive."
    )
    dtype: ProbeDType = "float32"
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (None: torch's default).")
    max_batch_tokens: int = Field(default=4096, ge=64, description="Padded tokens per forward pass.")


def open_probe(settings: ProbeSettings) -> Probe:
    """Load the probe (slow: loads model weights). Heavy imports happen here, not at import time."""
    from mig.model_store import resolve_model_path
    from mig.probe.transformers_probe import TransformersProbe, TransformersProbeSettings

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
