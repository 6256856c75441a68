"""`mig-annotator report`: one self-contained HTML report on a built dataset or the service's audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mig_annotator.cli.console import fail, note


def report(
    inputs: Annotated[
        list[Path],
        typer.Argument(help="Built dataset folders and/or the service's audit-log folders or files."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    by: Annotated[
        list[str] | None, typer.Option("--by", help="Also tabulate by this column (repeatable).")
    ] = None,
    sample: Annotated[int, typer.Option(help="Sampled traces shown per outcome (correct / wrong).")] = 6,
    seed: Annotated[int, typer.Option(help="Seed of the trace sample.")] = 0,
    label_col: Annotated[
        str | None,
        typer.Option(
            help="Correctness column for the ROC curves (default: is_correct, final_answer_correct)."
        ),
    ] = None,
    drop_bad_labels: Annotated[
        bool,
        typer.Option(help="Leave out rows whose label is not a boolean or 0/1 (counted) instead of failing."),
    ] = False,
    max_mb: Annotated[
        float, typer.Option(help="Size bound of the page in MB; fewer traces are shown to fit.")
    ] = 8.0,
    title: Annotated[str, typer.Option(help="The page title.")] = "MIG reward report",
) -> None:
    """Write an offline HTML report: summary, distributions, trajectories, step heatmaps, groups, ROC."""
    from mig_annotator.builder.errors import BuildError
    from mig_annotator.builder.report import ReportOptions, write_report

    options = ReportOptions(
        by=tuple(by or ()),
        sample=sample,
        seed=seed,
        label_col=label_col,
        drop_bad_labels=drop_bad_labels,
        max_bytes=int(max_mb * 1_000_000),
        title=title,
    )
    try:
        result = write_report(inputs, out, options)
    except BuildError as error:
        fail(str(error))
    for text in result.notes:
        note(text)
    typer.echo(f"wrote {result.path} ({result.bytes / 1e6:.1f} MB, {result.sampled_traces} sampled traces)")


def register(app: typer.Typer) -> None:
    """Add `report` to the `mig-annotator` app."""
    app.command("report")(report)
