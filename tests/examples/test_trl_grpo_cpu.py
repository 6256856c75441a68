"""examples/trl_grpo_cpu.py runs as written, and what it logs shows the method acting.

Its ``main`` with the policy as its own probe (``--probe policy``, no service), two optimizer steps on its
own data (examples/data/arithmetic.jsonl, seed 0): the completions finish (not all clipped), an SFT gate
opens, and MIG gives a non-zero advantage to completions outcome-only GRPO leaves at 0 (a group whose
outcomes are all equal, told apart by its process rewards); every completion is scored, and the probe's
version follows the policy's step.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = [pytest.mark.trainers, pytest.mark.model]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trl_grpo_cpu.py"


def test_the_trl_example_opens_gates_and_trains_what_outcome_only_grpo_leaves_at_zero(
    tmp_path: Path, default_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("trl_grpo_cpu", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    history = example.main(
        [
            "--probe", "policy",
            "--policy", str(default_model_path),
            "--steps", "2",
            "--seed", "0",
            "--output-dir", str(tmp_path / "grpo"),
        ]
    )  # fmt: skip
    steps = [entry for entry in history if "mig/sft_nll" in entry]
    assert len(steps) == 2
    assert all(entry["completions/clipped_ratio"] < 1.0 for entry in steps)  # completions finish
    assert any(entry["mig/sft_gate_open"] >= 1 for entry in steps)
    assert any(entry["mig/mig_changed_zero_advantage"] > 0 for entry in steps)
    for entry in steps:
        changed = entry["mig/zero_advantage_outcome_only"] - entry["mig/zero_advantage_mig"]
        assert entry["mig/mig_changed_zero_advantage"] == pytest.approx(changed)
        assert entry["mig/unscored"] == 0.0 and entry["mig/scoring_seconds"] > 0
        assert entry["mig/probe_version"] == entry["step"] - 1  # the weights that generated the batch
        assert 0 < entry["mig/scoring_share"] < 1
    printed = capsys.readouterr().out
    for entry in steps:
        assert f"zero advantage: outcome-only {entry['mig/zero_advantage_outcome_only']:.2f}" in printed
