"""`report` and `eval` end to end through their Typer commands (registered on a fresh app)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mig_annotator.cli import evaluate, report
from tests.builder.report_support import write_audit_log, write_labelled_dataset


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    report.register(app)
    evaluate.register(app)
    return app


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    return write_labelled_dataset(tmp_path / "labelled")


def test_report_writes_the_page_and_says_where(app: typer.Typer, labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.html"
    done = CliRunner().invoke(
        app, ["report", str(labelled), "--out", str(out), "--sample", "1", "--by", "generator"]
    )
    assert done.exit_code == 0, done.output
    assert f"wrote {out}" in done.output and "2 sampled traces" in done.output
    assert "<h3>by generator</h3>" in out.read_text(encoding="utf-8")


def test_report_errors_name_the_problem(app: typer.Typer, labelled: Path, tmp_path: Path) -> None:
    done = CliRunner().invoke(
        app, ["report", str(labelled), "--out", str(tmp_path / "r.html"), "--by", "nope"]
    )
    assert done.exit_code == 2 and "--by nope: no such column" in done.output
    done = CliRunner().invoke(app, ["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r.html")])
    assert done.exit_code == 2 and "not a built dataset folder" in done.output


def test_eval_json_carries_the_trace_and_step_results(app: typer.Typer, labelled: Path) -> None:
    done = CliRunner().invoke(app, ["eval", str(labelled), "--json"])
    assert done.exit_code == 0, done.output
    payload = json.loads(done.output)
    assert payload["trace_label"] == "is_correct" and payload["step_label"] == "label"
    assert {row["score"]: row["auroc"] for row in payload["trace_level"]}["v_K"] == pytest.approx(0.875)
    mig = payload["step_level"][0]
    assert mig["score"] == "mig_k" and mig["auroc"] == pytest.approx(11.5 / 14)
    assert [f["method"] for f in mig["f1"]] == ["tau = 0", "tau chosen on the data", "tau by 2-fold CV"]


def test_eval_table_and_its_label_column_option(app: typer.Typer, labelled: Path, tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["eval", str(labelled)], terminal_width=100)
    assert done.exit_code == 0, done.output
    assert "trace level: AUROC against is_correct" in done.output and "0.875" in done.output
    assert "F1, tau on data" in done.output
    done = CliRunner().invoke(app, ["eval", str(labelled), "--label-col", "missing"])
    assert done.exit_code == 2 and "--label-col missing: no such column" in done.output
    log = write_audit_log(tmp_path / "log", {"t1": [-2.0, -1.5]})
    done = CliRunner().invoke(app, ["eval", str(log)], terminal_width=100)
    assert done.exit_code == 0 and "no step records" in done.output
