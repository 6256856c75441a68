"""One input rule set for `score`, the service and `build`: the same row, with chat messages as
its question, a numeric reference answer and an integer or overlong group id, is accepted by all three, gets
the same trace and the same annotations. Scored by the package's fake probe (the model is not what is tested)
through the real CLI commands and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mig_annotator.builder.annotate import as_written
from mig_annotator.builder.columns import ColumnMapping
from mig_annotator.builder.rows import map_record
from mig_annotator.builder.sources import SourceReader, read_schema, resolve_inputs
from mig_annotator.cli.trace_input import read_rows
from mig_annotator.schemas import Trace
from mig_annotator.schemas.api import AnnotateRequest
from mig_annotator.schemas.trace_fields import MAX_GROUP_ID_CHARS, group_id_of
from mig_annotator.service.trace_items import checked_traces
from tests.service.fake_server import TIMEOUT_S, fake_service

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "mig_annotator.cli"]
LONG_GROUP = "question-" + "x" * 300
ROWS: list[dict[str, Any]] = [
    {
        "id": "chat",
        "question": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 6 * 7?"},
        ],
        "completion": "6 * 7 = 42\nA: 42",
        "reference_answer": 42,
        "group_id": 7,
    },
    {
        "id": "long-group",
        "question": "What is 2 + 2?",
        "completion": "2 + 2 = 4\nA: 4",
        "reference_answer": 4.0,  # an integral float: the same text as the integer 4
        "group_id": LONG_GROUP,
    },
    {
        "id": "parts",
        "question": [{"role": "user", "content": [{"type": "text", "text": "Half of 5?"}]}],
        "completion": [{"role": "assistant", "content": "5 / 2 = 2.5\nA: 2.5"}],
        "reference_answer": 2.5,
    },
]
EXPECTED = [
    ("What is 6 * 7?", "6 * 7 = 42\nA: 42", "42", "7"),
    ("What is 2 + 2?", "2 + 2 = 4\nA: 4", "4", group_id_of(LONG_GROUP)),
    ("Half of 5?", "5 / 2 = 2.5\nA: 2.5", "2.5", None),
]
# What only one path reports: the build's row metadata and the service's reload counter.
# dataset-row columns (the question, its images' thumbnails, the source) that annotations do not carry
NOT_COMPARED = {
    "probe_version",
    "question",
    "question_images",
    "reference_answer",
    "source_file",
    "source_row",
    "group_id",
}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    done = subprocess.run([*CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    return path


def _comparable(annotation: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in annotation.items() if key not in NOT_COMPARED}


def test_score_the_service_and_build_accept_the_same_rows_and_give_identical_annotations(
    rows_file: Path, tmp_path: Path
) -> None:
    scored = [
        json.loads(line)
        for line in _cli("score", "--backend", "fake", "-i", str(rows_file)).stdout.splitlines()
    ]
    _cli("build", str(rows_file), "--out", str(tmp_path / "ds"), "--backend", "fake")
    built = pq.read_table(tmp_path / "ds" / "part-00000.parquet").to_pylist()
    assert pq.read_table(tmp_path / "ds" / "_rejects.parquet").num_rows == 0
    with fake_service() as url:
        response = httpx.post(timeout=TIMEOUT_S, url=f"{url}/v1/annotate", json={"traces": ROWS})
    assert response.status_code == 200, response.text
    served = response.json()["annotations"]
    assert response.json()["errors"] == []
    assert (
        [a["trace_id"] for a in scored] == [a["trace_id"] for a in served] == ["chat", "long-group", "parts"]
    )
    assert sorted(a["trace_id"] for a in built) == ["chat", "long-group", "parts"]
    by_id = {row["trace_id"]: row for row in built}
    assert all(row["question_images"] == [] for row in built)  # text questions: no thumbnails
    for score_row, service_row in zip(scored, served, strict=True):
        assert _comparable(score_row) == _comparable(service_row) == _comparable(by_id[score_row["trace_id"]])
    assert [
        (by_id[i]["question"], by_id[i]["reference_answer"]) for i in ("chat", "long-group", "parts")
    ] == [(question, answer) for question, _, answer, _ in EXPECTED]


def _fields(trace: Trace) -> tuple[str, str | None, str, str | None]:
    return (trace.question, trace.completion, trace.reference_answer, trace.group_id)


def test_every_entry_point_makes_the_same_trace_of_a_row_integer_and_overlong_group_ids_included(
    rows_file: Path,
) -> None:
    assert len(LONG_GROUP) > MAX_GROUP_ID_CHARS
    from_score = [row.item for row in read_rows(str(rows_file))]
    request = AnnotateRequest.model_validate_json(json.dumps({"traces": ROWS}))
    from_service = checked_traces(request.trace_list, "traces")
    files = resolve_inputs([rows_file])
    schemas = [read_schema(source) for source in files]
    batch = SourceReader(files, schemas, pa.schema([]), []).take(10)
    from_build = [
        map_record(as_written(batch, i), ColumnMapping(), i, id_present=True) for i in range(len(batch))
    ]
    for made in (from_score, from_service, from_build):
        assert all(isinstance(trace, Trace) for trace in made), made
        assert [_fields(trace) for trace in made] == EXPECTED  # type: ignore[arg-type]


def test_build_reads_a_jsonl_row_as_written_not_as_the_files_inferred_column_types(tmp_path: Path) -> None:
    """A text group column with a list in one row is refused (polars would make it text), and an answer
    column of floats and integers gives the integer's own text (polars would make 42 a 42.0)."""
    rows = [
        {"id": "a", "question": "q", "completion": "c\nA: 1", "reference_answer": 0.5, "group_id": "g"},
        {"id": "b", "question": "q", "completion": "c\nA: 1", "reference_answer": 42, "group_id": ["g", "h"]},
        {"id": "c", "question": "q", "completion": "c\nA: 1", "reference_answer": 42, "group_id": {"k": 1}},
        {"id": "d", "question": "q", "completion": "c\nA: 1", "reference_answer": 42, "group_id": 3},
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    files = resolve_inputs([path])
    schemas = [read_schema(source) for source in files]
    batch = SourceReader(files, schemas, pa.schema([]), []).take(10)
    assert batch.records[1]["group_id"] == '["g", "h"]' and batch.records[3]["reference_answer"] == 42.0
    mapped = [map_record(as_written(batch, i), ColumnMapping(), i, id_present=True) for i in range(4)]
    assert isinstance(mapped[0], Trace) and mapped[0].reference_answer == "0.5"
    for problem in mapped[1:3]:
        assert not isinstance(problem, Trace) and problem.field == "group_id"
        assert "expected text or an integer" in problem.reason
    assert isinstance(mapped[3], Trace) and (mapped[3].reference_answer, mapped[3].group_id) == ("42", "3")
