"""How many tokens the probe forwards for one trace: the one rule the engine plans with and the clients size
their requests with.

The engine counts exactly (it has the probe's tokenizer and the segmenter): :func:`forwarded_tokens` of
the tokenised trace. A client has neither, so :func:`estimated_probe_tokens` applies the same rule to
counts estimated from the trace's text: its UTF-8 bytes times ``tokens_per_byte`` (the service advertises
the ratio its probe's tokenizer gives, ``GET /v1/info`` ``limits.probe_tokens_per_byte``), and one prefix
per step it will most likely get (explicit steps as given; a completion's lines, a line longer than
``max_step_chars`` cut into pieces of ``min_step_chars``), at most ``max_steps``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mig_annotator.schemas.config import ScoringConfig


def forwarded_tokens(trace_tokens: int, prefixes: int, continuation_tokens: int) -> int:
    """The least any exact method forwards for one trace: its tokens (question header and steps) once, plus
    the answer prompt and answer (the continuation) after each of its prefixes (question alone, then after
    each step)."""
    return trace_tokens + prefixes * continuation_tokens


def estimated_steps(trace: Mapping[str, Any], config: ScoringConfig) -> int:
    """The steps a trace will most likely be segmented into (explicit steps: as given), within max_steps."""
    steps = trace.get("steps")
    if isinstance(steps, list):
        count = len(steps)
    else:
        count = 0
        for line in str(trace.get("completion") or "").splitlines():
            length = len(line.strip())
            if not length:
                continue
            count += (
                1 if length <= config.max_step_chars else math.ceil(length / max(1, config.min_step_chars))
            )
    count = max(1, count)
    return count if config.max_steps is None else min(count, config.max_steps)


def estimated_probe_tokens(trace: Mapping[str, Any], config: ScoringConfig, tokens_per_byte: float) -> int:
    """:func:`forwarded_tokens` of a trace as sent (its JSON fields), from its text's UTF-8 bytes."""
    steps = estimated_steps(trace, config)
    prompt = config.prompt
    reasoning = trace.get("steps")
    texts = reasoning if isinstance(reasoning, list) else [str(trace.get("completion") or "")]
    trace_bytes = (
        _bytes(prompt.header if not prompt.chat else prompt.chat_user_message)
        + _bytes(str(trace.get("question") or ""))
        + sum(_bytes(str(text)) for text in texts)
        + steps * _bytes(prompt.step)
    )
    continuation_bytes = _bytes(prompt.answer_prefix) + _bytes(str(trace.get("reference_answer") or ""))
    return forwarded_tokens(
        math.ceil(trace_bytes * tokens_per_byte) + 2,
        steps + 1,
        math.ceil(continuation_bytes * tokens_per_byte) + 1,
    )


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", errors="replace"))
