"""The structural segmenters: ``<step>`` tags, "Step N" headers and raw lines.

Each takes the chain-of-thought region ``text[start:end]`` and returns unstripped spans into ``text``. The
patterns are linear: a tag's attribute run stops at the next ``<`` (so ``"<step "`` repeated is scanned
once, not once per occurrence), and headers are matched only at line starts.
"""

from __future__ import annotations

import itertools
import re

from mig_annotator.engine.segment.lines import line_spans
from mig_annotator.engine.segment.model import Span

STEP_OPEN = re.compile(r"<step(?:\s[^<>]*)?>", re.IGNORECASE)
_STEP_BLOCK = re.compile(
    r"<step(?:\s[^<>]*)?>(.*?)(?:</step\s*>|(?=<step[\s>])|\Z)", re.IGNORECASE | re.DOTALL
)
HEADER = re.compile(
    r"[ \t]*(?:"
    r"(?:\#{1,6}[ \t]*|\*\*[ \t]*)(?:\*\*[ \t]*)?step[ \t]*\d+\b"
    r"|step[ \t]*\d+[ \t]*(?:\*\*[ \t]*)?[:.)](?!\d)"
    r")",
    re.IGNORECASE,
)


def has_step_tags(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` holds a ``<step>`` opening tag."""
    return STEP_OPEN.search(text, start, end) is not None


def tag_steps(text: str, start: int, end: int) -> list[Span]:
    """Contents of ``<step>..</step>`` blocks (an unclosed last block runs to the end of the region)."""
    return [match.span(1) for match in _STEP_BLOCK.finditer(text, start, end)]


def header_starts(text: str, start: int, end: int) -> list[int]:
    """Start offsets of header lines ("Step N:", "**Step N:**", "### Step N", ...)."""
    return [a for a, b in line_spans(text, start, end) if HEADER.match(text, a, b)]


def header_steps(text: str, start: int, end: int) -> list[Span]:
    """One span per header section plus the preamble before the first header."""
    bounds = [start, *header_starts(text, start, end), end]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
