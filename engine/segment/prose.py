"""Prose splitting: one step per line, long runs cut at sentence (then word) boundaries, and the step cap.

Units, coarsest first:

1. paragraphs (separated by blank lines): a display-math block (a line that is just ``\\[`` or ``$$`` up to
   its closing line) never extends past its paragraph;
2. lines: every line, or display-math block, is one step (a trace written one step per line keeps exactly
   its lines, so ``min_step_chars`` never merges whole lines);
3. a line longer than ``max_step_chars`` (prose without newlines), and inside a reasoning block
   (``<think>``) every line of at least ``2 * min_step_chars`` (a reasoning model writes paragraphs, not one
   step per line; no cliff at ``max_step_chars``), is cut at sentence ends, a sentence longer
   than ``max_step_chars`` at whitespace, a word longer than that every ``max_step_chars`` characters;
   consecutive pieces of one line are then packed into steps of at least ``min_step_chars`` characters
   (a piece that would make a step longer than ``max_step_chars`` starts a new one; a short last piece joins
   the step before it when the result stays within ``max_step_chars``).

:func:`cap_steps` then merges adjacent steps, shortest merged result first, until at most ``max_steps``
remain. Merged steps cover the text between them (line breaks, skipped blank lines), so spans stay exact.
Everything is one left-to-right pass over the text (the cap is O(s log s) in the number of steps s).
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import Iterator

from mig_annotator.engine.segment.model import Span, strip_span

# A sentence end: a run of terminal punctuation (scanned once, from its first character, possessively),
# optional closing quotes/brackets/bold, then whitespace; CJK full stops end a sentence without a space.
_SENTENCE_END = re.compile(r"(?<![.!?…])[.!?…]++[\"'”’)\]*]*+(?=\s)|(?<![。！？])[。！？]++")
_SPACE_RUN = re.compile(r"\s*")
_WORD = re.compile(r"\S+")
_MATH_CLOSER = {"\\[": "\\]", "$$": "$$"}
_EVEN_FIRST = 4


# The stripped content of one line: starts only at a non-space (O(1) elsewhere), runs to the line end and
# gives back the trailing blanks once.
_STRIPPED_LINE = re.compile(r"\S(?:[^\r\n]*\S)?")


def _breaks(text: str, start: int, end: int) -> int:
    """Line breaks in ``text[start:end]`` (``\\r\\n`` counts once)."""
    return text.count("\n", start, end) + text.count("\r", start, end) - text.count("\r\n", start, end)


def _line_units(text: str, start: int, end: int) -> Iterator[tuple[Span, bool]]:
    """Stripped spans of the lines of ``text[start:end]``, display-math blocks joined into one unit; each with
    whether it is a display-math block."""
    math_open: Span | None = None
    closer = ""
    previous_end = start
    for match in _STRIPPED_LINE.finditer(text, start, end):
        line = match.span()
        if math_open is not None and _breaks(text, previous_end, line[0]) > 1:
            yield math_open, True  # an unclosed display block ends with its paragraph
            math_open = None
        previous_end = line[1]
        if math_open is not None:
            math_open = (math_open[0], line[1])
            if text.endswith(closer, *line):
                yield math_open, True
                math_open = None
        elif line[1] - line[0] == 2 and text[line[0] : line[1]] in _MATH_CLOSER:
            math_open, closer = line, _MATH_CLOSER[text[line[0] : line[1]]]
        else:
            yield line, False
    if math_open is not None:
        yield math_open, True


def _sentences(text: str, start: int, end: int) -> Iterator[Span]:
    """Unstripped sentence spans covering ``text[start:end]``.

    A sentence ends after terminal punctuation followed by whitespace, unless the next word starts with
    a lowercase letter ("e.g. the", "approx. three").
    """
    piece_start = start
    for match in _SENTENCE_END.finditer(text, start, end):
        following = _SPACE_RUN.match(text, match.end(), end).end()
        if following < end and text[following].islower():
            continue
        yield (piece_start, match.end())
        piece_start = match.end()
    if piece_start < end:
        yield (piece_start, end)


def _word_pieces(text: str, start: int, end: int, max_chars: int) -> Iterator[Span]:
    """Cut ``text[start:end]`` at whitespace into pieces of at most ``max_chars`` (long words are cut)."""
    piece: Span | None = None
    for word in _WORD.finditer(text, start, end):
        word_start, word_end = word.span()
        if piece is not None and word_end - piece[0] <= max_chars:
            piece = (piece[0], word_end)
            continue
        if piece is not None:
            yield piece
        while word_end - word_start > max_chars:
            yield (word_start, word_start + max_chars)
            word_start += max_chars
        piece = (word_start, word_end)
    if piece is not None:
        yield piece


def _pieces(text: str, start: int, end: int, max_chars: int) -> Iterator[Span]:
    """Stripped sentence pieces of ``text[start:end]``, each at most ``max_chars`` long."""
    for sentence_start, sentence_end in _sentences(text, start, end):
        piece = strip_span(text, sentence_start, sentence_end)
        if piece[1] - piece[0] > max_chars:
            yield from _word_pieces(text, piece[0], piece[1], max_chars)
        elif piece[1] > piece[0]:
            yield piece


def _pack(pieces: Iterator[Span], min_chars: int, max_chars: int) -> list[Span]:
    """Join consecutive pieces into steps of at least ``min_chars`` and at most ``max_chars`` characters."""
    steps: list[Span] = []
    current: Span | None = None
    for piece in pieces:
        if current is not None and piece[1] - current[0] > max_chars:
            steps.append(current)
            current = None
        current = piece if current is None else (current[0], piece[1])
        if current[1] - current[0] >= min_chars:
            steps.append(current)
            current = None
    if current is not None:
        if steps and current[1] - steps[-1][0] <= max_chars:
            steps[-1] = (steps[-1][0], current[1])
        else:
            steps.append(current)
    return steps


def prose_steps(
    text: str, start: int, end: int, min_chars: int, max_chars: int, *, paragraphs: bool = False
) -> list[Span]:
    """Stripped step spans of ``text[start:end]``: one per line, long lines split (see the module doc).

    ``paragraphs`` (a reasoning block's prose): every line, not only one over ``max_chars``, is packed at
    sentence ends into steps of at least ``min_chars``, so step counts grow with the length of a paragraph
    instead of jumping at ``max_chars``.
    """
    steps: list[Span] = []
    for unit, is_math in _line_units(text, start, end):
        length = unit[1] - unit[0]
        whole = length <= max_chars and (is_math or not paragraphs or length < 2 * min_chars)
        if whole:
            steps.append(unit)
        else:
            steps.extend(_pack(_pieces(text, unit[0], unit[1], max_chars), min_chars, max_chars))
    return steps


def _join_evenly(steps: list[Span], groups: int) -> list[Span]:
    """Join runs of consecutive steps into ``groups`` runs of (nearly) equal counts."""
    count = len(steps)
    bounds = [count * g // groups for g in range(groups + 1)]
    return [(steps[a][0], steps[b - 1][1]) for a, b in itertools.pairwise(bounds) if b > a]


def cap_steps(steps: list[Span], max_steps: int | None) -> list[Span]:
    """Merge adjacent steps until at most ``max_steps`` remain: the pair whose merged span is shortest goes
    first (ties: the earlier pair). A merged step spans from its first step's start to its last step's end.

    With more than ``4 * max_steps`` steps (a degenerate trace, e.g. a million one-character lines) runs of
    consecutive steps are first joined into ``2 * max_steps`` runs of equal step counts, which keeps the
    cost near linear; the shortest-pair merging then finishes from there.
    """
    if max_steps is None or len(steps) <= max_steps:
        return steps
    spans = _join_evenly(steps, 2 * max_steps) if len(steps) > _EVEN_FIRST * max_steps else list(steps)
    count = len(spans)
    next_index = [*range(1, count), -1]
    previous_index = [-1, *range(count - 1)]
    alive = [True] * count
    heap = [(spans[i + 1][1] - spans[i][0], spans[i][0], i, i + 1) for i in range(count - 1)]
    heapq.heapify(heap)
    remaining = count
    while remaining > max_steps:
        length, _, left, right = heapq.heappop(heap)
        if not (alive[left] and alive[right] and next_index[left] == right):
            continue
        if spans[right][1] - spans[left][0] != length:
            continue
        spans[left] = (spans[left][0], spans[right][1])
        alive[right] = False
        remaining -= 1
        after = next_index[right]
        next_index[left] = after
        if after >= 0:
            previous_index[after] = left
            heapq.heappush(heap, (spans[after][1] - spans[left][0], spans[left][0], left, after))
        before = previous_index[left]
        if before >= 0:
            heapq.heappush(heap, (spans[left][1] - spans[before][0], spans[before][0], before, left))
    return [span for span, keep in zip(spans, alive, strict=True) if keep]
