"""The probe interface every backend implements (transformers here; vLLM backends alike)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from mig_annotator.mig.prompt import ProbeSequence, Tokenizer


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The answer tokens' log-probabilities after each prefix of one trace."""

    token_logprobs: np.ndarray  # (K+1, n_answer_tokens), float64, natural log
    tokens_forwarded: int  # tokens this trace put through the model, padding excluded


@dataclass
class ProbeStats:
    """Running totals of what a probe did, for metrics and benchmarks."""

    traces: int = 0
    forward_calls: int = 0
    tokens_forwarded: int = 0  # real tokens
    tokens_padded: int = 0  # positions computed for padding
    seconds: float = 0.0
    per_call_seconds: list[float] = field(default_factory=list, repr=False)

    @property
    def tokens_computed(self) -> int:
        return self.tokens_forwarded + self.tokens_padded


class ProbeError(RuntimeError):
    """The probe failed (model error, backend unreachable); the batch should be retried or failed."""


@runtime_checkable
class Probe(Protocol):
    """Scores tokenised traces: returns, per trace, the answer tokens' log-probs after every prefix."""

    @property
    def model_id(self) -> str: ...

    @property
    def context_limit(self) -> int:
        """The most tokens one probe (prefix + continuation) may hold."""
        ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    @property
    def stats(self) -> ProbeStats: ...

    def score(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        """Results in input order; the backend batches and orders the work as it likes."""
        ...
