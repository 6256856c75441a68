"""Reasoning blocks: ``<think>..</think>`` and its common variants.

Recognised tags (case-insensitive): ``<think>``, ``<thinking>``, ``<reasoning>`` with their closing tags, and
``<|begin_of_thought|>`` / ``<|end_of_thought|>``. Any opening tag pairs with any closing tag.

* ``open .. close``: the chain of thought is the text between the last opening tag before the first closing
  tag and that closing tag; the text after the LAST closing tag is the answer region (so repeated closing
  tags, ``"</think>" * 5000 + "A: 5"``, or nested blocks, ``<think>a<think>b</think>c</think>A: 5``, still
  end with their answer). Text between the first and the last closing tag is neither a step nor the answer.
* ``close`` without an opening tag before it (chat templates that put ``<think>`` in the prompt): the chain
  of thought runs from the start of the completion to the closing tag.
* ``open`` without a closing tag (a cut completion): the chain of thought runs from the last opening tag to
  the end, and the final answer is looked for in it as for a completion without tags.

So the chain-of-thought region never contains a tag. Text before the opening tag is neither a step nor the
answer. One pass of a pattern that starts only at ``<`` and has no repetition: linear time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mig_annotator.engine.segment.model import Span

_TAG = re.compile(
    r"<(?P<close>/?)(?:think|thinking|reasoning)>|<\|(?P<edge>begin|end)_of_thought\|>", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class ReasoningBlock:
    """Where the chain of thought lies; ``answer_region`` is None when the block was never closed."""

    cot: Span
    answer_region: Span | None


def _is_close(match: re.Match[str]) -> bool:
    edge = match.group("edge")
    return bool(match.group("close")) if edge is None else edge.lower() == "end"


def find_reasoning_block(text: str) -> ReasoningBlock | None:
    """The reasoning block of ``text`` (see the module doc), or None when it has no reasoning tag."""
    last_open: re.Match[str] | None = None
    cot: Span | None = None
    answer_start = 0
    for match in _TAG.finditer(text):
        if not _is_close(match):
            last_open = match
            continue
        if cot is None:
            cot = (last_open.end() if last_open is not None else 0, match.start())
        answer_start = match.end()
    if cot is not None:
        return ReasoningBlock(cot, (answer_start, len(text)))
    if last_open is None:
        return None
    return ReasoningBlock((last_open.end(), len(text)), None)
