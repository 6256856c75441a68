"""`mig-annotator build` on a 16k-token `<think>` prose trace with a local 32k-context model (`--model`)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mig_annotator.engine.segment import segment_completion
from tests.builder.conftest import run_cli


def test_build_a_16k_think_trace_with_a_long_context_model_into_parquet(
    tmp_path: Path, tiny_long_model: Path, long_think, long_think_reference
) -> None:
    source = tmp_path / "rollouts.jsonl"
    source.write_text(json.dumps(long_think.row()) + "\n", encoding="utf-8")
    out = tmp_path / "dataset"
    done = run_cli(
        "build", str(source), "--out", str(out), "--model", str(tiny_long_model), "--threads", "1",
        "--no-progress", "--fail-on-reject",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not (out / "_rejects.parquet").exists() or pq.read_table(out / "_rejects.parquet").num_rows == 0
    [row] = pq.read_table(out / "part-00000.parquet").to_pylist()
    segmented = segment_completion(long_think.completion)
    assert row["trace_id"] == "long-think" and row["completion"] == long_think.completion
    assert len(row["steps"]) == row["steps_total"] == len(segmented.steps) >= 100
    assert [(s["span"]["start"], s["span"]["end"]) for s in row["steps"]] == [
        (s.start, s.end) for s in segmented.steps
    ]
    assert row["windowed_steps"] == 0 and row["truncated"] is False
    assert row["answer"] == str(long_think.answer) and row["outcome"] == 1
    values = [row["v0"], *(step["v"] for step in row["steps"])]
    expected = [long_think_reference.v0, *(step.v for step in long_think_reference.steps)]
    assert values == pytest.approx(expected, abs=1e-6, rel=0)
