"""`export sft|prm`: trainer files from a built dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from mig_annotator.builder.step_label_rules import (
    DEFAULT_STEP_LABEL_RULE,
    DEFAULT_STEP_LABEL_TAU,
    STEP_LABEL_RULES,
    StepLabelRule,
    StepLabels,
)
from mig_annotator.cli.console import console, fail

export_app = typer.Typer(help="Trainer exports of a built dataset.", no_args_is_help=True)

DatasetArgument = Annotated[Path, typer.Argument(help="A built dataset folder.")]
ExportOutOption = Annotated[Path, typer.Option("--out", "-o", help="The output file, .parquet or .jsonl.")]


def _export(kind: Literal["sft", "prm"], dataset: Path, out: Path, labels: StepLabels | None = None) -> None:
    from mig_annotator.builder.errors import BuildError
    from mig_annotator.builder.export import export

    try:
        result = export(dataset, kind, out, labels)
    except BuildError as error:
        fail(str(error))
    console.print(f"wrote {result.path}: {result.rows:,} of {result.source_rows:,} rows ({kind})")


@export_app.command("sft")
def export_sft(dataset: DatasetArgument, out: ExportOutOption) -> None:
    """The dual-gated SFT subset (correct outcome, process reward over the threshold): prompt, completion."""
    _export("sft", dataset, out)


@export_app.command("prm")
def export_prm(
    dataset: DatasetArgument,
    out: ExportOutOption,
    label_rule: Annotated[
        StepLabelRule,
        typer.Option(
            "--label-rule",
            help='What labels a step True ("this step is correct"): '
            + "; ".join(f"{name}: {meaning}" for name, meaning in STEP_LABEL_RULES.items())
            + ".",
        ),
    ] = DEFAULT_STEP_LABEL_RULE,
    tau: Annotated[
        float, typer.Option("--tau", help="How far a step may lower the value and stay True (>= 0).")
    ] = DEFAULT_STEP_LABEL_TAU,
) -> None:
    """Step labels in TRL's stepwise format: prompt, completions (the steps), labels (True: a right step)."""
    from mig_annotator.builder.errors import BuildError

    try:
        labels = StepLabels(label_rule, tau)
    except BuildError as error:
        fail(str(error))
    _export("prm", dataset, out, labels)


def register(app: typer.Typer) -> None:
    """Add `export sft|prm`."""
    app.add_typer(export_app, name="export")
