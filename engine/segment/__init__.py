"""Split a completion into chain-of-thought steps and a final-answer part.

Every step, the answer part and the extracted answer value are :class:`Segment` objects carrying exact
character spans into the original completion string (``completion[start:end] == text``).

1. Reasoning block (:mod:`.blocks`): with ``<think>..</think>`` (or a variant) the block's content is the
   chain of thought, tags excluded; the stripped text after the last closing tag is the answer part and the
   answer value is extracted from it as below. Without a closing tag the region after the opening tag
   (or the whole completion) is treated as below.
2. Answer (:mod:`.answer`): the last final-answer marker of the region is the answer part; steps are then
   found only in the region before it.
3. Steps: "tags" (``<step>``), "headers" ("Step N:"), "regex" (``step_regex``, RE2) or "lines"/prose
   (:mod:`.prose`: one step per line, long lines split at sentences, ``min_step_chars``/``max_step_chars``;
   inside a reasoning block every line of at least ``2 * min_step_chars`` is split at sentences).
   "auto" picks tags, else headers, else lines. Finally at most ``max_steps`` steps remain: adjacent steps
   are merged, shortest merged result first.

All of it runs in time linear in the completion (the step cap in O(s log s) for s steps).
"""

from __future__ import annotations

from collections.abc import Sequence

from mig_annotator.engine.segment.answer import AnswerMarker, find_answer
from mig_annotator.engine.segment.blocks import find_reasoning_block
from mig_annotator.engine.segment.model import (
    CancelCheck,
    Segment,
    SegmentationCancelled,
    SegmentationError,
    SegmentedCompletion,
    Span,
    make_segment,
    strip_span,
    stripped_spans,
)
from mig_annotator.engine.segment.prose import cap_steps, prose_steps
from mig_annotator.engine.segment.structure import has_step_tags, header_starts, header_steps, tag_steps
from mig_annotator.engine.segment.user_regex import StepPattern
from mig_annotator.schemas.config import (
    DEFAULT_MAX_STEP_CHARS,
    DEFAULT_MAX_STEPS,
    DEFAULT_MIN_STEP_CHARS,
    ScoringConfig,
    SegmenterName,
)

__all__ = [
    "Segment",
    "SegmentationCancelled",
    "SegmentationError",
    "SegmentedCompletion",
    "SegmenterName",
    "segment_completion",
    "segment_for_config",
    "segment_steps",
]

_SEGMENTERS: tuple[str, ...] = ("auto", "tags", "lines", "headers", "regex")


def _resolve_segmenter(text: str, start: int, end: int, segmenter: str, step_regex: str | None) -> str:
    """Validate ``segmenter`` and resolve "auto" to a concrete segmenter name."""
    if segmenter not in _SEGMENTERS:
        raise SegmentationError(f"unknown segmenter {segmenter!r}; expected one of {', '.join(_SEGMENTERS)}")
    if step_regex is not None and segmenter not in ("auto", "regex"):
        raise SegmentationError(
            f"step_regex is only used with segmenter='regex', got segmenter={segmenter!r}"
        )
    if segmenter != "auto":
        return segmenter
    if step_regex is not None:
        return "regex"
    if has_step_tags(text, start, end):
        return "tags"
    return "headers" if header_starts(text, start, end) else "lines"


def _regex_steps(
    text: str, start: int, end: int, pattern: StepPattern, cancelled: CancelCheck | None
) -> list[Span]:
    """Stripped, non-empty spans of the pattern's step group (ordered and disjoint: RE2 has no lookaround,
    so a group lies inside its match and matches do not overlap)."""
    return stripped_spans(text, pattern.spans(text, start, end, cancelled))


def _split_steps(
    text: str,
    region: Span,
    segmenter: str,
    step_regex: str | None,
    min_chars: int,
    max_chars: int,
    *,
    paragraphs: bool,
    cancelled: CancelCheck | None = None,
) -> list[Span]:
    """Stripped step spans of the chain-of-thought region ``text[region[0]:region[1]]``."""
    start, end = region
    name = _resolve_segmenter(text, start, end, segmenter, step_regex)
    if name == "regex":
        return _regex_steps(text, start, end, StepPattern(step_regex), cancelled)
    if name == "tags":
        return stripped_spans(text, tag_steps(text, start, end))
    if name == "headers":
        return stripped_spans(text, header_steps(text, start, end))
    return prose_steps(text, start, end, min_chars, max_chars, paragraphs=paragraphs)


def _find_answer_in(text: str, start: int, end: int) -> AnswerMarker | None:
    """The last final-answer marker of ``text[start:end]``, with spans into ``text``."""
    found = find_answer(text[start:end])
    if found is None:
        return None
    value = None if found.value is None else (found.value[0] + start, found.value[1] + start)
    return AnswerMarker(found.start + start, found.end + start, value)


def _answer_segments(text: str, found: AnswerMarker | None) -> tuple[Segment | None, Segment | None]:
    """Answer part and answer segments of ``found``."""
    if found is None:
        return (None, None)
    part = make_segment(text, (found.start, found.end))
    return (part, None if found.value is None else make_segment(text, found.value))


def _check_limits(min_step_chars: int, max_step_chars: int, max_steps: int | None) -> None:
    if min_step_chars < 0 or max_step_chars < 1 or min_step_chars > max_step_chars:
        raise SegmentationError(
            f"need 0 <= min_step_chars <= max_step_chars and max_step_chars >= 1, got "
            f"min_step_chars={min_step_chars}, max_step_chars={max_step_chars}"
        )
    if max_steps is not None and max_steps < 1:
        raise SegmentationError(f"max_steps must be at least 1, got {max_steps}")


def segment_completion(
    completion: str,
    segmenter: SegmenterName = "auto",
    step_regex: str | None = None,
    *,
    min_step_chars: int = DEFAULT_MIN_STEP_CHARS,
    max_step_chars: int = DEFAULT_MAX_STEP_CHARS,
    max_steps: int | None = DEFAULT_MAX_STEPS,
    cancelled: CancelCheck | None = None,
) -> SegmentedCompletion:
    """Split ``completion`` into chain-of-thought steps and the final-answer part (see the module doc).

    ``step_regex`` (segmenter "regex", or "auto" when given) is compiled with RE2 without flags; use inline
    flags such as ``(?m)`` when needed. ``min_step_chars``/``max_step_chars`` size the steps of the
    "lines"/"auto" prose splitting; ``max_steps`` (None: no cap) merges adjacent steps of any segmenter.
    Raises :class:`SegmentationError` only for invalid arguments (never for the text itself), or for a
    ``step_regex`` search over its work limit; ``cancelled`` (asked during a ``step_regex`` search) raises
    :class:`SegmentationCancelled` once it says stop.
    """
    if not isinstance(completion, str):
        raise SegmentationError(f"completion must be a string, got {type(completion).__name__}")
    _check_limits(min_step_chars, max_step_chars, max_steps)
    block = find_reasoning_block(completion)
    region: Span = (0, len(completion)) if block is None else block.cot
    reasoning_span: Span | None = None
    if block is not None and block.answer_region is not None:
        reasoning_span = block.cot
        part_span = strip_span(completion, *block.answer_region)
        found = _find_answer_in(completion, *part_span)
        part = make_segment(completion, part_span) if part_span[1] > part_span[0] else None
        answer = None if found is None or found.value is None else make_segment(completion, found.value)
    else:
        found = _find_answer_in(completion, *region)
        part, answer = _answer_segments(completion, found)
        if found is not None:
            region = (region[0], found.start)
        if block is not None:
            reasoning_span = region
    in_block = block is not None
    spans = _split_steps(
        completion,
        region,
        segmenter,
        step_regex,
        min_step_chars,
        max_step_chars,
        paragraphs=in_block,
        cancelled=cancelled,
    )
    steps = tuple(make_segment(completion, span) for span in cap_steps(spans, max_steps))
    return SegmentedCompletion(completion, steps, part, answer, reasoning_span)


def _validated_steps(steps: Sequence[str]) -> list[str]:
    """Check that ``steps`` is a sequence of non-blank strings; name the offending index otherwise."""
    if isinstance(steps, str | bytes):
        raise SegmentationError("steps must be a sequence of strings, not a single string")
    items = list(steps)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise SegmentationError(f"steps[{index}] must be a string, got {type(item).__name__}")
        if not item.strip():
            raise SegmentationError(f"steps[{index}] is empty or whitespace-only")
    return items


def segment_steps(steps: Sequence[str], *, max_steps: int | None = DEFAULT_MAX_STEPS) -> SegmentedCompletion:
    """Build a segmentation from explicit steps joined by ``"\\n"``.

    Each item is one stripped step. A final-answer marker is looked for in the last step only; when found,
    its answer part is split off and the text before it (if any) remains the last step. Over ``max_steps``
    steps, adjacent steps are merged as in :func:`segment_completion` (a merged step spans the ``"\\n"``
    between its items).
    """
    if max_steps is not None and max_steps < 1:
        raise SegmentationError(f"max_steps must be at least 1, got {max_steps}")
    items = _validated_steps(steps)
    completion = "\n".join(items)
    spans: list[Span] = []
    offset = 0
    for item in items:
        spans.append(strip_span(completion, offset, offset + len(item)))
        offset += len(item) + 1
    part: Segment | None = None
    answer: Segment | None = None
    if spans:
        last_start, last_end = spans[-1]
        found = _find_answer_in(completion, last_start, last_end)
        if found is not None:
            part, answer = _answer_segments(completion, found)
            spans[-1] = strip_span(completion, last_start, found.start)
    kept = cap_steps(stripped_spans(completion, spans), max_steps)
    return SegmentedCompletion(completion, tuple(make_segment(completion, s) for s in kept), part, answer)


def segment_for_config(
    config: ScoringConfig,
    *,
    completion: str | None = None,
    steps: Sequence[str] | None = None,
    cancelled: CancelCheck | None = None,
) -> SegmentedCompletion:
    """Segment a trace's ``completion`` or explicit ``steps`` with every segmentation option of ``config``."""
    if steps is not None:
        return segment_steps(steps, max_steps=config.max_steps)
    if completion is None:
        raise SegmentationError("a trace needs steps or a completion")
    return segment_completion(
        completion,
        config.segmenter,
        config.step_regex,
        min_step_chars=config.min_step_chars,
        max_step_chars=config.max_step_chars,
        max_steps=config.max_steps,
        cancelled=cancelled,
    )
