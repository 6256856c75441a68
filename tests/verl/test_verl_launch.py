"""The verl launch path as a user runs it: the shell script's dry run, the group-size check, the GPU recipe
(run in .venv-verl: `make test-verl`; nothing starts Ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("verl", reason="verl runs in its own venv: make test-verl")

from tests.verl.support import ROOT, main_python, run_launcher

SCRIPT = ROOT / "examples" / "verl_reward_loop.sh"


def dry_run_script(*overrides: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``MIG_VERL_DRY_RUN=1 bash examples/verl_reward_loop.sh`` with this venv's Python as verl's."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "MIG_VERL_DRY_RUN": "1",
        "MIG_VERL_PYTHON": sys.executable,
        **env,
    }
    environment.pop("VERL_USE_EXTERNAL_MODULES", None)
    command = ["bash", str(SCRIPT), *overrides]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)


def shown_run(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout[out.stdout.index("{") :])["run"])


def test_one_rollout_per_prompt_is_refused_before_ray_naming_the_setting() -> None:
    out = run_launcher("actor_rollout_ref.rollout.n=1")
    assert out.returncode != 0
    assert "actor_rollout_ref.rollout.n" in out.stderr and "at least 2 (it is 1" in out.stderr
    assert "ray" not in out.stdout.lower()


def test_the_scripts_dry_run_prints_every_setting_that_decides_what_trains() -> None:
    run = shown_run(dry_run_script(MIG_SERVICE_URL="http://127.0.0.1:8123"))
    assert run["actor_rollout_ref.rollout.n"] == 4
    assert run["data.train_files"] == "~/data/gsm8k/train.parquet"
    assert run["algorithm.adv_estimator"] == "mig_decoupled"
    assert run["actor_rollout_ref.actor.policy_loss.loss_mode"] == "mig_sft"
    assert run["reward.mig.base_url"] == "http://127.0.0.1:8123"
    assert run["probe"] == "the service's probe (its own fixed weights)"
    decisive = ("data.train_batch_size", "actor_rollout_ref.model.path", "data.max_response_length")
    assert all(key in run for key in decisive)


def test_the_gpu_recipe_resolves_to_qwen_on_gsm8k_with_vllm_and_groups_of_eight() -> None:
    run = shown_run(dry_run_script(MIG_VERL_CONFIG="verl_gsm8k_qwen05b"))
    assert run["actor_rollout_ref.model.path"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert run["actor_rollout_ref.rollout.name"] == "vllm"
    assert run["actor_rollout_ref.rollout.n"] == 8
    assert run["data.train_batch_size"] == 64 and run["actor_rollout_ref.actor.ppo_mini_batch_size"] == 32
    assert run["trainer.n_gpus_per_node"] == 1 and run["trainer.nnodes"] == 1
    assert run["algorithm.adv_estimator"] == "mig_decoupled"
    assert run["reward.reward_manager.name"] == "MigRewardLoopManager"
    following = shown_run(
        dry_run_script(
            "++reward.mig.follow_policy=true", "trainer.save_freq=5", MIG_VERL_CONFIG="verl_gsm8k_qwen05b"
        )
    )
    assert following["probe"] == "the service's probe, reloaded from the policy's checkpoints every 5 steps"


def test_the_script_names_the_verl_venv_when_its_python_has_no_verl() -> None:
    out = dry_run_script(MIG_VERL_PYTHON=main_python())
    assert out.returncode == 2
    assert "scripts/setup_verl_venv.sh" in out.stderr and "cannot import verl" in out.stderr
