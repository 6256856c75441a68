"""`export sft|prm`: trainer files from a built dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from mig_annotator.cli.console import console, fail

export_app = typer.Typer(help="Trainer exports of a built dataset.", no_args_is_help=True)

DatasetArgument = Annotated[Path, typer.Argument(help="A built dataset folder.")]
ExportOutOption = Annotated[Path, typer.Option("--out", "-o", help="The output file, .parquet or .jsonl.")]


def _export(kind: Literal["sft", "prm"], dataset: Path, out: Path) -> None:
    from mig_annotator.builder.errors import BuildError
    from mig_annotator.builder.export import export

    try:
        result = export(dataset, kind, out)
    except BuildError as error:
        fail(str(error))
    console.print(f"wrote {result.path}: {result.rows:,} of {result.source_rows:,} rows ({kind})")


@export_app.command("sft")
def export_sft(dataset: DatasetArgument, out: ExportOutOption) -> None:
    """The dual-gated SFT subset (correct outcome, process reward over the threshold): prompt, completion."""
    _export("sft", dataset, out)


@export_app.command("prm")
def export_prm(dataset: DatasetArgument, out: ExportOutOption) -> None:
    """Step labels in TRL's stepwise format: prompt, completions (the steps), labels (r_k > 0)."""
    _export("prm", dataset, out)


def register(app: typer.Typer) -> None:
    """Add `export sft|prm`."""
    app.add_typer(export_app, name="export")
