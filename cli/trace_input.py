"""The traces `score` reads: JSON Lines read lazily, one row at a time, each a trace or the problem with it.

A row maps to a trace as `build` maps one (``builder.rows.map_record`` with the default column layout):
``id``, ``question`` (text, or chat messages: the user turns), ``completion`` (text, or chat messages: the
assistant turns) or ``steps`` (a list of text), ``reference_answer`` (text or a number), and optionally
``group_id`` (text or an integer, hashed when long) and ``images`` (paths relative to the input file, or
base64 data, put before the question text; image parts inside the question's chat messages work too). What
each may hold is the trace's own rule (:mod:`mig_annotator.schemas.trace_fields`), the service's too. A row
without an ``id`` key gets ``row-<line number>``. Other keys are ignored.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from mig_annotator.builder.columns import resolve_mapping
from mig_annotator.builder.rows import RowProblem, map_record
from mig_annotator.schemas import Trace

STDIN = "-"
_COMPLETION_LAYOUT = resolve_mapping("default")
_STEPS_LAYOUT = resolve_mapping("default", steps_col="steps")


class InputFileError(ValueError):
    """The input file cannot be opened at all (a bad row is a :class:`RowProblem`, not this)."""


@dataclass(frozen=True, slots=True)
class InputRow:
    """One input row: where it is, what it holds, and how far into the input it ends."""

    where: str  # "<file>:<line>"
    item: Trace | RowProblem
    end_byte: int  # bytes of the input read up to the end of this row


def input_size(path: str) -> int | None:
    """The input's size in bytes (None for stdin), checked to be a readable file."""
    if path == STDIN:
        return None
    file = Path(path)
    if not file.is_file():
        raise InputFileError(f"{path}: no such file")
    return file.stat().st_size


def read_rows(path: str) -> Iterator[InputRow]:
    """The rows of a JSON Lines file (``-``: stdin), lazily; blank lines are skipped."""
    if path == STDIN:
        yield from _rows(sys.stdin.buffer, "<stdin>", None)
        return
    with Path(path).open("rb") as handle:
        yield from _rows(handle, path, str(Path(path).parent))


def single_row(question: str, completion: str, answer: str) -> InputRow:
    """The one trace given by options, mapped as a file row would be (trace id ``cli``)."""
    record = {"id": "cli", "question": question, "completion": completion, "reference_answer": answer}
    return InputRow("the command line", map_row(record, 1), 0)


def map_row(
    record: dict[str, Any], line_number: int, image_base_dir: str | None = None
) -> Trace | RowProblem:
    """The trace of one JSON object, or the problem that keeps it out (the field it names). Relative image
    paths are read against ``image_base_dir`` (the input file's folder; None: the working folder)."""
    if "steps" in record and "completion" in record:
        return RowProblem("validation", "steps", "give exactly one of `steps` or `completion`")
    layout = _STEPS_LAYOUT if "steps" in record else _COMPLETION_LAYOUT
    return map_record(record, layout, line_number, id_present="id" in record, image_base_dir=image_base_dir)


def _rows(handle: BinaryIO, name: str, image_base_dir: str | None) -> Iterator[InputRow]:
    consumed = 0
    for line_number, raw in enumerate(handle, start=1):
        consumed += len(raw)
        if not raw.strip():
            continue
        yield InputRow(f"{name}:{line_number}", _parse(raw, line_number, image_base_dir), consumed)


def _parse(raw: bytes, line_number: int, image_base_dir: str | None) -> Trace | RowProblem:
    try:
        record = json.loads(raw)
    except UnicodeDecodeError as error:
        return RowProblem("mapping", None, f"not UTF-8 text ({error.reason} at byte {error.start})")
    except json.JSONDecodeError as error:
        return RowProblem("mapping", None, f"not valid JSON ({error.msg}, column {error.colno})")
    if not isinstance(record, dict):
        return RowProblem("mapping", None, f"expected a JSON object, got {type(record).__name__}")
    return map_row(record, line_number, image_base_dir)
