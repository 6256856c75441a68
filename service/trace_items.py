"""A request's traces, each checked on its own: a :class:`Trace`, or the failure naming its bad field.

The request envelope (a list, its length, the top-level keys) is FastAPI's 422; an entry of ``traces`` that is
a JSON object but not a valid trace is that trace's ``invalid_trace`` failure, so the others are scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from mig_annotator.schemas import Trace
from mig_annotator.schemas.api import FieldError, TraceFailure
from mig_annotator.service.failures import InvalidInput, field_path


def checked_traces(items: Sequence[Trace | dict[str, Any]], field: str) -> list[Trace | TraceFailure]:
    """Each entry as a :class:`Trace`, or a :class:`TraceFailure` naming its first bad field
    (``traces[3].reference_answer``) with every problem of that trace in its message."""
    checked: list[Trace | TraceFailure] = []
    for index, item in enumerate(items):
        if isinstance(item, Trace):
            checked.append(item)
            continue
        try:
            checked.append(Trace.model_validate(item))
        except ValidationError as error:
            problems = [
                (field_path((field, index, *problem["loc"])), str(problem["msg"]))
                for problem in error.errors()
            ]
            first_field = problems[0][0] if problems else f"{field}[{index}]"
            message = "; ".join(
                text if where == first_field else f"{where}: {text}" for where, text in problems
            )
            checked.append(
                TraceFailure(index=index, field=first_field, message=message, code="invalid_trace")
            )
    return checked


def refuse_invalid(checked: Sequence[Trace | TraceFailure]) -> None:
    """``strict``: the request's :class:`InvalidInput` (422) naming every bad trace field, if any."""
    invalid = [item for item in checked if isinstance(item, TraceFailure)]
    if invalid:
        fields = [FieldError(field=item.field, message=item.message) for item in invalid]
        raise InvalidInput("; ".join(f"{f.field}: {f.message}" for f in fields[:10]), fields)
