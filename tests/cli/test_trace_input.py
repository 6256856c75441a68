"""What `score` reads: JSON Lines mapped to traces as `build` maps rows, each problem in its place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mig_annotator.builder.rows import RowProblem
from mig_annotator.cli.trace_input import InputFileError, input_size, read_rows, single_row
from mig_annotator.schemas import Trace


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_chat_message_questions_and_completions_become_their_turns_text(tmp_path: Path) -> None:
    record = {
        "id": "chat-1",
        "question": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 2 + 2?"},
        ],
        "completion": [{"role": "assistant", "content": "2 + 2 = 4\nA: 4"}],
        "reference_answer": 4,
    }
    [row] = list(read_rows(str(write_lines(tmp_path / "in.jsonl", [json.dumps(record)]))))
    assert row.item == Trace(
        id="chat-1", question="What is 2 + 2?", completion="2 + 2 = 4\nA: 4", reference_answer="4"
    )


def test_steps_rows_and_rows_without_an_id(tmp_path: Path) -> None:
    lines = [
        json.dumps({"question": "q?", "steps": ["a", "b"], "reference_answer": "1"}),
        "",
        json.dumps({"id": "x", "question": "q?", "completion": "a", "reference_answer": "1"}),
    ]
    rows = list(read_rows(str(write_lines(tmp_path / "in.jsonl", lines))))
    assert [row.where for row in rows] == [f"{tmp_path / 'in.jsonl'}:1", f"{tmp_path / 'in.jsonl'}:3"]
    assert rows[0].item == Trace(id="row-1", question="q?", steps=["a", "b"], reference_answer="1")
    assert isinstance(rows[1].item, Trace) and rows[1].item.id == "x"
    assert rows[-1].end_byte == (tmp_path / "in.jsonl").stat().st_size


@pytest.mark.parametrize(
    ("line", "field", "reason_part"),
    [
        ("{not json", None, "not valid JSON"),
        ("[1, 2]", None, "expected a JSON object, got list"),
        ('{"id": "a", "question": "q", "completion": "c"}', "reference_answer", "missing"),
        (
            '{"id": "a", "question": "q", "completion": "c", "reference_answer": " "}',
            "reference_answer",
            "empty",
        ),
        ('{"id": "a", "question": "q", "steps": [], "reference_answer": "1"}', "steps", "at least 1 item"),
        (
            '{"id": "a", "question": "q", "steps": ["s"], "completion": "c", "reference_answer": "1"}',
            "steps",
            "one of",
        ),
        ('{"id": null, "question": "q", "completion": "c", "reference_answer": "1"}', "id", "missing"),
    ],
)
def test_a_bad_row_becomes_a_problem_naming_its_field(
    tmp_path: Path, line: str, field: str | None, reason_part: str
) -> None:
    [row] = list(read_rows(str(write_lines(tmp_path / "in.jsonl", [line]))))
    assert isinstance(row.item, RowProblem)
    assert row.item.field == field and reason_part in row.item.reason


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        input_size(str(tmp_path / "absent.jsonl"))
    assert input_size("-") is None


def test_the_single_trace_options_map_like_a_row() -> None:
    assert single_row("q?", "a\n#### 1", "1").item == Trace(
        id="cli", question="q?", completion="a\n#### 1", reference_answer="1"
    )
    problem = single_row("q?", "a", "  ").item
    assert isinstance(problem, RowProblem) and problem.field == "reference_answer"


def test_a_rows_group_id_reaches_the_trace(tmp_path: Path) -> None:
    base = {"question": "q?", "completion": "a", "reference_answer": "1"}
    lines = [json.dumps(base | {"id": "g", "group_id": "uid-9"}), json.dumps(base | {"id": "n"})]
    rows = list(read_rows(str(write_lines(tmp_path / "in.jsonl", lines))))
    assert [row.item.group_id for row in rows] == ["uid-9", None]  # type: ignore[union-attr]
