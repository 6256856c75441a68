"""Turn one input record into a :class:`schemas.Trace`, or say exactly why it cannot be one.

Chat-format values (a list of ``{"role", "content"}`` messages) become text: for the question, the user
turns joined by a blank line; for a completion, the assistant turns. Numeric reference answers become
their decimal text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mig_annotator.builder.columns import ColumnMapping, lookup
from mig_annotator.schemas import Trace
from mig_annotator.schemas.trace import group_id_of

if TYPE_CHECKING:  # schemas.arrow imports pyarrow; `score` maps rows without it
    from mig_annotator.schemas.arrow import RejectStage


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why a record is not a trace."""

    stage: RejectStage
    field: str | None
    reason: str


class _FieldProblem(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def row_id(record: dict[str, Any], mapping: ColumnMapping, global_index: int, id_present: bool) -> str | None:
    """The row's id: from the id column when the inputs have it, else ``row-<global index>``."""
    if mapping.id is None or not id_present:
        return f"row-{global_index}"
    value = lookup(record, mapping.id)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str):
        text = str(value)
        return text if text.strip() else None
    return None


def map_record(
    record: dict[str, Any], mapping: ColumnMapping, global_index: int, id_present: bool
) -> Trace | RowProblem:
    """The trace for ``record``, or the problem that keeps it out."""
    try:
        trace_id = row_id(record, mapping, global_index, id_present)
        if trace_id is None:
            raise _FieldProblem("id", _describe_bad(lookup(record, mapping.id or ""), mapping.id or "id"))
        question = _text(lookup(record, mapping.question), mapping.question, "question", role="user")
        answer = _answer(lookup(record, mapping.answer), mapping.answer)
        fields: dict[str, Any] = {"id": trace_id, "question": question, "reference_answer": answer}
        if mapping.group_id is not None:
            fields["group_id"] = _group_id(lookup(record, mapping.group_id), mapping.group_id)
        if mapping.steps is not None:
            fields["steps"] = _steps(lookup(record, mapping.steps), mapping.steps)
        else:
            assert mapping.completion is not None
            fields["completion"] = _text(
                lookup(record, mapping.completion), mapping.completion, "completion", role="assistant"
            )
    except _FieldProblem as problem:
        return RowProblem("mapping", problem.field, problem.reason)
    try:
        return Trace.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        return RowProblem("validation", field, f"{field or 'trace'}: {first['msg']}")


def row_json(record: dict[str, Any]) -> str:
    """The record as JSON (values JSON cannot hold are written as text)."""
    return json.dumps(record, ensure_ascii=False, default=str, sort_keys=False)


def _describe_bad(value: Any, column: str, expected: str = "text") -> str:
    if value is None:
        return f"column {column!r} is missing (null) in this row"
    if isinstance(value, str) and not value.strip():
        return f"column {column!r} is empty"
    return f"column {column!r} holds {type(value).__name__}, expected {expected}"


def _text(value: Any, column: str, field: str, *, role: str) -> str:
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        value = _messages_text(value, column, field, role)
    if not isinstance(value, str) or not value.strip():
        raise _FieldProblem(field, _describe_bad(value, column))
    return value


def _messages_text(messages: list[dict[str, Any]], column: str, field: str, role: str) -> str:
    """The text of the ``role`` turns of a chat (all turns when none has that role)."""
    if any("content" not in message for message in messages):
        raise _FieldProblem(field, f"column {column!r}: chat messages need a 'content' key")
    chosen = [message for message in messages if message.get("role") == role] or messages
    return "\n\n".join(_content_text(message["content"], column, field) for message in chosen)


def _content_text(content: Any, column: str, field: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI-style parts: [{"type": "text", "text": ...}]
        texts = [part.get("text") for part in content if isinstance(part, dict)]
        if texts and all(isinstance(text, str) for text in texts):
            return "".join(texts)
    raise _FieldProblem(field, f"column {column!r}: a chat message's content is not text")


def _answer(value: Any, column: str) -> str:
    if isinstance(value, bool):
        raise _FieldProblem("reference_answer", f"column {column!r} holds a boolean, expected the answer")
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        raise _FieldProblem(
            "reference_answer",
            f"column {column!r} holds a list of {len(value)} values; map a column with one answer",
        )
    if not isinstance(value, str) or not value.strip():
        raise _FieldProblem("reference_answer", _describe_bad(value, column))
    return value


def _group_id(value: Any, column: str) -> str | None:
    """The row's group id: the column's text or integer (hashed when overlong); None when null or blank."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _FieldProblem(
            "group_id", f"column {column!r} holds {type(value).__name__}, expected text or an integer"
        )
    return group_id_of(value)


def _steps(value: Any, column: str) -> list[str]:
    if isinstance(value, list) and not value:
        raise _FieldProblem("steps", f"column {column!r} is an empty list")
    if not isinstance(value, list):
        raise _FieldProblem("steps", _describe_bad(value, column, "a list of steps"))
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise _FieldProblem("steps", f"column {column!r}: step {index} is empty or not text")
    return value
