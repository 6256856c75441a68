"""`mig-annotator score` on a 16k-token `<think>` prose trace with a local 32k-context model (`--model`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mig_annotator.engine.segment import segment_completion
from tests.cli.test_cli import json_lines, run_cli


def test_score_a_16k_think_trace_with_a_long_context_model_folder(
    tmp_path: Path, tiny_long_model: Path, long_think, long_think_reference
) -> None:
    source = tmp_path / "long.jsonl"
    source.write_text(json.dumps(long_think.row()) + "\n", encoding="utf-8")
    result = run_cli(
        "score", "--input", str(source), "--model", str(tiny_long_model), "--threads", "1", "--no-progress"
    )
    assert result.returncode == 0, result.stderr
    [annotation] = json_lines(result.stdout)
    segmented = segment_completion(long_think.completion)
    assert len(annotation["steps"]) == annotation["steps_total"] == len(segmented.steps) >= 100
    assert annotation["windowed_steps"] == 0 and annotation["truncated"] is False
    assert annotation["probe_model"] == tiny_long_model.name
    assert annotation["answer"] == str(long_think.answer) and annotation["outcome"] == 1
    # the same v_k as the engine in process (and so as the service and the builder)
    values = [annotation["v0"], *(step["v"] for step in annotation["steps"])]
    expected = [long_think_reference.v0, *(step.v for step in long_think_reference.steps)]
    assert values == pytest.approx(expected, abs=1e-6, rel=0)
