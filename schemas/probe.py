"""What names a probe: the literals its settings share, and the probe's identity."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ProbeMode = Literal["packed", "packed-single", "naive"]
ProbeDType = Literal["float32", "bfloat16"]
VLLMPathChoice = Literal["auto", "prompt-logprobs", "prefix-cached", "token-scores"]


class ProbeIdentity(BaseModel):
    """What decides a probe's numbers: the weights and tokenizer (by content), the dtype and the backend.

    Two checkpoints of one architecture with different weights have different ``digest``s; the same files
    moved to another folder keep theirs. Device, batch size and scoring mode are not part of it (they
    change the numbers only in the last float bits).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="The model's name (its folder's name, or the served model's name).")
    digest: str = Field(description="sha256 over the weight and tokenizer files' contents (hex).")
    backend: str = Field(description="The probe backend that computes the numbers (transformers, vllm, ...).")
    dtype: str = Field(description="The dtype the probe computes in ('served' when a server decides).")

    @property
    def fingerprint(self) -> str:
        """A short string that names this identity: ``backend:model:dtype:<first 16 hex of the digest>``."""
        return f"{self.backend}:{self.model}:{self.dtype}:{self.digest[:16]}"
