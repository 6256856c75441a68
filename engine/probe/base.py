"""The probe interface every backend implements, in the spirit of lm-evaluation-harness's ``TemplateLM``.

:class:`Probe` does what every backend needs around the model: it holds the settings, the tokenizer and
the context limit, refuses a sequence over that limit (naming it), times each call, keeps bounded running
statistics, caches the identity, and calls the one method a backend implements,
:meth:`Probe._score_sequences`. ``close()``, ``health()`` and ``identity()`` are part of the interface, so
callers never probe for optional methods. :class:`LocalModelProbe` adds what the backends that load a local
model folder share: the folder, the model id (its name) and the identity (its contents, backend, dtype).
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

import numpy as np

from mig_annotator.engine.prompt import ProbeSequence, Tokenizer
from mig_annotator.schemas.probe import ProbeIdentity

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mig_annotator.engine.probe.settings import TransformersProbeSettings, VLLMProbeSettings

CALL_WINDOW = 1024  # score() durations kept for percentiles; older ones drop out


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The answer tokens' log-probabilities after each prefix of one trace."""

    token_logprobs: np.ndarray  # (K+1, n_answer_tokens), float64, natural log
    tokens_forwarded: int  # tokens this trace put through the model, padding excluded


@dataclass
class ProbeStats:
    """Running totals of what a probe did, for metrics and benchmarks. Bounded: the per-call durations are
    a window of the last :data:`CALL_WINDOW` ``score()`` calls; everything else is a counter."""

    traces: int = 0
    score_calls: int = 0
    forward_calls: int = 0  # model passes (transformers: per batch; vLLM: per score call)
    tokens_forwarded: int = 0  # real tokens
    tokens_padded: int = 0  # positions computed for padding
    images_encoded: int = 0  # images put through a vision encoder (once per distinct image and call)
    image_tokens_embedded: int = 0  # image feature positions the encoder produced
    seconds: float = 0.0
    per_call_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=CALL_WINDOW), repr=False)

    @property
    def tokens_computed(self) -> int:
        return self.tokens_forwarded + self.tokens_padded


class ProbeError(RuntimeError):
    """The probe failed (model error, backend unreachable); the batch should be retried or failed."""


class ProbeCancelled(ProbeError):
    """The caller's ``cancelled`` check said stop: the work was abandoned between two forward passes."""


CancelCheck = Callable[[], bool]
"""True once nobody wants the work any more (its request timed out, disconnected, or the server stops)."""


class ContextLimitError(ProbeError, ValueError):
    """A sequence does not fit the probe's context; the message names the sequence and both lengths."""


SettingsT = TypeVar("SettingsT", bound="BaseModel")  # a backend's settings class


class Probe(ABC, Generic[SettingsT]):
    """Scores tokenised traces: per trace, the answer tokens' log-probs after every prefix.

    Subclasses set :attr:`backend`, call ``super().__init__(settings)`` first, set ``self._tokenizer``
    and ``self._context_limit`` before they return, and implement the property ``model_id``,
    :meth:`_score_sequences` and :meth:`_compute_identity`. They may override :meth:`close` and
    :meth:`health`.
    """

    backend: ClassVar[str]  # its name in engine.probe.registry.BACKENDS
    remote: ClassVar[bool] = False  # True: health() asks a server over the network (may block)
    _tokenizer: Tokenizer
    _context_limit: int

    def __init__(self, settings: SettingsT) -> None:
        self._settings = settings
        self._stats = ProbeStats()
        self._stats_lock = threading.Lock()
        self._identity: ProbeIdentity | None = None
        self._cancel = threading.local()  # the running score() call's cancel check, per calling thread

    # -- what a backend provides --------------------------------------------------------------------------

    @property
    @abstractmethod
    def model_id(self) -> str: ...

    @property
    def shares_group_prefixes(self) -> bool:
        """Whether one :meth:`score` call forwards the shared question prompt (or scores prefix 0) of a GRPO
        group's sequences once (:mod:`engine.probe.groups`), so handing a group to one call saves
        work. False (the default): each sequence costs the same alone or in company."""
        return False

    @abstractmethod
    def _score_sequences(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        """Results in input order for sequences that all fit the context; batch and order as you like.
        Record model passes and padding with :meth:`_record_forward`."""

    @abstractmethod
    def _compute_identity(self) -> ProbeIdentity:
        """The probe's identity; called once, then cached."""

    # -- the interface callers use ------------------------------------------------------------------------

    @property
    def settings(self) -> SettingsT:
        return self._settings

    @property
    def context_limit(self) -> int:
        """The most tokens one probe (prefix + continuation) may hold."""
        return self._context_limit

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @property
    def stats(self) -> ProbeStats:
        return self._stats

    @property
    def processor(self) -> Any | None:
        """A vision-language probe's Hugging Face processor (it expands a question's images into their
        placeholder tokens and pixel inputs); None (the default): the probe reads text only and a question
        with images is refused."""
        return None

    def score(
        self, sequences: Sequence[ProbeSequence], *, cancelled: CancelCheck | None = None
    ) -> list[ProbeResult]:
        """Results in input order. Raises :class:`ContextLimitError` before any work when a sequence is too
        long, :class:`ProbeError` when the backend fails. ``cancelled``: asked before every forward pass
        (the embedded backend) or sequence; once it answers True, :class:`ProbeCancelled` is raised."""
        self.check_context(sequences)
        started = time.perf_counter()
        self._cancel.check = cancelled
        try:
            self.check_cancelled()
            results = self._score_sequences(sequences)
        finally:
            self._cancel.check = None
        elapsed = time.perf_counter() - started
        if len(results) != len(sequences):
            raise ProbeError(
                f"{self.backend} probe returned {len(results)} results for {len(sequences)} sequences"
            )
        with self._stats_lock:
            self._stats.traces += len(sequences)
            self._stats.score_calls += 1
            self._stats.tokens_forwarded += sum(result.tokens_forwarded for result in results)
            self._stats.seconds += elapsed
            self._stats.per_call_seconds.append(elapsed)
        return results

    def check_context(self, sequences: Sequence[ProbeSequence]) -> None:
        limit = self.context_limit
        for index, sequence in enumerate(sequences):
            if sequence.probe_length > limit:
                raise ContextLimitError(
                    f"sequence {index}: {sequence.probe_length} tokens exceed the context limit {limit} "
                    f"of the {self.backend} probe {self.model_id}"
                )

    def identity(self) -> ProbeIdentity:
        """What decides this probe's numbers (weights and tokenizer by content, dtype, backend); cached."""
        if self._identity is None:
            self._identity = self._compute_identity()
        return self._identity

    def health(self) -> str | None:
        """None when the probe can score, else why not. Remote backends ask their server."""
        return None

    def close(self) -> None:
        """Release the model, threads and connections. Idempotent."""
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- for backends -------------------------------------------------------------------------------------

    def check_cancelled(self) -> None:
        """Raise :class:`ProbeCancelled` when the running ``score()`` call's caller gave up (backends call
        this between forward passes, so abandoned work stops within one pass)."""
        check = getattr(self._cancel, "check", None)
        if check is not None and check():
            raise ProbeCancelled("the probe work was cancelled: nobody waits for it any more")

    def _record_forward(self, padded_tokens: int = 0) -> None:
        with self._stats_lock:
            self._stats.forward_calls += 1
            self._stats.tokens_padded += padded_tokens


LocalSettingsT = TypeVar("LocalSettingsT", bound="TransformersProbeSettings | VLLMProbeSettings")


class LocalModelProbe(Probe[LocalSettingsT]):
    """A probe that loads the model in a local folder (``settings.model``; None: the default model): its
    model id is the folder's name, its identity the folder's contents, the backend and ``settings.dtype``
    (:func:`engine.probe.identity.local_model_identity`, which :func:`engine.probe.registry.expected_identity`
    computes the same way without loading)."""

    def __init__(self, settings: LocalSettingsT) -> None:
        super().__init__(settings)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from mig_annotator.engine.model_store import resolve_model_path

        self._model_path = resolve_model_path(settings.model)

    @property
    def model_id(self) -> str:
        return self._model_path.name

    @property
    def model_path(self) -> Path:
        return self._model_path

    def _compute_identity(self) -> ProbeIdentity:
        from mig_annotator.engine.probe.identity import local_model_identity

        return local_model_identity(self._model_path, self.backend, self._settings.dtype)
