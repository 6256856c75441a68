"""Audit output: rich tables, CSV or JSON.

Tables fit the console's width: a table too wide for it is shown transposed (one row per metric, one
column per result row) when it has few rows; else text columns holding one value in every row move to
the caption, then trailing columns are dropped and named in the caption (CSV and JSON always carry every
column). Nothing is squeezed into columns narrower than their headers.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from mig_annotator.builder.audit.reports import Report

OutputFormat = Literal["table", "csv", "json"]
TEXT_WIDTH = 80
#: A table with at most this many rows is transposed when it is too wide for the console.
MAX_TRANSPOSED_ROWS = 4
#: Text cells wrap; for fitting, a text column counts at most this wide.
WRAPPED_TEXT_WIDTH = 24
#: A table shows at most this many rows (laying out millions would take minutes); CSV and JSON carry all.
MAX_TABLE_ROWS = 1000


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


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _column_width(header: str, cells: Sequence[str], numeric: bool) -> int:
    widest = max((len(cell) for cell in cells), default=0)
    if not numeric:
        widest = min(widest, WRAPPED_TEXT_WIDTH)
    return max(len(header), widest)


def _table_width(widths: Sequence[int]) -> int:
    """Rich's width of a table with these column widths: ``| `` + cell + `` `` per column, and ``|``."""
    return sum(widths) + 3 * len(widths) + 1


def _plain_table(report: Report, columns: Sequence[int], caption: list[str]) -> Table:
    table = Table(
        title=report.title, title_justify="left", caption="\n".join(caption) or None, caption_justify="left"
    )
    for index in columns:
        numeric = any(_numeric(row[index]) for row in report.rows)
        header = report.columns[index]
        table.add_column(
            header,
            overflow="fold",
            justify="right" if numeric else "left",
            min_width=len(header) if numeric else min(len(header), WRAPPED_TEXT_WIDTH),
        )
    for row in report.rows:
        table.add_row(*(_cell(row[index]) for index in columns))
    return table


def _transposed_table(report: Report, caption: list[str]) -> Table:
    """One row per metric, one column per result row, headed by the row's leading text values; the first
    column's header names the columns those values come from (``dataset / generator``), so every header
    says what it holds ("metric" and ``row N`` when the rows have no leading text values)."""
    keys = 0
    while keys < len(report.columns) - 1 and all(not _numeric(row[keys]) for row in report.rows):
        keys += 1
    table = Table(
        title=report.title, title_justify="left", caption="\n".join(caption) or None, caption_justify="left"
    )
    table.add_column(" / ".join(report.columns[:keys]) or "metric", no_wrap=True)
    for number, row in enumerate(report.rows, start=1):
        name = " / ".join(_cell(value) for value in row[:keys]) or f"row {number}"
        table.add_column(name, justify="right", overflow="fold")
    for index in range(keys, len(report.columns)):
        table.add_row(report.columns[index], *(_cell(row[index]) for row in report.rows))
    return table


def report_table(report: Report, width: int | None = None) -> Table:
    """The report as a table; with ``width``, one that fits it (transposed, or with columns dropped)."""
    caption = list(report.notes)
    everything = list(range(len(report.columns)))
    if width is None or not report.columns:
        return _plain_table(report, everything, caption)
    cells = [[_cell(row[index]) for row in report.rows] for index in everything]
    widths = [
        _column_width(header, cells[index], any(_numeric(row[index]) for row in report.rows))
        for index, header in enumerate(report.columns)
    ]
    if _table_width(widths) <= width:
        return _plain_table(report, everything, caption)
    if 0 < len(report.rows) <= MAX_TRANSPOSED_ROWS:
        return _transposed_table(report, caption)
    constant = [
        index
        for index in everything
        if len(report.rows) > 1 and not _numeric(report.rows[0][index]) and len(set(cells[index])) == 1
    ]
    if constant:  # a value shared by every row goes to the caption
        caption += [f"{report.columns[index]} = {cells[index][0]} in every row" for index in constant]
    kept: list[int] = []
    for index in (i for i in everything if i not in constant):
        if _table_width([widths[i] for i in [*kept, index]]) > width and kept:
            break
        kept.append(index)
    dropped = [report.columns[index] for index in everything if index not in kept and index not in constant]
    if dropped:
        caption.append(
            f"not shown at {width} columns: {', '.join(dropped)} "
            "(use --format csv or json, or a wider terminal)"
        )
    return _plain_table(report, kept, caption)


def _table_rows(report: Report) -> Report:
    """The report with at most :data:`MAX_TABLE_ROWS` rows, saying so in its notes when it had more."""
    if len(report.rows) <= MAX_TABLE_ROWS:
        return report
    note = (
        f"the first {MAX_TABLE_ROWS:,} of {len(report.rows):,} rows are shown (--format csv or json "
        "writes them all)"
    )
    return replace(report, rows=report.rows[:MAX_TABLE_ROWS], notes=[*report.notes, note])


def render(reports: Sequence[Report], fmt: OutputFormat, console: Console) -> None:
    """Print the reports: tables to the console, or CSV / JSON text to its file."""
    if fmt == "table":
        for report in reports:
            console.print(report_table(_table_rows(report), console.width))
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
    out = console.file  # written row by row, not built whole first
    writer = csv.writer(out, lineterminator="\n")
    for index, report in enumerate(reports):
        if len(reports) > 1:
            if index:
                out.write("\n")
            out.write(f"# {report.name}\n")
        writer.writerow(report.columns)
        for row in report.rows:
            writer.writerow(["" if value is None else value for value in row])
