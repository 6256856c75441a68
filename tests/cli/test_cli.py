"""The console script, run as a user runs it: a real process, real model, real output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}
    command = [sys.executable, "-m", "mig_annotator.mig.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def test_score_one_trace_as_json() -> None:
    result = run_cli(
        "score",
        "--json",
        "--question",
        "A robe takes 2 bolts of blue fiber and half that much white fiber.  "
        "How many bolts in total does it take?",
        "--completion",
        "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total amount of fabric is 2+1=<<2+1=3>>3 bolts "
        "of fabric\n#### 3",
        "--answer",
        "3",
    )
    assert result.returncode == 0, result.stderr
    annotation = json.loads(result.stdout)
    assert annotation["trace_id"] == "cli" and annotation["answer"] == "3" and annotation["outcome"] == 1
    assert [round(step["v"], 4) for step in annotation["steps"]] == [-1.9456, -0.5027]  # golden (test_engine)


def test_score_a_jsonl_file_prints_the_step_table() -> None:
    result = run_cli("score", "--input", "mig/data/sample_traces.jsonl")
    assert result.returncode == 0, result.stderr
    assert "gsm8k-test-0001-reference: answer '3' (correct)" in result.stdout
    assert "boxed-tags-example" in result.stdout and "(question only)" in result.stdout


def test_a_bad_line_is_reported_with_file_line_and_field(tmp_path: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    good = {"id": "a", "question": "q?", "completion": "x\n#### 1", "reference_answer": "1"}
    traces.write_text(
        json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "reference_answer": " "}) + "\n"
    )
    result = run_cli("score", "--input", str(traces))
    assert result.returncode == 2
    assert f"{traces}:2: reference_answer" in " ".join(result.stderr.split())


def test_an_invalid_option_value_names_the_option() -> None:
    result = run_cli("score", "--question", "q", "--completion", "c", "--answer", "1", "--watermark", "peak")
    assert result.returncode == 2 and "watermark" in result.stderr


def test_model_prepare_reports_the_ready_folder() -> None:
    result = run_cli("model", "prepare")
    assert result.returncode == 0 and "SmolLM2-135M-Instruct" in result.stdout
