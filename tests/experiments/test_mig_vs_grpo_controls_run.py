"""The controls experiment's quick mode (run.py --config config_controls.json --quick) through real TRL.

One regime (``long``: 6-7 digits, 80 new tokens; its SFT checkpoint cut to the quick mode's steps, about
30 s on 2 shared cores), every arm of the config for 3 optimizer steps, one seed, one worker; each arm's
advantages and (oracle, placebo) its step rewards are checked against its rule (arm_checks), then the
report is written from the output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.experiments.test_mig_vs_grpo_task import _load

pytestmark = pytest.mark.trainers

config_module = _load("experiment_config")
run = _load("run")
report = _load("report")


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mig-controls-quick")
    config = str(config_module.CONTROLS_CONFIG)
    run.main(["--config", config, "--quick", "--out", str(out), "--regimes", "long", "--workers", "1"])
    return out


def test_the_quick_mode_trains_every_control_arm_on_its_rule_and_measures_the_credit(quick_out: Path) -> None:
    config = config_module.load(config_module.CONTROLS_CONFIG)
    for arm in config.arms:
        folder = run.run_dir(quick_out / "long", arm.name, 0)
        summary = json.loads((folder / "done.json").read_text())
        assert summary["steps"] == 3 and summary["checks"]["completions"] == 3 * 16
        if arm.process_reward == "mig" and arm.reward == "decoupled":
            assert summary["checks"]["replaced_steps"] == 0
        if arm.process_reward == "placebo":
            assert summary["checks"]["replaced_steps"] > 0
        points = [json.loads(line) for line in (folder / "eval.jsonl").read_text().splitlines()]
        assert [p["step"] for p in points] == [0, 1, 2, 3]
        first = points[0]
        assert len(first["correct_per_problem"]) == 16 and 0 <= first["greedy_accuracy"] <= 1
        assert first["accuracy"] == sum(first["correct_per_problem"]) / (16 * config.eval.samples_per_problem)
        assert first["credit_rollouts"] == 4 * config.eval.credit_samples
        assert first["credit_first_invalid_steps"] + first["credit_valid_steps"] > 0
        # the curve's points between the ends: one sample per problem, no greedy pass; the last: all of it
        assert [p["samples_per_problem"] for p in points] == [4, 1, 1, 4]
        assert ["greedy_accuracy" in p for p in points] == [True, False, False, True]
    run_config = json.loads((quick_out / "long" / "config.json").read_text())
    assert run_config["task"] == {"min_candidates": 6, "max_candidates": 7}
    assert run_config["training"]["max_completion_length"] == 80


def test_the_report_of_the_quick_output_has_the_regime_the_rule_and_the_plots(quick_out: Path) -> None:
    text = report.main(["--out", str(quick_out), "--plot", str(quick_out / "plots" / "controls.png")])
    assert "## long: " in text and "## registered" not in text  # the quick run was cut to one regime
    assert "vs outcome (mean paired final diff [95% t interval], n seeds)" in text
    assert "Share of the oracle's gain captured" in text and "`decoupled_sequence`: n/a" in text
    assert "Credit AUROC (frozen probe" in text and "Credit AUROC (policy probe" in text
    assert (quick_out / "plots" / "controls_long.png").stat().st_size > 0
    assert (quick_out / "plots" / "controls_long_credit.png").stat().st_size > 0


def test_a_finished_quick_run_is_not_run_again(quick_out: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in quick_out.glob("long/runs/*/seed0/eval.jsonl")}
    config = str(config_module.CONTROLS_CONFIG)
    summaries = run.main(["--config", config, "--quick", "--out", str(quick_out), "--regimes", "long"])
    assert len(summaries) == 4
    assert {p: p.stat().st_mtime_ns for p in quick_out.glob("long/runs/*/seed0/eval.jsonl")} == before
