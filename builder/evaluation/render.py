"""The `eval` results as rich tables (JSON comes from :meth:`EvalResult.to_json`)."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from mig_annotator.builder.evaluation.evaluate import EvalResult


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def eval_renderable(result: EvalResult) -> Group:
    parts: list[Table | Text] = [
        Text(f"{result.traces} traces from {', '.join(result.sources)}", style="bold"),
    ]
    if result.trace_level:
        table = Table(
            title=f"trace level: AUROC against {result.trace_label}",
            title_justify="left",
            caption="outcome AUROC: the answer check alone on the same traces (the free baseline).",
            caption_justify="left",
        )
        for header in ("score", "AUROC", "outcome AUROC", "traces", "positives", "negatives"):
            table.add_column(header, justify="left" if header == "score" else "right")
        for row in result.trace_level:
            table.add_row(
                row.score,
                _number(row.auroc),
                _number(row.outcome_auroc),
                str(row.n),
                str(row.positives),
                str(row.negatives),
            )
        parts.append(table)
    if result.step_level:
        counts = result.step_level[0].auroc
        table = Table(
            title=f"step level, ProcessBench format ({result.step_traces} traces, label column "
            f"{result.step_label})",
            title_justify="left",
            caption=f"step AUROC: {counts.positives} correct steps before the first error vs "
            f"{counts.negatives} first wrong steps. F1: the first step scoring below -tau is the "
            "predicted earliest error; accuracy on erroneous (err) and all-correct (ok) traces. "
            "outcome: the same measure when every step scores the trace's outcome - 1 (the free baseline).",
            caption_justify="left",
        )
        for header in ("score", "measure", "tau", "acc err", "acc ok", "value", "outcome"):
            table.add_column(header, justify="left" if header in ("score", "measure") else "right")
        short = {
            "tau = 0": "F1, tau = 0",
            "tau chosen on the data": "F1, tau on data",
            "tau by 2-fold CV": "F1, 2-fold CV",
        }
        baseline = result.step_outcome
        for row in result.step_level:
            table.add_row(
                row.score,
                "step AUROC",
                "",
                "",
                "",
                _number(row.auroc.auroc),
                _number(baseline.auroc.auroc if baseline else None),
            )
            for index, f1 in enumerate(row.f1):
                tau = (
                    f"{f1.tau:.3g}" if f1.tau is not None else "/".join(f"{tau:.3g}" for tau in f1.fold_taus)
                )
                table.add_row(
                    "",
                    short.get(f1.method, f1.method),
                    tau,
                    _number(f1.accuracy_erroneous),
                    _number(f1.accuracy_correct),
                    _number(f1.f1),
                    _number(baseline.f1[index].f1 if baseline else None),
                )
            table.add_section()
        parts.append(table)
    parts.extend(Text(f"note: {note}", style="dim") for note in result.notes)
    return Group(*parts)


def print_eval(result: EvalResult, console: Console) -> None:
    console.print(eval_renderable(result))
