"""`eval` and `report` leave out rows with NaN/inf scores and accept only boolean or 0/1 labels, on real
Parquet datasets through DuckDB."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mig_annotator.builder.audit.database import AuditQueryError
from mig_annotator.builder.evaluation.evaluate import EvalOptions, evaluate
from mig_annotator.builder.layout import OutputLayout
from mig_annotator.builder.report import ReportOptions, write_report
from tests.builder.report_support import write_labelled_dataset


def rewrite(folder: Path, **columns: list) -> Path:
    """Replace columns of the dataset's one part file (types follow the given values)."""
    (part,) = OutputLayout(folder).parts()
    table = pq.read_table(part)
    for name, values in columns.items():
        array = pa.array(values)
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, array) if index >= 0 else table.append_column(name, array)
    pq.write_table(table, part)
    return folder


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_labelled_dataset(tmp_path / "labelled")


def rows(folder: Path) -> int:
    (part,) = OutputLayout(folder).parts()
    return pq.read_metadata(part).num_rows


def test_eval_and_report_leave_out_nan_and_infinite_scores_with_a_count(
    dataset: Path, tmp_path: Path
) -> None:
    (part,) = OutputLayout(dataset).parts()
    table = pq.read_table(part)
    rewards = table.column("process_reward").to_pylist()
    v0 = table.column("v0").to_pylist()
    rewards[0], v0[1] = math.nan, math.inf
    rewrite(dataset, process_reward=rewards, v0=v0)
    result = evaluate([dataset], EvalOptions())
    assert any("2 rows with a NaN or infinite score were left out" in note for note in result.notes)
    assert all(row.n == rows(dataset) - 2 for row in result.trace_level)
    out = tmp_path / "report.html"
    written = write_report([dataset], out, ReportOptions(sample=2))
    assert any("2 rows with a NaN or infinite score" in note for note in written.notes)
    page = out.read_text(encoding="utf-8")
    assert "2 rows with a NaN or infinite score were left out" in page
    assert pc.count(pq.read_table(part).column("v0")).as_py() == rows(dataset)  # the data is untouched


@pytest.mark.parametrize(
    "values",
    [[math.nan, 1.0, 0.0, 0.5], [2, 5, -1, 1], ["yes", "no", "1", "0"]],
    ids=["floats", "ints", "text"],
)
def test_labels_other_than_booleans_or_0_1_are_refused_naming_the_column(dataset: Path, values: list) -> None:
    n = rows(dataset)
    rewrite(dataset, is_correct=(values * n)[:n])
    with pytest.raises(
        AuditQueryError, match=r"label column 'is_correct' .*must hold booleans or 0/1.*e\.g\."
    ):
        evaluate([dataset], EvalOptions())
    with pytest.raises(AuditQueryError, match=r"--drop-bad-labels"):
        write_report([dataset], dataset.parent / "r.html", ReportOptions(sample=1))


def test_bad_labels_are_left_out_with_a_count_when_asked(dataset: Path) -> None:
    n = rows(dataset)
    labels = [1.0, 0.0] * n
    labels[0] = 0.5
    rewrite(dataset, is_correct=labels[:n])
    result = evaluate([dataset], EvalOptions(drop_bad_labels=True))
    assert any("1 rows whose 'is_correct' is not a boolean or 0/1 were left out" in n for n in result.notes)
    assert result.trace_level[0].n == n - 1


def test_0_1_integer_labels_are_accepted(dataset: Path) -> None:
    n = rows(dataset)
    rewrite(dataset, is_correct=([1, 0] * n)[:n])
    result = evaluate([dataset], EvalOptions())
    assert result.trace_level[0].n == n and result.trace_level[0].positives == (n + 1) // 2


def test_audit_label_agreement_leaves_out_nan_scores_like_eval(dataset: Path) -> None:
    from mig_annotator.builder.audit.database import AuditDatabase, discover_sources
    from mig_annotator.builder.audit.reports import ReportOptions as AuditOptions
    from mig_annotator.builder.audit.reports import run_reports

    count = rows(dataset)
    nan = [math.nan] * count
    rewrite(dataset, v0=nan, process_reward=nan, max_reward=nan)
    with AuditDatabase(discover_sources([dataset])) as db:
        (labels,) = run_reports(db, ["labels"], AuditOptions())
    assert any(f"{count} rows with a NaN or infinite score were left out" in note for note in labels.notes)
    assert labels.rows == []  # every row left out: no n and no AUROC 0.5 over NaN scores
