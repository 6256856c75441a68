"""Final-answer extraction: the last final-answer marker of a text and the answer value inside it.

Markers: standalone ``\\boxed{..}``, ``<answer>..</answer>``, lines starting with ``####`` or ``A:``, and
phrases like "the (final) answer is X" / "final answer: X". Every pattern here runs in time linear in the
text: no two quantifiers can split the same run of characters, runs are scanned once, and markup peeling
works on indices (tests/engine/test_segment_linear.py holds the adversarial inputs).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from mig_annotator.engine.segment.lines import line_end, line_spans
from mig_annotator.engine.segment.model import Span, strip_span
from mig_annotator.engine.segment.structure import HEADER

_ANSWER_TAG = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer\s*>", re.IGNORECASE | re.DOTALL)
_BOXED = re.compile(r"\\boxed[ \t]*\{")
_BRACE_TOKEN = re.compile(r"\\[\s\S]|[{}]")
_HASH_MARKER = re.compile(r"[ \t]*(####)(?!#)")
_A_MARKER = re.compile(r"[ \t]*(A:)")
_PHRASE = re.compile(
    r"(?:\b(?:therefore|thus|hence|so)\b[ \t]*(?:,[ \t]*)?)?"
    r"(?:\*\*[ \t]*)?"
    r"(?:\bthe[ \t]+(?:final[ \t]+)?answer[ \t]+is\b(?:[ \t]*:)?"
    r"|\bfinal[ \t]+answer(?:[ \t]*\*\*)?[ \t]*:)",
    re.IGNORECASE,
)
# Atomic token and possessive repetition: a run of markup is consumed one way only (no backtracking).
_BOX_LEAD = re.compile(r"(?:(?>\$\$?|\\[(\[]|\*\*)\s*+)++\Z")
_BOX_TRAIL = re.compile(r"(?:\$\$?|\\\)|\*\*|\s*\\\]|\s*\$\$)*[.!?]*")
_LEAD_WINDOW = 64
_MARKUP_OPEN = ("**", "$", "\\(", "\\[")
_MARKUP_CLOSE = ("**", "$", "\\)", "\\]")


@dataclass(frozen=True, slots=True)
class AnswerMarker:
    """A final-answer marker occurrence: the answer-part span and the answer-value span (if any)."""

    start: int
    end: int
    value: Span | None


# ---------------------------------------------------------------------------------------------- values


def _brace_pairs(text: str, start: int, limit: int) -> dict[int, int]:
    """Map each ``{`` in ``text[start:limit]`` to its matching ``}`` (escapes skipped), in one pass."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for token in _BRACE_TOKEN.finditer(text, start, limit):
        char = text[token.start()]
        if char == "{":
            stack.append(token.start())
        elif char == "}" and stack:
            pairs[stack.pop()] = token.start()
    return pairs


def boxed(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int, int]]:
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


def _strip_indices(text: str, start: int, end: int) -> Span:
    """Like :func:`strip_span` but in time proportional to the whitespace removed (for repeated peeling)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end)


def _peel_markup(text: str, span: Span) -> Span:
    """Drop one layer of surrounding whitespace, trailing period and ``$``/``**``/``\\(`` markup."""
    start, end = _strip_indices(text, *span)
    if text.endswith(".", start, end):
        end -= 1
    for opener in _MARKUP_OPEN:
        if text.startswith(opener, start, end):
            start += len(opener)
    for closer in _MARKUP_CLOSE:
        if end - start >= len(closer) and text.endswith(closer, start, end):
            end -= len(closer)
    return _strip_indices(text, start, end)


def clean_value(text: str, span: Span) -> Span | None:
    """The answer value inside ``span``: last boxed content if any, else the span without markup."""
    boxes = boxed(text, *span)
    if boxes:
        _, open_brace, close = boxes[-1]
        span = strip_span(text, open_brace + 1, close)
    else:
        previous = None
        while span != previous:  # each round removes at least one character or stops: linear overall
            previous, span = span, _peel_markup(text, span)
    return span if span[1] > span[0] else None


# ---------------------------------------------------------------------------------------------- markers


def _boxed_markers(text: str) -> list[AnswerMarker]:
    """Standalone ``\\boxed{..}`` answers, widened over adjacent math/bold markup and punctuation."""
    markers: list[AnswerMarker] = []
    for marker, open_brace, close in boxed(text):
        lead = _BOX_LEAD.search(text, max(0, marker - _LEAD_WINDOW), marker)
        start = lead.start() if lead else marker
        trail = _BOX_TRAIL.match(text, close + 1)
        end = trail.end() if trail else close + 1
        value = strip_span(text, open_brace + 1, close)
        markers.append(AnswerMarker(start, end, value if value[1] > value[0] else None))
    return markers


def _tag_markers(text: str) -> list[AnswerMarker]:
    """``<answer>..</answer>`` blocks plus trailing sentence punctuation."""
    markers: list[AnswerMarker] = []
    for match in _ANSWER_TAG.finditer(text):
        end = match.end()
        while end < len(text) and text[end] in ".!?":
            end += 1
        markers.append(AnswerMarker(match.start(), end, clean_value(text, match.span(1))))
    return markers


def _line_markers(text: str) -> list[AnswerMarker]:
    """Lines starting with ``####`` (not a ``#### Step N`` header) or ``A:``; the value must be non-empty."""
    markers: list[AnswerMarker] = []
    for start, end in line_spans(text):
        match = _A_MARKER.match(text, start, end)
        if match is None and not HEADER.match(text, start, end):
            match = _HASH_MARKER.match(text, start, end)
        if match is None:
            continue
        value = clean_value(text, (match.end(), end))
        if value is not None:
            markers.append(AnswerMarker(match.start(1), strip_span(text, match.start(1), end)[1], value))
    return markers


def _phrase_markers(text: str) -> list[AnswerMarker]:
    """Phrases "(Therefore,) the (final) answer is X" / "final answer: X"; X runs to the line end.

    Only the first phrase of a line is kept: later ones on that line lie inside its answer part.
    """
    markers: list[AnswerMarker] = []
    match = _PHRASE.search(text)
    while match is not None:
        end = line_end(text, match.end())
        value = clean_value(text, (match.end(), end))
        if value is not None:
            markers.append(AnswerMarker(match.start(), strip_span(text, match.start(), end)[1], value))
        match = _PHRASE.search(text, end)
    return markers


_MARKER_FINDERS: tuple[Callable[[str], list[AnswerMarker]], ...] = (
    _boxed_markers,
    _tag_markers,
    _line_markers,
    _phrase_markers,
)


def _select(markers: list[AnswerMarker]) -> AnswerMarker | None:
    """Pick the last marker not nested in another one; widen its start over markers overlapping it."""
    ordered = sorted(markers, key=lambda c: (c.start, -c.end))
    chosen: AnswerMarker | None = None
    max_end = -1
    for marker in ordered:
        if marker.end > max_end:
            chosen, max_end = marker, marker.end
    if chosen is None:
        return None
    start = chosen.start
    for other in reversed(ordered):
        if other.start < start < other.end:
            start = other.start
    return AnswerMarker(start, chosen.end, chosen.value)


def find_answer(text: str) -> AnswerMarker | None:
    """The last final-answer marker in ``text``, or None."""
    return _select([marker for finder in _MARKER_FINDERS for marker in finder(text)])
