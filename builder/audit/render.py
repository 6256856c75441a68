"""Audit output: rich tables, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from mig_annotator.builder.audit.reports import Report

OutputFormat = Literal["table", "csv", "json"]
TEXT_WIDTH = 80


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    text = str(value)
    return text if len(text) <= TEXT_WIDTH else text[: TEXT_WIDTH - 3] + "..."


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    return str(value)


def report_table(report: Report) -> Table:
    table = Table(title=report.title, title_justify="left", caption="\n".join(report.notes) or None)
    for column in report.columns:
        table.add_column(column, overflow="fold")
    for row in report.rows:
        table.add_row(*(_cell(value) for value in row))
    return table


def render(reports: Sequence[Report], fmt: OutputFormat, console: Console) -> None:
    """Print the reports: tables to the console, or CSV / JSON text to its file."""
    if fmt == "table":
        for report in reports:
            console.print(report_table(report))
            if not report.rows:
                console.print("(no rows)")
        return
    if fmt == "json":
        payload = [
            {
                "report": report.name,
                "title": report.title,
                "notes": report.notes,
                "rows": [
                    {key: _json_value(value) for key, value in record.items()} for record in report.records()
                ],
            }
            for report in reports
        ]
        console.file.write(json.dumps(payload, indent=2) + "\n")
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for index, report in enumerate(reports):
        if len(reports) > 1:
            if index:
                buffer.write("\n")
            buffer.write(f"# {report.name}\n")
        writer.writerow(report.columns)
        for row in report.rows:
            writer.writerow(["" if value is None else value for value in row])
    console.file.write(buffer.getvalue())
