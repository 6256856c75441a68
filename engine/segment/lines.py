"""Line scanning shared by the segmenters (``\\n``, ``\\r\\n`` and ``\\r`` all break a line)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from mig_annotator.engine.segment.model import Span

_LINE_CONTENT = re.compile(r"[^\r\n]+")
_LINE_BREAK = re.compile(r"[\r\n]")


def line_spans(text: str, start: int = 0, end: int | None = None) -> Iterator[Span]:
    """Yield the span of each non-empty raw line of ``text[start:end]``."""
    for match in _LINE_CONTENT.finditer(text, start, len(text) if end is None else end):
        yield match.span()


def line_end(text: str, pos: int) -> int:
    """Index of the line break at or after ``pos`` (or ``len(text)``)."""
    match = _LINE_BREAK.search(text, pos)
    return match.start() if match else len(text)
