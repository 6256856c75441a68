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
    ("change", "field", "reason"),
    [
        ({"question": None}, "question", "column 'question' is missing (null) in this row"),
        ({"question": "   "}, "question", "column 'question' is empty"),
        ({"completion": ""}, "completion", "column 'completion' is empty"),
        ({"completion": 5}, "completion", "column 'completion' holds int, expected text"),
        ({"reference_answer": None}, "reference_answer", "column 'reference_answer' is missing (null)"),
        ({"reference_answer": True}, "reference_answer", "holds a boolean"),
        ({"reference_answer": ["1", "2"]}, "reference_answer", "holds a list of 2 values"),
        ({"id": None}, "id", "column 'id' is missing (null)"),
        ({"question": [{"role": "user"}]}, "question", "need a 'content' key"),
    ],
)
def test_missing_or_empty_fields_are_rejected_with_the_field_and_reason(
    change: dict[str, object], field: str, reason: str
) -> None:
    record = {"id": "x", "question": "q", "completion": "c", "reference_answer": "1"} | change
    problem = map_record(record, ColumnMapping(), 0, id_present=True)
    assert isinstance(problem, RowProblem)
    assert problem.stage == "mapping"
    assert problem.field == field
    assert reason in problem.reason


def test_empty_steps_are_rejected() -> None:
    mapping = ColumnMapping(completion=None, steps="steps")
    base = {"id": "a", "question": "q", "reference_answer": "2"}
    assert map_record(base | {"steps": []}, mapping, 0, True) == RowProblem(
        "mapping", "steps", "column 'steps' is an empty list"
    )
    problem = map_record(base | {"steps": "one line"}, mapping, 0, True)
    assert isinstance(problem, RowProblem) and problem.reason.endswith("holds str, expected a list of steps")
    problem = map_record(base | {"steps": ["ok", " "]}, mapping, 0, True)
    assert isinstance(problem, RowProblem) and problem.reason == "column 'steps': step 1 is empty or not text"


def test_row_json_keeps_values_json_cannot_hold_as_text() -> None:
    import datetime

    assert row_json({"a": 1, "when": datetime.date(2024, 1, 2)}) == '{"a": 1, "when": "2024-01-02"}'
