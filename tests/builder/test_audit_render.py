"""The terminal audit stays readable in an 80-column terminal: wide one-row-ish summaries are transposed,
wide listings drop trailing columns (named in the caption), and no header is folded into strips."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from mig_annotator.builder.audit.render import MAX_TABLE_ROWS, render
from mig_annotator.builder.audit.reports import Report
from tests.builder.test_audit import FIXTURE_A, report, write_dataset


@pytest.fixture
def dataset_a(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "a_build", FIXTURE_A, "cfgA")


def rendered(reports: list[Report], width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    render(reports, "table", console)
    return console.export_text().splitlines()


def test_the_distribution_table_is_transposed_at_80_columns(dataset_a: Path) -> None:
    lines = rendered([report([dataset_a], "distribution")], 80)
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    header = next(line for line in lines if "a_build / g1" in line)
    # one column per group, and the first header names what the column headers hold
    assert [cell.strip() for cell in header.split("┃")[1:-1]] == [
        "dataset / generator",
        "a_build / g1",
        "a_build / g2",
    ]
    # every metric on one line with both values, names intact (no "pro / ces / s_r" strips)
    row = next(line for line in lines if "process_reward_mean" in line)
    assert "0.3000" in row and "0.8333" in row
    for metric in ("outcome_rate", "sft_rate", "zero_reward_rate", "max_reward_mean", "steps_mean", "p90"):
        assert metric in text


def test_a_wide_listing_keeps_its_first_columns_and_names_the_dropped_ones(dataset_a: Path) -> None:
    stalls = report([dataset_a], "stalls", min_stall=1)
    lines = rendered([stalls], 80)
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= 80
    assert "dataset = a_build in every row" in text  # a constant column moves to the caption
    header = next(line for line in lines if "trace_id" in line)
    assert "longest_stall" in header and "stall_start_k" in header
    assert "not shown at 80 columns: process_reward, outcome" in " ".join(text.split())
    assert [line.split("│")[1].strip() for line in lines if line.startswith("│")] == [
        "t3",
        "t2",
        "t1",
        "t4",
        "t5",
    ]


def test_a_wide_terminal_shows_every_column_untransposed(dataset_a: Path) -> None:
    lines = rendered([report([dataset_a], "distribution")], 220)
    header = next(line for line in lines if "process_reward_mean" in line)
    for column in ("dataset", "generator", "traces", "outcome_rate", "p10", "steps_mean"):
        assert column in header
    assert not any("a_build / g1" in line for line in lines)


def test_long_text_cells_wrap_instead_of_widening_the_table() -> None:
    wide = Report(
        "wide",
        "many rows of long text",
        ["trace_id", "text", "score"],
        [(f"t{i}", "word " * 40, float(i)) for i in range(6)],
    )
    lines = rendered([wide], 80)
    assert max(len(line) for line in lines) <= 80
    assert "not shown" not in "\n".join(lines)  # the text column wraps; nothing dropped


def test_a_transposed_table_without_text_columns_is_headed_metric_and_row_numbers() -> None:
    wide = Report("wide", "numbers only", [f"measure_number_{i}" for i in range(8)], [tuple(range(8))])
    lines = rendered([wide], 80)
    header = next(line for line in lines if "┃" in line)
    assert [cell.strip() for cell in header.split("┃")[1:-1]] == ["metric", "row 1"]


def test_a_table_shows_a_bounded_number_of_rows_and_says_how_many_there_are() -> None:
    many = Report("sql", "many rows", ["n"], [(i,) for i in range(MAX_TABLE_ROWS * 50)])
    lines = rendered([many], 80)
    words = " ".join(" ".join(lines).split())
    assert f"the first {MAX_TABLE_ROWS:,} of {MAX_TABLE_ROWS * 50:,} rows are shown" in words
    assert len(lines) < MAX_TABLE_ROWS + 50  # one line a row, the header and the wrapped caption
    console = Console(width=80, record=True, color_system=None, file=io.StringIO())
    render([many], "csv", console)
    assert console.file.getvalue().count("\n") == MAX_TABLE_ROWS * 50 + 1  # CSV carries every row
