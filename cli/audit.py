"""`audit`: question the rewards of built datasets and audit logs with DuckDB."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from mig_annotator.cli.console import console, errors, fail

OutputFormat = Literal["table", "csv", "json"]  # builder.audit.render.OutputFormat (it imports duckdb)


def audit(
    paths: Annotated[
        list[Path], typer.Argument(help="Built dataset folders and/or audit-log folders or files.")
    ],
    report: Annotated[
        list[str] | None,
        typer.Option(
            "--report", "-r", help="distribution | lucky | hacking | top-steps | stalls | drift | labels"
        ),
    ] = None,
    sql: Annotated[
        str | None, typer.Option(help="One read-only SELECT over the views annotations, steps, rejects.")
    ] = None,
    by: Annotated[
        str | None, typer.Option(help="Group column (default: generator, model, else probe_model).")
    ] = None,
    top: Annotated[int, typer.Option(help="Rows per listing report.")] = 20,
    label_col: Annotated[str | None, typer.Option(help="Boolean label column (default: is_correct).")] = None,
    drop_bad_labels: Annotated[
        bool,
        typer.Option(help="Leave out rows whose label is not a boolean or 0/1 (counted) instead of failing."),
    ] = False,
    min_stall: Annotated[int, typer.Option(help="Shortest zero-reward run that counts as a stall.")] = 3,
    high_quantile: Annotated[
        float, typer.Option(help="'High' process reward: at or over this quantile.")
    ] = 0.9,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="table | csv | json")] = "table",
    memory_limit_mb: Annotated[
        int, typer.Option(min=16, help="DuckDB memory limit per query, in MB; a query over it is stopped.")
    ] = 1024,
    timeout_s: Annotated[
        float, typer.Option(min=0.001, help="Seconds a query may run before it is interrupted.")
    ] = 60.0,
    threads: Annotated[int, typer.Option(min=1, help="DuckDB worker threads.")] = 2,
    max_rows: Annotated[
        int, typer.Option(min=1, help="Most rows an --sql result may hold; a larger one is stopped.")
    ] = 100_000,
    max_result_mb: Annotated[
        int, typer.Option(min=1, help="Most megabytes an --sql result may hold; a larger one is stopped.")
    ] = 256,
) -> None:
    """Question the rewards of built datasets with DuckDB: canned reports or one read-only SQL query."""
    from mig_annotator.builder.audit.database import AuditDatabase, AuditLimits, discover_sources
    from mig_annotator.builder.audit.render import render
    from mig_annotator.builder.audit.reports import REPORTS, Report, ReportOptions, run_reports
    from mig_annotator.builder.errors import BuildError

    try:
        limits = AuditLimits(
            memory_limit_mb=memory_limit_mb,
            timeout_s=timeout_s,
            threads=threads,
            max_rows=max_rows,
            max_result_mb=max_result_mb,
        )
        sources = discover_sources(paths)
        with AuditDatabase(sources, limits) as db:
            for source in sources:
                if not source.complete:
                    errors.print(
                        f"note: {source.name}: the build has not finished; auditing the finished shards"
                    )
            if sql is not None:
                if report:
                    raise BuildError("give --sql or --report, not both")
                result = db.user_query(sql)
                reports = [Report("sql", sql, result.columns, result.rows)]
            else:
                options = ReportOptions(
                    by=by,
                    top=top,
                    label_col=label_col,
                    drop_bad_labels=drop_bad_labels,
                    min_stall=min_stall,
                    high_quantile=high_quantile,
                )
                reports = run_reports(db, list(report or REPORTS), options)
    except BuildError as error:
        fail(str(error))
    out = console if output_format == "table" else Console(soft_wrap=True)
    render(reports, output_format, out)


def register(app: typer.Typer) -> None:
    """Add `audit`."""
    app.command("audit")(audit)
