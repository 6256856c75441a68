"""`eval` on datasets with exact trajectories, on the ProcessBench fixture built with the fake probe, and
on the service's audit log."""

from __future__ import annotations

from pathlib import Path

import pytest

from mig_annotator.builder.audit.database import AuditQueryError
from mig_annotator.builder.evaluation.evaluate import EvalOptions, evaluate
from tests.builder.report_support import (
    build_processbench_dataset,
    write_audit_log,
    write_labelled_dataset,
)
from tests.builder.test_audit import report


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    return write_labelled_dataset(tmp_path / "labelled")


def test_trace_level_aurocs_of_the_worked_example(labelled: Path) -> None:
    result = evaluate([labelled])
    assert result.trace_label == "is_correct"
    auroc = {row.score: row.auroc for row in result.trace_level}
    # positives A, D; negatives B, C.  v_K: A -1, D -.7 vs B -1, C -1.3 -> (.5 + 1 + 1 + 1) / 4
    assert auroc["v_K"] == pytest.approx(3.5 / 4)
    # v_K - v_0 = sum r_k here (each trace ends at its maximum or below): A 1, D .3 vs B 1, C -.3 / 0
    assert auroc["v_K - v_0"] == pytest.approx(2.5 / 4)
    assert auroc["sum r_k"] == pytest.approx(2.5 / 4)
    assert auroc["max r_k"] == pytest.approx(2.5 / 4)  # A .5, D .2 vs B .5, C 0
    audit = {r["score"]: r["auroc"] for r in report([labelled], "labels").records()}
    assert all(auroc[name] == pytest.approx(audit[name]) for name in auroc)  # the SQL AUROC agrees


def test_step_level_of_the_worked_example(labelled: Path) -> None:
    result = evaluate([labelled])
    assert result.step_label == "label" and result.step_traces == 4
    by_score = {row.score: row for row in result.step_level}
    mig, margin = by_score["mig_k"], by_score["v_k - W_{k-1}"]
    assert mig.auroc.auroc == pytest.approx(11.5 / 14)
    # v - W positives .5 .5 .5 -.5 .2 -.2 .1; negatives -1 (B), -.3 (C): 7 + 6 wins of 14
    assert margin.auroc.auroc == pytest.approx(13 / 14)
    assert [f.method for f in mig.f1] == ["tau = 0", "tau chosen on the data", "tau by 2-fold CV"]
    assert mig.f1[0].f1 == pytest.approx(0.5) and margin.f1[0].f1 == pytest.approx(0.5)
    assert mig.f1[1].tau == pytest.approx(0.2) and mig.f1[1].f1 == pytest.approx(2 / 3)
    payload = result.to_json()
    assert payload["step_level"][0]["f1"][1]["f1"] == pytest.approx(2 / 3)


def test_a_step_label_past_the_scored_steps_is_left_out_and_said(tmp_path: Path) -> None:
    spec = {"A": (True, 1, [-2.0, -1.5, -1.0], -1), "B": (False, 0, [-2.0, -1.5], 3)}
    result = evaluate([write_labelled_dataset(tmp_path / "d", spec)])
    assert result.step_traces == 1
    assert any("label >= K" in note for note in result.notes)


def test_bad_label_columns_are_named(labelled: Path) -> None:
    with pytest.raises(AuditQueryError, match="--label-col nope: no such column"):
        evaluate([labelled], EvalOptions(label_col="nope"))
    with pytest.raises(AuditQueryError, match="--step-label-col generator: must be an integer column"):
        evaluate([labelled], EvalOptions(step_label_col="generator"))


def test_the_processbench_fixture_built_with_the_fake_probe(tmp_path: Path) -> None:
    dataset = build_processbench_dataset(tmp_path / "pb")
    result = evaluate([dataset])
    # 12 traces: 6 all-correct, 6 with an error at step 0, 1 or 2 (every one a scored step)
    assert result.traces == 12 and result.step_traces == 12
    assert result.trace_label == "final_answer_correct"
    assert {row.positives for row in result.trace_level} == {6}
    for row in result.step_level:
        assert row.auroc.negatives == 6 and row.auroc.positives == 18  # 6 correct traces * 2-3 steps + 3
        assert all(f.erroneous == 6 and f.correct == 6 for f in row.f1)
        assert row.f1[1].f1 >= row.f1[0].f1  # the tau chosen on the data is at least as good as 0
        assert 0.0 <= row.auroc.auroc <= 1.0


def test_the_service_audit_log_gets_trace_level_only_and_says_what_it_lacks(tmp_path: Path) -> None:
    log = write_audit_log(tmp_path / "log", {"t1": [-2.0, -1.5, -1.6], "t2": [-1.0, -1.2]})
    result = evaluate([log])
    assert result.traces == 2 and result.trace_level == [] and result.step_level == []
    assert any("no step records" in note for note in result.notes)
    assert any("no correctness column" in note for note in result.notes)


def test_every_trace_score_is_shown_beside_the_outcomes_own_auroc(labelled: Path) -> None:
    result = evaluate([labelled])
    # the worked example's outcome equals is_correct: the answer check alone separates the labels
    assert [row.outcome_auroc for row in result.trace_level] == [1.0] * len(result.trace_level)
    assert {row["score"]: row["outcome_auroc"] for row in result.to_json()["trace_level"]}["v_K"] == 1.0


def test_the_step_level_baseline_scores_every_step_with_its_traces_outcome(labelled: Path) -> None:
    baseline = evaluate([labelled]).step_outcome
    assert baseline is not None and baseline.score == "outcome"
    # steps score outcome - 1: positives A 0 0, B -1, C -1, D 0 0 0; negatives B -1, C -1 -> (10 + 4 / 2) / 14
    assert baseline.auroc.auroc == pytest.approx(12 / 14)
    # at tau = 0 the right answers predict no error (2 of 2) and the wrong ones step 0, not step 1 (0 of 2)
    at_zero = baseline.f1[0]
    assert (at_zero.accuracy_correct, at_zero.accuracy_erroneous, at_zero.f1) == (1.0, 0.0, 0.0)


def test_the_eval_table_has_an_outcome_column_beside_every_score(labelled: Path) -> None:
    from rich.console import Console

    from mig_annotator.builder.evaluation.render import print_eval

    console = Console(width=160, record=True)
    print_eval(evaluate([labelled]), console)
    text = console.export_text()
    assert "outcome AUROC" in text
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines() if "│" in line]
    assert ["v_K", "0.875", "1.000", "4", "2", "2"] in rows
    step_auroc = [row for row in rows if row[1:2] == ["step AUROC"]]
    assert [row[-2:] for row in step_auroc] == [["0.821", "0.857"], ["0.929", "0.857"]]
