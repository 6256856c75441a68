"""Request models accept what their JSON Schema says, and nothing else (the fuzz test checks the service)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mig_annotator.schemas.api import AnnotateRequest

TRACE = {"id": "0", "question": "0", "completion": "0", "reference_answer": "0"}


@pytest.mark.parametrize("value", [0, 1, "true", "false", None])
def test_strict_takes_only_a_json_boolean(value: object) -> None:
    """Schemathesis found ``"strict": 0`` accepted although the schema says boolean (ST201)."""
    with pytest.raises(ValidationError) as caught:
        AnnotateRequest.model_validate({"traces": [TRACE], "strict": value})
    assert [error["loc"] for error in caught.value.errors()] == [("strict",)]


def test_strict_true_and_false_are_taken_and_default_to_per_trace_results() -> None:
    assert AnnotateRequest.model_validate({"traces": [TRACE], "strict": True}).strict is True
    assert AnnotateRequest.model_validate({"traces": [TRACE]}).strict is False
