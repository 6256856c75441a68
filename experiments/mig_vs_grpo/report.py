"""The report of a run: a PNG of held-out accuracy against optimizer steps and wall time, and a table.

    python experiments/mig_vs_grpo/report.py --out outputs/mig_vs_grpo/run --plot docs/mig_vs_grpo.png
    python experiments/mig_vs_grpo/report.py --out outputs/mig_vs_grpo/controls --plot docs/mig_controls.png

A controls run (``OUT/config.json`` with ``regimes``) gets one section per regime (:func:`controls_report`):
every arm against outcome-only by the paired t rule (the interval of the mean paired difference), greedy
accuracy, the credit's step AUROC at the last point, the share of the oracle's gain captured by each arm
with its bootstrap interval over seeds, the placebo against MIG, and two plots per regime (accuracy;
credit AUROC of the frozen and the policy probe along the evaluation points), named after ``--plot``
(``NAME_REGIME.png``, ``NAME_REGIME_credit.png``).

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
import power  # the folder is package-free
from experiment_config import ControlsConfig, ExperimentConfig

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


def paired_verdict(paired: Sequence[float], alpha: float = 0.05) -> str:
    """win / lose / tie by the paired t rule (power.py): the two-sided (1 - alpha) interval of the mean
    paired difference above 0, below 0, or across it; "undecided" with fewer than 2 paired seeds."""
    if len(paired) < 2:
        return "undecided (< 2 seeds)"
    _, low, high = power.paired_interval(paired, alpha)
    if low > 0:
        return "win"
    if high < 0:
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
        if config.rule == "paired_t":
            decided = paired_verdict(paired, config.alpha)
        else:
            decided = verdict(list(final_acc.values()), list(base_final.values()), paired)
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
                "final_accuracy_by_seed": final_acc,
                "final_greedy_accuracy": [
                    r["greedy_accuracy"] for r in final.values() if r and "greedy_accuracy" in r
                ],
                "final_credit_auroc": {
                    probe: [r[key] for r in final.values() if r and r.get(key) is not None]
                    for probe in ("frozen", "policy")
                    if (key := f"credit_auroc_{probe}_mig")
                },
                "verdict": "baseline" if arm.name == BASELINE else decided,
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
    paired_t = config.rule == "paired_t"
    if paired_t:
        level = round(100 * (1 - config.alpha))
        header[-1] = f"vs {BASELINE} (mean paired final diff [{level}% t interval], n seeds)"
        header[-1:-1] = ["greedy (last)", "credit AUROC frozen / policy (last)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary:
        reached = ", ".join("—" if s is None else str(s) for s in row["steps_to_target"])
        diffs = row["paired_final_difference"]
        paired = ", ".join(f"{d:+.3f}" for d in diffs)
        if len(diffs) > 1:
            mean, std = _mean_std(diffs)
            paired += f"; mean {mean:+.3f} ± {std / len(diffs) ** 0.5:.3f} s.e."
        if paired_t and len(diffs) > 1:
            mean, low, high = power.paired_interval(diffs, config.alpha)
            paired = f"{mean:+.3f} [{low:+.3f}, {high:+.3f}], n={len(diffs)}"
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
        if paired_t:
            auroc = row["final_credit_auroc"]
            cells[-1:-1] = [
                _fmt(row["final_greedy_accuracy"]),
                f"{_fmt(auroc['frozen'], 2)} / {_fmt(auroc['policy'], 2)}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(config: ExperimentConfig, points: dict[str, dict[int, list[dict[str, Any]]]], path: Path) -> None:
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


def credit_curve(
    config: ExperimentConfig, points: dict[str, dict[int, list[dict[str, Any]]]], probe: str
) -> dict[str, list[tuple[int, float]]]:
    """arm -> (step, mean over seeds of the step AUROC of -mig_k by ``probe``) along the eval points."""
    return mean_curve(config, points, f"credit_auroc_{probe}_mig")


def mean_curve(
    config: ExperimentConfig, points: dict[str, dict[int, list[dict[str, Any]]]], key: str
) -> dict[str, list[tuple[int, float]]]:
    """arm -> (step, mean over seeds of the eval rows' ``key``) along the eval points (missing: skipped)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for arm in config.arms:
        runs = points.get(arm.name, {})
        steps = sorted({row["step"] for rows in runs.values() for row in rows})
        curve = []
        for step in steps:
            values = [r[key] for rows in runs.values() if (r := _at(rows, step)) and r.get(key) is not None]
            if values:
                curve.append((step, statistics.fmean(values)))
        if curve:
            curves[arm.name] = curve
    return curves


def plot_credit(
    config: ExperimentConfig, points: dict[str, dict[int, list[dict[str, Any]]]], path: Path
) -> None:
    """The credit's step AUROC along training, one panel per probe, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    for axis, probe in zip(axes, ("frozen", "policy"), strict=True):
        for arm, curve in credit_curve(config, points, probe).items():
            axis.plot([s for s, _ in curve], [v for _, v in curve], marker="o", markersize=3, label=arm)
        axis.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        axis.set_title(f"{probe} probe")
        axis.set_xlabel("optimizer steps (the policy whose rollouts are scored)")
    axes[0].set_ylabel("step AUROC of -mig_k vs the task's step validity")
    axes[0].legend(fontsize=8, loc="best")
    figure.suptitle(f"{config.name}: the credit's accuracy on the policy's own rollouts (mean over seeds)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _interval(values: tuple[float, float, float] | None) -> str:
    return "n/a" if values is None else f"{values[0]:+.2f} [{values[1]:+.2f}, {values[2]:+.2f}]"


def regime_section(
    config: ExperimentConfig, points: dict[str, dict[int, list[dict[str, Any]]]], seed: int = 0
) -> tuple[str, list[dict]]:
    """One regime's markdown: the arms table, the oracle share, the placebo against MIG, the credit curve."""
    summary = summarise(config, points)
    finals = {row["arm"]: {int(s): v for s, v in row["final_accuracy_by_seed"].items()} for row in summary}
    lines = [markdown(config, summary)]
    outcome, oracle = finals.get(BASELINE), finals.get("oracle")
    if outcome and oracle:
        lines.append(
            "Share of the oracle's gain captured, (arm - outcome) / (oracle - outcome) of the seed "
            "means [95% bootstrap interval over seeds]:\n"
        )
        for arm, final in finals.items():
            if arm in (BASELINE, "oracle"):
                continue
            share = power.oracle_share(final, outcome, oracle, seed=seed)
            lines.append(f"* `{arm}`: {_interval(share)}")
        lines.append("")
    mig, placebo = finals.get("decoupled_sequence"), finals.get("placebo")
    if mig and placebo:
        diffs = [mig[s] - placebo[s] for s in sorted(set(mig) & set(placebo))]
        if len(diffs) > 1:
            mean, low, high = power.paired_interval(diffs, config.alpha)
            lines.append(
                f"MIG against the placebo (`decoupled_sequence` - `placebo`, paired final diff): "
                f"{mean:+.3f} [{low:+.3f}, {high:+.3f}], n={len(diffs)}: "
                f"**{paired_verdict(diffs, config.alpha)}**\n"
            )
    tables = [
        (
            f"credit_auroc_{probe}_mig",
            f"Credit AUROC ({probe} probe, -mig_k vs step validity, mean over seeds)",
            2,
        )
        for probe in ("frozen", "policy")
    ]
    tables += [
        ("credit_valid_steps", "Negatives of the credit AUROC: valid steps before the first invalid one", 0),
        ("credit_first_invalid_steps", "Positives: rollouts with an invalid step", 0),
    ]
    for key, title, digits in tables:
        curves = mean_curve(config, points, key)
        if not curves:
            continue
        steps = sorted({s for curve in curves.values() for s, _ in curve})
        lines.append(f"{title}, by step:\n")
        lines.append("| arm | " + " | ".join(str(s) for s in steps) + " |")
        lines.append("|---|" + "---|" * len(steps))
        for arm, curve in curves.items():
            by_step = dict(curve)
            cells = [f"{by_step[s]:.{digits}f}" if s in by_step else "" for s in steps]
            lines.append(f"| `{arm}` | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n", summary


def controls_report(config: ControlsConfig, out: Path, plot: Path) -> tuple[str, dict[str, list[dict]]]:
    """Every regime's section (:func:`regime_section`) and plots; regimes without a finished run say so."""
    text, summaries = [f"# {config.name}\n"], {}
    for regime in config.regimes:
        folder = out / regime.name
        saved = folder / "config.json"
        regime_config = (
            ExperimentConfig.model_validate_json(saved.read_text())
            if saved.exists()
            else config.regime_config(regime.name)
        )
        regime_config = regime_config.model_copy(update={"seeds": config.seeds})
        points = load_points(folder, regime_config)
        text.append(f"## {regime.name}: {regime.description}\n")
        if not points:
            text.append("No finished run.\n")
            continue
        section, summaries[regime.name] = regime_section(regime_config, points)
        text.append(section)
        plot_path = plot.with_name(f"{plot.stem}_{regime.name}{plot.suffix}")
        _plot(regime_config, points, plot_path)
        plot_credit(regime_config, points, plot.with_name(f"{plot.stem}_{regime.name}_credit{plot.suffix}"))
    return "\n".join(text), summaries


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/mig_vs_grpo/run"))
    parser.add_argument("--plot", type=Path, default=Path("docs/mig_vs_grpo.png"))
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="only these seeds")
    parser.add_argument("--name", default="report", help="OUT/NAME.md and OUT/NAME.json")
    args = parser.parse_args(argv)
    raw = json.loads((args.out / "config.json").read_text())
    if "regimes" in raw:
        controls = ControlsConfig.model_validate(raw)
        if args.seeds is not None:
            controls = controls.model_copy(update={"seeds": args.seeds})
        text, summaries = controls_report(controls, args.out, args.plot)
        experiment = args.out / "experiment.json"
        if experiment.exists():
            text += f"\nRun wall time, all stretches: {json.loads(experiment.read_text())['wall_s']:.0f} s.\n"
        (args.out / f"{args.name}.md").write_text(text)
        (args.out / f"{args.name}.json").write_text(json.dumps(summaries, indent=2) + "\n")
        print(text)
        return text
    config = ExperimentConfig.model_validate(raw)
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
    _plot(config, points, args.plot)
    print(text)
    return text


if __name__ == "__main__":
    main()
