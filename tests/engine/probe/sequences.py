"""Hand-made probe sequences for the pure-logic probe tests (no tokenizer)."""

from __future__ import annotations

from mig_annotator.engine.prompt import ProbeSequence

Ids = tuple[int, ...]
ANSWER_PROMPT: Ids = (900, 901)


def probe_sequence(header: Ids, steps: list[Ids], answer: Ids, prompt: Ids = ANSWER_PROMPT) -> ProbeSequence:
    """The sequence of a trace whose header, steps, answer prompt and answer tokenise to these ids."""
    trace = list(header)
    boundaries = [len(trace)]
    for step in steps:
        trace.extend(step)
        boundaries.append(len(trace))
    return ProbeSequence(tuple(trace), tuple(boundaries), (*prompt, *answer), len(answer))
