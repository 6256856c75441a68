"""Turn one input record into a :class:`schemas.Trace`, or say exactly why it cannot be one.

What a mapped column may hold (chat messages, a numeric answer, an integer or overlong group label) is the
trace's own rule (:mod:`mig_annotator.schemas.trace_fields`), the same in ``build``, ``score`` and the
service; here a row only gets its id and its columns looked up, and a missing value named by its column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mig_annotator.builder.columns import ColumnMapping, lookup
from mig_annotator.schemas import Trace
from mig_annotator.schemas.trace_fields import FieldProblem
from mig_annotator.schemas.trace_images import image_column_parts, question_with_images

if TYPE_CHECKING:  # schemas.arrow imports pyarrow; `score` maps rows without it
    from mig_annotator.schemas.arrow import RejectStage


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why a record is not a trace."""

    stage: RejectStage
    field: str | None
    reason: str


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
    record: dict[str, Any],
    mapping: ColumnMapping,
    global_index: int,
    id_present: bool,
    image_base_dir: str | None = None,
) -> Trace | RowProblem:
    """The trace for ``record``, or the problem that keeps it out. The mapped columns' values go to
    :class:`schemas.Trace` as they are: its rules (:mod:`schemas.trace_fields`) read chat messages, numbers
    and group labels, the same for a dataset row, a ``score`` line and a service request. The images
    column's images join the question's user turn (:func:`schemas.trace_images.question_with_images`);
    relative image paths are read against ``image_base_dir`` (the input file's folder)."""
    trace_id = row_id(record, mapping, global_index, id_present)
    if trace_id is None:
        return RowProblem(
            "mapping", "id", _describe_bad(lookup(record, mapping.id or ""), mapping.id or "id")
        )
    columns = {field: column for field, column in mapping.mapped().items() if field not in ("id", "images")}
    fields: dict[str, Any] = {"id": trace_id}
    for field, column in columns.items():
        value = lookup(record, column)
        if value is None and field != "group_id":
            return RowProblem("mapping", field, _describe_bad(value, column))
        fields[field] = value
    images = lookup(record, mapping.images) if mapping.images is not None else None
    if images is not None:
        try:
            fields["question"] = question_with_images(fields["question"], image_column_parts(images))
        except FieldProblem as problem:
            return RowProblem("mapping", "question", f"column {mapping.images!r}: {problem}")
    context = {"image_base_dir": image_base_dir} if image_base_dir is not None else None
    try:
        return Trace.model_validate(fields, context=context)
    except ValidationError as error:
        first = error.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else None
        where = ".".join(str(part) for part in first["loc"]) or "trace"
        column = columns.get(field or "")
        if column is None:  # not one column's value (e.g. both reasoning fields): the trace's own rule
            return RowProblem("validation", field, f"{where}: {first['msg']}")
        named = f"column {column!r}" if column == where else f"column {column!r} ({where})"
        return RowProblem("mapping", field, f"{named}: {first['msg']}")


def row_json(record: dict[str, Any]) -> str:
    """The record as JSON (values JSON cannot hold are written as text)."""
    return json.dumps(record, ensure_ascii=False, default=str, sort_keys=False)


def _describe_bad(value: Any, column: str) -> str:
    if value is None:
        return f"column {column!r} is missing (null) in this row"
    if isinstance(value, str) and not value.strip():
        return f"column {column!r} is empty"
    return f"column {column!r} holds {type(value).__name__}, expected text or an integer"
