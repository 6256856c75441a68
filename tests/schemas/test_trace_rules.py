"""One rule for every path (service, CLI, builder): a trace has reasoning text, numbers are finite, and the
JSON schema says so."""

from __future__ import annotations

import json
import math
import re
import sys

import pytest
from pydantic import ValidationError

from mig_annotator.builder.columns import ColumnMapping
from mig_annotator.builder.rows import RowProblem, map_record
from mig_annotator.engine.traces_io import TraceFileError, parse_trace_line
from mig_annotator.schemas import ScoringConfig, Trace
from mig_annotator.schemas.trace import MAX_GROUP_ID_CHARS, NOT_BLANK_PATTERN, group_id_of, has_text

BASE = {"id": "a", "question": "q", "reference_answer": "1"}
NO_REASONING = [
    ({"completion": ""}, "completion"),
    ({"completion": " \n\t\u3000"}, "completion"),
    ({"steps": []}, "steps"),
    ({"steps": [""]}, "steps.0"),
    ({"steps": ["first", "  "]}, "steps.1"),
]


def _locations(error: ValidationError) -> list[str]:
    return [".".join(str(part) for part in problem["loc"]) for problem in error.errors()]


@pytest.mark.parametrize(("reasoning", "field"), NO_REASONING)
def test_a_trace_without_reasoning_text_is_refused_naming_the_field(
    reasoning: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Trace.model_validate(BASE | reasoning)
    assert _locations(caught.value) == [field]


@pytest.mark.parametrize(("reasoning", "field"), NO_REASONING)
def test_the_cli_refuses_the_same_lines_naming_the_field(reasoning: dict[str, object], field: str) -> None:
    with pytest.raises(TraceFileError, match=rf"in\.jsonl:3: {re.escape(field)}: "):
        parse_trace_line(json.dumps(BASE | reasoning), "in.jsonl:3")


@pytest.mark.parametrize(("reasoning", "field"), NO_REASONING)
def test_the_builder_rejects_the_same_rows_naming_the_field(reasoning: dict[str, object], field: str) -> None:
    mapping = ColumnMapping(completion=None, steps="steps") if "steps" in reasoning else ColumnMapping()
    problem = map_record(BASE | reasoning, mapping, 0, id_present=True)
    assert isinstance(problem, RowProblem)
    assert problem.field == field.split(".")[0]


def test_blank_means_python_whitespace_and_the_schema_pattern_says_exactly_that() -> None:
    """The pattern is an explicit character class, so JSON-schema (ECMA) and Python regexes agree with
    ``str.isspace`` on every code point, and a schema-valid text is never refused as blank."""
    pattern = re.compile(NOT_BLANK_PATTERN)
    disagreements = [
        hex(point)
        for point in range(sys.maxunicode + 1)
        if bool(pattern.fullmatch(chr(point))) == chr(point).isspace()
    ]
    assert disagreements == []
    assert not has_text(" \u3000\x1c\x85\n") and has_text(" \ufeff ")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_scoring_numbers_are_refused(value: float) -> None:
    with pytest.raises(ValidationError) as caught:
        ScoringConfig(sft_threshold=value)
    assert _locations(caught.value) == ["sft_threshold"]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_in_metadata_are_refused_naming_the_key(value: float) -> None:
    with pytest.raises(ValidationError, match=r"metadata\.scores\[1\]: must be a finite number"):
        Trace.model_validate(BASE | {"completion": "c", "metadata": {"scores": [1.0, value]}})


def test_a_group_id_round_trips_through_json_and_defaults_to_none() -> None:
    trace = Trace.model_validate(BASE | {"completion": "c", "group_id": "uid-7"})
    assert trace.group_id == "uid-7"
    assert Trace.model_validate_json(trace.model_dump_json()) == trace
    assert json.loads(trace.model_dump_json())["group_id"] == "uid-7"
    assert Trace.model_validate(BASE | {"completion": "c"}).group_id is None
    assert Trace.model_validate(BASE | {"completion": "c", "group_id": None}).group_id is None


@pytest.mark.parametrize("group_id", [[1], {"a": 1}, 1.5, True])
def test_a_group_id_that_is_not_text_or_an_integer_is_refused_naming_the_field(group_id: object) -> None:
    with pytest.raises(ValidationError, match="expected text or an integer") as caught:
        Trace.model_validate(BASE | {"completion": "c", "group_id": group_id})
    assert _locations(caught.value) == ["group_id"]


def test_a_group_label_becomes_a_valid_group_id() -> None:
    assert group_id_of("gsm8k-test-0001") == "gsm8k-test-0001"
    assert group_id_of(42) == "42"
    assert group_id_of(None) is None and group_id_of(" \n") is None and group_id_of("") is None
    fits = "g" * MAX_GROUP_ID_CHARS
    assert group_id_of(fits) == fits
    long_label = "g" * (MAX_GROUP_ID_CHARS + 1)
    hashed = group_id_of(long_label)
    assert hashed == group_id_of(long_label) != group_id_of(long_label + "h")
    assert hashed is not None and hashed.startswith("sha256:") and len(hashed) == 7 + 64
    assert Trace.model_validate(BASE | {"completion": "c", "group_id": hashed}).group_id == hashed
    with pytest.raises(ValueError, match="holds a boolean"):
        group_id_of(True)


def test_the_trace_applies_the_group_label_rule_itself() -> None:
    """An integer, an overlong or a blank group id given to the trace is what group_id_of makes of it."""
    long_label = "q" * 300
    for label in (7, long_label, " ", ""):
        trace = Trace.model_validate(BASE | {"completion": "c", "group_id": label})
        assert trace.group_id == group_id_of(label)
    assert Trace.model_validate(BASE | {"completion": "c", "group_id": 7}).group_id == "7"


def test_the_trace_schema_carries_every_rule() -> None:
    schema = Trace.model_json_schema()
    properties = schema["properties"]
    for name in ("question", "reference_answer"):
        text = next(branch for branch in properties[name]["anyOf"] if branch.get("type") == "string")
        assert text["pattern"] == NOT_BLANK_PATTERN and text["minLength"] == 1
    assert {"type": "number"} in properties["reference_answer"]["anyOf"]
    chat = next(branch for branch in properties["question"]["anyOf"] if branch.get("type") == "array")
    assert chat["minItems"] == 1 and chat["items"]["required"] == ["content"]
    completion = [branch.get("type") for branch in properties["completion"]["anyOf"]]
    assert completion == ["string", "array", "null"]
    text = next(branch for branch in properties["completion"]["anyOf"] if branch.get("type") == "string")
    assert text["pattern"] == NOT_BLANK_PATTERN
    steps = next(branch for branch in properties["steps"]["anyOf"] if branch["type"] == "array")
    assert steps["minItems"] == 1 and steps["items"]["pattern"] == NOT_BLANK_PATTERN
    assert properties["group_id"]["anyOf"] == [{"type": "string"}, {"type": "integer"}, {"type": "null"}]
    assert "group_id" not in schema.get("required", [])
    assert schema["oneOf"] == [
        {"required": ["steps"], "properties": {"steps": {"type": "array"}}},
        {"required": ["completion"], "properties": {"completion": {"type": ["string", "array"]}}},
    ]
    assert ScoringConfig.model_json_schema()["properties"]["sft_threshold"]["type"] == "number"
