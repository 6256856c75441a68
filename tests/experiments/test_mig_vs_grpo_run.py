"""The experiment's quick mode (experiments/mig_vs_grpo/run.py --quick): every arm through real TRL.

Pre-trains the SFT checkpoint (about 80 s on 2 shared cores), then 3 optimizer steps per arm, one seed,
on 2 worker processes; each arm's advantages are checked against the rule its config names (checks.py).
The in-process test trains one arm and shows the checks refuse another arm's rule.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.experiments.test_mig_vs_grpo_task import _load

pytestmark = pytest.mark.trainers

config_module = _load("experiment_config")
run = _load("run")


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mig-vs-grpo-quick")
    run.main(["--quick", "--out", str(out)])
    return out


def test_the_quick_mode_runs_every_arm_and_each_trained_on_its_configured_advantages(quick_out: Path) -> None:
    config = config_module.load().quick()
    assert len(config.arms) == 6 and config.seeds == [0] and config.training.steps == 3
    for arm in config.arms:
        folder = run.run_dir(quick_out, arm.name, 0)
        summary = json.loads((folder / "done.json").read_text())
        assert summary["steps"] == 3
        checks = summary["checks"]
        assert checks["batches"] == 3 and checks["completions"] == 3 * 16
        if arm.reward == "decoupled":
            assert checks["process_tokens"] > 0
        else:
            assert checks["process_tokens"] == 0  # one advantage per completion, no process part
        if arm.advantages is not None and arm.advantages.sft_weight > 0:
            assert checks["gates_open"] > 0
        points = [json.loads(line) for line in (folder / "eval.jsonl").read_text().splitlines()]
        assert [p["step"] for p in points] == [0, 1, 2, 3]
        assert all(0.0 <= p["accuracy"] <= 1.0 and p["mean_completion_tokens"] > 0 for p in points)
        assert points[-1]["wall_s"] > points[1]["wall_s"] > 0
        if arm.reward == "outcome":
            assert points[-1]["scoring_s_per_step"] < 0.05  # grading only, no probe
        else:
            assert points[-1]["scoring_s_per_step"] > 0.0


def test_a_finished_run_is_not_run_again(quick_out: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in quick_out.glob("runs/*/seed0/eval.jsonl")}
    summaries = run.main(["--quick", "--out", str(quick_out)])
    assert len(summaries) == 6
    assert {p: p.stat().st_mtime_ns for p in quick_out.glob("runs/*/seed0/eval.jsonl")} == before


def test_the_checks_refuse_a_trainer_whose_advantages_follow_another_arms_rule(quick_out: Path) -> None:
    import torch

    arms = _load("arms")
    checks = _load("arm_checks")
    torch.set_num_threads(1)
    config = config_module.load().quick()
    config = config.model_copy(update={"training": config.training.model_copy(update={"steps": 2})})
    step_arm = config.arm("decoupled_step")
    trainer = arms.build_trainer(step_arm, config, quick_out / "sft", quick_out / "in-process", 0, "cpu")
    trainer.train()
    assert checks.check_arm(step_arm, config, trainer)["process_tokens"] > 0
    with pytest.raises(AssertionError, match=r"decoupled_sequence, batch \d+, row \d+"):
        checks.check_arm(config.arm("decoupled_sequence"), config, trainer)
    with pytest.raises(AssertionError, match="scored by"):
        checks.check_arm(config.arm("decoupled_sft_policy_probe"), config, trainer)
