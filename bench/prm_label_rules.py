"""How well each `export prm` label rule marks steps, measured with `eval`'s ProcessBench step-level F1.

The shared GSM8K rollouts carry a trace-level verdict only, so ``label`` writes silver ProcessBench labels
(a heuristic, stated with every figure): a right answer is all steps right (-1); on a wrong answer, the
first line whose computed result (the ``<<a=c>>`` annotation's c, else the number after the line's last
``=``) appears neither in the question nor in the reference solution is the earliest wrong step. Wrong
traces without such a line, or whose only such line is the answer line, are left out. ``measure`` reads
a dataset built from that file and scores each rule's exported labels: the first step labelled False is
the predicted earliest error (ProcessBench's F1); per step, the share of steps before the earliest error
labelled True and of earliest wrong steps labelled False.

    python bench/prm_label_rules.py label ../shared/data/gsm8k_rollouts.jsonl \\
        ../shared/data/gsm8k_test.jsonl --per-class 100 --out silver.jsonl
    mig-annotator build silver.jsonl --out silver-ds --question-col problem --steps-col steps \\
        --answer-col answer
    python bench/prm_label_rules.py measure silver-ds
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import numpy as np

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
CALCULATION = re.compile(r"<<[^>]*=(-?[\d.]+)>>")


def _numbers(text: str) -> set[float]:
    return {float(n) for n in NUMBER.findall(text.replace(",", "").replace("$", ""))}


def _result(line: str) -> float | None:
    line = line.replace(",", "").replace("$", "")
    calculations = CALCULATION.findall(line)
    if calculations:
        try:
            return float(calculations[-1])
        except ValueError:
            return None
    if "=" in line:
        found = NUMBER.findall(line.rsplit("=", 1)[1])
        return float(found[0]) if found else None
    return None


def silver_label(row: dict, solution: str) -> int | None:
    """-1 for a right answer; else the first step whose result the reference never reaches (None: unknown)."""
    lines = [line for line in row["completion"].split("\n") if line.strip()]
    if row["is_correct"]:
        return -1
    known = _numbers(row["question"]) | _numbers(solution)
    first = next(
        (k for k, line in enumerate(lines) if (x := _result(line)) is not None and x not in known), None
    )
    return None if first is None or first == len(lines) - 1 else first


def write_silver(rollouts: Path, tests: Path, per_class: int, seed: int, out: Path) -> str:
    solutions = {r["question_id"]: r["solution"] for r in map(json.loads, tests.open(encoding="utf-8"))}
    rows = [json.loads(line) for line in rollouts.open(encoding="utf-8")]
    random.Random(seed).shuffle(rows)
    right: list[dict] = []
    wrong: list[dict] = []
    for row in rows:
        steps = [line for line in row["completion"].split("\n") if line.strip()]
        label = silver_label(row, solutions[row["question_id"]]) if len(steps) >= 2 else None
        if label is None:
            continue
        item = {
            "id": row["id"],
            "problem": row["question"],
            "steps": steps,
            "answer": row["reference_answer"],
            "label": label,
            "is_correct": bool(row["is_correct"]),
        }
        (right if label == -1 else wrong).append(item)
    chosen = right[:per_class] + wrong[:per_class]
    out.write_text("".join(json.dumps(item) + "\n" for item in chosen), encoding="utf-8")
    return f"{len(chosen)} rows ({min(per_class, len(right))} right, {min(per_class, len(wrong))} wrong)"


def measure(dataset: Path, taus: list[float]) -> list[dict]:
    import polars as pl

    from mig_annotator.builder.evaluation.processbench import LabelledSteps, f1_at
    from mig_annotator.builder.export import dataset_parts, step_labels
    from mig_annotator.builder.step_label_rules import STEP_LABEL_RULES, StepLabels

    frame = pl.scan_parquet([str(path) for path in dataset_parts(dataset)])
    results = []
    for rule in STEP_LABEL_RULES:
        for tau in taus if rule != "new-max" else [0.0]:
            rows = (
                frame.filter(pl.col("steps").list.len() > 0)
                .select(step_labels(StepLabels(rule, tau)).alias("labels"), pl.col("label"))
                .collect()
                .to_dicts()
            )
            traces = [
                LabelledSteps(np.where(np.asarray(row["labels"]), 0.0, -1.0), int(row["label"]))
                for row in rows
                if int(row["label"]) < len(row["labels"])
            ]
            f1 = f1_at(traces, 0.0, "first False step")
            right_steps = [ok for trace in traces for ok in trace.scores[: trace.label] == 0.0]
            right_steps += [ok for trace in traces if trace.label < 0 for ok in trace.scores == 0.0]
            wrong_steps = [trace.scores[trace.label] < 0 for trace in traces if trace.label >= 0]
            results.append(
                {
                    "rule": rule,
                    "tau": tau if rule != "new-max" else None,
                    "traces": len(traces),
                    "acc_err": f1.accuracy_erroneous,
                    "acc_ok": f1.accuracy_correct,
                    "f1": f1.f1,
                    "right_steps_true": float(np.mean(right_steps)) if right_steps else None,
                    "wrong_steps_false": float(np.mean(wrong_steps)) if wrong_steps else None,
                }
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    label = commands.add_parser("label", help="write silver ProcessBench labels for the shared rollouts")
    label.add_argument("rollouts", type=Path)
    label.add_argument("tests", type=Path)
    label.add_argument("--per-class", type=int, default=100)
    label.add_argument("--seed", type=int, default=0)
    label.add_argument("--out", type=Path, required=True)
    scored = commands.add_parser("measure", help="F1 of each label rule on a dataset built from that file")
    scored.add_argument("dataset", type=Path)
    scored.add_argument("--taus", default="0,0.1,0.25,0.5,1")
    args = parser.parse_args()
    if args.command == "label":
        print(write_silver(args.rollouts, args.tests, args.per_class, args.seed, args.out))
        return
    print("| rule | tau | traces | acc err | acc ok | F1 | right steps True | first wrong steps False |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in measure(args.dataset, [float(tau) for tau in args.taus.split(",")]):
        cells = [row["rule"], "" if row["tau"] is None else f"{row['tau']:g}", str(row["traces"])]
        keys = ("acc_err", "acc_ok", "f1", "right_steps_true", "wrong_steps_false")
        cells += [f"{row[key]:.3f}" for key in keys]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
