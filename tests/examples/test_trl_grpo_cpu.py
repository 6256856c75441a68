"""examples/trl_grpo_cpu.py runs as written: its ``main`` against a live service, one optimizer step, and what
it logs shows the method acting.

The service (127.0.0.1, the embedded SmolLM2 probe, an audit dir) is asked once for the step's 8
completions (each scored once); the completions finish (not all clipped); an SFT gate opens; and MIG gives a
non-zero advantage to completions outcome-only GRPO leaves at 0 (a group whose outcomes are all equal, told
apart by its process rewards) — recomputed here from the audit rows, and logged by the example.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server
from tests.trainers.support import audit_requests

pytestmark = [pytest.mark.trainers, pytest.mark.model]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trl_grpo_cpu.py"
KEYS = {"example": "sk-example-0123456789"}


def test_the_trl_example_trains_a_step_where_mig_opens_gates_and_moves_zero_advantages(
    tmp_path: Path, default_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("trl_grpo_cpu", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    audit_dir = tmp_path / "audit"
    service = ServiceSettings(
        audit_dir=audit_dir, api_keys=KEYS, probe=TransformersProbeSettings(threads=1), audit_flush_s=0.2
    )
    with live_server(create_app(service)) as url:
        history = example.main(
            [
                "--service-url", url,
                "--api-key", KEYS["example"],
                "--policy", str(default_model_path),
                "--steps", "1",
                "--output-dir", str(tmp_path / "grpo"),
            ]
        )  # fmt: skip
    (request,) = audit_requests(audit_dir, "example")  # one call for the step's batch
    assert len(request) == 8  # 2 prompts x 4 generations, each completion scored once
    (entry,) = [entry for entry in history if "mig/sft_nll" in entry]
    assert entry["completions/clipped_ratio"] < 1.0  # completions finish
    assert entry["reward"] == pytest.approx(np.mean([row["outcome"] for row in request]), abs=1e-6)
    assert entry["mig/process_reward_mean"] == pytest.approx(
        np.mean([row["process_reward"] for row in request]), abs=1e-5
    )
    gates = sum(row["outcome"] == 1 and max(row["step_rewards"], default=0.0) > 0.0 for row in request)
    assert entry["mig/sft_gate_open"] == gates >= 1
    # outcome-only GRPO gives 0 to every member of a group whose outcomes are equal; MIG moves some of them
    assert entry["mig/zero_advantage_outcome_only"] > 0
    assert entry["mig/mig_changed_zero_advantage"] > 0
    assert entry["mig/zero_advantage_mig"] < entry["mig/zero_advantage_outcome_only"]
    assert entry["mig/unscored"] == 0.0 and entry["mig/scoring_seconds"] > 0
    shown = f"zero advantage: outcome-only {entry['mig/zero_advantage_outcome_only']:.2f}"
    assert shown in capsys.readouterr().out
