"""Mapping one input record to a trace, or to a reject with its reason."""

from __future__ import annotations

import pytest

from mig_annotator.builder.columns import PRESETS, ColumnMapping
from mig_annotator.builder.rows import RowProblem, map_record, row_json
from mig_annotator.schemas import Trace


def test_a_plain_record_maps_to_a_trace() -> None:
    record = {"id": 7, "question": "q?", "completion": "s1\nA: 3", "reference_answer": 3}
    trace = map_record(record, ColumnMapping(), 0, id_present=True)
    assert trace == Trace(id="7", question="q?", completion="s1\nA: 3", reference_answer="3")


def test_verl_chat_prompts_become_the_user_turns_and_nested_ground_truth_is_read() -> None:
    record = {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "user", "content": [{"type": "text", "text": "Show steps."}]},
        ],
        "response": "2+2=4\nA: 4",
        "reward_model": {"ground_truth": "4", "style": "rule"},
    }
    trace = map_record(record, PRESETS["verl"], 12, id_present=False)
    assert isinstance(trace, Trace)
    assert trace.id == "row-12"
    assert trace.question == "What is 2+2?\n\nShow steps."
    assert trace.reference_answer == "4"


def test_trl_conversational_completions_become_the_assistant_turns() -> None:
    record = {
        "prompt": [{"role": "user", "content": "What is 3*3?"}],
        "completion": [{"role": "assistant", "content": "3*3=9\nA: 9"}],
        "solution": 9.5,
    }
    trace = map_record(record, PRESETS["trl"], 0, id_present=False)
    assert isinstance(trace, Trace)
    assert trace.completion == "3*3=9\nA: 9"
    assert trace.reference_answer == "9.5"


def test_explicit_steps_are_kept_as_steps() -> None:
    mapping = ColumnMapping(completion=None, steps="steps")
    record = {"id": "a", "question": "q", "steps": ["one", "two", "A: 2"], "reference_answer": "2"}
    trace = map_record(record, mapping, 0, id_present=True)
    assert isinstance(trace, Trace)
    assert trace.steps == ["one", "two", "A: 2"]


@pytest.mark.parametrize(
    ("change", "stage", "field", "reason"),
    [
        ({"question": None}, "mapping", "question", "column 'question' is missing (null) in this row"),
        ({"question": "   "}, "mapping", "question", "column 'question': must not be empty or whitespace"),
        ({"completion": ""}, "mapping", "completion", "column 'completion': must not be empty"),
        ({"completion": 5}, "mapping", "completion", "column 'completion': holds int, expected text"),
        ({"reference_answer": None}, "mapping", "reference_answer", "'reference_answer' is missing (null)"),
        ({"reference_answer": True}, "mapping", "reference_answer", "holds a boolean"),
        ({"reference_answer": ["1", "2"]}, "mapping", "reference_answer", "holds a list of 2 values"),
        ({"id": None}, "mapping", "id", "column 'id' is missing (null)"),
        ({"question": [{"role": "user"}]}, "mapping", "question", "need a 'content' key"),
        ({"group_id": [1, 2]}, "mapping", "group_id", "column 'group_id': holds a list, expected text"),
        ({"group_id": {"a": 1}}, "mapping", "group_id", "holds an object, expected text or an integer"),
    ],
)
def test_missing_or_empty_fields_are_rejected_with_the_field_and_reason(
    change: dict[str, object], stage: str, field: str, reason: str
) -> None:
    record = {"id": "x", "question": "q", "completion": "c", "reference_answer": "1"} | change
    problem = map_record(record, ColumnMapping(), 0, id_present=True)
    assert isinstance(problem, RowProblem)
    assert problem.stage == stage
    assert problem.field == field
    assert reason in problem.reason


def test_empty_steps_are_rejected() -> None:
    mapping = ColumnMapping(completion=None, steps="steps")
    base = {"id": "a", "question": "q", "reference_answer": "2"}
    problem = map_record(base | {"steps": []}, mapping, 0, True)
    assert (
        isinstance(problem, RowProblem) and problem.field == "steps" and "at least 1 item" in problem.reason
    )
    problem = map_record(base | {"steps": "one line"}, mapping, 0, True)
    assert (
        isinstance(problem, RowProblem) and problem.reason == "column 'steps': Input should be a valid list"
    )
    problem = map_record(base | {"steps": ["ok", " "]}, mapping, 0, True)
    assert isinstance(problem, RowProblem)
    assert problem.reason == "column 'steps' (steps.1): must not be empty or whitespace"


def test_row_json_keeps_values_json_cannot_hold_as_text() -> None:
    import datetime

    assert row_json({"a": 1, "when": datetime.date(2024, 1, 2)}) == '{"a": 1, "when": "2024-01-02"}'
