"""User step patterns (``step_regex``), run with RE2 (google-re2), a linear-time engine.

RE2 makes one search linear, but iterating matches restarts the search after each match, and a pattern
such as ``x|a[^!]*!`` keeps a thread alive to the end of the text on every restart (quadratic overall, as
with any leftmost-first engine). So a completion longer than :data:`WINDOW_BYTES` (UTF-8) is searched in
windows of that size: each search reads at most one window, a window without a match moves on by half a
window, and the whole pass is linear. Consequence, stated in the config field: on such long completions a
match longer than half a window (1,024 bytes) may be missed or found shorter, and ``$``/``\\z`` also match
at a window end. Completions up to one window are searched whole, exactly.

A search costs up to the pattern's RE2 program size per byte (when RE2's DFA runs out of memory, as for
``(.*a){1000}``, it falls back to a slower engine that steps every instruction on every byte), so before any
matching the product program size x completion bytes is checked against :data:`MAX_REGEX_WORK` and a
completion over it is refused by name; a ``cancelled`` check is asked between windows, so a search whose
request ended is abandoned (:class:`SegmentationCancelled`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import re2

from mig_annotator.engine.segment.model import CancelCheck, SegmentationCancelled, SegmentationError, Span

WINDOW_BYTES = 2048
MAX_REGEX_WORK = 500_000_000
"""The most RE2 work one completion's step search may cost: program size x completion bytes. At RE2's
slowest (about 10-15 ns per instruction and byte) that is 5-8 s; a pattern of 20-100 instructions searches
5-25 MB of text within it. A search also stops at its request's end (the ``cancelled`` check)."""


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    return options


class StepPattern:
    """A compiled ``step_regex``: the step is group "step", else group 1, else the whole match."""

    def __init__(self, pattern: str | None) -> None:
        if pattern is None:
            raise SegmentationError("step_regex is required when segmenter='regex'")
        if not isinstance(pattern, str):
            raise SegmentationError(f"step_regex must be a string, got {type(pattern).__name__}")
        try:
            self._regex = re2.compile(pattern, _options())
        except re2.error as error:
            reason = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else error
            raise SegmentationError(
                f"invalid step_regex {pattern!r}: {reason} (RE2 syntax: no backreferences or lookaround)"
            ) from error
        self.pattern = pattern
        names = self._regex.groupindex
        self._group = names["step"] if "step" in names else min(self._regex.groups, 1)

    @property
    def program_size(self) -> int:
        """RE2's instruction count for the pattern: what one byte of search may cost."""
        return int(self._regex.programsize)

    def spans(self, text: str, start: int, end: int, cancelled: CancelCheck | None = None) -> Iterator[Span]:
        """Spans (into ``text``) of the step group of each match in ``text[start:end]``, in order.

        Raises :class:`SegmentationError` before any matching when the search would cost more than
        :data:`MAX_REGEX_WORK`, and :class:`SegmentationCancelled` once ``cancelled()`` says stop (asked
        before every window)."""
        data = text[start:end].encode("utf-8", "surrogatepass")
        size = len(data)
        work = self.program_size * size
        if work > MAX_REGEX_WORK:
            raise SegmentationError(
                f"step_regex {self.pattern[:80]!r} is too costly for this completion: its RE2 program has "
                f"{self.program_size} instructions and the text {size} bytes, {work:,} units of work, over "
                f"the limit of {MAX_REGEX_WORK:,} (program size x bytes); use a simpler pattern (fewer "
                "repetitions) or a shorter completion"
            )
        to_char = _char_offsets(data, start, end - start)
        pos = 0
        while pos <= size:
            if cancelled is not None and cancelled():
                raise SegmentationCancelled("the step search was abandoned: its request ended")
            window_end = size if size <= WINDOW_BYTES else _char_boundary(data, min(size, pos + WINDOW_BYTES))
            match = self._regex.search(data, pos, window_end)
            if match is None:
                if window_end >= size:
                    return
                pos = max(_char_boundary(data, window_end - WINDOW_BYTES // 2), pos + 1)
                pos = _char_boundary_forward(data, pos)
                continue
            group_start, group_end = match.span(self._group)
            if group_start >= 0:
                yield (to_char(group_start), to_char(group_end))
            if match.end() > match.start():
                pos = match.end()
            elif match.end() >= size:
                return
            else:
                pos = _char_boundary_forward(data, match.end() + 1)


def _char_boundary(data: bytes, index: int) -> int:
    """The nearest UTF-8 character start at or before ``index``."""
    while 0 < index < len(data) and data[index] & 0xC0 == 0x80:
        index -= 1
    return index


def _char_boundary_forward(data: bytes, index: int) -> int:
    """The nearest UTF-8 character start at or after ``index``."""
    while index < len(data) and data[index] & 0xC0 == 0x80:
        index += 1
    return index


def _char_offsets(data: bytes, offset: int, n_chars: int) -> Callable[[int], int]:
    """A function mapping a byte offset in ``data`` (at a character start) to ``offset`` + its str index."""
    if len(data) == n_chars:
        return lambda index: offset + index
    starts = (np.frombuffer(data, dtype=np.uint8) & 0xC0) != 0x80
    prefix = np.concatenate(([0], np.cumsum(starts, dtype=np.int64)))
    return lambda index: offset + int(prefix[index])
