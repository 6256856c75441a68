"""The report of a run: a PNG of held-out accuracy against optimizer steps and wall time, and a table.

    python experiments/mig_vs_grpo/report.py --out outputs/mig_vs_grpo/run --plot docs/mig_vs_grpo.png

Reads ``OUT/config.json`` (the configuration the run used) and every ``OUT/runs/ARM/seedS/eval.jsonl``;
writes the plot (matplotlib, Agg) and ``OUT/report.md`` (printed too; ``--seeds`` restricts the seeds,
``--name`` names the files): per arm, the held-out accuracy at
the config's ``report_steps`` (mean +- sample std over seeds, and min-max), the steps to reach
``target_accuracy`` (first evaluation point at or above it, per seed), the mean completion length and step
count of the held-out samples at the last point, the scoring seconds per optimizer step, the training
wall time, and the verdict against the outcome-only arm by the config's decision rule.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from experiment_config import ExperimentConfig  # the folder is package-free

BASELINE = "outcome"


def load_points(out: Path, config: ExperimentConfig) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """arm -> seed -> the evaluation points of that run (runs without done.json are left out)."""
    points: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for arm in config.arms:
        for seed in config.seeds:
            folder = out / "runs" / arm.name / f"seed{seed}"
            if not (folder / "done.json").exists():
                continue
            rows = [json.loads(line) for line in (folder / "eval.jsonl").read_text().splitlines() if line]
            points.setdefault(arm.name, {})[seed] = rows
    return points


def _at(rows: Sequence[dict[str, Any]], step: int) -> dict[str, Any] | None:
    return next((row for row in rows if row["step"] == step), None)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def steps_to_reach(rows: Sequence[dict[str, Any]], target: float) -> int | None:
    """The first evaluation step (after 0) with accuracy >= target; None if never."""
    return next((row["step"] for row in rows if row["step"] > 0 and row["accuracy"] >= target), None)


def verdict(arm_final: Sequence[float], base_final: Sequence[float], paired: Sequence[float]) -> str:
    """win / lose / tie against the baseline (the config's ``decision_rule``): with at least 3 paired
    seeds, the mean final accuracy differs by more than the larger seed std of the two arms AND every
    paired seed (same seed, same data order) has the same sign; "undecided" with fewer seeds."""
    if len(paired) < 3:
        return "undecided (< 3 seeds)"
    arm_mean, arm_std = _mean_std(arm_final)
    base_mean, base_std = _mean_std(base_final)
    difference = arm_mean - base_mean
    margin = max(arm_std, base_std)
    if abs(difference) > margin and paired and all(d > 0 for d in paired):
        return "win"
    if abs(difference) > margin and paired and all(d < 0 for d in paired):
        return "lose"
    return "tie"


def summarise(config: ExperimentConfig, points: dict[str, dict[int, list[dict[str, Any]]]]) -> list[dict]:
    last = config.training.steps
    target = config.eval.target_accuracy
    base = points.get(BASELINE, {})
    summary = []
    for arm in config.arms:
        runs = points.get(arm.name, {})
        if not runs:
            continue
        final = {seed: _at(rows, last) for seed, rows in runs.items()}
        final_acc = {seed: row["accuracy"] for seed, row in final.items() if row is not None}
        base_final = {
            seed: r["accuracy"] for seed, rows in base.items() if (r := _at(rows, last)) is not None
        }
        paired = [final_acc[s] - base_final[s] for s in final_acc if s in base_final]
        reached = [steps_to_reach(rows, target) for rows in runs.values()]
        auc = [statistics.fmean(row["accuracy"] for row in rows) for rows in runs.values()]
        scoring = [
            statistics.fmean(row["scoring_s_per_step"] for row in rows if "scoring_s_per_step" in row)
            for rows in runs.values()
        ]
        zero_share = [
            statistics.fmean(vals)
            for rows in runs.values()
            if (vals := [r["adv_zero_completion_share"] for r in rows if "adv_zero_completion_share" in r])
        ]
        disagreements = sum(r.get("engine_outcome_disagreements", 0) for rows in runs.values() for r in rows)
        summary.append(
            {
                "arm": arm.name,
                "seeds": len(runs),
                "accuracy_at": {
                    step: [row["accuracy"] for rows in runs.values() if (row := _at(rows, step)) is not None]
                    for step in config.eval.report_steps
                },
                "mean_accuracy_over_points": auc,
                "steps_to_target": reached,
                "final_completion_tokens": [r["mean_completion_tokens"] for r in final.values() if r],
                "final_step_count": [r["mean_step_count"] for r in final.values() if r],
                "scoring_s_per_step": scoring,
                "train_wall_s": [r["wall_s"] for r in final.values() if r],
                "zero_advantage_share": zero_share,
                "engine_outcome_disagreements": disagreements,
                "paired_final_difference": paired,
                "verdict": "baseline"
                if arm.name == BASELINE
                else verdict(list(final_acc.values()), list(base_final.values()), paired),
            }
        )
    return summary


def _fmt(values: Sequence[float], digits: int = 3) -> str:
    mean, std = _mean_std(values)
    if not values:
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown(config: ExperimentConfig, summary: list[dict]) -> str:
    target = config.eval.target_accuracy
    steps = config.eval.report_steps
    header = (
        ["arm"]
        + [f"acc @ {s}" for s in steps]
        + [
            "mean acc over eval points",
            f"steps to {target:.2f} (per seed)",
            "completion tokens (last)",
            "steps per completion (last)",
            "scoring s / step",
            "train wall s",
            "completions with zero advantage",
            f"vs {BASELINE} (paired final diffs by seed; their mean ± s.e.)",
        ]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary:
        reached = ", ".join("—" if s is None else str(s) for s in row["steps_to_target"])
        diffs = row["paired_final_difference"]
        paired = ", ".join(f"{d:+.3f}" for d in diffs)
        if len(diffs) > 1:
            mean, std = _mean_std(diffs)
            paired += f"; mean {mean:+.3f} ± {std / len(diffs) ** 0.5:.3f} s.e."
        cells = (
            [f"`{row['arm']}`"]
            + [_fmt(row["accuracy_at"][s]) for s in steps]
            + [
                _fmt(row["mean_accuracy_over_points"]),
                reached,
                _fmt(row["final_completion_tokens"], 1),
                _fmt(row["final_step_count"], 2),
                _fmt(row["scoring_s_per_step"], 2),
                _fmt(row["train_wall_s"], 0),
                _fmt(row["zero_advantage_share"], 2),
                row["verdict"] if row["arm"] == BASELINE else f"**{row['verdict']}** ({paired})",
            ]
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(config: ExperimentConfig, points: dict[str, dict[int, list[dict[str, Any]]]], path: Path) -> None:
    """Two panels: accuracy vs optimizer step and vs training wall time; mean line, min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_step, by_wall) = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for arm in config.arms:
        runs = points.get(arm.name)
        if not runs:
            continue
        steps = sorted({row["step"] for rows in runs.values() for row in rows})
        per_step = [[r["accuracy"] for rows in runs.values() if (r := _at(rows, s))] for s in steps]
        walls = [
            statistics.fmean(r["wall_s"] for rows in runs.values() if (r := _at(rows, s))) for s in steps
        ]
        mean = [statistics.fmean(v) for v in per_step]
        low, high = [min(v) for v in per_step], [max(v) for v in per_step]
        for axis, xs in ((by_step, steps), (by_wall, walls)):
            (line,) = axis.plot(xs, mean, marker="o", markersize=3, label=f"{arm.name} ({len(runs)} seeds)")
            axis.fill_between(xs, low, high, alpha=0.1, color=line.get_color())
    metric = config.eval.metric
    by_step.set_xlabel("optimizer steps")
    by_wall.set_xlabel("training wall seconds (mean over seeds; evaluation excluded)")
    by_step.set_ylabel(f"held-out accuracy ({metric}, {config.eval.n_problems} problems)")
    by_step.axhline(config.eval.target_accuracy, color="grey", linestyle=":", linewidth=1)
    by_wall.axhline(config.eval.target_accuracy, color="grey", linestyle=":", linewidth=1)
    by_step.legend(fontsize=8, loc="best")
    figure.suptitle(f"{config.name}: mean over seeds, band = min-max")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/mig_vs_grpo/run"))
    parser.add_argument("--plot", type=Path, default=Path("docs/mig_vs_grpo.png"))
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="only these seeds")
    parser.add_argument("--name", default="report", help="OUT/NAME.md and OUT/NAME.json")
    args = parser.parse_args(argv)
    config = ExperimentConfig.model_validate_json((args.out / "config.json").read_text())
    if args.seeds is not None:
        config = config.model_copy(update={"seeds": args.seeds})
    points = load_points(args.out, config)
    if not points:
        raise SystemExit(f"{args.out}: no finished run (runs/ARM/seedS/done.json)")
    summary = summarise(config, points)
    table = markdown(config, summary)
    experiment = args.out / "experiment.json"
    wall = json.loads(experiment.read_text())["wall_s"] if experiment.exists() else None
    text = table + (f"\nFull run wall time: {wall:.0f} s.\n" if wall is not None else "")
    (args.out / f"{args.name}.md").write_text(text)
    (args.out / f"{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(config, points, args.plot)
    print(text)
    return text


if __name__ == "__main__":
    main()
