"""Reading traces from JSON Lines: one :class:`schemas.Trace` per line, errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from mig_annotator.schemas import Trace

TRACE_FIELDS = frozenset(Trace.model_fields)


class TraceFileError(ValueError):
    """A trace file cannot be read; the message names the file, the line and the field."""


def read_traces_jsonl(path: Path) -> list[Trace]:
    """Keys other than the Trace fields are kept in ``metadata``."""
    if not path.is_file():
        raise TraceFileError(f"{path}: no such file")
    traces: list[Trace] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            traces.append(parse_trace_line(line, f"{path}:{line_number}"))
    if not traces:
        raise TraceFileError(f"{path}: no traces")
    return traces


def parse_trace_line(line: str, where: str) -> Trace:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise TraceFileError(f"{where}: not valid JSON ({error.msg})") from error
    if not isinstance(record, dict):
        raise TraceFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
    known = {key: value for key, value in record.items() if key in TRACE_FIELDS}
    extra = {key: value for key, value in record.items() if key not in TRACE_FIELDS}
    known["metadata"] = {**extra, **known.get("metadata", {})}
    try:
        return Trace.model_validate(known)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or 'trace'}: {issue['msg']}"
            for issue in error.errors()
        )
        raise TraceFileError(f"{where}: {problems}") from error
