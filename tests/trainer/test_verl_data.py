"""Question/answer JSONL into verl's rows: each input format's question and reference, and bad rows named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mig_annotator.trainer.verl_data import DataFormatError, convert, verl_rows

pq = pytest.importorskip("pyarrow.parquet")


def jsonl(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_gsm8k_rows_take_the_number_after_the_hashes_as_the_reference(tmp_path: Path) -> None:
    source = jsonl(tmp_path, [{"question": "How many?", "answer": "2 + 3 = <<2+3=5>>5\n#### 1,005"}])
    (row,) = verl_rows(source, instruction="Think.")
    assert row["prompt"] == [{"role": "user", "content": "How many? Think."}]
    assert row["reward_model"] == {"style": "rule", "ground_truth": "1005"}
    assert row["extra_info"]["question"] == "How many?" and row["extra_info"]["index"] == 0
    assert row["data_source"] == "openai/gsm8k"


def test_the_shared_gsm8k_test_rows_read_with_their_plain_answer(tmp_path: Path) -> None:
    source = jsonl(tmp_path, [{"question": "Q?", "solution": "a\nb\n#### 18", "answer": "18"}])
    (row,) = verl_rows(source)
    assert row["reward_model"]["ground_truth"] == "18" and row["extra_info"]["answer"] == "a\nb\n#### 18"


def test_math_rows_take_the_last_boxed_answer_with_nested_braces(tmp_path: Path) -> None:
    solution = "First \\boxed{1}. So $x = \\boxed{\\frac{1}{2}}$."
    (row,) = verl_rows(jsonl(tmp_path, [{"problem": "Find x.", "solution": solution}]))
    assert row["reward_model"]["ground_truth"] == "\\frac{1}{2}" and row["data_source"] == "math"


def test_rollouts_give_one_row_per_question(tmp_path: Path) -> None:
    rollout = {"question_id": "q1", "question": "Q?", "completion": "A: 3", "reference_answer": "3"}
    rows = [rollout, {**rollout, "completion": "A: 4"}, {**rollout, "question_id": "q2", "question": "R?"}]
    prepared = verl_rows(jsonl(tmp_path, rows))
    assert [row["extra_info"]["question"] for row in prepared] == ["Q?", "R?"]
    assert [row["extra_info"]["index"] for row in prepared] == [0, 1]


def test_a_row_without_its_answer_is_named_by_file_line_and_field(tmp_path: Path) -> None:
    rows = [{"question": "Q?", "answer": "#### 1"}, {"question": "R?", "answer": "no hashes"}]
    source = jsonl(tmp_path, rows)
    with pytest.raises(DataFormatError, match=r"in\.jsonl:2: 'answer' has no '#### N'"):
        verl_rows(source, "gsm8k")
    with pytest.raises(DataFormatError, match=r"in\.jsonl:1: no 'problem'"):
        verl_rows(source, "math")


def test_the_parquet_holds_the_rows(tmp_path: Path) -> None:
    source = jsonl(tmp_path, [{"prompt": "What is 3 + 4?", "answer": "7"}])
    assert convert(source, tmp_path / "out" / "train.parquet") == 1
    (row,) = pq.read_table(tmp_path / "out" / "train.parquet").to_pylist()
    assert row["reward_model"]["ground_truth"] == "7" and row["extra_info"]["question"] == "What is 3 + 4?"
