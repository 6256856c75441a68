"""examples/advantage_dump.py runs as written: a real service it starts, the real probe, and advantages that
follow the formulas of docs/training.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "gsm8k_rollouts_small.jsonl"
TOKENIZER = Path(os.environ.get("MIG_CACHE_DIR", Path.home() / ".cache" / "mig-annotator")) / "models"


def test_the_dump_of_a_real_group_shows_process_credit_on_the_cot_and_the_outcome_off_it() -> None:
    if not (TOKENIZER / "SmolLM2-135M-Instruct").is_dir():
        pytest.skip("the default probe is not prepared: run `make model`")
    command = [sys.executable, str(ROOT / "examples" / "advantage_dump.py"), "--data", str(FIXTURE)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = re.findall(r"^\| (\d) \| (\d) \| ([\d.]+) \| ([\d.]+) \| (open|closed) \|", out.stdout, re.M)
    assert len(summary) == 4
    outcomes = np.array([float(row[1]) for row in summary])
    totals = np.array([float(row[2]) for row in summary])
    assert 0 < outcomes.sum() < 4  # the first group with right and wrong answers
    assert [row[4] == "open" for row in summary] == [o == "1" and float(m) > 0 for _, o, _, m, _ in summary]
    outcome_advantage = (outcomes - outcomes.mean()) / (outcomes.std(ddof=1) + 1e-6)
    process_advantage = (totals - totals.mean()) / max(totals.std(ddof=1), 0.25)
    blocks = out.stdout.split("**Completion ")[1:]
    assert len(blocks) == 4
    for i, block in enumerate(blocks):
        answer = re.search(r"^\| answer \|.*\| (\d+) \| ([-+][\d.]+) \| ([-+][\d.]+) \|$", block, re.M)
        assert answer is not None
        assert float(answer[2]) == pytest.approx(outcome_advantage[i], abs=2e-3)
        assert float(answer[3]) == pytest.approx(outcome_advantage[i], abs=2e-3)  # same in both placements
        steps = re.findall(r"^\| \d+ \| .* \| [\d.]+ \| \d+ \| ([-+][\d.]+) \| [-+][\d.]+ \|$", block, re.M)
        assert steps
        expected = outcome_advantage[i] + process_advantage[i]
        assert all(float(value) == pytest.approx(expected, abs=5e-3) for value in steps)
