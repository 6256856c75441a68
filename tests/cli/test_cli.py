"""The console script, run as a user runs it: a real process (`python -m mig_annotator.cli`), real model, real
output."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import typing
from pathlib import Path

from mig_annotator.cli.options import BackendOption

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "mig_annotator.cli"]
# rich draws the progress bar only on a terminal; this makes it treat stderr as one (stdout stays a pipe)
PROGRESS_ON_A_PIPE = {"TTY_COMPATIBLE": "1"}


def _backends() -> tuple[str, ...]:
    backend_or_none = typing.get_args(BackendOption)[0]
    return typing.get_args(typing.get_args(backend_or_none)[0])


# The streaming tests check plumbing, not numbers: the packaged fake probe where there is one (fast), else the
# default model.
PLUMBING_PROBE = ["--backend", "fake"] if "fake" in _backends() else []


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160", **extra}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env or cli_env(), cwd=ROOT, timeout=600
    )


def good(trace_id: str, answer: str = "3") -> dict[str, object]:
    return {
        "id": trace_id,
        "question": "Tom has 1 apple and buys 2 more. How many apples does he have?",
        "completion": f"He buys 2 more.\n1 + 2 = 3\nA: {answer}",
        "reference_answer": "3",
    }


def mixed_rows(path: Path) -> Path:
    """Six rows: good, not JSON, good (chat messages), no reference answer, over the context, good (steps)."""
    chat = {
        "id": "chat",
        "question": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": good("x")["question"]},
        ],
        "completion": [{"role": "assistant", "content": "1 + 2 = 3\nA: 3"}],
        "reference_answer": 3,
    }
    missing_answer = {key: value for key, value in good("no-answer").items() if key != "reference_answer"}
    too_long = {**good("too-long"), "completion": "one more word " * 12000 + "\nA: 3"}
    steps = {
        "id": "steps",
        "question": "What is 1 + 2?",
        "steps": ["1 + 2 = 3", "A: 3"],
        "reference_answer": "3",
    }
    lines = [
        json.dumps(good("first")),
        '{"id": "broken", "question": ',
        json.dumps(chat),
        json.dumps(missing_answer),
        json.dumps(too_long),
        json.dumps(steps),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_score_one_trace_as_json() -> None:
    result = run_cli(
        "score",
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
    [annotation] = json_lines(result.stdout)
    assert annotation["trace_id"] == "cli" and annotation["answer"] == "3" and annotation["outcome"] == 1
    assert [round(step["v"], 4) for step in annotation["steps"]] == [-1.9456, -0.5027]  # golden (test_engine)


def test_score_a_jsonl_file_prints_the_step_table() -> None:
    result = run_cli("score", "--input", "engine/data/sample_traces.jsonl", "--format", "table")
    assert result.returncode == 0, result.stderr
    assert "gsm8k-test-0001-reference: answer '3' (correct)" in result.stdout
    assert "boxed-tags-example" in result.stdout and "(question only)" in result.stdout


def test_score_streams_the_good_rows_and_reports_each_bad_one(tmp_path: Path) -> None:
    traces = mixed_rows(tmp_path / "traces.jsonl")
    result = run_cli(
        "score",
        "--input",
        str(traces),
        "--batch-size",
        "2",
        *PLUMBING_PROBE,
        env=cli_env(**PROGRESS_ON_A_PIPE),
    )
    assert result.returncode == 1
    annotations = json_lines(result.stdout)  # only JSON on stdout: one line per good trace, in input order
    assert [annotation["trace_id"] for annotation in annotations] == ["first", "chat", "steps"]
    assert [annotation["outcome"] for annotation in annotations] == [
        1,
        1,
        1,
    ]  # the answer checks, not the probe
    assert "\x1b" not in result.stdout and "scoring" not in result.stdout
    stderr = " ".join(result.stderr.split())
    assert f"{traces}:2: not valid JSON" in stderr
    assert f"{traces}:4: reference_answer: column 'reference_answer' is missing" in stderr
    assert f"{traces}:5: completion: the probe input is" in stderr and "(trace 'too-long')" in stderr
    assert "scored 3 trace(s); 3 bad row(s) skipped" in stderr
    without_colours = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stderr)
    assert "scoring traces.jsonl" in without_colours  # the progress bar, drawn on stderr


def test_strict_stops_at_the_first_bad_row(tmp_path: Path) -> None:
    traces = mixed_rows(tmp_path / "traces.jsonl")
    out = tmp_path / "annotations.jsonl"
    result = run_cli(
        "score", "--input", str(traces), "--strict", "--out", str(out), "--no-progress", *PLUMBING_PROBE
    )
    assert result.returncode == 1 and result.stdout == ""
    assert [annotation["trace_id"] for annotation in json_lines(out.read_text())] == ["first"]
    stderr = " ".join(result.stderr.split())
    assert f"{traces}:2: not valid JSON" in stderr and f"{traces}:4" not in stderr
    assert "stopped at the first bad row (--strict)" in stderr


def test_each_batch_is_written_before_the_next_row_is_read() -> None:
    """Through a pipe: the first annotation arrives while the input is still open."""
    process = subprocess.Popen(
        [*CLI, "score", "--input", "-", "--batch-size", "1", *PLUMBING_PROBE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=ROOT,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(json.dumps(good("streamed-1")) + "\n")
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], 300)  # a hang guard, not a timing assertion
        assert ready, "no output within 300 s while the input stayed open"
        assert json.loads(process.stdout.readline())["trace_id"] == "streamed-1"
        process.stdin.write(json.dumps(good("streamed-2")) + "\n")
        process.stdin.close()
        rest = process.stdout.read()
        assert process.wait(timeout=300) == 0
    finally:
        process.kill()
    assert [annotation["trace_id"] for annotation in json_lines(rest)] == ["streamed-2"]


def test_a_missing_input_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("score", "--input", str(tmp_path / "absent.jsonl"))
    assert result.returncode == 2 and "absent.jsonl: no such file" in " ".join(result.stderr.split())


def test_an_invalid_option_value_names_the_option() -> None:
    result = run_cli("score", "--question", "q", "--completion", "c", "--answer", "1", "--watermark", "peak")
    assert result.returncode == 2 and "watermark" in result.stderr


def test_model_prepare_reports_the_ready_folder() -> None:
    result = run_cli("model", "prepare")
    assert result.returncode == 0 and "SmolLM2-135M-Instruct" in result.stdout
