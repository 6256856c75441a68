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


@pytest.mark.parametrize("value", [True, "2", 2.5])
def test_min_probe_version_takes_only_a_json_integer(value: object) -> None:
    body = {"trace": TRACE, "min_probe_version": value}
    with pytest.raises(ValidationError, match="min_probe_version"):
        AnnotateRequest.model_validate(body)
    assert AnnotateRequest.model_validate({"trace": TRACE, "min_probe_version": 2}).min_probe_version == 2


def test_token_offsets_come_one_per_trace_as_integer_pairs() -> None:
    request = AnnotateRequest.model_validate({"traces": [TRACE, TRACE], "token_offsets": [[[0, 2]], None]})
    assert request.token_offsets == [[[0, 2]], None]
    for offsets in ([[[0, 2]]], [[[0, True]], None], [[[0, 1, 2]], None], [[[-1, 2]], None]):
        with pytest.raises(ValidationError, match="token_offsets"):
            AnnotateRequest.model_validate({"traces": [TRACE, TRACE], "token_offsets": offsets})
