"""The experiment report's verdict rule and table (experiments/mig_vs_grpo/report.py), on written rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.experiments.test_mig_vs_grpo_task import _load

config_module = _load("experiment_config")
report = _load("report")


def test_an_arm_wins_only_when_the_mean_gap_beats_the_seed_spread_and_every_paired_seed_agrees() -> None:
    assert report.verdict([0.40, 0.42, 0.44], [0.30, 0.31, 0.32], [0.10, 0.11, 0.12]) == "win"
    assert report.verdict([0.30, 0.31, 0.32], [0.40, 0.42, 0.44], [-0.10, -0.11, -0.12]) == "lose"
    # one paired seed the other way: a tie even with a large mean gap
    assert report.verdict([0.50, 0.50, 0.31], [0.30, 0.30, 0.32], [0.20, 0.20, -0.01]) == "tie"
    # every seed ahead, but by less than the seed spread: a tie
    assert report.verdict([0.36, 0.30, 0.45], [0.35, 0.29, 0.44], [0.01, 0.01, 0.01]) == "tie"
    assert report.verdict([0.9, 0.9], [0.1, 0.1], [0.8, 0.8]) == "undecided (< 3 seeds)"


def test_steps_to_reach_is_the_first_point_after_step_0_at_or_above_the_target() -> None:
    rows = [{"step": 0, "accuracy": 0.5}, {"step": 10, "accuracy": 0.2}, {"step": 20, "accuracy": 0.3}]
    assert report.steps_to_reach(rows, 0.3) == 20
    assert report.steps_to_reach(rows, 0.31) is None


def test_the_table_reads_finished_runs_only(tmp_path: Path) -> None:
    config = config_module.load().quick()
    config = config.model_copy(update={"seeds": [0, 1, 2]})
    for arm, bonus in (("outcome", 0.0), ("decoupled_sft", 0.2)):
        for seed in config.seeds:
            folder = tmp_path / "runs" / arm / f"seed{seed}"
            folder.mkdir(parents=True)
            rows = [
                {"step": s, "accuracy": 0.2 + bonus * s / 3 + 0.01 * seed, "wall_s": 2.0 * s}
                | {"mean_completion_tokens": 40.0, "mean_step_count": 3.5, "scoring_s_per_step": 0.5}
                for s in range(4)
            ]
            (folder / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (folder / "done.json").write_text("{}")
    unfinished = tmp_path / "runs" / "scalar_mixed" / "seed0"
    unfinished.mkdir(parents=True)
    (unfinished / "eval.jsonl").write_text(json.dumps({"step": 0, "accuracy": 1.0}) + "\n")
    summary = report.summarise(config, report.load_points(tmp_path, config))
    assert [row["arm"] for row in summary] == ["outcome", "decoupled_sft"]
    best = summary[1]
    assert best["verdict"] == "win"
    assert best["paired_final_difference"] == pytest.approx([0.2, 0.2, 0.2])
    assert best["steps_to_target"] == [2, 2, 2]  # 0.2 + 0.2 * 2 / 3 >= 0.30
    table = report.markdown(config, summary)
    assert "| `decoupled_sft` | 0.210 ± 0.010 | 0.410 ± 0.010 |" in table
    assert "**win** (+0.200, +0.200, +0.200; mean +0.200 ± 0.000 s.e.)" in table
