"""A deterministic fake probe (backend ``fake``): no model, for logic tests, dry runs and plumbing benchmarks.

Its log-prob for answer token ``a_j`` after prefix ``k`` is

    -(0.05 + 2.5 / (1 + c_kj)) - u_kj

where ``c_kj`` counts the occurrences of ``a_j`` in the prefix (steps that state the answer raise v_k, so
rewards are not all zero) and ``u_kj`` in ``[0, 0.25)`` comes from a hash of the prefix tokens, ``j`` and
the seed. Same tokens in, same numbers out, in any batch. The tokenizer is a built-in byte tokenizer
(one token per UTF-8 byte, with a chat template), or a Hugging Face tokenizer folder when configured.

For tests: ``fail_marker`` makes ``score()`` raise :class:`ProbeError` for a batch holding a trace whose
text contains it; :meth:`FakeProbe.fail_next` fails the next N calls; ``delay_s`` slows every call, and
``delay_per_token_s`` each call by the tokens it forwards (a probe of a set throughput).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mig_annotator.engine.probe.base import Probe, ProbeError, ProbeResult
from mig_annotator.engine.probe.settings import FakeProbeSettings
from mig_annotator.engine.prompt import ProbeSequence, Tokenizer
from mig_annotator.schemas.probe import ProbeIdentity

_BYTE_OFFSET = 3  # ids 0-2 are reserved (padding, begin and end of text); byte b is id b + 3
_MASK64 = (1 << 64) - 1


class ByteTokenizer:
    """One token per UTF-8 byte; no special tokens are added. Enough of a Hugging Face tokenizer for
    :class:`engine.prompt.PromptBuilder`: ``__call__``, ``decode``, ``apply_chat_template``."""

    bos_token_id: int | None = None
    eos_token_id = 2
    vocab_size = 256 + _BYTE_OFFSET

    def __call__(self, text: list[str] | str, add_special_tokens: bool = True, **_: Any) -> dict[str, Any]:
        texts = [text] if isinstance(text, str) else text
        ids = [[byte + _BYTE_OFFSET for byte in item.encode("utf-8")] for item in texts]
        return {"input_ids": ids[0] if isinstance(text, str) else ids}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False, **_: Any) -> str:
        data = bytes(token - _BYTE_OFFSET for token in ids if token >= _BYTE_OFFSET)
        return data.decode("utf-8", errors="replace")

    def apply_chat_template(
        self,
        conversation: list[dict[str, str]],
        tokenize: bool = False,
        add_generation_prompt: bool = False,
        **_: Any,
    ) -> str:
        text = "".join(f"<|{message['role']}|>\n{message['content']}\n" for message in conversation)
        return text + ("<|assistant|>\n" if add_generation_prompt else "")


class FakeProbe(Probe[FakeProbeSettings]):
    """A :class:`engine.probe.base.Probe` that computes deterministic log-probs from the prefix tokens."""

    backend = "fake"

    def __init__(self, settings: FakeProbeSettings | None = None, **overrides: Any) -> None:
        super().__init__(settings or FakeProbeSettings(**overrides))
        self._tokenizer = _load_tokenizer(self._settings.tokenizer)
        self._context_limit = self._settings.context_limit
        self._lock = threading.Lock()
        self._failures_left = 0
        self.delay_s = self._settings.delay_s
        self.calls = 0

    @property
    def model_id(self) -> str:
        return self._settings.model

    def fail_next(self, calls: int) -> None:
        """Make the next ``calls`` calls of ``score()`` raise :class:`ProbeError` ("injected failure")."""
        with self._lock:
            self._failures_left = calls

    def _compute_identity(self) -> ProbeIdentity:
        return fake_identity(self._settings)

    def _score_sequences(self, sequences: Sequence[ProbeSequence]) -> list[ProbeResult]:
        with self._lock:
            self.calls += 1
            failing = self._failures_left > 0
            self._failures_left -= int(failing)
        per_token = self._settings.delay_per_token_s
        delay = self.delay_s + per_token * sum(sequence.minimal_tokens for sequence in sequences)
        if delay:
            time.sleep(delay)
        if failing:
            raise ProbeError("injected failure: device lost")
        self._check_markers(sequences)
        self._record_forward()
        return [
            ProbeResult(_logprobs(sequence, self._settings.seed), sequence.minimal_tokens)
            for sequence in sequences
        ]

    def _check_markers(self, sequences: Sequence[ProbeSequence]) -> None:
        marker = self._settings.fail_marker
        if marker is None:
            return
        for index, sequence in enumerate(sequences):
            if marker in self._tokenizer.decode(list(sequence.trace_ids)):  # type: ignore[attr-defined]
                raise ProbeError(f"injected failure: sequence {index} contains the marker {marker!r}")


def fake_identity(settings: FakeProbeSettings) -> ProbeIdentity:
    """What decides the fake probe's numbers: its seed and tokenizer (by content)."""
    if settings.tokenizer is None:
        tokenizer = "bytes"
    else:
        from mig_annotator.engine.probe.identity import folder_digest

        tokenizer = folder_digest(Path(settings.tokenizer))
    digest = hashlib.sha256(f"fake\0seed={settings.seed}\0tokenizer={tokenizer}".encode()).hexdigest()
    return ProbeIdentity(model=settings.model, digest=digest, backend="fake", dtype="float64")


def _load_tokenizer(folder: str | None) -> Tokenizer:
    if folder is None:
        return ByteTokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _logprobs(sequence: ProbeSequence, seed: int) -> np.ndarray:
    """(K+1, n_answer) log-probs; see the module docstring."""
    trace = np.asarray(sequence.trace_ids, dtype=np.int64)
    ends = np.asarray(sequence.boundaries, dtype=np.int64)
    answer = sequence.continuation_ids[len(sequence.continuation_ids) - sequence.n_answer_tokens :]
    weights = (np.arange(1, len(trace) + 1, dtype=np.int64) * 2654435761) % 2147483647
    rolling = np.cumsum(trace * weights)  # wraps on overflow: still deterministic
    out = np.empty((len(ends), len(answer)))
    for j, token in enumerate(answer):
        counts = np.cumsum(trace == token)[ends - 1]
        for k, end in enumerate(ends):
            mixed = (
                int(rolling[end - 1]) * 6364136223846793005 + (j + 1) * 1442695040888963407 + seed
            ) & _MASK64
            mixed = ((mixed ^ (mixed >> 29)) * 0xBF58476D1CE4E5B9) & _MASK64
            jitter = 0.25 * ((mixed >> 11) / float(1 << 53))
            out[k, j] = -(0.05 + 2.5 / (1.0 + float(counts[k]))) - jitter
    return out
