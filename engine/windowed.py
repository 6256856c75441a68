"""The ``context_limit="window"`` policy: score every step of a trace longer than the probe's context.

Exact scoring reads, for prefix k, ``header + s_1..s_k + continuation`` (see :mod:`engine.prompt`).
When that does not fit the probe's context ``limit``, this policy reads instead::

    header + the last W tokens of (s_1..s_k) + continuation,   W = limit - len(header) - len(continuation)

that is, it keeps the question header (with any BOS token) and the answer prompt and answer whole, and drops
the OLDEST step tokens, cutting at a token (not a step or word) boundary, so that the probe input is exactly
``limit`` tokens. Only prefixes that do not fit are cut: v_k is exact for every k whose prefix fits, and an
approximation (the probe no longer sees the start of the reasoning) for the others, which are always the
last ones. Annotations report how many steps were scored on a window (``windowed_steps``).

Work shape: the prefixes that fit stay one nested :class:`ProbeSequence` (forwarded once, as always); each
windowed prefix is its own single-prefix sequence of ``limit`` tokens. All of them go to the probe in the
same ``score`` call as the rest of the batch, and :func:`join_results` stacks their rows back into one
``(K+1, n_answer)`` matrix in prefix order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mig_annotator.engine.probe.base import ProbeResult
from mig_annotator.engine.prompt import ProbeSequence


@dataclass(frozen=True, slots=True)
class WindowedSequence:
    """The probe work of one trace under the window policy.

    ``exact`` holds prefixes 0..len(exact.boundaries)-1 unchanged; ``windows[j]`` is prefix
    ``len(exact.boundaries) + j`` with its oldest step tokens dropped. Every probe input fits ``limit``.
    """

    exact: ProbeSequence
    windows: tuple[ProbeSequence, ...]

    @property
    def all_sequences(self) -> tuple[ProbeSequence, ...]:
        return (self.exact, *self.windows)


def window_budget(sequence: ProbeSequence, limit: int) -> int:
    """Step tokens a window may keep: the limit less the header and the continuation (may be < 1)."""
    return limit - sequence.boundaries[0] - len(sequence.continuation_ids)


def windowed_sequences(sequence: ProbeSequence, limit: int) -> WindowedSequence:
    """``sequence``'s prefixes that fit ``limit`` (exact) and one left-truncated window per prefix over it.

    Raises ValueError when not even one step token fits beside the header and the continuation.
    """
    budget = window_budget(sequence, limit)
    if budget < 1:
        raise ValueError(
            f"the question header ({sequence.boundaries[0]} tokens) and the answer prompt and answer "
            f"({len(sequence.continuation_ids)} tokens) leave no room for step tokens in the probe's "
            f"context limit of {limit}"
        )
    continuation = len(sequence.continuation_ids)
    fitting_steps = max(k for k, end in enumerate(sequence.boundaries) if end + continuation <= limit)
    header = sequence.trace_ids[: sequence.boundaries[0]]
    windows = []
    for end in sequence.boundaries[fitting_steps + 1 :]:
        ids = header + sequence.trace_ids[end - budget : end]
        windows.append(ProbeSequence(ids, (len(ids),), sequence.continuation_ids, sequence.n_answer_tokens))
    return WindowedSequence(sequence.truncated(fitting_steps), tuple(windows))


def join_results(results: Sequence[ProbeResult]) -> ProbeResult:
    """One trace's result from the results of its exact part and its windows, rows in prefix order."""
    if len(results) == 1:
        return results[0]
    logprobs = np.concatenate([result.token_logprobs for result in results], axis=0)
    return ProbeResult(logprobs, sum(result.tokens_forwarded for result in results))
