"""The segmentation result types and the span helpers every segmenter shares.

Invariant: every :class:`Segment` is an exact slice of its completion (``completion[start:end] == text``),
steps are non-empty, stripped, ordered, non-overlapping and lie inside ``cot_span``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

Span = tuple[int, int]
CancelCheck = Callable[[], bool]
"""True once nobody wants the segmentation any more (its request ended)."""


class SegmentationError(ValueError):
    """Raised when a completion or explicit step list cannot be segmented as requested."""


class SegmentationCancelled(RuntimeError):
    """The caller's ``cancelled`` check said stop (its request ended): the segmentation was abandoned.
    Not the trace's fault, so not a :class:`SegmentationError`."""


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of a completion: ``text`` is always ``completion[start:end]``."""

    text: str
    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end or len(self.text) != self.end - self.start:
            raise SegmentationError(f"inconsistent segment span ({self.start}, {self.end}) for {self.text!r}")


@dataclass(frozen=True, slots=True)
class SegmentedCompletion:
    """A completion split into ordered chain-of-thought steps and an optional final-answer part.

    ``reasoning_span`` is set when the completion has a reasoning block (``<think>..</think>`` and its
    variants): it is then the chain-of-thought region (the block's content, tags excluded). Without one the
    region is everything before the answer part, as before.
    """

    completion: str
    steps: tuple[Segment, ...]
    answer_part: Segment | None
    answer: Segment | None
    reasoning_span: Span | None = None

    def __post_init__(self) -> None:
        for seg in self._all_segments():
            if self.completion[seg.start : seg.end] != seg.text:
                raise SegmentationError(
                    f"segment {seg.text!r} does not match completion[{seg.start}:{seg.end}]"
                )
        cot_start, cot_end = self.cot_span
        if not 0 <= cot_start <= cot_end <= len(self.completion):
            raise SegmentationError(f"chain-of-thought span ({cot_start}, {cot_end}) is out of range")
        previous_end = cot_start
        for step in self.steps:
            if not step.text or step.start < previous_end or step.end > cot_end:
                raise SegmentationError(
                    f"step at ({step.start}, {step.end}) is empty, out of order, overlaps or lies outside "
                    f"the chain of thought ({cot_start}, {cot_end})"
                )
            previous_end = step.end
        if self.answer is not None and (
            self.answer_part is None
            or not self.answer_part.start <= self.answer.start <= self.answer.end <= self.answer_part.end
        ):
            raise SegmentationError("answer must lie inside answer_part")

    def _all_segments(self) -> Iterator[Segment]:
        """Yield every segment (steps, answer part, answer)."""
        yield from self.steps
        if self.answer_part is not None:
            yield self.answer_part
        if self.answer is not None:
            yield self.answer

    @property
    def cot_span(self) -> Span:
        """The chain-of-thought region: the reasoning block's content, else all before the answer part."""
        if self.reasoning_span is not None:
            return self.reasoning_span
        if self.answer_part is None:
            return (0, len(self.completion))
        return (0, self.answer_part.start)


def strip_span(text: str, start: int, end: int) -> Span:
    """Shrink ``(start, end)`` so that it covers ``text[start:end].strip()`` exactly (O(end - start))."""
    piece = text[start:end]
    stripped = piece.lstrip()
    if not stripped:
        return (start, start)
    new_start = start + len(piece) - len(stripped)
    return (new_start, new_start + len(stripped.rstrip()))


def make_segment(text: str, span: Span) -> Segment:
    """Build the :class:`Segment` for ``span`` of ``text``."""
    return Segment(text[span[0] : span[1]], span[0], span[1])


def stripped_spans(text: str, spans: Iterable[Span]) -> list[Span]:
    """Strip every span and keep the non-empty ones."""
    kept: list[Span] = []
    for start, end in spans:
        span = strip_span(text, start, end)
        if span[1] > span[0]:
            kept.append(span)
    return kept
