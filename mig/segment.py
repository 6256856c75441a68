"""Split a completion into chain-of-thought steps and a final-answer part.

Every step, the answer part and the extracted answer value are :class:`Segment` objects carrying exact
character spans into the original completion string (``completion[start:end] == text``).

Answer extraction runs first on the whole text and picks the last final-answer marker; steps are then
found only in the chain-of-thought region that precedes the answer part.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from mig_annotator.schemas.config import SegmenterName

__all__ = [
    "Segment",
    "SegmentationError",
    "SegmentedCompletion",
    "SegmenterName",
    "segment_completion",
    "segment_steps",
]


_Span = tuple[int, int]

_SEGMENTERS: tuple[str, ...] = ("auto", "tags", "lines", "headers", "regex")

_LINE_CONTENT = re.compile(r"[^\r\n]+")
_LINE_BREAK = re.compile(r"[\r\n]")
_STEP_OPEN = re.compile(r"<step(?:\s[^>]*)?>", re.IGNORECASE)
_STEP_BLOCK = re.compile(
    r"<step(?:\s[^>]*)?>(.*?)(?:</step\s*>|(?=<step[\s>])|\Z)", re.IGNORECASE | re.DOTALL
)
_ANSWER_TAG = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer\s*>", re.IGNORECASE | re.DOTALL)
_BOXED = re.compile(r"\\boxed[ \t]*\{")
_HEADER = re.compile(
    r"[ \t]*(?:"
    r"(?:\#{1,6}[ \t]*|\*\*[ \t]*)(?:\*\*[ \t]*)?step[ \t]*\d+\b"
    r"|step[ \t]*\d+[ \t]*(?:\*\*[ \t]*)?[:.)](?!\d)"
    r")",
    re.IGNORECASE,
)
_HASH_MARKER = re.compile(r"[ \t]*(####)(?!#)")
_A_MARKER = re.compile(r"[ \t]*(A:)")
_PHRASE = re.compile(
    r"(?:\b(?:therefore|thus|hence|so)\b[ \t]*,?[ \t]*)?"
    r"(?:\*\*[ \t]*)?"
    r"(?:\bthe[ \t]+(?:final[ \t]+)?answer[ \t]+is\b(?:[ \t]*:)?"
    r"|\bfinal[ \t]+answer(?:[ \t]*\*\*)?[ \t]*:)",
    re.IGNORECASE,
)
_BOX_LEAD = re.compile(r"(?:(?:\$\$?|\\[(\[]|\*\*)\s*)+\Z")
_BOX_TRAIL = re.compile(r"(?:\$\$?|\\\)|\*\*|\s*\\\]|\s*\$\$)*[.!?]*")
_LEAD_WINDOW = 64
_MARKUP_OPEN = ("**", "$", "\\(", "\\[")
_MARKUP_CLOSE = ("**", "$", "\\)", "\\]")


class SegmentationError(ValueError):
    """Raised when a completion or explicit step list cannot be segmented as requested."""


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
    """A completion split into ordered chain-of-thought steps and an optional final-answer part."""

    completion: str
    steps: tuple[Segment, ...]
    answer_part: Segment | None
    answer: Segment | None

    def __post_init__(self) -> None:
        for seg in self._all_segments():
            if self.completion[seg.start : seg.end] != seg.text:
                raise SegmentationError(
                    f"segment {seg.text!r} does not match completion[{seg.start}:{seg.end}]"
                )
        limit = self.cot_span[1]
        previous_end = 0
        for step in self.steps:
            if not step.text or step.start < previous_end or step.end > limit:
                raise SegmentationError(
                    f"step at ({step.start}, {step.end}) is empty, out of order or overlaps"
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
    def cot_span(self) -> tuple[int, int]:
        """The chain-of-thought region: everything before the answer part (or the whole completion)."""
        if self.answer_part is None:
            return (0, len(self.completion))
        return (0, self.answer_part.start)


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A final-answer marker occurrence: the answer-part span and the answer-value span (if any)."""

    start: int
    end: int
    value: _Span | None


# ---------------------------------------------------------------------------------------------- spans


def _strip_span(text: str, start: int, end: int) -> _Span:
    """Shrink ``(start, end)`` so that it covers ``text[start:end].strip()`` exactly."""
    piece = text[start:end]
    stripped = piece.lstrip()
    if not stripped:
        return (start, start)
    new_start = start + len(piece) - len(stripped)
    return (new_start, new_start + len(stripped.rstrip()))


def _segment(text: str, span: _Span) -> Segment:
    """Build the :class:`Segment` for ``span`` of ``text``."""
    return Segment(text[span[0] : span[1]], span[0], span[1])


def _stripped_segments(text: str, spans: Iterator[_Span] | list[_Span]) -> list[Segment]:
    """Strip every span and keep the non-empty ones as segments."""
    segments: list[Segment] = []
    for start, end in spans:
        span = _strip_span(text, start, end)
        if span[1] > span[0]:
            segments.append(_segment(text, span))
    return segments


def _line_spans(text: str) -> Iterator[_Span]:
    """Yield the content span of each non-empty raw line (``\\n``, ``\\r\\n`` and ``\\r`` all break)."""
    for match in _LINE_CONTENT.finditer(text):
        yield match.span()


def _line_end(text: str, pos: int) -> int:
    """Index of the line break at or after ``pos`` (or ``len(text)``)."""
    match = _LINE_BREAK.search(text, pos)
    return match.start() if match else len(text)


# ---------------------------------------------------------------------------------------------- values


def _brace_pairs(text: str, start: int, limit: int) -> dict[int, int]:
    """Map each ``{`` in ``text[start:limit]`` to its matching ``}`` (escapes skipped), in one pass."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i = start
    while i < limit:
        char = text[i]
        if char == "\\":
            i += 1
        elif char == "{":
            stack.append(i)
        elif char == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def _boxed(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int, int]]:
    """Outermost balanced ``\\boxed{..}`` in ``text[start:end]`` as (marker, open brace, close brace)."""
    limit = len(text) if end is None else end
    found: list[tuple[int, int, int]] = []
    pairs: dict[int, int] | None = None
    match = _BOXED.search(text, start, limit)
    while match is not None:
        if pairs is None:
            pairs = _brace_pairs(text, match.start(), limit)
        close = pairs.get(match.end() - 1)
        if close is not None:
            found.append((match.start(), match.end() - 1, close))
        match = _BOXED.search(text, match.end() if close is None else close + 1, limit)
    return found


def _peel_markup(text: str, span: _Span) -> _Span:
    """Drop one layer of surrounding whitespace, trailing period and ``$``/``**``/``\\(`` markup."""
    start, end = _strip_span(text, *span)
    if text.endswith(".", start, end):
        end -= 1
    for opener in _MARKUP_OPEN:
        if text.startswith(opener, start, end):
            start += len(opener)
    for closer in _MARKUP_CLOSE:
        if end - start >= len(closer) and text.endswith(closer, start, end):
            end -= len(closer)
    return _strip_span(text, start, end)


def _clean_value(text: str, span: _Span) -> _Span | None:
    """The answer value inside ``span``: last boxed content if any, else the span without markup."""
    boxes = _boxed(text, *span)
    if boxes:
        _, open_brace, close = boxes[-1]
        span = _strip_span(text, open_brace + 1, close)
    else:
        previous = None
        while span != previous:
            previous, span = span, _peel_markup(text, span)
    return span if span[1] > span[0] else None


# ---------------------------------------------------------------------------------------------- markers


def _boxed_candidates(text: str) -> list[_Candidate]:
    """Standalone ``\\boxed{..}`` answers, widened over adjacent math/bold markup and punctuation."""
    candidates: list[_Candidate] = []
    for marker, open_brace, close in _boxed(text):
        lead = _BOX_LEAD.search(text, max(0, marker - _LEAD_WINDOW), marker)
        start = lead.start() if lead else marker
        trail = _BOX_TRAIL.match(text, close + 1)
        end = trail.end() if trail else close + 1
        value = _strip_span(text, open_brace + 1, close)
        candidates.append(_Candidate(start, end, value if value[1] > value[0] else None))
    return candidates


def _tag_candidates(text: str) -> list[_Candidate]:
    """``<answer>..</answer>`` blocks plus trailing sentence punctuation."""
    candidates: list[_Candidate] = []
    for match in _ANSWER_TAG.finditer(text):
        end = match.end()
        while end < len(text) and text[end] in ".!?":
            end += 1
        candidates.append(_Candidate(match.start(), end, _clean_value(text, match.span(1))))
    return candidates


def _line_marker_candidates(text: str) -> list[_Candidate]:
    """Lines starting with ``####`` (not a ``#### Step N`` header) or ``A:``; the value must be non-empty."""
    candidates: list[_Candidate] = []
    for line_start, line_end in _line_spans(text):
        match = _A_MARKER.match(text, line_start, line_end)
        if match is None and not _HEADER.match(text, line_start, line_end):
            match = _HASH_MARKER.match(text, line_start, line_end)
        if match is None:
            continue
        value = _clean_value(text, (match.end(), line_end))
        if value is not None:
            end = _strip_span(text, match.start(1), line_end)[1]
            candidates.append(_Candidate(match.start(1), end, value))
    return candidates


def _phrase_candidates(text: str) -> list[_Candidate]:
    """Phrases "(Therefore,) the (final) answer is X" / "final answer: X"; X runs to the line end.

    Only the first phrase of a line is kept: later ones on that line lie inside its answer part.
    """
    candidates: list[_Candidate] = []
    match = _PHRASE.search(text)
    while match is not None:
        line_end = _line_end(text, match.end())
        value = _clean_value(text, (match.end(), line_end))
        if value is not None:
            end = _strip_span(text, match.start(), line_end)[1]
            candidates.append(_Candidate(match.start(), end, value))
        match = _PHRASE.search(text, line_end)
    return candidates


_MARKER_FINDERS: tuple[Callable[[str], list[_Candidate]], ...] = (
    _boxed_candidates,
    _tag_candidates,
    _line_marker_candidates,
    _phrase_candidates,
)


def _select(candidates: list[_Candidate]) -> _Candidate | None:
    """Pick the last marker not nested in another one; widen its start over markers overlapping it."""
    ordered = sorted(candidates, key=lambda c: (c.start, -c.end))
    chosen: _Candidate | None = None
    max_end = -1
    for candidate in ordered:
        if candidate.end > max_end:
            chosen, max_end = candidate, candidate.end
    if chosen is None:
        return None
    start = chosen.start
    for other in reversed(ordered):
        if other.start < start < other.end:
            start = other.start
    return _Candidate(start, chosen.end, chosen.value)


def _find_answer(text: str) -> _Candidate | None:
    """The last final-answer marker in ``text``, or None."""
    candidates = [c for finder in _MARKER_FINDERS for c in finder(text)]
    return _select(candidates)


# ---------------------------------------------------------------------------------------------- segmenters


def _tag_steps(cot: str) -> list[_Span]:
    """Contents of ``<step>..</step>`` blocks (an unclosed last block runs to the end of the region)."""
    return [match.span(1) for match in _STEP_BLOCK.finditer(cot)]


def _header_starts(cot: str) -> list[int]:
    """Start offsets of header lines ("Step N:", "**Step N:**", "### Step N", ...)."""
    return [start for start, end in _line_spans(cot) if _HEADER.match(cot, start, end)]


def _header_steps(cot: str) -> list[_Span]:
    """One span per header section plus the preamble before the first header."""
    starts = _header_starts(cot)
    bounds = [0, *starts, len(cot)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _line_steps(cot: str) -> list[_Span]:
    """One span per raw line."""
    return list(_line_spans(cot))


def _compile_step_regex(step_regex: str | None) -> re.Pattern[str]:
    """Compile the user ``step_regex`` or raise :class:`SegmentationError` naming it."""
    if step_regex is None:
        raise SegmentationError("step_regex is required when segmenter='regex'")
    try:
        return re.compile(step_regex)
    except (re.error, TypeError) as exc:
        raise SegmentationError(f"invalid step_regex {step_regex!r}: {exc}") from exc


def _regex_steps(cot: str, pattern: re.Pattern[str]) -> list[_Span]:
    """Spans of group "step", else group 1, else the whole match, for each match of ``pattern``."""
    group: int | str = "step" if "step" in pattern.groupindex else min(pattern.groups, 1)
    spans: list[_Span] = []
    for match in pattern.finditer(cot):
        start, end = match.span(group)
        if start < 0:
            continue
        span = _strip_span(cot, start, end)
        if span[1] == span[0]:
            continue
        if spans and span[0] < spans[-1][1]:
            raise SegmentationError(f"step_regex {pattern.pattern!r} produced overlapping steps")
        spans.append(span)
    return spans


def _resolve_segmenter(cot: str, segmenter: str, step_regex: str | None) -> str:
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
    if _STEP_OPEN.search(cot):
        return "tags"
    return "headers" if _header_starts(cot) else "lines"


def _split_steps(cot: str, segmenter: str, step_regex: str | None) -> list[Segment]:
    """Segment the chain-of-thought region ``cot`` (a prefix of the completion) into stripped steps."""
    name = _resolve_segmenter(cot, segmenter, step_regex)
    if name == "regex":
        spans = _regex_steps(cot, _compile_step_regex(step_regex))
    elif name == "tags":
        spans = _tag_steps(cot)
    elif name == "headers":
        spans = _header_steps(cot)
    else:
        spans = _line_steps(cot)
    return _stripped_segments(cot, spans)


# ---------------------------------------------------------------------------------------------- public API


def _answer_segments(
    text: str, found: _Candidate | None, offset: int = 0
) -> tuple[Segment | None, Segment | None]:
    """Answer part and answer segments of ``found``, whose spans are offsets into ``text[offset:]``."""
    if found is None:
        return (None, None)
    part = _segment(text, (found.start + offset, found.end + offset))
    if found.value is None:
        return (part, None)
    return (part, _segment(text, (found.value[0] + offset, found.value[1] + offset)))


def segment_completion(
    completion: str, segmenter: SegmenterName = "auto", step_regex: str | None = None
) -> SegmentedCompletion:
    """Split ``completion`` into chain-of-thought steps and the final-answer part.

    The last final-answer marker is located first; steps are then searched only in
    ``completion[0:answer_part.start]`` with the chosen segmenter. ``step_regex`` (segmenter "regex", or
    "auto" when given) is compiled without flags; use inline flags such as ``(?m)`` when needed.
    """
    if not isinstance(completion, str):
        raise SegmentationError(f"completion must be a string, got {type(completion).__name__}")
    found = _find_answer(completion)
    cot_end = len(completion) if found is None else found.start
    steps = _split_steps(completion[:cot_end], segmenter, step_regex)
    part, answer = _answer_segments(completion, found)
    return SegmentedCompletion(completion, tuple(steps), part, answer)


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


def segment_steps(steps: Sequence[str]) -> SegmentedCompletion:
    """Build a segmentation from explicit steps joined by ``"\\n"``.

    Each item is one stripped step. A final-answer marker is looked for in the last step only; when found,
    its answer part is split off and the text before it (if any) remains the last step.
    """
    items = _validated_steps(steps)
    completion = "\n".join(items)
    spans: list[_Span] = []
    offset = 0
    for item in items:
        spans.append(_strip_span(completion, offset, offset + len(item)))
        offset += len(item) + 1
    part: Segment | None = None
    answer: Segment | None = None
    if spans:
        last_start, last_end = spans[-1]
        found = _find_answer(completion[last_start:last_end])
        if found is not None:
            part, answer = _answer_segments(completion, found, last_start)
            spans[-1] = _strip_span(completion, last_start, last_start + found.start)
    return SegmentedCompletion(completion, tuple(_stripped_segments(completion, spans)), part, answer)
